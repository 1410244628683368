"""The `fast` co-alignment solver (the reference Adam loop lives in `reference.py`).

The SAME objective as the reference (docs/method.md, "Co-alignment"), minimized to
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
frame block (`rd_engine.coalign.objective.FrameBlocks`), which keeps each block in cache.

Works on the sparse `[K, L, P]` snippet arrays; nothing dense over
`[L * |D|, N, P]` is ever built.
"""

from __future__ import annotations

import logging
import math

import torch

from rd_engine.coalign.objective import FlatProblem, FrameBlocks
from rd_engine.coalign.problem import LMDA_SCALE, LMDA_SHIFT, Params
from rd_engine.kernels.scale_shift import solve_scale_shift
from rd_engine.snippets.plan import SnippetGroup

log = logging.getLogger("rd_engine")

# The systems of the fast solver are well conditioned except for constant snippets; a tight threshold
# keeps the exact solution wherever it exists.
RCOND = 1e-10


def solve_fast(
    groups: list[SnippetGroup],
    n: int,
    coarse_iters: int = 30,
    rounds: int = 4,
    coarse_polish: int = 80,
    full_iters: int = 6,
    polish_iters: int = 15,
    tol: float = 1e-4,
    coarse_pixels: int = 1 << 17,
    progress=None,
) -> Params:
    """Minimize the reference objective: IRLS / Gauss-Newton with monotone acceptance, a search along
    the global scale and L-BFGS on the exact gradient, first on a pixel subsample, then on all
    solver pixels.
    """
    full = FlatProblem.of(groups, n)
    K = full.x.shape[0]
    s, t = torch.ones(K), torch.zeros(K)
    # A cheap start on a pixel subsample. Its optimum is not the full problem's (the reciprocal
    # term is heavy-tailed): only a start.
    step = max(1, int(full.x.numel() // coarse_pixels))
    levels = [(full.coarse(step), rounds, coarse_iters, coarse_polish)] if step > 1 else []
    levels.append(
        (
            full,
            1 if step > 1 else rounds,
            full_iters if step > 1 else coarse_iters,
            polish_iters if step > 1 else coarse_polish,
        )
    )
    it = 0
    for fl, n_rounds, n_iters, n_polish in levels:
        blocks = FrameBlocks(fl)
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


def _irls(blocks: FrameBlocks, s, t, f: float, mom, max_iters: int, tol: float, progress):
    """IRLS / Gauss-Newton steps with targets held fixed; a step is kept only if the true objective drops.

    `f` and `mom` are the objective and step moments at `(s, t)`; returns them at the final point.
    """
    prior_w = blocks.flat.prior_w
    it = 0
    for it in range(max_iters):  # noqa: B007 (the count is returned)
        # the soft constraint on the scale acts only below 1 (its hinge): ridge towards 1 where s < 1
        s_new, t_new = solve_scale_shift(
            mom, LMDA_SCALE * prior_w * (s < 1), 1.0, 0.0, RCOND, ridge_shift=LMDA_SHIFT * prior_w, fallback_scale=s
        )
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


def _scale_search(blocks: FrameBlocks, s, t, f: float, lo: float = -1.0, hi: float = 1.5, evals: int = 14):
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
    def forward(ctx, theta, blocks: FrameBlocks):
        K = blocks.K
        value, (gs, gt), _ = blocks.evaluate(theta[:K].detach(), theta[K:].detach(), grad=True)
        ctx.grad = torch.cat([gs, gt])
        return theta.new_tensor(value)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out * ctx.grad, None


def _polish(blocks: FrameBlocks, s: torch.Tensor, t: torch.Tensor, f: float, iters: int, tol_ref: float | None = None):
    """L-BFGS on the true objective (targets move with the parameters); returns the best point seen
    (or `(s, t, f)` if none beats `f`). Stops when a step changes the objective by less than
    1e-9 of `tol_ref` (default `f`).
    """
    if iters <= 0:
        return s, t, f
    K = s.shape[0]
    theta = torch.cat([s, t]).clone().requires_grad_(True)
    best = [f, theta.detach().clone()]
    opt = torch.optim.LBFGS(
        [theta],
        lr=1,
        max_iter=iters,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-9 * abs(f if tol_ref is None else tol_ref),
    )

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
