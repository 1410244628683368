"""accumulate_frames_robust (one Cauchy-reweighted pass of the per-frame mean): Triton kernel vs
the PyTorch reference.

Ground truth is the reference evaluated in fp64 on the same input values. Both implementations
accumulate in fp32 in different orders, and each pixel weight is a rational function of the
residual, so tolerances are ``rtol = 1e-5`` plus ``atol = 1e-5 * magnitude`` (``magnitude`` =
the largest |corrected value| times the summed weight for ``acc``, the summed weight for
``wsum``), the same few-ulps budget as the plain average.

The ``device`` fixture (conftest.py): ``cpu`` runs the kernel in Triton's interpreter, ``cuda``
runs it compiled.
"""

import math

import pytest
import torch

from rd_engine.kernels import accumulate_frames, accumulate_frames_robust, accumulate_frames_robust_ref


def _inputs(K, L, C, H, W, F, seed, device, dtype=torch.float32, affine=True, weight=True):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(K, L, C, H, W, generator=g) * 2).to(dtype)
    index = torch.randint(0, F, (K, L), generator=g)
    s = torch.rand(K, generator=g) + 0.5 if affine else None
    t = torch.randn(K, generator=g) if affine else None
    w = torch.rand(K, generator=g) * 2 + 0.1 if weight else None
    center = torch.randn(F, C, H, W, generator=g)
    delta = torch.rand(F, generator=g) + 0.2
    mv = lambda v: None if v is None else v.to(device)  # noqa: E731
    return mv(x), mv(index), mv(s), mv(t), mv(w), mv(center), mv(delta)


def _truth(x, index, center, delta, s, t, w):
    d = lambda v: None if v is None else v.double().cpu()  # noqa: E731
    acc = torch.zeros(center.shape, dtype=torch.float64)
    ws = torch.zeros_like(acc)
    accumulate_frames_robust_ref(acc, ws, d(x), index.cpu(), d(center), d(delta), d(s), d(t), d(w))
    return acc, ws


def _run(x, index, center, delta, s, t, w, impl):
    acc = torch.zeros(center.shape, device=x.device)
    ws = torch.zeros_like(acc)
    accumulate_frames_robust(acc, ws, x, index, center, delta, s, t, w, impl=impl)
    return acc, ws


def _check(x, index, s, t, w, center, delta):
    acc_t, ws_t = _truth(x, index, center, delta, s, t, w)
    mag_w = float(ws_t.abs().max()) if ws_t.numel() else 1.0
    mag_v = float(x.double().abs().max()) * (float(s.abs().max()) if s is not None else 1.0) + (
        float(t.abs().max()) if t is not None else 0.0
    )
    for impl in ("triton", "torch"):
        acc, ws = _run(x, index, center, delta, s, t, w, impl)
        torch.testing.assert_close(ws.cpu().double(), ws_t, rtol=1e-5, atol=1e-5 * max(mag_w, 1.0))
        torch.testing.assert_close(acc.cpu().double(), acc_t, rtol=1e-5, atol=1e-5 * max(mag_w * mag_v, 1.0))
    return acc_t, ws_t


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("weight", [True, False])
def test_random_odd_sizes(device, affine, weight):
    x, index, s, t, w, center, delta = _inputs(7, 3, 1, 13, 17, 6, 0, device, affine=affine, weight=weight)
    acc, ws = _check(x, index, s, t, w, center, delta)
    assert float(ws.sum()) > 0


def test_latent_channels_and_several_blocks(device):
    _check(*_inputs(5, 3, 4, 19, 23, 4, 1, device))  # 1748 pixels per frame: two program blocks


def test_fp16_and_non_contiguous(device):
    x, index, s, t, w, center, delta = _inputs(6, 3, 1, 12, 15, 5, 2, device, dtype=torch.float16)
    _check(x, index, s, t, w, center, delta)
    base = torch.randn(3, 6, 1, 15, 12, generator=torch.Generator().manual_seed(3)).to(device)
    _check(base.permute(1, 0, 2, 4, 3), index, s, t, w, center, delta)  # [6, 3, 1, 12, 15] strided view


