"""The full-resolution merge: the method's mean (chunked, as the pipeline runs it) and the robust mean."""

import math

import numpy as np
import pytest
import torch

from rd_engine.coalign.merge import MIN_ENTRIES, merge_aligned, merge_deltas
from rd_engine.coalign.problem import CAUCHY_C, solver_view
from rd_engine.kernels import average_frames_ref
from rd_engine.snippets.plan import plan_snippets


def _snippets(n=20, dil=(1, 3, 5), h=20, w=24, seed=0, noise=0.01):
    """Every snippet = one shared video (+ noise) under its own affine; returns groups, params undoing the
    affines (on depth minus the global minimum), the global minimum and the video.
    """
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(n, h, w, generator=g) + 0.5
    _, plan = plan_snippets(n, 3, list(dil), True)
    groups, params = [], []
    for p in plan:
        K = p.indices.shape[0]
        a, b = torch.rand(K, generator=g) + 0.5, torch.randn(K, generator=g)
        d = video[p.indices] * a[:, None, None, None] + b[:, None, None, None]
        groups.append(p.with_depth(d + noise * torch.randn(d.shape, generator=g)))
        params.append((1 / a, -b / a))
    gm = torch.stack([g.depth.min() for g in groups]).min()
    params = [(s, t + s * gm) for s, t in params]  # s (x - gm) + t' == s x + t
    return groups, params, gm, video


def test_chunked_mean_equals_one_shot_average():
    groups, params, gm, _ = _snippets(n=23)
    x = torch.cat([(g.depth - gm).unsqueeze(2) for g in groups])
    idx = torch.cat([g.indices for g in groups])
    s = torch.cat([p[0] for p in params])
    t = torch.cat([p[1] for p in params])
    w = torch.cat([torch.full((g.size,), float(g.weight)) for g in groups])
    want = average_frames_ref(x, idx, 23, s, t, w)[:, 0]
    for chunk in (1, 5, 64):
        got = merge_aligned(groups, params, gm, 23, chunk=chunk)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # chunking changes no frame's summation order
    assert torch.equal(merge_aligned(groups, params, gm, 23, chunk=5), merge_aligned(groups, params, gm, 23, chunk=64))


def _deltas(groups, params, gm, n):
    views = [g.with_depth(solver_view(g.depth, gm)) for g in groups]
    return merge_deltas(views, params, n), views


def test_deltas_follow_the_residual_spread_and_skip_thin_frames():
    groups, params, gm, _ = _snippets(n=20, dil=(1, 4))
    delta, views = _deltas(groups, params, gm, 20)
    entries = torch.bincount(torch.cat([g.indices.reshape(-1) for g in groups]), minlength=20)
    assert torch.isinf(delta[entries < MIN_ENTRIES]).all() and (entries < MIN_ENTRIES).any()
    assert torch.isfinite(delta[entries >= MIN_ENTRIES]).all()
    # frame 10 by hand: residuals of its entries' solver pixels around their weighted mean
    rows, ws = [], []
    for g, (s, t) in zip(views, params):
        for k, j in (g.indices == 10).nonzero().tolist():
            rows.append(g.depth[k, j] * s[k] + t[k])
            ws.append(float(g.weight))
    rows = torch.stack(rows)
    mean = (rows * torch.tensor(ws)[:, None]).sum(0) / sum(ws)
    want = CAUCHY_C * 1.4826 * float((rows - mean).abs().reshape(-1).median())
    assert float(delta[10]) == pytest.approx(want, rel=1e-5)
    # frames without enough entries for a majority keep the mean exactly
    thin = torch.isinf(delta)
    assert torch.equal(merge_aligned(groups, params, gm, 20, delta)[thin], merge_aligned(groups, params, gm, 20)[thin])


def test_robust_mean_ignores_a_failed_snippet_region():
    n = 20
    groups, params, gm, video = _snippets(n=n, noise=0.01)
    d, idx = groups[0].depth, groups[0].indices
    k = 8  # one snippet of dilation 1 fails on a patch of its middle frame
    f = int(idx[k, 1])
    d[k, 1, 4:12, 6:16] = d[k, 1].max() + 3.0
    delta, _ = _deltas(groups, params, gm, n)
    mean = merge_aligned(groups, params, gm, n)
    robust = merge_aligned(groups, params, gm, n, delta)
    err_mean = float((mean[f, 4:12, 6:16] - video[f, 4:12, 6:16]).abs().mean())
    err_robust = float((robust[f, 4:12, 6:16] - video[f, 4:12, 6:16]).abs().mean())
    assert err_robust < 0.1 * err_mean
    # elsewhere, where the entries agree, the robust mean stays the mean up to the noise
    assert float((robust - mean).abs()[:, 14:, :].max()) < 0.02


def test_robust_mean_of_constant_entries_is_the_mean():
    groups, params, gm, _ = _snippets(n=12, noise=0.0)
    groups = [g.with_depth(torch.full_like(g.depth, 0.25)) for g in groups]
    params = [(torch.ones_like(s), torch.zeros_like(t)) for s, t in params]
    gm = torch.tensor(0.25)
    delta, _ = _deltas(groups, params, gm, 12)
    assert torch.isinf(delta).all()  # no spread: no scale, the plain mean
    out = merge_aligned(groups, params, gm, 12, delta)
    assert torch.equal(out, torch.zeros(out.shape))
    assert not math.isnan(float(out.sum())) and np.isfinite(out.numpy()).all()


def test_robust_mean_keeps_the_mean_where_every_weight_underflows():
    """A tiny scale against a huge disagreement: all Cauchy weights of a pixel round to 0 in fp32;
    that pixel keeps the mean instead of becoming 0 / 0.
    """
    from rd_engine.coalign.merge import robust_mean

    x = torch.zeros(3, 1, 1, 2, 2)
    x[:, 0, 0, 0, 0] = torch.tensor([-1e30, 0.0, 1e30])
    idx = torch.zeros(3, 1, dtype=torch.long)
    mean = x.mean(0)
    for size in (2, 130):  # the batched and the per-entry (large frame) reference paths
        xs = torch.zeros(3, 1, 1, size, size)
        xs[:, 0, 0, 0, 0] = x[:, 0, 0, 0, 0]
        xs[:, 0, 0, 1, 1] = 0.5  # exact agreement: weight 1 each, not 0 * inf
        mean = xs.mean(0)
        out = robust_mean(lambda xs=xs: iter([(xs, idx, None, None, None)]), mean.contiguous(), torch.tensor([1e-30]))
        assert torch.isfinite(out).all()
        assert float(out[0, 0, 0, 0]) == float(mean[0, 0, 0, 0])
        assert float(out[0, 0, 1, 1]) == 0.5
