"""The reference co-alignment solver: the published objective and Adam loop, operation for operation.

Kept for exact parity with the reference pipeline (the `paper` preset),
including its dense `[L * entries, N, P]` layout; `rd_engine.coalign.fast`
minimizes the same objective to convergence without it.
"""

from __future__ import annotations

import logging

import torch

from rd_engine.coalign.problem import CLIP, LMDA_SCALE, LMDA_SHIFT
from rd_engine.snippets.plan import SnippetGroup

log = logging.getLogger("rd_engine")


def reference_objective_parts(
    groups: list[SnippetGroup],
    scales: list[torch.Tensor],
    shifts: list[torch.Tensor],
    num_frames: int,
    lmda_scale: float = LMDA_SCALE,
    lmda_shift: float = LMDA_SHIFT,
    depth_weight: float = 1.0,
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
        M_inv[r, c] = aligned.clip(CLIP).permute(1, 0, 2) ** -1
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


def align_reference(
    groups: list[SnippetGroup], num_frames: int, iters: int = 2000, progress=None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
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


def dense_objective_value(
    groups: list[SnippetGroup], params: list[tuple[torch.Tensor, torch.Tensor]], num_frames: int
) -> float:
    """The reference objective at per-group parameters, computed the reference's dense way."""
    scales, shifts = [], []
    for g, (s, t) in zip(groups, params):
        for _ in range(g.weight):
            scales.append(s.reshape(-1, 1, 1).float())
            shifts.append(t.reshape(-1, 1, 1).float())
    with torch.no_grad():
        data, prior = reference_objective_parts(groups, scales, shifts, num_frames)
    return float(data + prior)
