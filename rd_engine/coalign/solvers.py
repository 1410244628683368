"""Fast co-alignment solvers (the reference Adam loop lives in `align.py`).

- `fast`: the SAME objective as the reference (SPEC section 5), minimized to
  convergence. Iteratively reweighted Gauss-Newton first: each iteration
  holds the per-frame targets fixed (as the reference's gradient does),
  replaces both L1 terms by their IRLS quadratic majorizers (the reciprocal
  term linearized around the current estimate), adds the soft constraints,
  and solves one 2x2 system per snippet from five moments
  (`kernels.scale_shift`); a step is kept only if it lowers the true
  objective (targets recomputed), else halved. Then L-BFGS on the exact
  gradient, targets moving with the parameters. Coarse to fine: the start
  comes from a pixel subsample, the finish from all solver pixels. The
  objective, its gradient and the IRLS moments are computed frame block by
  frame block (`_FrameBlocks`), which keeps each block in cache.
- `robust`: an objective of our own (README, "Co-alignment"). Snippets are
  affine-invariant INVERSE depth, so we align them in that space with a
  Cauchy loss against the per-frame consensus, no shift prior, no reciprocal
  of min-shifted values (so the global minimum cannot couple snippets), and
  the gauge fixed by standardizing the consensus (generalized Procrustes).

Both work on the sparse `[K, L, P]` snippet arrays; nothing dense over
`[L * |D|, N, P]` is ever built.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from rd_engine.coalign.problem import AlignGroup
from rd_engine.errors import UserError
from rd_engine.kernels.average import accumulate_frames
from rd_engine.kernels.scale_shift import irls_moments, irls_weights, weighted_moments

log = logging.getLogger("rd_engine")

LMDA_SCALE = 0.1  # reference soft constraint on s < 1
LMDA_SHIFT = 10.0  # reference soft constraint on t
CLIP = 1e-3  # reference clip before the reciprocal


def _frame_mean(values: list[torch.Tensor], groups: list[AlignGroup], n: int,
                weights: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Per frame and pixel, the (weighted) mean of the snippet values covering it: `[N, P]`."""
    P = values[0].shape[-1]
    acc = torch.zeros(n, 1, 1, P, dtype=torch.float32, device=values[0].device)
    cnt = torch.zeros(n, dtype=torch.float32, device=values[0].device)
    if weights is None:
        for v, g in zip(values, groups):
            w = torch.full((v.shape[0],), float(g.weight), device=v.device)
            accumulate_frames(acc, cnt, v[:, :, None, None, :], g.indices, weight=w)
        return (acc[:, 0, 0] / cnt[:, None])
    # pixel-wise weights: weighted sums of v*w and w through the same accumulator
    wacc = torch.zeros_like(acc)
    for v, w, g in zip(values, weights, groups):
        gw = torch.full((v.shape[0],), float(g.weight), device=v.device)
        accumulate_frames(acc, cnt, (v * w)[:, :, None, None, :], g.indices, weight=gw)
        accumulate_frames(wacc, cnt, w[:, :, None, None, :], g.indices, weight=gw)
    return acc[:, 0, 0] / wacc[:, 0, 0].clamp_min(1e-12)


def _joined(arrays: list[torch.Tensor]) -> torch.Tensor:
    """`torch.cat(arrays)`, as a view without a copy when they already lie back to back in one buffer
    (`align.back_to_back`, as the pipeline and `align.solver_views` lay out the solver's copies)."""
    a0 = arrays[0]
    end = a0.data_ptr()
    for a in arrays:
        if not (a.is_contiguous() and a.dtype == a0.dtype and a.device == a0.device and a.shape[1:] == a0.shape[1:]
                and a.data_ptr() == end and a.untyped_storage().data_ptr() == a0.untyped_storage().data_ptr()):
            return torch.cat(arrays)
        end += a.numel() * a.element_size()
    shape = (sum(a.shape[0] for a in arrays), *a0.shape[1:])
    return a0.as_strided(shape, a0.stride())


