"""Full-resolution merge (docs/method.md, "Co-alignment") and re-normalization.

The merge is done chunk of frames by chunk of frames: for each chunk, the
snippets that cover it are fetched in batches (from memory, or from the
pipeline's snippet store), corrected by their scale and shift and averaged
with the kernels of `kernels.average`.

Two kinds of average:

* the mean (the method's, docs/method.md; every solver but `robust`): per frame, the weighted mean of
  the aligned snippet frames covering it;
* the robust mean (with `--align robust`): starting from that mean,
  `ROBUST_PASSES` Cauchy-reweighted pass(es) per pixel (a one-step
  M-estimate). An entry whose value at a pixel disagrees with the others (a snippet where the model failed: a
  reflection, a wrong layer, a blob of garbage) stops pulling that pixel,
  while entries that agree count as in the mean. The Cauchy scale of frame
  `f` is `CAUCHY_C * MAD_TO_SIGMA * median |residual|` over the solver pixels of the
  entries covering it (`merge_deltas`); a frame covered by fewer than
  `MIN_ENTRIES` entries keeps the mean (two values that disagree give no
  majority to follow).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from rd_engine.coalign.problem import CAUCHY_C, MAD_TO_SIGMA, Params
from rd_engine.kernels.average import accumulate_frames, accumulate_frames_robust
from rd_engine.snippets.plan import SnippetGroup

# one reweighting step from the mean: a second one gained 2-6 % AbsRel on the harness for another full
# pass over every snippet
ROBUST_PASSES = 1
MIN_ENTRIES = 3

# fetch(group, first, last) -> depth [last - first, L, H, W] of snippets first..last-1 of a group
Fetch = Callable[[int, int, int], torch.Tensor]

# Confidence (docs/robotics.md, "Confidence"): per pixel, `1 / (1 + spread / CONFIDENCE_SPREAD)`, where
# `spread` is the weighted standard deviation of the aligned snippet entries covering the pixel around
# the merged value, in the units of the output (a video's inverse depth spans [-1, 1]): 0.5 where the
# entries disagree by 1 % of the video's range of inverse depth, 1 where they agree exactly. Pixels of
# frames covered by a single entry have no spread to measure: confidence 0.
CONFIDENCE_SPREAD = 0.02


def confidence_from_spread(spread: torch.Tensor, entries: torch.Tensor) -> torch.Tensor:
    """Confidence `[F, H, W]` from the spread `[F, H, W]` (output units) and entries per frame `[F]`."""
    conf = 1.0 / (1.0 + spread / CONFIDENCE_SPREAD)
    return torch.where(entries.to(conf.device).view(-1, 1, 1) >= 2, conf, torch.zeros_like(conf))


def entries_per_frame(indices: list[torch.Tensor], f0: int, f1: int) -> torch.Tensor:
    """How many snippet frames (all groups, each counted once) cover each frame of `[f0, f1)`."""
    cnt = torch.zeros(f1 - f0, dtype=torch.long)
    for idx in indices:
        flat = idx.reshape(-1).long()
        flat = flat[(flat >= f0) & (flat < f1)] - f0
        cnt += torch.bincount(flat, minlength=f1 - f0)
    return cnt


def merge_deltas(
    groups: list[SnippetGroup], params: Params, num_frames: int, c: float = CAUCHY_C, block_elems: int = 1 << 22
) -> torch.Tensor:
    """Per-frame Cauchy scales `[N]` for the robust merge, from the solver's copies.

    `groups`: per distinct dilation, holding the solver copies `depth [K, L, P]`; `params` as
    solved on them. A frame's scale is
    `c * MAD_TO_SIGMA * median |s x + t - mean|` over its entries and pixels; `inf` (the plain mean) for
    frames with fewer than `MIN_ENTRIES` entries or no spread.
    """
    P = groups[0].depth.shape[-1]
    acc = torch.zeros(num_frames, 1, 1, P)
    cnt = torch.zeros(num_frames)
    for g, (s, t) in zip(groups, params):
        accumulate_frames(
            acc,
            cnt,
            g.depth[:, :, None, None, :],
            g.indices,
            scale=s.float(),
            shift=t.float(),
            weight=torch.full((g.depth.shape[0],), float(g.weight)),
        )
    mean = acc[:, 0, 0] / cnt.clamp_min(1e-30)[:, None]
    del acc
    # every snippet frame as a row: its group, its row in the group, its frame, its affine
    L = groups[0].depth.shape[1]
    gid = torch.cat([torch.full((g.indices.numel(),), i) for i, g in enumerate(groups)])
    lrow = torch.cat([torch.arange(g.indices.numel()) for g in groups])
    frame = torch.cat([g.indices.reshape(-1) for g in groups]).long()
    sc = torch.cat([s.float().repeat_interleave(L) for s, _ in params])
    sh = torch.cat([t.float().repeat_interleave(L) for _, t in params])
    rows = [g.depth.reshape(-1, P) for g in groups]
    order = torch.sort(frame, stable=True).indices
    per_frame = torch.bincount(frame, minlength=num_frames)
    start = torch.zeros(num_frames + 1, dtype=torch.long)
    start[1:] = per_frame.cumsum(0)
    M = max(1, int(per_frame.max()))
    delta = torch.full((num_frames,), math.inf)
    step = max(1, block_elems // (M * P))
    for f0 in range(0, num_frames, step):  # frame blocks: nothing of the size of all snippets is built
        f1 = min(num_frames, f0 + step)
        sel = order[start[f0] : start[f1]]
        vals = torch.empty(sel.numel(), P)
        for i, r in enumerate(rows):
            m = (gid[sel] == i).nonzero().squeeze(1)
            vals[m] = r.index_select(0, lrow[sel[m]]).float()
        vals = (vals * sc[sel, None] + sh[sel, None] - mean[frame[sel]]).abs_()
        pad = torch.full((f1 - f0, M, P), math.nan)
        slot = torch.arange(sel.numel()) - (start[frame[sel]] - start[f0])
        pad[frame[sel] - f0, slot] = vals
        delta[f0:f1] = cauchy_scales(pad.reshape(f1 - f0, -1).nanmedian(1).values, per_frame[f0:f1], c)
    return delta


def cauchy_scales(median_abs: torch.Tensor, entries: torch.Tensor, c: float = CAUCHY_C) -> torch.Tensor:
    """Per frame: `c * MAD_TO_SIGMA * median |residual|` (a robust sigma), `inf` (the plain mean) where
    fewer than `MIN_ENTRIES` entries cover the frame or the entries agree exactly.
    """
    d = c * MAD_TO_SIGMA * median_abs.float()
    ok = (entries >= MIN_ENTRIES) & (d > 0) & torch.isfinite(d)
    return torch.where(ok, d, torch.full_like(d, math.inf))


def _batches(
    fetch: Fetch,
    indices: list[torch.Tensor],
    weights: list[int],
    params,
    global_min: torch.Tensor,
    f0: int,
    f1: int,
    device: torch.device,
    batch: int,
) -> Iterator[tuple]:
    """The snippets covering frames `[f0, f1)`, `batch` at a time: `(depth [k, L, 1, H, W], index
    relative to f0, scale, shift with the minimum folded in, weight)` on `device`.
    """
    gm = global_min.to(device=device, dtype=torch.float32)
    for gi, (idx, wgt, (sc, sh)) in enumerate(zip(indices, weights, params)):
        # snippets are ordered by first frame, so those covering a range of frames are a range too
        hit = torch.nonzero((idx[:, 0] < f1) & (idx[:, -1] >= f0)).flatten()
        if hit.numel() == 0:
            continue
        k0, k1 = int(hit[0]), int(hit[-1]) + 1
        for a in range(k0, k1, batch):
            b = min(k1, a + batch)
            s_k = sc[a:b].to(device, torch.float32)
            # s (x - m) + t == s x + (t - s m): the minimum folds into the shift, so the snippets
            # are read once, in their own dtype (the reference first rounds x - m to that dtype)
            yield (
                fetch(gi, a, b).to(device).unsqueeze(2),
                (idx[a:b] - f0).to(device),
                s_k,
                sh[a:b].to(device, torch.float32) - s_k * gm,
                torch.full((b - a,), float(wgt), device=device),
            )


def merge_frames(
    fetch: Fetch,
    indices: list[torch.Tensor],
    weights: list[int],
    params: Params,
    global_min: torch.Tensor,
    f0: int,
    f1: int,
    hw: tuple[int, int],
    device: torch.device,
    delta: torch.Tensor | None = None,
    batch: int = 16,
    spread: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Frames `[f0, f1)` of the merged video, `[f1 - f0, H, W]` float32 on `device`.

    `delta`: per-frame Cauchy scales of these frames for the robust mean (see module doc), or
    None for the mean. `spread`: also return, per pixel, the weighted standard deviation of the
    aligned entries around the merged value (the confidence's measure, in the merge's units).
    """
    h, w = hw
    acc = torch.zeros(f1 - f0, 1, h, w, dtype=torch.float32, device=device)
    cnt = torch.zeros(f1 - f0, dtype=torch.float32, device=device)
    for x, idx, s, t, wt in _batches(fetch, indices, weights, params, global_min, f0, f1, device, batch):
        accumulate_frames(acc, cnt, x, idx, scale=s, shift=t, weight=wt)
    mean = acc.div_(cnt.view(-1, 1, 1, 1))
    if delta is None:
        out = mean[:, 0]
    else:
        out = robust_mean(
            lambda: _batches(fetch, indices, weights, params, global_min, f0, f1, device, batch), mean, delta
        )[:, 0]
    if not spread:
        return out
    # a pass of its own around the merged value (E[a^2] - m^2 cancels to nothing in fp32 at these spreads)
    sq = torch.zeros(f1 - f0, h, w, dtype=torch.float32, device=device)
    for x, idx, s, t, wt in _batches(fetch, indices, weights, params, global_min, f0, f1, device, batch):
        flat = idx.reshape(-1)
        inside = (flat >= 0) & (flat < f1 - f0)
        a = (x[:, :, 0].float() * s.view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1)).reshape(-1, h, w)[inside]
        wa = wt.repeat_interleave(idx.shape[1])[inside].view(-1, 1, 1)
        sq.index_add_(0, flat[inside], (a - out[flat[inside]]).square_().mul_(wa))
    return out, sq.div_(cnt.view(-1, 1, 1)).sqrt_()


