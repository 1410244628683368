"""Custom kernels (Triton on CUDA) with plain PyTorch references beside them.

Each op picks its implementation once per call (see :mod:`._dispatch`): Triton
for CUDA tensors, the ``*_ref`` PyTorch function otherwise. Triton is imported
only when its path is taken, so this package imports without it.
"""

from ._dispatch import IMPL_ENV, select_impl, triton_available, triton_interpreting
from .average import (
    accumulate_frames,
    accumulate_frames_ref,
    accumulate_frames_robust,
    accumulate_frames_robust_ref,
    average_frames,
    average_frames_ref,
    finalize_frames,
)
from .scale_shift import (
    ROBUST_KINDS,
    irls_moments,
    irls_moments_ref,
    irls_weights,
    robust_scale_shift,
    solve_scale_shift,
    weighted_moments,
    weighted_moments_ref,
)

__all__ = [
    "IMPL_ENV",
    "select_impl",
    "triton_available",
    "triton_interpreting",
    "average_frames",
    "average_frames_ref",
    "accumulate_frames",
    "accumulate_frames_ref",
    "accumulate_frames_robust",
    "accumulate_frames_robust_ref",
    "finalize_frames",
    "ROBUST_KINDS",
    "weighted_moments",
    "weighted_moments_ref",
    "irls_moments",
    "irls_moments_ref",
    "irls_weights",
    "solve_scale_shift",
    "robust_scale_shift",
]
