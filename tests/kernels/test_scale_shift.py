"""Moments / IRLS moments kernels vs the reference, and the 2x2 solve.

Tolerances for the reductions (ground truth = the reference in fp64 on the
*same* input values): per snippet and moment,
``|kernel - truth| <= 2e-5 * sum|term|`` where ``sum|term|`` is the sum of the
absolute values of the summed terms (e.g. ``sum |w x y|``). This is the
natural scale of fp32 summation error, which a plain relative tolerance
would not be for moments that cancel to ~0 (``sum w x`` of zero-mean data).
It holds for fp16/bf16 inputs too, because the truth is computed from the same
rounded values: only the fp32 accumulation differs.

Robust kinds add the sensitivity of the weight to the fp32 residual
``r = s x + t - y`` (rounding ``dr ~ 1e-6`` for values of order 1). Huber and
Cauchy weights change by at most ``dr / delta`` relatively (delta = 0.1 here:
< 1e-5, inside the bound above). The L1 weight ``1 / max(|r|, eps)`` changes by
``dr / eps``, so L1 is tested with ``eps = 1e-3`` and ``rel = 1e-3``: the kernel
is as exact as fp32 residuals allow, the weight itself is ill-conditioned.

The ``device`` fixture comes from conftest.py (``cpu``: Triton interpreter,
``cuda``: compiled).
"""

import pytest
import torch

from rd_engine.kernels import (
    irls_moments,
    irls_moments_ref,
    irls_weights,
    robust_scale_shift,
    solve_scale_shift,
    weighted_moments,
    weighted_moments_ref,
)

KINDS = ["l2", "l1", "huber", "cauchy"]
REL = 2e-5
REL_KIND = {"l1": 1e-3}
EPS_KIND = {"l1": 1e-3}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _abs_scale(x, y, w, s, t, kind, delta, eps=1e-6):
    """Per-snippet sums of |term| in fp64, the error scale of each moment."""
    x, y = x.double().cpu(), y.double().cpu()
    if x.dim() == 2:
        x, y = x.unsqueeze(1), y.unsqueeze(1)
        w = None if w is None else w.unsqueeze(1)
    v = torch.ones_like(x) if w is None else w.double().cpu()
    if kind != "l2":
        K = x.shape[0]
        s_ = s.double().cpu().view(K, 1, 1)
        t_ = t.double().cpu().view(K, 1, 1)
        v = v * irls_weights(s_ * x + t_ - y, kind, delta, eps)
    terms = (v, v * x, v * y, v * x * x, v * x * y)
    return torch.stack([a.abs().sum(dim=(1, 2)) for a in terms], dim=1)


def _check_moments(x, y, w=None, s=None, t=None, kind="l2", delta=0.5):
    eps = EPS_KIND.get(kind, 1e-6)
    if kind == "l2" and s is None:
        got = weighted_moments(x, y, w, impl="triton")
    else:
        got = irls_moments(x, y, s, t, kind, delta, w, eps, impl="triton")
    assert got.dtype == torch.float32 and got.shape == (x.shape[0], 5)
    assert got.device == x.device
    d = lambda v: None if v is None else v.double().cpu()  # noqa: E731
    truth = irls_moments_ref(d(x), d(y), d(s), d(t), kind, delta, d(w), eps)
    bound = REL_KIND.get(kind, REL) * _abs_scale(x, y, w, s, t, kind, delta, eps) + 1e-30
    err = (got.double().cpu() - truth).abs()
    assert (err <= bound).all(), f"max err/bound {float((err / bound).max()):.3g}"
    # The fp32 reference (CPU production path) meets the same bound.
    ref32 = irls_moments(x, y, s, t, kind, delta, w, eps, impl="torch")
    assert ((ref32.double().cpu() - truth).abs() <= bound).all()
    return got


@pytest.mark.parametrize("shape", [(3, 2, 83), (2, 5, 769), (1, 1, 1), (200, 3, 17)])
@pytest.mark.parametrize("with_w", [True, False])
def test_weighted_moments_shapes(device, shape, with_w):
    g = _gen(sum(shape))
    x = torch.randn(*shape, generator=g).to(device)
    y = (1.7 * x + 0.3 + 0.1 * torch.randn(*shape, generator=g)).to(device)
    w = torch.rand(*shape, generator=g).to(device) if with_w else None
    _check_moments(x, y, w)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weighted_moments_half(device, dtype):
    g = _gen(1)
    K, L, P = 3, 3, 769
    x = torch.rand(K, L, P, generator=g).to(dtype).to(device)
    y = (2 * x.float() + 1).to(dtype)
    w = torch.rand(K, L, P, generator=g).to(dtype).to(device)
    _check_moments(x, y, w)


