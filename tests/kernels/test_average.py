"""average_frames / accumulate_frames: Triton kernel vs the PyTorch reference.

Tolerances (ground truth = the reference evaluated in fp64 on the *same*
input values, so input rounding is not counted):

* fp32 outputs: ``atol = 1e-5 * mag`` with ``mag = max|s| * max|x| + max|t|``
  (the magnitude of a corrected value) and ``rtol = 1e-5``. Both sides
  accumulate in fp32 in different orders; with a handful of entries per frame
  the difference is a few ulps.
* fp16 / bf16 outputs: one rounding of the result to the output dtype
  (``rtol = 1e-3`` fp16, ``8e-3`` bf16, plus the fp32 atol above).
* NaN rows (uncovered frames) must match exactly.

The ``device`` fixture comes from conftest.py: ``cpu`` runs the kernels in
Triton's interpreter, ``cuda`` runs them compiled. Sizes are small because
the interpreter runs programs one after another.
"""

import pytest
import torch

from rd_engine.kernels import (
    accumulate_frames,
    accumulate_frames_ref,
    average_frames,
    average_frames_ref,
    finalize_frames,
)

RTOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _affine(K, seed, device, with_affine=True, with_weight=True):
    g = _gen(seed + 1000)
    s = (torch.rand(K, generator=g) + 0.5).to(device) if with_affine else None
    t = torch.randn(K, generator=g).to(device) if with_affine else None
    w = (torch.rand(K, generator=g) * 2 + 0.1).to(device) if with_weight else None
    return s, t, w


def _ground_truth(x, index, F, s, t, w):
    """fp64 reference on the same input values (cast to fp64 is exact)."""
    d = lambda v: None if v is None else v.double().cpu()  # noqa: E731
    return average_frames_ref(d(x), index.cpu(), F, d(s), d(t), d(w))


def _assert_close(out, ref, x, s, t, out_dtype):
    out = out.cpu().double()
    assert out.shape == ref.shape
    nan_out, nan_ref = torch.isnan(out), torch.isnan(ref)
    assert torch.equal(nan_out, nan_ref), "uncovered frames (NaN) differ"
    mag = float(x.double().abs().max()) if x.numel() else 1.0
    mag = mag * (float(s.double().abs().max()) if s is not None else 1.0)
    mag = mag + (float(t.double().abs().max()) if t is not None else 0.0)
    atol = 1e-5 * max(mag, 1.0)
    torch.testing.assert_close(out[~nan_out], ref[~nan_ref], rtol=RTOL[out_dtype], atol=atol)


def _check(x, index, F, s=None, t=None, w=None, out_dtype=None):
    out = average_frames(x, index, F, s, t, w, out_dtype=out_dtype, impl="triton")
    assert out.dtype == (out_dtype or x.dtype)
    assert out.device == x.device
    assert out.is_contiguous()
    # The reference on the same device/dtype must agree too (it is the CPU production path).
    ref_same = average_frames(x, index, F, s, t, w, out_dtype=out_dtype, impl="torch")
    truth = _ground_truth(x, index, F, s, t, w)
    _assert_close(out, truth, x, s, t, out.dtype)
    _assert_close(ref_same, truth, x, s, t, out.dtype)
    return out


@pytest.mark.parametrize("with_affine", [True, False])
@pytest.mark.parametrize("with_weight", [True, False])
def test_random_odd_size(device, with_affine, with_weight):
    K, L, C, H, W, F = 5, 3, 1, 37, 53, 12
    g = _gen(0)
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    index = torch.randint(0, F - 2, (K, L), generator=g).to(device)  # frames F-2, F-1 uncovered
    s, t, w = _affine(K, 0, device, with_affine, with_weight)
    out = _check(x, index, F, s, t, w)
    assert torch.isnan(out[F - 2 :]).all()


def test_latent_channels_multi_block(device):
    # C=4 latents: C*H*W = 7844 spans several pixel blocks.
    K, L, C, H, W, F = 4, 3, 4, 37, 53, 6
    g = _gen(1)
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    index = (torch.arange(K)[:, None] + torch.arange(L)[None, :]).to(device)
    _check(x, index, F, *_affine(K, 1, device))


