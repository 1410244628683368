"""Depth co-alignment (SPEC section 5): one scale and shift per snippet.

`AlignInput` carries the cropped, subsampled snippet depth (already shifted by
the global minimum) that the solve works on; the full-resolution merge lives
in `merge.py`. The `reference` solver is the published objective and Adam
loop, reproduced operation for operation for exact parity (including its
dense `[L * |D|, N, pixels]` layout); faster solvers of the same objective
live beside it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from rd_engine.errors import UserError

log = logging.getLogger("rd_engine")

BORDER = 2  # pixels cropped on each side before the solve (border artefacts)
FACTOR = 10  # subsampling step in each direction for the solve


@dataclass
class AlignGroup:
    """The snippets of one distinct dilation, as the solver sees them."""

    depth: torch.Tensor  # [K, L, P] float32, shifted by the global minimum, cropped and subsampled
    indices: torch.Tensor  # [K, L] frame index of each snippet frame
    weight: int  # how many times the settings list this dilation


def solver_view(depth: torch.Tensor, global_min: torch.Tensor) -> torch.Tensor:
    """`[K, L, H, W]` full-resolution snippet depth -> `[K, L, P]` float32 solver copy.

    The subtraction happens in the snippets' own dtype, as the reference does (after the
    subsampling, which changes no value and touches 1% of the pixels).
    """
    return solver_views([depth], global_min)[0]


def back_to_back(shapes: list[tuple[int, ...]], device=None) -> list[torch.Tensor]:
    """Empty float32 arrays of the given shapes, laid back to back in one buffer, so that a solver
    can use them as one array along the first axis without copying (see `solvers._Flat`)."""
    sizes = [math.prod(sh) for sh in shapes]
    buf = torch.empty(sum(sizes), dtype=torch.float32, device=device)
    return [part.view(sh) for part, sh in zip(buf.split(sizes), shapes)]


def solver_views(depths: list[torch.Tensor], global_min: torch.Tensor) -> list[torch.Tensor]:
    """`solver_view` of each `[K_g, L, H, W]` array, written back to back into one buffer."""
    subs = [d[:, :, BORDER:-BORDER, BORDER:-BORDER][:, :, ::FACTOR, ::FACTOR] for d in depths]
    for d, sub in zip(depths, subs):
        if sub.numel() == 0:
            raise UserError(f"frames of {d.shape[-1]}x{d.shape[-2]} pixels are too small to align (need > 4)")
    out = back_to_back([(s.shape[0], s.shape[1], s.shape[2] * s.shape[3]) for s in subs], depths[0].device)
    for o, s in zip(out, subs):
        o.copy_((s - global_min.to(s.dtype)).reshape(o.shape))  # the subtraction in the snippets' dtype
    return out


def check_finite(depth: torch.Tensor, stage: str) -> None:
    if not torch.isfinite(depth).all():
        raise UserError(f"{stage}: snippet depth contains NaN or Inf (model or precision problem; try --dtype fp32)")


def reference_objective_parts(
    groups: list[AlignGroup], scales: list[torch.Tensor], shifts: list[torch.Tensor], num_frames: int,
    lmda_scale: float = 0.1, lmda_shift: float = 10.0, depth_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference objective (data term, soft constraints) for per-entry parameters.

    Each listed dilation is an entry (a dilation listed twice is two entries
    with their own parameters, as in the reference). Entry `i` owns rows
    `i*L .. (i+1)*L - 1` of the dense `[L * entries, N, P]` arrays.
    """
    device = groups[0].depth.device
    entries = [g for g in groups for _ in range(g.weight)]
    L = entries[0].depth.shape[1]
    P = entries[0].depth.shape[2]
    rows = len(entries) * L
    M = torch.zeros(rows, num_frames, P, device=device)
    M_inv = torch.zeros(rows, num_frames, P, device=device)
    B = torch.zeros(rows, num_frames, P, device=device)
    for i, (g, s, t) in enumerate(zip(entries, scales, shifts)):
        aligned = g.depth * s + t  # [K, L, P]
        r = torch.arange(i * L, (i + 1) * L, device=device)[:, None]
        c = g.indices.T.to(device)
        M[r, c] = aligned.permute(1, 0, 2)
        M_inv[r, c] = aligned.clip(1e-3).permute(1, 0, 2) ** -1
        B[r, c] = 1
    count = B.sum(0)
    mean = M.sum(0) / count
    mean_inv = M_inv.sum(0) / count
    with torch.no_grad():
        target, target_inv = mean.clone(), mean_inv.clone()
        norm = target.abs().mean(-1, keepdim=True)
        norm_inv = target_inv.abs().mean(-1, keepdim=True)
    data = torch.abs((M - target) * B / norm).mean()
    data_inv = torch.abs((M_inv - target_inv) * B / norm_inv).mean()
    data = (data + depth_weight * data_inv).mean()
    prior = sum(
        lmda_scale * (torch.clamp(1 - s, min=0.0) ** 2).mean() + lmda_shift * (t**2).mean()
        for s, t in zip(scales, shifts)
    )
    return data, prior


def align_reference(groups: list[AlignGroup], num_frames: int, iters: int = 2000,
                    progress=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The reference solver: Adam (lr 1e-3, betas (0.5, 0.9)) from s = 1, t = 0.

    Returns (scale [K], shift [K]) per group. The entries of a repeated
    dilation see identical data and gradients, so they stay equal; we return
    the first entry's values.
    """
    device = groups[0].depth.device
    entries = [g for g in groups for _ in range(g.weight)]
    scales = [torch.ones(g.depth.shape[0], 1, 1, device=device, requires_grad=True) for g in entries]
    shifts = [torch.zeros(g.depth.shape[0], 1, 1, device=device, requires_grad=True) for g in entries]
    opt = torch.optim.Adam(scales + shifts, lr=1e-3, betas=(0.5, 0.9))
    losses = []
    for _ in range(iters):
        opt.zero_grad()

        def closure():
            data, prior = reference_objective_parts(groups, scales, shifts, num_frames)
            loss = data + prior
            loss.backward()
            losses.append(loss.item())
            return loss

        opt.step(closure)
        if progress is not None:
            progress(1)
    log.debug("reference co-alignment: loss %.6f -> %.6f", losses[0], losses[-1])
    out, i = [], 0
    for g in groups:
        out.append((scales[i].detach().reshape(-1), shifts[i].detach().reshape(-1)))
        i += g.weight
    return out


def dense_objective_value(groups: list[AlignGroup], params: list[tuple[torch.Tensor, torch.Tensor]],
                          num_frames: int) -> float:
    """The reference objective at per-group parameters, computed the reference's dense way."""
    scales, shifts = [], []
    for g, (s, t) in zip(groups, params):
        for _ in range(g.weight):
            scales.append(s.reshape(-1, 1, 1).float())
            shifts.append(t.reshape(-1, 1, 1).float())
    with torch.no_grad():
        data, prior = reference_objective_parts(groups, scales, shifts, num_frames)
    return float(data + prior)


def objective_value(groups: list[AlignGroup], params: list[tuple[torch.Tensor, torch.Tensor]],
                    num_frames: int) -> float:
    """The reference objective at per-group parameters (sparse: no dense array; equal to the dense value)."""
    from rd_engine.coalign.solvers import objective_value as sparse

    return sparse(groups, params, num_frames)
