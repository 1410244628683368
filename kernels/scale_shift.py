"""Batched (robust) per-snippet scale/shift fitting.

For every snippet ``k`` we look for ``(s_k, t_k)`` so that ``s_k * x + t_k``
matches a target ``y`` over the snippet's ``L`` frames and ``P`` pixels. A
weighted least-squares fit only needs five sums per snippet, the *moments*::

    m = [sum w, sum w x, sum w y, sum w x x, sum w x y]      (over j, p)

so the heavy part is one reduction pass, for all snippets at once:

* :func:`weighted_moments`: the moments for given weights ``w``.
* :func:`irls_moments`: the key op of a robust (IRLS) update. It forms the
  residual ``r = s_k x + t_k - y`` of the current estimate, turns it into a
  robust weight (L1 / Huber / Cauchy, see :func:`irls_weights`), multiplies by
  the optional base weight, and reduces the moments, all in one pass without
  materialising ``r`` or the weights.
* :func:`solve_scale_shift`: the closed-form 2x2 solve from the moments
  (tiny, vectorised torch, with a ridge towards a prior and guards against
  singular systems).
* :func:`robust_scale_shift`: the IRLS loop built from the two.

The Triton kernel runs one program per (snippet, chunk of the ``L*P`` terms)
and reduces the per-chunk partial sums with a fixed-shape torch sum:
deterministic, no atomics. Accumulation is fp32 for fp16/bf16/fp32 inputs.
"""

from __future__ import annotations

import torch

from ._dispatch import select_impl

__all__ = [
    "ROBUST_KINDS",
    "weighted_moments",
    "weighted_moments_ref",
    "irls_moments",
    "irls_moments_ref",
    "irls_weights",
    "solve_scale_shift",
    "robust_scale_shift",
]

# "l2" is the plain (non-robust) weight 1.
ROBUST_KINDS = ("l2", "l1", "huber", "cauchy")

ScalarOrTensor = float | torch.Tensor


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _as_klp(t: torch.Tensor, name: str) -> torch.Tensor:
    """Accept ``[K, P]`` (as ``L = 1``) or ``[K, L, P]``, as a view (never a copy)."""
    if t.dim() == 2:
        return t.unsqueeze(1)
    if t.dim() != 3:
        raise ValueError(f"{name} must be [K, L, P] or [K, P], got shape {tuple(t.shape)}")
    return t


def _prepare(x, y, w):
    x = _as_klp(x, "x")
    y = _as_klp(y, "y")
    if y.shape != x.shape:
        raise ValueError(f"y shape {tuple(y.shape)} != x shape {tuple(x.shape)}")
    if w is not None:
        w = _as_klp(w, "w")
        if w.shape != x.shape:
            raise ValueError(f"w shape {tuple(w.shape)} != x shape {tuple(x.shape)}")
    for name, t in (("x", x), ("y", y), ("w", w)):
        if t is not None and not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    return x, y, w


def _per_snippet(v: ScalarOrTensor, K: int, device, dtype) -> torch.Tensor:
    if torch.is_tensor(v):
        v = v.to(device=device, dtype=dtype)
        if v.numel() == 1:
            return v.reshape(1).expand(K).contiguous()
        if v.shape != (K,):
            raise ValueError(f"per-snippet tensor must be [K] = [{K}], got {tuple(v.shape)}")
        return v.contiguous()
    return torch.full((K,), float(v), device=device, dtype=dtype)


def _check_kind(kind: str, delta: float, eps: float) -> None:
    if kind not in ROBUST_KINDS:
        raise ValueError(f"kind must be one of {ROBUST_KINDS}, got {kind!r}")
    if kind in ("huber", "cauchy") and not delta > 0:
        raise ValueError(f"delta must be > 0 for {kind}, got {delta}")
    if kind == "l1" and not eps > 0:
        raise ValueError(f"eps must be > 0 for l1, got {eps}")