def test_non_contiguous_inputs(device):
    K, L, C, H, W, F = 6, 3, 2, 19, 23, 9
    g = _gen(2)
    # x: every other snippet of a bigger batch, with H and W swapped in memory,
    # and a cropped width -> no dimension is contiguous.
    base = torch.randn(2 * K, L, C, W + 3, H, generator=g).to(device)
    x = base[::2].transpose(-1, -2)[..., :W]
    assert x.shape == (K, L, C, H, W) and not x.is_contiguous()
    index = torch.randint(0, F, (L, K), generator=g).to(device).t()  # transposed index view
    _check(x, index, F, *_affine(K, 2, device))
    # Contiguous [C, H, W] maps inside a strided [K, L] layout (the fast inner path).
    big = torch.randn(K, 2 * L, C, H, W, generator=g).to(device)
    _check(big[:, ::2], index, F, *_affine(K, 3, device))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("out_dtype", [None, torch.float32])
def test_half_inputs(device, dtype, out_dtype):
    K, L, C, H, W, F = 5, 3, 1, 21, 29, 8
    g = _gen(3)
    x = torch.randn(K, L, C, H, W, generator=g).to(dtype).to(device)
    index = torch.randint(0, F, (K, L), generator=g).to(device)
    s, t, w = _affine(K, 3, device)
    _check(x, index, F, s, t, w, out_dtype=out_dtype)


def test_single_snippet(device):
    g = _gen(4)
    x = torch.randn(1, 3, 1, 13, 17, generator=g).to(device)
    index = torch.tensor([[2, 0, 1]], device=device)
    s = torch.tensor([2.0], device=device)
    t = torch.tensor([-1.0], device=device)
    out = _check(x, index, 4, s, t, None)
    # One entry per frame: the average is just the corrected map.
    torch.testing.assert_close(out[2], (2 * x[0, 0] - 1), rtol=1e-6, atol=1e-6)
    assert torch.isnan(out[3]).all()


def test_many_snippets_rolling(device):
    # K=200 dilated snippets (frames k, k+2, k+4) at a tiny spatial size,
    # every other snippet counted twice (weight 2).
    K, L, C, H, W = 200, 3, 4, 5, 7
    F = K + 4
    g = _gen(5)
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    index = (torch.arange(K)[:, None] + 2 * torch.arange(L)[None, :]).to(device)
    s, t, _ = _affine(K, 5, device)
    w = torch.where(torch.arange(K) % 2 == 0, 2.0, 1.0).to(device)
    _check(x, index, F, s, t, w)


def test_duplicate_coverage(device):
    g = _gen(6)
    K, L, C, H, W, F = 3, 4, 1, 11, 9, 3
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    # Snippet 0 holds frame 1 three times; snippet 2 repeats snippet 1 exactly.
    index = torch.tensor([[1, 1, 1, 0], [0, 1, 2, 2], [0, 1, 2, 2]], device=device)
    x[2] = x[1]
    out = _check(x, index, F, *_affine(K, 6, device))
    # Unit weights, no affine: frame 0 is a plain mean of its three entries.
    out = average_frames(x, index, F, impl="triton")
    torch.testing.assert_close(out[0], (x[0, 3] + x[1, 0] + x[2, 0]) / 3, rtol=1e-6, atol=1e-6)


def test_skipped_indices_and_zero_weight(device):
    g = _gen(7)
    K, L, C, H, W, F = 4, 2, 1, 7, 5, 5
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    # -1 and F are outside [0, F): skipped. Frame 3 only has a zero-weight snippet -> NaN.
    index = torch.tensor([[0, -1], [1, F], [3, 3], [0, 1]], device=device)
    w = torch.tensor([1.0, 2.0, 0.0, 0.5], device=device)
    out = _check(x, index, F, None, None, w)
    assert torch.isnan(out[2]).all() and torch.isnan(out[3]).all() and torch.isnan(out[4]).all()
    assert not torch.isnan(out[:2]).any()


def test_no_valid_entries(device):
    x = torch.randn(2, 2, 1, 3, 4).to(device)
    out = average_frames(x, torch.full((2, 2), -1, device=device), 3, impl="triton")
    assert out.shape == (3, 1, 3, 4) and torch.isnan(out).all()
    empty = average_frames(x[:0], torch.zeros(0, 2, dtype=torch.int64, device=device), 2, impl="triton")
    assert torch.isnan(empty).all()