def robust_mean(batches: Callable[[], Iterator[tuple]], mean: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """`ROBUST_PASSES` Cauchy-reweighted passes from `mean [F, C, H, W]` (fp32, contiguous).

    `batches()` yields, on every call, the entries as `(x [k, L, C, H, W], index [k, L] into the F
    frames, scale, shift, weight)`; `delta [F]` the per-frame scales (`inf`: the frame keeps the mean).
    """
    delta = delta.to(device=mean.device, dtype=torch.float32)
    if not bool(torch.isfinite(delta).any()):
        return mean
    center = mean
    for _ in range(ROBUST_PASSES):
        num = torch.zeros_like(center)
        den = torch.zeros_like(center)
        for x, idx, s, t, wt in batches():
            accumulate_frames_robust(num, den, x, idx, center, delta, scale=s, shift=t, weight=wt)
        # a pixel where every entry lies hopelessly far out (weights underflow to 0) keeps the mean
        center = torch.where(den > 0, num.div_(den), mean)
    return center


def merge_aligned(
    groups: list[SnippetGroup],
    params: Params,
    global_min: torch.Tensor,
    num_frames: int,
    delta: torch.Tensor | None = None,
    chunk: int = 16,
) -> torch.Tensor:
    """Per frame, the (robust) mean of all aligned snippet frames covering it.

    Args:
        groups: per distinct dilation, holding the full-resolution snippet depth `[K, L, H, W]`.
        params: per group `(scale [K], shift [K])`, solved on depth minus `global_min`.
        global_min: the minimum over all snippets, subtracted before the affine as in the solve.
        num_frames: N.
        delta: `[N]` Cauchy scales for the robust mean (`merge_deltas`), or None for the mean.
        chunk: frames merged at a time (the robust mean keeps three such buffers).

    Returns:
        `[N, H, W]` float32 on the snippets' device.
    """
    depth0 = groups[0].depth
    device = depth0.device
    H, W = depth0.shape[-2:]
    out = torch.empty(num_frames, H, W, dtype=torch.float32, device=device)
    indices = [g.indices for g in groups]
    weights = [g.weight for g in groups]
    for f0 in range(0, num_frames, chunk):
        f1 = min(num_frames, f0 + chunk)
        out[f0:f1] = merge_frames(
            lambda gi, a, b: groups[gi].depth[a:b],
            indices,
            weights,
            params,
            global_min,
            f0,
            f1,
            (H, W),
            device,
            None if delta is None else delta[f0:f1],
        )
    return out


def renormalize(depth: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """Map a whole video to [-1, 1] by its own min and max: ``(x - min) / (max - min) * 2 - 1``.

    The same operations as the reference, in the same order (bit-identical
    result); ``inplace=True`` overwrites ``depth`` instead of allocating a copy.
    """
    lo, hi = torch.aminmax(depth)
    out = depth if inplace else depth.clone()
    return out.sub_(lo).div_(hi - lo).mul_(2.0).sub_(1.0)