def test_weighted_moments_non_contiguous(device):
    g = _gen(2)
    K, L, P = 4, 3, 83
    # x: stored as [K, P, L] and transposed -> (L, P) cannot be flattened (div/mod path).
    x = torch.randn(K, P, L, generator=g).to(device).transpose(1, 2)
    # y: every other pixel of a wider map; w: every other snippet of a bigger batch.
    y = torch.randn(K, L, 2 * P, generator=g).to(device)[:, :, ::2]
    w = torch.rand(2 * K, L, P, generator=g).to(device)[::2]
    assert not x.is_contiguous() and not y.is_contiguous() and not w.is_contiguous()
    _check_moments(x, y, w)
    # Mixed dtypes and a flat-but-strided case (K slice only).
    _check_moments(x.half(), y, w[:, :, :])
    big = torch.randn(2 * K, L, P, generator=g).to(device)
    _check_moments(big[1::2], big[::2], None)


def test_two_dim_input(device):
    g = _gen(3)
    x = torch.randn(5, 300, generator=g).to(device)
    y = torch.randn(5, 300, generator=g).to(device)
    got = _check_moments(x, y)
    torch.testing.assert_close(got[:, 0].cpu(), torch.full((5,), 300.0))


@pytest.mark.parametrize("kind", KINDS)
def test_irls_moments(device, kind):
    g = _gen(4)
    K, L, P = 6, 3, 257
    x = torch.rand(K, L, P, generator=g).to(device)
    y = (1.5 * x + 0.2 + 0.05 * torch.randn(K, L, P, generator=g)).to(device)
    y[:, 0, :20] += 3.0  # outliers
    w = (torch.rand(K, L, P, generator=g) > 0.1).float().to(device)  # validity mask
    s = (torch.rand(K, generator=g) + 1.0).to(device)
    t = (0.1 * torch.randn(K, generator=g)).to(device)
    _check_moments(x, y, w, s, t, kind, delta=0.1)
    _check_moments(x.half(), y.half(), None, s, t, kind, delta=0.1)


