"""Fast co-alignment solvers (the reference Adam loop lives in `align.py`).

- `fast`: the SAME objective as the reference (SPEC section 5), minimized to
  convergence by iteratively reweighted Gauss-Newton. Each iteration holds the
  per-frame targets fixed (as the reference's gradient does), replaces both
  L1 terms by their IRLS quadratic majorizers (the reciprocal term linearized
  around the current estimate), adds the soft constraints, and solves one 2x2
  system per snippet from five moments (`kernels.scale_shift`). A step is
  accepted only if it lowers the true objective (targets recomputed), else it
  is halved: the objective decreases monotonically and never ends above its
  value at the start (s = 1, t = 0), where the reference also starts.
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

import torch

from .align import AlignGroup
from .errors import UserError
from .kernels.average import accumulate_frames
from .kernels.scale_shift import irls_moments, weighted_moments

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


def _dense_rows(groups: list[AlignGroup]) -> int:
    return groups[0].depth.shape[1] * sum(g.weight for g in groups)


class _Objective:
    """The reference objective evaluated sparsely (equal to the dense formula)."""

    def __init__(self, groups: list[AlignGroup], n: int):
        self.groups, self.n = groups, n
        self.P = groups[0].depth.shape[-1]
        self.denom = float(_dense_rows(groups) * n * self.P)  # elements of the dense mean

    def terms(self, params):
        g_, n = self.groups, self.n
        a = [g.depth * s[:, None, None] + t[:, None, None] for g, (s, t) in zip(g_, params)]
        inv = [x.clamp_min(CLIP).reciprocal() for x in a]
        T = _frame_mean(a, g_, n)
        Ti = _frame_mean(inv, g_, n)
        norm = T.abs().mean(-1)
        norm_i = Ti.abs().mean(-1)
        return a, inv, T, Ti, norm, norm_i

    def value(self, params, terms=None) -> float:
        a, inv, T, Ti, norm, norm_i = terms if terms is not None else self.terms(params)
        data = 0.0
        prior = 0.0
        for g, x, xi, (s, t) in zip(self.groups, a, inv, params):
            idx = g.indices
            r1 = (x - T[idx]).abs() / norm[idx][..., None]
            r2 = (xi - Ti[idx]).abs() / norm_i[idx][..., None]
            data += g.weight * float(r1.sum() + r2.sum())
            prior += g.weight * float(LMDA_SCALE * (torch.clamp(1 - s, min=0) ** 2).mean() + LMDA_SHIFT * (t**2).mean())
        return data / self.denom + prior


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


def solve_fast(groups: list[AlignGroup], n: int, max_iters: int = 300, tol: float = 1e-7,
               polish_iters: int = 300, progress=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Minimize the reference objective by IRLS / Gauss-Newton with monotone acceptance."""
    obj = _Objective(groups, n)
    params = [(torch.ones(g.depth.shape[0]), torch.zeros(g.depth.shape[0])) for g in groups]
    terms = obj.terms(params)
    f = obj.value(params, terms)
    f0 = f
    stall = 0
    for it in range(max_iters):
        a, inv, T, Ti, norm, norm_i = terms
        proposal = []
        for g, x, xi, (s, t) in zip(groups, a, inv, params):
            idx = g.indices
            K = x.shape[0]
            c1 = g.weight / (obj.denom * norm[idx])[..., None]  # [K, L, 1]
            c2 = g.weight / (obj.denom * norm_i[idx])[..., None]
            r1 = x - T[idx]
            eps1 = 1e-6 * norm[idx][..., None]
            w1 = c1 / (2 * r1.abs().clamp_min(eps1))
            r2 = xi - Ti[idx]
            eps2 = 1e-6 * norm_i[idx][..., None]
            live = (x > CLIP).float()  # clipped values have a constant reciprocal
            w2 = live * c2 / (2 * r2.abs().clamp_min(eps2) * x.clamp_min(CLIP) ** 4)
            y2 = x + x * x * r2
            mom = weighted_moments(g.depth, T[idx], w1) + weighted_moments(g.depth, y2, w2)
            lam_s = torch.full((K,), g.weight * LMDA_SCALE / K)
            lam_t = torch.full((K,), g.weight * LMDA_SHIFT / K)
            s_new, t_new = _solve_2x2(mom, lam_s, lam_t, s < 1, s)
            proposal.append((s_new, t_new))
        # monotone acceptance on the true objective (targets recomputed)
        step = 1.0
        accepted = False
        for _ in range(8):
            cand = [(s + step * (sn - s), t + step * (tn - t)) for (s, t), (sn, tn) in zip(params, proposal)]
            cand_terms = obj.terms(cand)
            fc = obj.value(cand, cand_terms)
            if math.isfinite(fc) and fc <= f:
                accepted = True
                break
            step *= 0.5
        if progress is not None:
            progress(1)
        if not accepted:
            break
        rel = (f - fc) / max(abs(f), 1e-30)
        params, terms, f = cand, cand_terms, fc
        stall = stall + 1 if rel < tol else 0
        if stall >= 3:
            break
    f_irls = f
    params, f = _polish(groups, n, params, f, obj.denom, polish_iters)
    log.debug("fast co-alignment: objective %.6g -> %.6g (IRLS, %d iterations) -> %.6g (L-BFGS polish)",
              f0, f_irls, it + 1, f)
    return params


