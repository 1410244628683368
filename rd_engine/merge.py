"""Full-resolution merge (SPEC section 5) and re-normalization."""

from __future__ import annotations

import torch

from .kernels.average import accumulate_frames


def merge_aligned(
    groups: list[tuple[torch.Tensor, torch.Tensor, int]],
    params: list[tuple[torch.Tensor, torch.Tensor]],
    global_min: torch.Tensor,
    num_frames: int,
) -> torch.Tensor:
    """Per frame, the mean of all aligned snippet frames covering it.

    Args:
        groups: per distinct dilation `(depth [K, L, H, W], indices [K, L], weight)`.
        params: per group `(scale [K], shift [K])`, solved on depth minus `global_min`.
        global_min: the minimum over all snippets, subtracted before the affine as in the solve.
        num_frames: N.

    Returns:
        `[N, H, W]` float32 on the snippets' device.
    """
    depth0 = groups[0][0]
    H, W = depth0.shape[-2:]
    acc = torch.zeros(num_frames, 1, H, W, dtype=torch.float32, device=depth0.device)
    count = torch.zeros(num_frames, dtype=torch.float32, device=depth0.device)
    gm = global_min.to(device=acc.device, dtype=torch.float32)
    for (depth, idx, weight), (s, t) in zip(groups, params):
        s = s.to(device=acc.device, dtype=torch.float32)
        # s * (x - m) + t == s * x + (t - s * m): the minimum folds into the shift, so the snippets
        # are read once, in their own dtype (the reference first rounds x - m to that dtype)
        accumulate_frames(acc, count, depth.unsqueeze(2), idx.to(acc.device), scale=s,
                          shift=t.to(device=acc.device, dtype=torch.float32) - s * gm,
                          weight=torch.full((depth.shape[0],), float(weight), device=acc.device))
    return acc.div_(count.view(-1, 1, 1, 1))[:, 0]


def renormalize(depth: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Map a whole video to [-1, 1] by its own min and max: ``(x - min) / (max - min) * 2 - 1``.

    The same operations as the reference, in the same order (bit-identical
    result); ``inplace=True`` overwrites ``depth`` instead of allocating a copy.
    """
    lo, hi = torch.aminmax(depth)
    out = depth if inplace else depth.clone()
    return out.sub_(lo).div_(hi - lo).mul_(2.0).sub_(1.0)
