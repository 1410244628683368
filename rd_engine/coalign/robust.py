"""The `robust` co-alignment solver, and the robust fit of one snippet that the online aligner chains.

An objective of our own (docs/method.md, "Our co-alignment solvers"). Snippets are affine-invariant
INVERSE depth, so we align them in that space with a Cauchy loss against the
per-frame consensus, no shift prior, no reciprocal of min-shifted values (so
the global minimum cannot couple snippets), and the gauge fixed by
standardizing the consensus (generalized Procrustes).
"""

from __future__ import annotations

import math

import torch

from rd_engine.coalign.problem import CAUCHY_C, MAD_TO_SIGMA, Params
from rd_engine.kernels.average import accumulate_frames
from rd_engine.kernels.scale_shift import irls_moments, irls_weights, solve_scale_shift, weighted_moments
from rd_engine.snippets.plan import SnippetGroup


def _frame_mean(
    values: list[torch.Tensor], groups: list[SnippetGroup], n: int, weights: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """Per frame and pixel, the (weighted) mean of the snippet values covering it: `[N, P]`."""
    P = values[0].shape[-1]
    acc = torch.zeros(n, 1, 1, P, dtype=torch.float32, device=values[0].device)
    cnt = torch.zeros(n, dtype=torch.float32, device=values[0].device)
    if weights is None:
        for v, g in zip(values, groups):
            w = torch.full((v.shape[0],), float(g.weight), device=v.device)
            accumulate_frames(acc, cnt, v[:, :, None, None, :], g.indices, weight=w)
        return acc[:, 0, 0] / cnt[:, None]
    # pixel-wise weights: weighted sums of v*w and w through the same accumulator
    wacc = torch.zeros_like(acc)
    for v, w, g in zip(values, weights, groups):
        gw = torch.full((v.shape[0],), float(g.weight), device=v.device)
        accumulate_frames(acc, cnt, (v * w)[:, :, None, None, :], g.indices, weight=gw)
        accumulate_frames(wacc, cnt, w[:, :, None, None, :], g.indices, weight=gw)
    return acc[:, 0, 0] / wacc[:, 0, 0].clamp_min(1e-12)


def solve_one(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, iters: int = 4, symmetric: bool = True
) -> tuple[float, float]:
    """Robust (Cauchy IRLS) scale and shift of one snippet `x [L, P]` to targets `y` with weights `w`.

    `symmetric`: the final slope is the geometric mean of the regressions of y on x and of x on y
    (reduced major axis, same robust weights). Least squares of y on x shrinks the slope by the
    noise in x; chained from snippet to snippet, as a stream does, that shrinkage compounds into a
    drift of the whole depth scale along the video. The symmetric slope does not shrink.
    """
    m = weighted_moments(x[None], y[None], w[None])[0].double()
    s, t = _fit(m, 1.0, 0.0)
    v = w
    for _ in range(iters):
        r = (s * x + t - y)[w > 0]
        if r.numel() == 0:
            break
        delta = max(CAUCHY_C * MAD_TO_SIGMA * float(r.abs().median()), 1e-6)
        v = w * irls_weights(s * x + t - y, "cauchy", delta)
        m = weighted_moments(x[None], y[None], v[None])[0].double()
        s, t = _fit(m, s, t)
    if symmetric:
        S1, Sx, Sy, Sxx, Sxy = (float(c) for c in m)
        Syy = float(weighted_moments(y[None], y[None], v[None])[0, 3])
        if S1 > 0:
            vx, vy, cxy = Sxx / S1 - (Sx / S1) ** 2, Syy / S1 - (Sy / S1) ** 2, Sxy / S1 - Sx * Sy / S1**2
            if vx > 1e-12 * max(vy, 1e-300) and vy > 0 and cxy != 0:
                s = math.copysign(math.sqrt(vy / vx), cxy)
                t = (Sy - s * Sx) / S1
    return s, t


def _robust_scale(r: torch.Tensor, max_samples: int = 1 << 18) -> float:
    """MAD_TO_SIGMA * median |r| on a strided sample (cheap and deterministic)."""
    flat = r.reshape(-1)
    step = max(1, flat.numel() // max_samples)
    return float(MAD_TO_SIGMA * flat[::step].abs().median().clamp_min(1e-12))


def _sequential_start(groups: list[SnippetGroup], n: int) -> Params:
    """Chain the snippets in the order a stream produces them (by last frame): the first one is
    standardized (median 0, MAD 1), each later one fitted robustly to the running per-frame mean of
    those before it. This gets the slow, video-long modes right, which the Procrustes iterations
    only correct by about one snippet span per iteration (a long video drifts from any local start).
    """
    P = groups[0].depth.shape[-1]
    acc, wsum = torch.zeros(n, P), torch.zeros(n)
    params = [(torch.ones(g.depth.shape[0]), torch.zeros(g.depth.shape[0])) for g in groups]
    order = sorted((int(g.indices[k].max()), gi, k) for gi, g in enumerate(groups) for k in range(g.indices.shape[0]))
    for i, (_, gi, k) in enumerate(order):
        g = groups[gi]
        x, frames = g.depth[k], g.indices[k].long()
        if i == 0:
            med = x.median()
            mad = float((x - med).abs().median().clamp_min(1e-6))
            sk, tk = 1.0 / mad, -float(med) / mad
        else:
            seen = wsum[frames] > 0
            y = acc[frames] / wsum[frames].clamp_min(1e-12)[:, None]
            sk, tk = solve_one(x, y, seen.float()[:, None].expand_as(x).contiguous())
        params[gi][0][k], params[gi][1][k] = sk, tk
        acc.index_add_(0, frames, (x * sk + tk) * g.weight)
        wsum.index_add_(0, frames, torch.full((frames.numel(),), float(g.weight)))
    return params


def solve_robust(
    groups: list[SnippetGroup],
    n: int,
    iters: int = 100,
    fine_iters: int = 5,
    inner: int = 2,
    c: float = CAUCHY_C,
    coarse_pixels: int = 1 << 17,
    init=None,
    progress=None,
) -> Params:
    """Robust generalized-Procrustes alignment in inverse-depth space (see module doc): a sequential
    start (or `init`, per group `(scale, shift)`) and `iters` iterations on a pixel subsample (the
    Cauchy loss in inverse depth is not heavy-tailed, so a subsample's optimum is the full one's),
    then `fine_iters` on all pixels. The result is in the gauge of a standardized consensus.
    """
    step = max(1, sum(g.depth.numel() for g in groups) // coarse_pixels)
    levels = [(groups, iters)]
    if step > 1:
        levels = [([g.with_depth(g.depth[:, :, ::step].contiguous()) for g in groups], iters), (groups, fine_iters)]
    params = _sequential_start(levels[0][0], n) if init is None else [(sc.float(), sh.float()) for sc, sh in init]
    for level, level_iters in levels:
        params = _procrustes(level, n, params, level_iters, inner, c, progress)
    return params


def _procrustes(groups: list[SnippetGroup], n: int, params, iters: int, inner: int, c: float, progress):
    pix_w = None
    for _ in range(iters):
        a = [g.depth * s[:, None, None] + t[:, None, None] for g, (s, t) in zip(groups, params)]
        T = _frame_mean(a, groups, n, pix_w)
        # gauge: the consensus keeps median 0 and MAD 1, so nothing can collapse or drift
        med = T.reshape(-1)[:: max(1, T.numel() // (1 << 18))].median()
        mad = float((T - med).abs().reshape(-1)[:: max(1, T.numel() // (1 << 18))].median().clamp_min(1e-12))
        T = (T - med) / mad
        delta = c * _robust_scale(torch.cat([(x - T[g.indices]).reshape(-1) for x, g in zip(a, groups)]))
        new = []
        for g, (s, t) in zip(groups, params):
            y = T[g.indices]
            for _ in range(inner):
                m = irls_moments(g.depth, y, s, t, kind="cauchy", delta=delta)
                s, t = solve_scale_shift(m, 0.0, rcond=1e-10, fallback_scale=s)
            new.append((s, t))
        params = new
        # pixel weights for the next consensus: down-weight outliers
        pix_w = []
        for g, (s, t) in zip(groups, params):
            r = g.depth * s[:, None, None] + t[:, None, None] - T[g.indices]
            q = r / delta
            pix_w.append(1.0 / (1.0 + q * q))
        if progress is not None:
            progress(1)
    return params


def _fit(m: torch.Tensor, s_prev: float, t_prev: float) -> tuple[float, float]:
    """Least squares `(s, t)` from one snippet's fp64 moments `[5]`; a constant snippet keeps `s_prev` and
    gets the best shift for it; no weight at all keeps `(s_prev, t_prev)`.
    """
    s, t = solve_scale_shift(m[None], 0.0, s_prev, t_prev, 1e-10)
    return float(s[0]), float(t[0])
