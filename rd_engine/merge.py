"""Full-resolution merge (SPEC section 5) and re-normalization."""

from __future__ import annotations

import torch

from .kernels.average import accumulate_frames


def merge_aligned(
    groups: list[tuple[torch.Tensor, torch.Tensor, int]],
    params: list[tuple[torch.Tensor, torch.Tensor]],
    global_min: torch.Tensor,
    num_frames: int,
    chunk: int = 64,
) -> torch.Tensor:
    """Per frame, the mean of all aligned snippet frames covering it.

    Args:
        groups: per distinct dilation `(depth [K, L, H, W], indices [K, L], weight)`.
        params: per group `(scale [K], shift [K])`, solved on depth minus `global_min`.
        global_min: the minimum over all snippets, subtracted before the affine as in the solve.
        num_frames: N.
        chunk: snippets processed at a time (bounds the fp32 working copy).

    Returns:
        `[N, H, W]` float32 on the snippets' device.
    """
    depth0 = groups[0][0]
    H, W = depth0.shape[-2:]
    acc = torch.zeros(num_frames, 1, H, W, dtype=torch.float32, device=depth0.device)
    count = torch.zeros(num_frames, dtype=torch.float32, device=depth0.device)
    for (depth, idx, weight), (s, t) in zip(groups, params):
        for a in range(0, depth.shape[0], chunk):
            d = depth[a:a + chunk]
            # the reference subtracts the minimum in the snippets' dtype, then applies the fp32 affine
            shifted = (d - global_min.to(d.dtype)).unsqueeze(2)
            accumulate_frames(
                acc, count, shifted, idx[a:a + chunk].to(acc.device),
                scale=s[a:a + chunk].to(acc.device), shift=t[a:a + chunk].to(acc.device),
                weight=torch.full((d.shape[0],), float(weight), device=acc.device),
            )
    return (acc[:, 0] / count[:, None, None])


def renormalize(depth: torch.Tensor) -> torch.Tensor:
    """Map a whole video to [-1, 1] by its own min and max (in place where possible)."""
    depth = depth - depth.min()
    depth = depth / depth.max()
    return depth * 2.0 - 1.0