def _acc_dtype(*ts: torch.Tensor | None) -> torch.dtype:
    dt = torch.float32
    for t in ts:
        if t is not None:
            dt = torch.promote_types(dt, t.dtype)
    return dt


# ---------------------------------------------------------------------------
# Robust weights and references
# ---------------------------------------------------------------------------


def irls_weights(residual: torch.Tensor, kind: str = "l1", delta: float = 1.0, eps: float = 1e-6) -> torch.Tensor:
    """IRLS weights for a residual (pure torch; the kernel computes the same in registers).

    Args:
        residual: residual tensor ``r`` (any shape).
        kind: ``"l2"`` (1), ``"l1"`` (``1 / max(|r|, eps)``), ``"huber"``
            (1 for ``|r| <= delta``, ``delta / |r|`` beyond) or ``"cauchy"``
            (``1 / (1 + (r / delta)^2)``).
        delta: scale of the Huber / Cauchy losses (> 0); unused otherwise.
        eps: floor on ``|r|`` for L1 (> 0), so exact fits do not divide by zero.

    Returns:
        Weights with the shape of ``residual`` (fp32 for half inputs).
    """
    _check_kind(kind, delta, eps)
    r = residual.to(_acc_dtype(residual))
    if kind == "l2":
        return torch.ones_like(r)
    a = r.abs()
    if kind == "l1":
        return 1.0 / a.clamp_min(eps)
    if kind == "huber":
        return torch.where(a <= delta, torch.ones_like(a), delta / a.clamp_min(delta))
    q = r / delta
    return 1.0 / (1.0 + q * q)