def _true_objective(groups: list[AlignGroup], n: int, denom: float, theta: torch.Tensor) -> torch.Tensor:
    """The reference objective as a differentiable function of all (s, t), targets included."""
    sizes = [g.depth.shape[0] for g in groups]
    s_all, t_all = theta.split([sum(sizes), sum(sizes)])
    P = groups[0].depth.shape[-1]
    acc = torch.zeros(n, P, dtype=theta.dtype)
    acc_i = torch.zeros(n, P, dtype=theta.dtype)
    cnt = torch.zeros(n, dtype=theta.dtype)
    a_l, i_l = [], []
    for g, s, t in zip(groups, s_all.split(sizes), t_all.split(sizes)):
        a = g.depth * s[:, None, None] + t[:, None, None]
        inv = a.clamp_min(CLIP).reciprocal()
        idx = g.indices.reshape(-1)
        acc = acc.index_add(0, idx, g.weight * a.reshape(-1, P))
        acc_i = acc_i.index_add(0, idx, g.weight * inv.reshape(-1, P))
        cnt = cnt.index_add(0, idx, torch.full((idx.numel(),), float(g.weight), dtype=theta.dtype))
        a_l.append(a)
        i_l.append(inv)
    T, Ti = acc / cnt[:, None], acc_i / cnt[:, None]
    # the reference detaches its targets and their norms inside each step but the value it
    # reports (and that we compare) is this function of (s, t)
    norm, norm_i = T.abs().mean(-1), Ti.abs().mean(-1)
    total = theta.new_zeros(())
    for g, a, inv, s, t in zip(groups, a_l, i_l, s_all.split(sizes), t_all.split(sizes)):
        idx = g.indices
        total = total + g.weight * (((a - T[idx]).abs() / norm[idx][..., None]).sum()
                                    + ((inv - Ti[idx]).abs() / norm_i[idx][..., None]).sum()) / denom
        total = total + g.weight * (LMDA_SCALE * (torch.clamp(1 - s, min=0) ** 2).mean() + LMDA_SHIFT * (t**2).mean())
    return total


def _polish(groups, n, params, f, denom, iters):
    """L-BFGS on the true objective from the IRLS solution; keeps the best point seen."""
    if iters <= 0:
        return params, f
    theta = torch.cat([torch.cat([s for s, _ in params]), torch.cat([t for _, t in params])]).float()
    theta.requires_grad_(True)
    best = (f, theta.detach().clone())
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-9 * abs(f))

    def closure():
        opt.zero_grad()
        val = _true_objective(groups, n, denom, theta)
        val.backward()
        v = val.item()
        if math.isfinite(v) and v < best[0]:
            best_update(v)
        return val

    def best_update(v):
        nonlocal best
        best = (v, theta.detach().clone())

    with torch.enable_grad():
        opt.step(closure)
    f_best, th = best
    sizes = [g.depth.shape[0] for g in groups]
    k = sum(sizes)
    s_all, t_all = th[:k].float(), th[k:].float()
    return list(zip(s_all.split(sizes), t_all.split(sizes))), f_best


def _robust_scale(r: torch.Tensor, max_samples: int = 1 << 18) -> float:
    """1.4826 * median |r| on a strided sample (cheap and deterministic)."""
    flat = r.reshape(-1)
    step = max(1, flat.numel() // max_samples)
    return float(1.4826 * flat[::step].abs().median().clamp_min(1e-12))


def solve_robust(groups: list[AlignGroup], n: int, iters: int = 30, inner: int = 2, c: float = 2.385,
                 progress=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Robust generalized-Procrustes alignment in inverse-depth space (see module doc)."""
    # start: standardize each snippet robustly (median 0, MAD 1): model outputs are per-snippet normalized
    params = []
    for g in groups:
        flat = g.depth.reshape(g.depth.shape[0], -1)
        med = flat.median(dim=1).values
        mad = (flat - med[:, None]).abs().median(dim=1).values.clamp_min(1e-6)
        params.append((1.0 / mad, -med / mad))
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
    with torch.no_grad():
        return _Objective(groups, n).value([(s.reshape(-1).float(), t.reshape(-1).float()) for s, t in params])


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