@dataclass
class _Flat:
    """All groups concatenated along the snippet axis, so each pass is a handful of big ops."""

    x: torch.Tensor  # [K, L, P] float32
    idx: torch.Tensor  # [K, L] frame of each snippet frame
    w: torch.Tensor  # [K] weight of the snippet's dilation (2 = listed twice)
    prior_w: torch.Tensor  # [K] weight / (snippets in its dilation): the priors are means per dilation
    sizes: list[int]
    n: int
    denom: float  # elements of the reference's dense [L * entries, N, P] mean

    @classmethod
    def of(cls, groups: list[AlignGroup], n: int) -> "_Flat":
        L, P = groups[0].depth.shape[1:]
        sizes = [g.depth.shape[0] for g in groups]
        w = torch.cat([torch.full((k,), float(g.weight)) for g, k in zip(groups, sizes)])
        pw = torch.cat([torch.full((k,), float(g.weight) / k) for g, k in zip(groups, sizes)])
        rows = L * sum(g.weight for g in groups)
        return cls(_joined([g.depth.float() for g in groups]), torch.cat([g.indices for g in groups]).long(),
                   w, pw, sizes, n, float(rows * n * P))

    def coarse(self, step: int) -> "_Flat":
        """The same problem on every `step`-th solver pixel (the objective is a mean over pixels)."""
        x = self.x[:, :, ::step].contiguous()
        return _Flat(x, self.idx, self.w, self.prior_w, self.sizes, self.n, self.denom * x.shape[-1] / self.x.shape[-1])

    def split(self, s: torch.Tensor, t: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(s.split(self.sizes), t.split(self.sizes)))

    def prior(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (self.prior_w * (LMDA_SCALE * torch.clamp(1 - s, min=0) ** 2 + LMDA_SHIFT * t**2)).sum()


class _FrameBlocks:
    """The reference objective and its exact gradient, computed frame block by frame block.

    Everything in the data term except the parameters is local to a frame (its
    target, its normalizer), so a block of frames with all the snippet frames
    covering them is a self-contained piece: ~1 MB that stays in cache through
    the ~30 elementwise passes of value and gradient. Hand-written backward
    (checked against autograd in the tests), ~7x faster than autograd on the
    `[K, L, P]` arrays. Rows are gathered per block: no frame-major copy.
    """

    def __init__(self, flat: _Flat, block_elems: int = 1 << 18):
        K, L, P = flat.x.shape
        n = flat.n
        self.flat, self.K, self.P, self.n = flat, K, P, n
        self.rows = flat.x.reshape(K * L, P)
        frame = flat.idx.reshape(-1)
        order = torch.sort(frame, stable=True).indices
        per_frame = torch.bincount(frame, minlength=n)
        M = int(per_frame.max())
        start = torch.zeros(n + 1, dtype=torch.long)
        start[1:] = per_frame.cumsum(0)
        slot = torch.arange(K * L) - start[frame[order]]
        f = frame[order]
        self.entry = torch.zeros(n, M, dtype=torch.long)  # row of rows (padding: row 0, weight 0)
        self.entry[f, slot] = order
        self.snip = self.entry // L
        self.ew = torch.zeros(n, M)
        self.ew[f, slot] = flat.w[order // L]
        self.wn = self.ew / self.ew.sum(1, keepdim=True)
        self.block = max(1, block_elems // (M * P))

    def evaluate(self, s: torch.Tensor, t: torch.Tensor, grad: bool = False, moments: bool = False):
        """The objective at `(s, t)`; optionally its gradient `(d/ds, d/dt)` and the moments `[K, 5]`
        of one fixed-target IRLS / Gauss-Newton step from there (see :func:`_irls`).

        Returns `(value, grad or None, moments or None)`.
        """
        P, fl = self.P, self.flat
        gs, gt = (torch.zeros(self.K), torch.zeros(self.K)) if grad else (None, None)
        mom = torch.zeros(self.K, 5) if moments else None
        data = torch.zeros(())
        for f0 in range(0, self.n, self.block):
            f1 = min(self.n, f0 + self.block)
            X = self.rows.index_select(0, self.entry[f0:f1].reshape(-1)).view(f1 - f0, -1, P)  # [b, M, P]
            k = self.snip[f0:f1]
            w, wn = self.ew[f0:f1, :, None], self.wn[f0:f1, :, None]
            a = torch.addcmul(t[k][..., None], X, s[k][..., None])
            u = a.clamp_min(CLIP).reciprocal_()
            T, Ti = (a * wn).sum(1, keepdim=True), (u * wn).sum(1, keepdim=True)  # targets [b, 1, P]
            r, ri = a - T, u - Ti
            n1, n2 = T.abs().mean(-1, keepdim=True), Ti.abs().mean(-1, keepdim=True)  # normalizers [b, 1, 1]
            ar, ari = r.abs(), ri.abs()
            S1 = (ar.sum(-1, keepdim=True) * w).sum(1, keepdim=True)
            S2 = (ari.sum(-1, keepdim=True) * w).sum(1, keepdim=True)
            data += (S1 / n1).sum() + (S2 / n2).sum()
            if moments:
                # |r| <= r^2 / (2 |r0|) + |r0| / 2 for both terms; the reciprocal one linearized
                # around a (1/a' ~ 1/a - (a' - a) / a^2); targets and normalizers held fixed
                w1 = (w / (fl.denom * n1)) / (2 * torch.maximum(ar, 1e-6 * n1))
                u2 = u * u  # 1 / max(a, CLIP)^2
                w2 = (a > CLIP) * (w / (2 * fl.denom * n2)) * u2.square_() / torch.maximum(ari, 1e-6 * n2)
                y2 = a + a * a * ri
                W = w1 + w2
                Y = (w1 * T + w2 * y2) / W.clamp_min(1e-30)
                m = weighted_moments(X.view(-1, 1, P), Y.view(-1, 1, P), W.view(-1, 1, P))
                mom.index_add_(0, k.reshape(-1), m)
            if grad:
                # d data / d a: the direct |a - T| term, plus what flows back through T and its normalizer
                sg, sgi = r.sign_(), ri.sign_()
                H1 = -(sg * w).sum(1, keepdim=True) / n1 - (S1 / (n1 * n1 * P)) * T.sign()
                H2 = -(sgi * w).sum(1, keepdim=True) / n2 - (S2 / (n2 * n2 * P)) * Ti.sign()
                gu = (sgi * (w / n2)).add_(H2 * wn).mul_(u).mul_(u).mul_(a > CLIP)  # d/du times -du/da
                ga = (sg * (w / n1)).add_(H1 * wn).sub_(gu)
                gs.index_add_(0, k.reshape(-1), torch.linalg.vecdot(ga, X).reshape(-1))
                gt.index_add_(0, k.reshape(-1), ga.sum(-1).reshape(-1))
        value = float(data) / fl.denom + float(fl.prior(s, t))
        if grad:
            gs = gs / fl.denom - 2 * LMDA_SCALE * fl.prior_w * torch.clamp(1 - s, min=0)
            gt = gt / fl.denom + 2 * LMDA_SHIFT * fl.prior_w * t
        return value, ((gs, gt) if grad else None), mom


def _solve_2x2(m: torch.Tensor, lam_s: torch.Tensor, lam_t: torch.Tensor, s_prior_active: torch.Tensor,
               s_fallback: torch.Tensor):
    """Per snippet: argmin sum w (s x + t - y)^2 + lam_s [active] (1 - s)^2 + lam_t t^2.

    A snippet whose system is singular (constant or all-zero depth, zero weight)
    keeps `s_fallback` and gets the best shift for it.
    """
    S1, Sx, Sy, Sxx, Sxy = m.double().unbind(-1)
    ls = lam_s.double() * s_prior_active.double()
    lt = lam_t.double()
    a11, a12, a22 = Sxx + ls, Sx, S1 + lt
    b1, b2 = Sxy + ls, Sy
    det = a11 * a22 - a12 * a12
    ok = det > 1e-10 * (a11 * a22).clamp_min(1e-300)
    safe = torch.where(ok, det, torch.ones_like(det))
    sf = s_fallback.double()
    s = torch.where(ok, (b1 * a22 - a12 * b2) / safe, sf)
    t = torch.where(ok, (a11 * b2 - a12 * b1) / safe, (b2 - a12 * sf) / a22.clamp_min(1e-300))
    return s.float(), t.float()


def solve_fast(groups: list[AlignGroup], n: int, coarse_iters: int = 30, rounds: int = 4, coarse_polish: int = 80,
               full_iters: int = 6, polish_iters: int = 15, tol: float = 1e-4, coarse_pixels: int = 1 << 17,
               progress=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Minimize the reference objective: IRLS / Gauss-Newton with monotone acceptance, a search along
    the global scale and L-BFGS on the exact gradient, first on a pixel subsample, then on all
    solver pixels."""
    full = _Flat.of(groups, n)
    K = full.x.shape[0]
    s, t = torch.ones(K), torch.zeros(K)
    # A cheap start on a pixel subsample. Its optimum is not the full problem's (the reciprocal
    # term is heavy-tailed): only a start.
    step = max(1, int(full.x.numel() // coarse_pixels))
    levels = [(full.coarse(step), rounds, coarse_iters, coarse_polish)] if step > 1 else []
    levels.append((full, 1 if step > 1 else rounds, full_iters if step > 1 else coarse_iters,
                   polish_iters if step > 1 else coarse_polish))
    it = 0
    for fl, n_rounds, n_iters, n_polish in levels:
        blocks = _FrameBlocks(fl)
        f, _, mom = blocks.evaluate(s, t, moments=True)
        for _round in range(n_rounds):
            s, t, f, mom, k = _irls(blocks, s, t, f, mom, n_iters, tol, progress)
            it += k
            if n_rounds == 1:
                break
            # Per-snippet steps hold the targets fixed (as the reference's gradient does), which
            # leaves the objective's shallow valley along a global scale unexplored; search it.
            s, t, f_new = _scale_search(blocks, s, t, f)
            if f_new >= f * (1 - tol):
                break
            f, _, mom = blocks.evaluate(s, t, moments=True)
        # what descent remains lies along directions that move the targets too: follow the true gradient
        s, t, f = _polish(blocks, s, t, f, n_polish)
    log.debug("fast co-alignment: objective %.6g (%d IRLS iterations, pixel step %d)", f, it, step)
    return full.split(s, t)


def _irls(blocks: "_FrameBlocks", s, t, f: float, mom, max_iters: int, tol: float, progress):
    """IRLS / Gauss-Newton steps with targets held fixed; a step is kept only if the true objective drops.

    `f` and `mom` are the objective and step moments at `(s, t)`; returns them at the final point.
    """
    prior_w = blocks.flat.prior_w
    it = 0
    for it in range(max_iters):
        s_new, t_new = _solve_2x2(mom, LMDA_SCALE * prior_w, LMDA_SHIFT * prior_w, s < 1, s)
        step, accepted = 1.0, False
        for _ in range(6):
            sc, tc = s + step * (s_new - s), t + step * (t_new - t)
            fc, _, mc = blocks.evaluate(sc, tc, moments=True)
            if math.isfinite(fc) and fc <= f:
                accepted = True
                break
            step *= 0.5
        if progress is not None:
            progress(1)
        if not accepted:
            break
        rel = (f - fc) / max(abs(f), 1e-30)
        s, t, f, mom = sc, tc, fc, mc
        if rel < tol:
            break
    return s, t, f, mom, it + 1


def _scale_search(blocks: "_FrameBlocks", s, t, f: float, lo: float = -1.0, hi: float = 1.5, evals: int = 14):
    """Golden-section search of F(c * s, t) over log c in [lo, hi]; returns the better of that and (s, t)."""
    g = (math.sqrt(5) - 1) / 2

    def F(u: float) -> float:
        v = blocks.evaluate(s * math.exp(u), t)[0]
        return v if math.isfinite(v) else float("inf")

    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = F(c), F(d)
    for _ in range(evals):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = F(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = F(d)
    u, fu = (c, fc) if fc < fd else (d, fd)
    if fu < f:
        return s * math.exp(u), t, fu
    return s, t, f


class _BlockObjective(torch.autograd.Function):
    """Lets torch's L-BFGS (strong-Wolfe line search) drive the hand-written gradient."""

    @staticmethod
    def forward(ctx, theta, blocks: _FrameBlocks):
        K = blocks.K
        value, (gs, gt), _ = blocks.evaluate(theta[:K].detach(), theta[K:].detach(), grad=True)
        ctx.grad = torch.cat([gs, gt])
        return theta.new_tensor(value)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * ctx.grad, None


def _polish(blocks: _FrameBlocks, s: torch.Tensor, t: torch.Tensor, f: float, iters: int,
            tol_ref: float | None = None):
    """L-BFGS on the true objective (targets move with the parameters); returns the best point seen
    (or `(s, t, f)` if none beats `f`). Stops when a step changes the objective by less than
    1e-9 of `tol_ref` (default `f`)."""
    if iters <= 0:
        return s, t, f
    K = s.shape[0]
    theta = torch.cat([s, t]).clone().requires_grad_(True)
    best = [f, theta.detach().clone()]
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-9 * abs(f if tol_ref is None else tol_ref))

    def closure():
        opt.zero_grad()
        val = _BlockObjective.apply(theta, blocks)
        val.backward()
        v = val.item()
        if math.isfinite(v) and v < best[0]:
            best[0], best[1] = v, theta.detach().clone()
        return val

    with torch.enable_grad():
        opt.step(closure)
    return best[1][:K], best[1][K:], best[0]


def solve_one(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, iters: int = 4,
              symmetric: bool = True) -> tuple[float, float]:
    """Robust (Cauchy IRLS) scale and shift of one snippet `x [L, P]` to targets `y` with weights `w`.

    `symmetric`: the final slope is the geometric mean of the regressions of y on x and of x on y
    (reduced major axis, same robust weights). Least squares of y on x shrinks the slope by the
    noise in x; chained from snippet to snippet, as a stream does, that shrinkage compounds into a
    drift of the whole depth scale along the video. The symmetric slope does not shrink.
    """
    m = weighted_moments(x[None], y[None], w[None])[0].double()
    s, t = _ls_2x2(m, 1.0, 0.0)
    v = w
    for _ in range(iters):
        r = (s * x + t - y)[w > 0]
        if r.numel() == 0:
            break
        delta = max(2.385 * 1.4826 * float(r.abs().median()), 1e-6)
        v = w * irls_weights(s * x + t - y, "cauchy", delta)
        m = weighted_moments(x[None], y[None], v[None])[0].double()
        s, t = _ls_2x2(m, s, t)
    if symmetric:
        S1, Sx, Sy, Sxx, Sxy = (float(c) for c in m)
        Syy = float(weighted_moments(y[None], y[None], v[None])[0, 3])
        if S1 > 0:
            vx, vy, cxy = Sxx / S1 - (Sx / S1) ** 2, Syy / S1 - (Sy / S1) ** 2, Sxy / S1 - Sx * Sy / S1**2
            if vx > 1e-12 * max(vy, 1e-300) and vy > 0 and cxy != 0:
                s = math.copysign(math.sqrt(vy / vx), cxy)
                t = (Sy - s * Sx) / S1
    return s, t


def _ls_2x2(m: torch.Tensor, s_prev: float, t_prev: float) -> tuple[float, float]:
    S1, Sx, Sy, Sxx, Sxy = (float(v) for v in m)
    det = Sxx * S1 - Sx * Sx
    if S1 <= 0:
        return s_prev, t_prev
    if det <= 1e-10 * max(Sxx * S1, 1e-300):  # constant snippet: keep the scale, fit the shift
        return s_prev, (Sy - Sx * s_prev) / S1
    return (Sxy * S1 - Sx * Sy) / det, (Sxx * Sy - Sx * Sxy) / det


def _robust_scale(r: torch.Tensor, max_samples: int = 1 << 18) -> float:
    """1.4826 * median |r| on a strided sample (cheap and deterministic)."""
    flat = r.reshape(-1)
    step = max(1, flat.numel() // max_samples)
    return float(1.4826 * flat[::step].abs().median().clamp_min(1e-12))


def _sequential_start(groups: list[AlignGroup], n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Chain the snippets in the order a stream produces them (by last frame): the first one is
    standardized (median 0, MAD 1), each later one fitted robustly to the running per-frame mean of
    those before it. This gets the slow, video-long modes right, which the Procrustes iterations
    only correct by about one snippet span per iteration (a long video drifts from any local start)."""
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


def solve_robust(groups: list[AlignGroup], n: int, iters: int = 100, fine_iters: int = 5, inner: int = 2,
                 c: float = 2.385, coarse_pixels: int = 1 << 17, init=None, progress=None
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Robust generalized-Procrustes alignment in inverse-depth space (see module doc): a sequential
    start (or `init`, per group `(scale, shift)`) and `iters` iterations on a pixel subsample (the
    Cauchy loss in inverse depth is not heavy-tailed, so a subsample's optimum is the full one's),
    then `fine_iters` on all pixels. The result is in the gauge of a standardized consensus."""
    step = max(1, sum(g.depth.numel() for g in groups) // coarse_pixels)
    levels = [(groups, iters)]
    if step > 1:
        levels = [([AlignGroup(g.depth[:, :, ::step].contiguous(), g.indices, g.weight) for g in groups], iters),
                  (groups, fine_iters)]
    params = _sequential_start(levels[0][0], n) if init is None else [(sc.float(), sh.float()) for sc, sh in init]
    for level, level_iters in levels:
        params = _procrustes(level, n, params, level_iters, inner, c, progress)
    return params


def _procrustes(groups: list[AlignGroup], n: int, params, iters: int, inner: int, c: float, progress):
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
            zero = torch.zeros(s.shape[0])
            for _ in range(inner):
                m = irls_moments(g.depth, y, s, t, kind="cauchy", delta=delta)
                s, t = _solve_2x2(m, zero, zero, zero.bool(), s)
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


def objective_value(groups: list[AlignGroup], params: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> float:
    """The reference objective (SPEC section 5) at per-group (scale [K], shift [K])."""
    s = torch.cat([p[0].reshape(-1).float() for p in params])
    t = torch.cat([p[1].reshape(-1).float() for p in params])
    with torch.no_grad():  # block by block: memory does not grow with the video
        return _FrameBlocks(_Flat.of(groups, n)).evaluate(s, t)[0]


def solve(groups: list[AlignGroup], n: int, kind: str, progress=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Solve per-snippet (scale, shift) with the named solver ("fast" or "robust")."""
    for g in groups:
        if not torch.isfinite(g.depth).all():
            raise UserError("co-alignment: snippet depth contains NaN or Inf (model or precision problem; "
                            "try --dtype fp32)")
    if kind == "fast":
        return solve_fast(groups, n, progress=progress)
    if kind == "robust":
        return solve_robust(groups, n, progress=progress)
    raise UserError(f"unknown co-alignment solver {kind!r}")