def test_single_snippet_and_skipped_entries(device):
    x, index, s, t, w, center, delta = _inputs(1, 3, 1, 9, 11, 3, 4, device)
    _check(x, index, s, t, w, center, delta)
    x, index, s, t, w, center, delta = _inputs(40, 3, 1, 8, 9, 10, 5, device)
    index[::3, 1] = -1
    index[1::4, 2] = 10  # out of range: skipped
    _check(x, index, s, t, w, center, delta)


def test_infinite_delta_is_the_plain_weighted_mean(device):
    x, index, s, t, w, center, _ = _inputs(9, 3, 1, 10, 12, 6, 6, device)
    delta = torch.full((6,), math.inf, device=device)
    for impl in ("triton", "torch"):
        acc, ws = _run(x, index, center, delta, s, t, w, impl)
        plain = torch.zeros_like(acc)
        cnt = torch.zeros(6, device=device)
        accumulate_frames(plain, cnt, x, index, s, t, w, impl="torch")
        torch.testing.assert_close(ws[:, 0, 0, 0], cnt, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(acc, plain, rtol=1e-5, atol=1e-5)


def test_an_outlier_entry_stops_pulling_the_mean(device):
    """Five entries near 1 and one at 10 on the same frame: the plain mean is 2.5, Cauchy IRLS from
    there ends within 0.05 of the inliers' mean.
    """
    g = torch.Generator().manual_seed(7)
    x = (1 + 0.05 * torch.randn(6, 1, 1, 8, 8, generator=g)).to(device)
    x[5] = 10.0
    index = torch.zeros(6, 1, dtype=torch.long, device=device)
    center = x.mean(0)  # the plain mean [1, 1, 8, 8]
    delta = torch.tensor([0.3], device=device)
    for _ in range(4):
        acc, ws = _run(x, index, center.contiguous(), delta, None, None, None, "auto")
        center = acc / ws
    assert float((center - x[:5].mean(0)).abs().max()) < 0.05


def test_reference_matches_a_naive_loop():
    x, index, s, t, w, center, delta = _inputs(5, 3, 2, 4, 5, 4, 8, "cpu", dtype=torch.float64)
    acc = torch.zeros(center.shape, dtype=torch.float64)
    ws = torch.zeros_like(acc)
    accumulate_frames_robust_ref(acc, ws, x, index, center.double(), delta.double(), s.double(), t.double(), w.double())
    acc_n, ws_n = torch.zeros_like(acc), torch.zeros_like(acc)
    for k in range(5):
        for j in range(3):
            f = int(index[k, j])
            v = float(s[k]) * x[k, j] + float(t[k])
            p = float(w[k]) / (1 + ((v - center[f].double()) / float(delta[f])) ** 2)
            acc_n[f] += p * v
            ws_n[f] += p
    torch.testing.assert_close(acc, acc_n)
    torch.testing.assert_close(ws, ws_n)


def test_validation_errors():
    x, index, s, t, w, center, delta = _inputs(3, 3, 1, 4, 4, 2, 9, "cpu")
    acc, ws = torch.zeros_like(center), torch.zeros_like(center)
    with pytest.raises(ValueError, match="delta must be > 0"):
        accumulate_frames_robust(acc, ws, x, index, center, torch.zeros(2), s, t, w)
    with pytest.raises(ValueError, match=r"delta must be \[F\]"):
        accumulate_frames_robust(acc, ws, x, index, center, torch.ones(3), s, t, w)
    with pytest.raises(ValueError, match="center must have"):
        accumulate_frames_robust(acc, ws, x, index, center[:1], delta, s, t, w)
    with pytest.raises(ValueError, match="contiguous float32"):
        accumulate_frames_robust(acc.double(), ws.double(), x, index, center.double(), delta, s, t, w)


def test_tiny_delta_gives_no_nan(device):
    """1 / delta^2 overflows fp32: exact agreement keeps weight w (not 0 * inf), far values get ~0."""
    x = torch.zeros(3, 1, 1, 3, 5, device=device)
    x[2] = 1.0
    index = torch.zeros(3, 1, dtype=torch.long, device=device)
    center = torch.zeros(1, 1, 3, 5, device=device)
    for impl in ("triton", "torch"):
        acc, ws = _run(x, index, center, torch.tensor([1e-30], device=device), None, None, None, impl)
        assert torch.equal(ws.cpu(), torch.full((1, 1, 3, 5), 2.0))  # the two exact entries, weight 1 each
        assert float(acc.abs().max()) < 1e-30