def irls_moments_ref(
    x: torch.Tensor,
    y: torch.Tensor,
    scale: ScalarOrTensor | None = None,
    shift: ScalarOrTensor | None = None,
    kind: str = "l1",
    delta: float = 1.0,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Reference of :func:`irls_moments` in plain PyTorch.

    Accumulates in fp32, or in fp64 when any input is fp64 (handy as ground truth).

    Returns:
        ``[K, 5]`` moments.
    """
    _check_kind(kind, delta, eps)
    x, y, weight = _prepare(x, y, weight)
    K = x.shape[0]
    dt = _acc_dtype(x, y, weight)
    xf, yf = x.to(dt), y.to(dt)
    w = weight.to(dt) if weight is not None else torch.ones_like(xf)
    if kind != "l2":
        s = _per_snippet(1.0 if scale is None else scale, K, x.device, dt).view(K, 1, 1)
        t = _per_snippet(0.0 if shift is None else shift, K, x.device, dt).view(K, 1, 1)
        w = w * irls_weights(s * xf + t - yf, kind, delta, eps)
    wx = w * xf
    terms = (w, wx, w * yf, wx * xf, wx * yf)
    return torch.stack([v.sum(dim=(1, 2)) for v in terms], dim=1)


def weighted_moments_ref(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Reference of :func:`weighted_moments` in plain PyTorch.

    Returns:
        ``[K, 5]`` moments (fp32, fp64 if any input is fp64).
    """
    return irls_moments_ref(x, y, kind="l2", weight=w)


# ---------------------------------------------------------------------------
# Public reductions
# ---------------------------------------------------------------------------


def irls_moments(
    x: torch.Tensor,
    y: torch.Tensor,
    scale: ScalarOrTensor | None = None,
    shift: ScalarOrTensor | None = None,
    kind: str = "l1",
    delta: float = 1.0,
    weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    impl: str = "auto",
) -> torch.Tensor:
    """Moments of one IRLS step for all snippets in a single pass.

    With ``r = s_k x + t_k - y`` and ``v = weight * irls_weights(r, kind, delta, eps)``,
    returns per snippet ``[sum v, sum v x, sum v y, sum v x^2, sum v x y]``
    over all ``(j, p)``; feed it to :func:`solve_scale_shift` for the next
    ``(s, t)``.

    Args:
        x: ``[K, L, P]`` (or ``[K, P]``) prediction, fp16/bf16/fp32, any strides.
        y: target, same shape as ``x``.
        scale: ``[K]`` tensor or float: current scale ``s_k`` (default 1).
        shift: ``[K]`` tensor or float: current shift ``t_k`` (default 0).
        kind: ``"l2"``, ``"l1"``, ``"huber"`` or ``"cauchy"``.
        delta: Huber / Cauchy scale (> 0).
        weight: optional base weight (e.g. validity mask), same shape as ``x``, >= 0.
        eps: L1 floor on ``|r|`` (> 0).
        impl: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        fp32 ``[K, 5]`` moments (fp64 on the reference path for fp64 inputs).
    """
    _check_kind(kind, delta, eps)
    x, y, weight = _prepare(x, y, weight)
    # scale/shift are [K] and get moved/cast below: only the big operands decide.
    if select_impl(impl, (x, y, weight)) == "torch":
        return irls_moments_ref(x, y, scale, shift, kind, delta, weight, eps)
    from .triton_kernels import launch_moments  # lazy: triton only when chosen

    K = x.shape[0]
    s = t = None
    if kind != "l2":
        s = _per_snippet(1.0 if scale is None else scale, K, x.device, torch.float32)
        t = _per_snippet(0.0 if shift is None else shift, K, x.device, torch.float32)
    return launch_moments(x, y, weight, s, t, kind, delta, eps)


def weighted_moments(
    x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None = None, impl: str = "auto"
) -> torch.Tensor:
    """Per-snippet weighted moments ``[sum w, sum wx, sum wy, sum wxx, sum wxy]``.

    Args:
        x: ``[K, L, P]`` (or ``[K, P]``), fp16/bf16/fp32, any strides (no copy).
        y: same shape as ``x``.
        w: same shape as ``x``, or ``None`` for all ones. Assumed finite and >= 0.
        impl: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        fp32 ``[K, 5]`` (fp32 accumulation whatever the input dtype).
    """
    return irls_moments(x, y, kind="l2", weight=w, impl=impl)


# ---------------------------------------------------------------------------
# Solve
# ---------------------------------------------------------------------------


def solve_scale_shift(
    moments: torch.Tensor,
    ridge: ScalarOrTensor = 0.0,
    prior_scale: ScalarOrTensor = 1.0,
    prior_shift: ScalarOrTensor = 0.0,
    rcond: float = 1e-6,
    *,
    ridge_shift: ScalarOrTensor | None = None,
    fallback_scale: ScalarOrTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form batched 2x2 weighted least squares for ``(s, t)``: the project's one 2x2 solve.

    Minimises, per snippet,
    ``sum w (s x + t - y)^2 + rs (s - prior_scale)^2 + rt (t - prior_shift)^2``
    with ``rs = ridge`` and ``rt = ridge_shift`` (default: ``ridge``), whose
    normal equations are::

        [Sxx + rs  Sx     ] [s]   [Sxy + rs ps]
        [Sx        S0 + rt] [t] = [Sy  + rt pt]

    Solved in fp64 (the system is tiny; fp64 keeps ``Sxx*S0 - Sx^2`` from
    cancelling). Guards, applied per snippet without host syncs:

    * singular system (``x`` constant under the weights: normalised
      determinant ``det / ((Sxx+rs)(S0+rt)) <= rcond``): ``s = fallback_scale``
      (default ``prior_scale``) and ``t`` is the best shift for it;
    * singular with zero total weight and no shift ridge: ``t = prior_shift``.

    Args:
        moments: ``[K, 5]`` as returned by :func:`weighted_moments` / :func:`irls_moments`.
        ridge: >= 0, float or ``[K]``: pull of the scale towards ``prior_scale`` (and of the shift
            towards ``prior_shift`` unless ``ridge_shift`` is given).
        prior_scale: float or ``[K]`` tensor.
        prior_shift: float or ``[K]`` tensor.
        rcond: threshold on the normalised determinant below which ``x`` is
            treated as constant. Moments accumulated in fp32 carry ~1e-7
            relative error, so a tighter value only trades a stable fallback
            for a noise-dominated scale.
        ridge_shift: >= 0, float or ``[K]``: pull of the shift towards ``prior_shift``.
        fallback_scale: float or ``[K]``: the scale of a singular system (default ``prior_scale``).

    Returns:
        ``(s, t)``, two fp32 ``[K]`` tensors (fp64 if ``moments`` is fp64).
    """
    if moments.dim() != 2 or moments.shape[1] != 5:
        raise ValueError(f"moments must be [K, 5], got {tuple(moments.shape)}")
    K = moments.shape[0]
    m = moments.to(torch.float64)
    s0, sx, sy, sxx, sxy = m.unbind(1)
    ps = _per_snippet(prior_scale, K, m.device, torch.float64)
    pt = _per_snippet(prior_shift, K, m.device, torch.float64)
    rs = _per_snippet(ridge, K, m.device, torch.float64)
    rt = rs if ridge_shift is None else _per_snippet(ridge_shift, K, m.device, torch.float64)
    if bool((rs < 0).any()) or bool((rt < 0).any()):
        raise ValueError("ridge must be >= 0")
    fs = ps if fallback_scale is None else _per_snippet(fallback_scale, K, m.device, torch.float64)

    a11 = sxx + rs
    a22 = s0 + rt
    det = a11 * a22 - sx * sx
    scale_ref = a11 * a22
    regular = (scale_ref > 0) & (det > rcond * scale_ref)
    det_safe = torch.where(regular, det, torch.ones_like(det))
    b1 = sxy + rs * ps
    b2 = sy + rt * pt
    s_full = (a22 * b1 - sx * b2) / det_safe
    t_full = (a11 * b2 - sx * b1) / det_safe

    # Fallback: scale pinned, shift = argmin over t alone.
    has_mass = a22 > 0
    t_fb = torch.where(has_mass, (b2 - sx * fs) / torch.where(has_mass, a22, torch.ones_like(a22)), pt)

    s = torch.where(regular, s_full, fs)
    t = torch.where(regular, t_full, t_fb)
    out_dtype = torch.float64 if moments.dtype == torch.float64 else torch.float32
    return s.to(out_dtype), t.to(out_dtype)


def robust_scale_shift(
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None = None,
    kind: str = "l1",
    delta: float = 1.0,
    iters: int = 5,
    ridge: float = 0.0,
    prior_scale: ScalarOrTensor = 1.0,
    prior_shift: ScalarOrTensor = 0.0,
    eps: float = 1e-6,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """IRLS fit of per-snippet ``(s, t)``: a weighted L2 start, then ``iters`` robust re-weightings.

    Each iteration is one :func:`irls_moments` pass plus one :func:`solve_scale_shift`.

    Args:
        x: ``[K, L, P]`` (or ``[K, P]``) prediction.
        y: target, same shape.
        weight: optional base weight (e.g. validity mask), same shape.
        kind: robust loss, see :func:`irls_weights`.
        delta: Huber / Cauchy scale.
        iters: number of robust iterations after the L2 start (0: plain weighted L2).
        ridge: pull towards the prior, see :func:`solve_scale_shift`.
        prior_scale: float or ``[K]``.
        prior_shift: float or ``[K]``.
        eps: L1 floor on ``|r|``.
        impl: ``"auto"``, ``"triton"`` or ``"torch"`` (passed to the reductions).

    Returns:
        ``(s, t)``, fp32 ``[K]`` each.
    """
    m = irls_moments(x, y, kind="l2", weight=weight, impl=impl)
    s, t = solve_scale_shift(m, ridge, prior_scale, prior_shift)
    for _ in range(iters if kind != "l2" else 0):
        m = irls_moments(x, y, s, t, kind, delta, weight, eps, impl=impl)
        s, t = solve_scale_shift(m, ridge, prior_scale, prior_shift)
    return s, t