def test_irls_moments_exact_fit_l1(device):
    # Residual exactly 0 everywhere: L1 weights hit the eps floor (1/eps), must stay finite.
    x = torch.linspace(0, 1, 3 * 97).reshape(1, 3, 97).to(device)
    y = 2 * x + 1
    got = irls_moments(x, y, torch.tensor([2.0]), torch.tensor([1.0]), "l1", impl="triton")
    assert torch.isfinite(got).all()
    s, t = solve_scale_shift(got)
    torch.testing.assert_close(s.cpu(), torch.tensor([2.0]), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(t.cpu(), torch.tensor([1.0]), rtol=1e-4, atol=1e-4)


def test_moments_deterministic(device):
    g = _gen(5)
    x = torch.randn(3, 4, 1000, generator=g).to(device)
    y = torch.randn(3, 4, 1000, generator=g).to(device)
    a = irls_moments(x, y, torch.ones(3), torch.zeros(3), "huber", 0.3, impl="triton")
    b = irls_moments(x, y, torch.ones(3), torch.zeros(3), "huber", 0.3, impl="triton")
    assert torch.equal(a, b)


def test_robust_fit_recovers_with_outliers(device):
    g = _gen(6)
    K, L, P = 4, 3, 400
    x = torch.rand(K, L, P, generator=g)
    s_true = torch.tensor([0.5, 1.0, 2.0, 3.0])
    t_true = torch.tensor([0.0, -0.5, 0.25, 1.0])
    y = s_true.view(K, 1, 1) * x + t_true.view(K, 1, 1)
    y[:, :, ::10] += 5.0  # 10% gross outliers
    x, y = x.to(device), y.to(device)
    s2, t2 = robust_scale_shift(x, y, kind="l2", impl="triton")
    assert (t2.cpu() - t_true).abs().min() > 0.2  # plain L2 is pulled away
    for kind, delta in (("l1", 1.0), ("huber", 0.05), ("cauchy", 0.05)):
        s, t = robust_scale_shift(x, y, kind=kind, delta=delta, iters=15, impl="triton")
        torch.testing.assert_close(s.cpu(), s_true, rtol=0, atol=2e-2)
        torch.testing.assert_close(t.cpu(), t_true, rtol=0, atol=2e-2)


# ---------------------------------------------------------------------------
# solve_scale_shift (pure torch, no device parametrisation needed)
# ---------------------------------------------------------------------------


def test_solve_recovers_exact_affine():
    g = _gen(7)
    K = 50
    x = torch.rand(K, 3, 64, generator=g, dtype=torch.float64)
    w = torch.rand(K, 3, 64, generator=g, dtype=torch.float64)
    s_true = torch.randn(K, generator=g, dtype=torch.float64) * 3
    t_true = torch.randn(K, generator=g, dtype=torch.float64)
    y = s_true.view(K, 1, 1) * x + t_true.view(K, 1, 1)
    s, t = solve_scale_shift(weighted_moments_ref(x, y, w))
    assert s.dtype == torch.float64
    torch.testing.assert_close(s, s_true, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(t, t_true, rtol=1e-10, atol=1e-10)
    # fp32 moments (production): exact up to fp32 accumulation error.
    s32, t32 = solve_scale_shift(weighted_moments(x.float(), y.float(), w.float()))
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32, s_true.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(t32, t_true.float(), rtol=1e-4, atol=1e-4)


def test_solve_constant_x_falls_back_to_prior_scale():
    x = torch.full((2, 1, 50), 0.7)
    y = torch.randn(2, 1, 50, generator=_gen(8))
    w = torch.rand(2, 1, 50, generator=_gen(9))
    m = weighted_moments_ref(x, y, w)
    s, t = solve_scale_shift(m, prior_scale=torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(s, torch.tensor([1.0, 2.0]))
    # t fits the weighted mean of y - prior_scale * x.
    ymean = (w * y).sum(dim=(1, 2)) / w.sum(dim=(1, 2))
    torch.testing.assert_close(t, ymean - torch.tensor([1.0, 2.0]) * 0.7, rtol=1e-5, atol=1e-5)


def test_solve_zero_weight_and_ridge():
    m = torch.zeros(3, 5)
    s, t = solve_scale_shift(m, prior_scale=1.5, prior_shift=-0.25)
    torch.testing.assert_close(s, torch.full((3,), 1.5))
    torch.testing.assert_close(t, torch.full((3,), -0.25))
    s, t = solve_scale_shift(m, ridge=0.1, prior_scale=1.5, prior_shift=-0.25)
    torch.testing.assert_close(s, torch.full((3,), 1.5))
    torch.testing.assert_close(t, torch.full((3,), -0.25))
    # Ridge solution = normal equations solved directly.
    g = _gen(10)
    x = torch.rand(4, 2, 30, generator=g, dtype=torch.float64)
    y = 2 * x + 0.5 + 0.1 * torch.randn(4, 2, 30, generator=g, dtype=torch.float64)
    m = weighted_moments_ref(x, y)
    r, ps, pt = 3.0, 1.0, 0.0
    s, t = solve_scale_shift(m, ridge=r, prior_scale=ps, prior_shift=pt)
    for k in range(4):
        s0, sx, sy, sxx, sxy = m[k]
        A = torch.tensor([[sxx + r, sx], [sx, s0 + r]], dtype=torch.float64)
        b = torch.tensor([sxy + r * ps, sy + r * pt], dtype=torch.float64)
        st = torch.linalg.solve(A, b)
        torch.testing.assert_close(torch.stack([s[k], t[k]]), st, rtol=1e-12, atol=1e-12)
    # A larger ridge pulls the scale toward the prior.
    s_big, _ = solve_scale_shift(m, ridge=1e6, prior_scale=ps)
    assert ((s_big - ps).abs() < (s - ps).abs()).all()


def test_solve_mixed_batch_no_nan():
    good = weighted_moments_ref(torch.rand(1, 1, 20, generator=_gen(11)), torch.rand(1, 1, 20, generator=_gen(12)))
    const = weighted_moments_ref(torch.ones(1, 1, 20), torch.rand(1, 1, 20, generator=_gen(13)))
    m = torch.cat([good, const, torch.zeros(1, 5)])
    s, t = solve_scale_shift(m)
    assert torch.isfinite(s).all() and torch.isfinite(t).all()
    assert s[1] == 1.0 and s[2] == 1.0 and t[2] == 0.0


def test_irls_weights_values():
    r = torch.tensor([-2.0, -0.5, 0.0, 0.05, 3.0])
    torch.testing.assert_close(irls_weights(r, "l2"), torch.ones(5))
    torch.testing.assert_close(irls_weights(r, "l1", eps=0.1), torch.tensor([0.5, 2.0, 10.0, 10.0, 1 / 3]))
    torch.testing.assert_close(irls_weights(r, "huber", delta=1.0), torch.tensor([0.5, 1.0, 1.0, 1.0, 1 / 3]))
    torch.testing.assert_close(irls_weights(r, "cauchy", delta=1.0), 1 / (1 + r * r))
    assert irls_weights(r.half(), "l1").dtype == torch.float32
    with pytest.raises(ValueError):
        irls_weights(r, "tukey")
    with pytest.raises(ValueError):
        irls_weights(r, "huber", delta=0.0)


def test_validation_errors():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError):
        weighted_moments(x, torch.randn(2, 3, 5))
    with pytest.raises(ValueError):
        weighted_moments(torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError):
        irls_moments(x, x, torch.ones(3), None, "l1")
    with pytest.raises(ValueError):
        solve_scale_shift(torch.zeros(2, 4))