def test_deterministic(device):
    g = _gen(8)
    K, L, C, H, W, F = 8, 3, 1, 17, 19, 10
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    index = torch.randint(0, F, (K, L), generator=g).to(device)
    s, t, w = _affine(K, 8, device)
    a = average_frames(x, index, F, s, t, w, impl="triton")
    b = average_frames(x, index, F, s, t, w, impl="triton")
    assert torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))


def test_accumulate_in_chunks_matches_whole(device):
    """Streaming: merge snippet chunks into a window buffer, then finalize."""
    K, L, C, H, W = 12, 3, 2, 9, 13
    F = K + L - 1
    g = _gen(9)
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    index = (torch.arange(K)[:, None] + torch.arange(L)[None, :]).to(device)
    s, t, w = _affine(K, 9, device)
    whole = average_frames(x, index, F, s, t, w, impl="triton")

    acc = torch.zeros(F, C, H, W, device=device)
    count = torch.zeros(F, device=device)
    acc_ref, count_ref = acc.clone(), count.clone()
    for k0 in range(0, K, 5):
        sl = slice(k0, k0 + 5)
        accumulate_frames(acc, count, x[sl], index[sl], s[sl], t[sl], w[sl], impl="triton")
        accumulate_frames_ref(acc_ref, count_ref, x[sl], index[sl], s[sl], t[sl], w[sl])
    torch.testing.assert_close(count, count_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(acc, acc_ref, rtol=1e-5, atol=1e-5 * float(acc_ref.abs().max()))
    torch.testing.assert_close(finalize_frames(acc, count), whole, rtol=1e-5, atol=1e-5 * 4)


def test_accumulate_window_relative_skip(device):
    """Window-relative indices: entries outside the buffer (-1, >= F) are left out."""
    g = _gen(10)
    K, L, C, H, W, F = 3, 3, 1, 6, 7, 4
    x = torch.randn(K, L, C, H, W, generator=g).to(device)
    index = torch.tensor([[-1, 0, 1], [1, 2, 3], [3, 4, 5]], device=device)
    acc = torch.full((F, C, H, W), 0.5, device=device)  # previous partial sums survive
    count = torch.full((F,), 1.0, device=device)
    acc_ref, count_ref = acc.clone(), count.clone()
    accumulate_frames(acc, count, x, index, impl="triton")
    accumulate_frames_ref(acc_ref, count_ref, x, index)
    torch.testing.assert_close(count.cpu(), torch.tensor([2.0, 3.0, 2.0, 3.0]))
    torch.testing.assert_close(acc, acc_ref, rtol=1e-6, atol=1e-6)


def test_reference_matches_naive_loop():
    """The reference itself against a direct loop (CPU, fp64)."""
    g = _gen(11)
    K, L, C, H, W, F = 4, 3, 2, 3, 5, 7
    x = torch.randn(K, L, C, H, W, generator=g, dtype=torch.float64)
    index = torch.randint(-1, F, (K, L), generator=g)
    s, t, w = (torch.rand(K, generator=g, dtype=torch.float64) + 0.5 for _ in range(3))
    num = torch.zeros(F, C, H, W, dtype=torch.float64)
    den = torch.zeros(F, dtype=torch.float64)
    for k in range(K):
        for j in range(L):
            f = int(index[k, j])
            if 0 <= f < F:
                num[f] += w[k] * (s[k] * x[k, j] + t[k])
                den[f] += w[k]
    expect = num / den.view(-1, 1, 1, 1)  # 0/0 -> NaN for uncovered frames
    got = average_frames(x, index, F, s, t, w)  # CPU + auto -> reference
    torch.testing.assert_close(got, expect, equal_nan=True, rtol=1e-12, atol=1e-12)


def test_validation_errors():
    x = torch.randn(2, 3, 1, 4, 4)
    with pytest.raises(ValueError):
        average_frames(x, torch.zeros(2, 2, dtype=torch.int64), 3)
    with pytest.raises(ValueError):
        average_frames(x, torch.zeros(2, 3, dtype=torch.int64), 3, scale=torch.ones(3))
    with pytest.raises(TypeError):
        accumulate_frames(
            torch.zeros(3, 1, 4, 4, dtype=torch.float64), torch.zeros(3), x, torch.zeros(2, 3, dtype=torch.int64)
        )
    with pytest.raises(ValueError):
        accumulate_frames(torch.zeros(3, 1, 4, 8)[..., ::2], torch.zeros(3), x, torch.zeros(2, 3, dtype=torch.int64))
