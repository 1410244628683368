"""The co-alignment problem: what the solvers see, and the constants of the method.

Co-alignment (docs/method.md, "Co-alignment") finds one scale and shift per
snippet. The solvers work on the aligner's *solver copy* of each snippet: its
depth with a `BORDER`-pixel border cropped and every `FACTOR`-th pixel in each
direction kept, shifted by the global minimum over all snippets
(`solver_copy` builds it; the pipeline and the online aligner both use it).
Groups of snippets are `rd_engine.snippets.plan.SnippetGroup` holding that copy
as `depth [K, L, P]`.
"""

from __future__ import annotations

import math

import torch

from rd_engine.errors import UserError

BORDER = 2  # pixels cropped on each side before the solve (border artefacts)
FACTOR = 10  # subsampling step in each direction for the solve
LMDA_SCALE = 0.1  # reference soft constraint on s < 1
LMDA_SHIFT = 10.0  # reference soft constraint on t
CLIP = 1e-3  # reference clip before the reciprocal
MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of Gaussian residuals
CAUCHY_C = 2.385  # the Cauchy loss's 95 %-efficiency constant (Gaussian residuals), in robust-sigma units

Params = list[tuple[torch.Tensor, torch.Tensor]]  # per group: (scale [K], shift [K])


def solver_copy(depth: torch.Tensor) -> torch.Tensor:
    """`[..., L, H, W]` snippet depth -> `[..., L, P]` solver pixels (border cropped, subsampled), same dtype.

    A view where the layout allows it (no copy). Raises UserError when nothing is left (frames of
    4 pixels or fewer on a side).
    """
    sub = depth[..., BORDER:-BORDER, BORDER:-BORDER][..., ::FACTOR, ::FACTOR]
    if sub.numel() == 0:
        raise UserError(f"frames of {depth.shape[-1]}x{depth.shape[-2]} pixels are too small to align (need > 4)")
    return sub.reshape(*sub.shape[:-2], -1)


def back_to_back(shapes: list[tuple[int, ...]], device=None) -> list[torch.Tensor]:
    """Empty float32 arrays of the given shapes, laid back to back in one buffer, so that a solver
    can use them as one array along the first axis without copying (see `joined`).
    """
    sizes = [math.prod(sh) for sh in shapes]
    buf = torch.empty(sum(sizes), dtype=torch.float32, device=device)
    return [part.view(sh) for part, sh in zip(buf.split(sizes), shapes)]


def solver_views(depths: list[torch.Tensor], global_min: torch.Tensor) -> list[torch.Tensor]:
    """Solver copies `[K_g, L, P]` (float32, minus `global_min`) of `[K_g, L, H, W]` arrays, back to back.

    The subtraction happens in the snippets' own dtype, as the reference does (after the
    subsampling, which changes no value and touches 1% of the pixels).
    """
    subs = [solver_copy(d) for d in depths]
    out = back_to_back([tuple(s.shape) for s in subs], depths[0].device)
    for o, s in zip(out, subs):
        o.copy_(s - global_min.to(s.dtype))
    return out


def solver_view(depth: torch.Tensor, global_min: torch.Tensor) -> torch.Tensor:
    """`solver_views` of one `[K, L, H, W]` array."""
    return solver_views([depth], global_min)[0]


def joined(arrays: list[torch.Tensor]) -> torch.Tensor:
    """`torch.cat(arrays)`, as a view without a copy when they already lie back to back in one buffer
    (`back_to_back`, as the pipeline and `solver_views` lay out the solver copies).
    """
    a0 = arrays[0]
    end = a0.data_ptr()
    for a in arrays:
        if not (
            a.is_contiguous()
            and a.dtype == a0.dtype
            and a.device == a0.device
            and a.shape[1:] == a0.shape[1:]
            and a.data_ptr() == end
            and a.untyped_storage().data_ptr() == a0.untyped_storage().data_ptr()
        ):
            return torch.cat(arrays)
        end += a.numel() * a.element_size()
    shape = (sum(a.shape[0] for a in arrays), *a0.shape[1:])
    return a0.as_strided(shape, a0.stride())


def check_finite(depth: torch.Tensor, stage: str) -> None:
    """Raise UserError if snippet depth holds NaN or Inf (a model or precision problem)."""
    if not torch.isfinite(depth).all():
        raise UserError(f"{stage}: snippet depth contains NaN or Inf (model or precision problem; try the fp32 dtype)")
