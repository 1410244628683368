"""The synthetic co-alignment ground truth (rd_engine.testing.synthetic)."""

import pytest
import torch

from rd_engine.coalign.merge import merge_aligned, renormalize
from rd_engine.eval.metrics import score_video
from rd_engine.snippets.plan import plan_snippets
from rd_engine.testing.synthetic import (
    global_min_of,
    make_scene_depth,
    make_snippets,
    true_params_after_min_shift,
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only cost here, and on a shared 2-core box OpenMP barriers
    can make a 10 ms merge take seconds.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def gt():
    return make_scene_depth(40, 64, 48, seed=3)


def test_scene_depth_positive_finite_deterministic_and_moving(gt):
    assert gt.shape == (40, 48, 64) and gt.dtype == torch.float32
    assert torch.isfinite(gt).all()
    assert gt.min() > 0.5 and gt.max() < 100
    assert gt.max() / gt.min() > 3  # a real depth range, not a flat wall
    assert torch.equal(gt, make_scene_depth(40, 64, 48, seed=3))
    other = make_scene_depth(40, 64, 48, seed=4)
    assert not torch.equal(gt, other)
    # the camera moves: consecutive frames differ, the first and last differ a lot
    assert (gt[1:] - gt[:-1]).abs().amax(dim=(1, 2)).min() > 0
    assert (1 / gt[0] - 1 / gt[-1]).abs().mean() > 0.01


def test_snippet_shapes_match_plan(gt):
    for dil, cap in (([1, 25], True), ([1, 10, 25], True), ([1, 4], False)):
        groups, params, effective = make_snippets(gt, dil, cap=cap, noise=0.01, outlier_blobs=2)
        eff_plan, plan = plan_snippets(gt.shape[0], 3, dil, cap)
        assert effective == eff_plan
        assert len(groups) == len(plan) == len(params)
        for g, p, (s, t) in zip(groups, plan, params):
            assert (g.dilation, g.weight) == (p.dilation, p.weight)
            assert torch.equal(g.indices, p.indices)
            assert g.depth.shape == (p.indices.shape[0], 3, 48, 64) and g.depth.dtype == torch.float16
            assert torch.isfinite(g.depth).all()
            assert s.shape == t.shape == (p.indices.shape[0],)
            assert (s > 0).all()


@pytest.mark.parametrize("mode", ["a", "b"])
def test_true_params_reconstruct_gt_and_merge(gt, mode):
    groups, params, _ = make_snippets(gt, [1, 10, 25], mode=mode, noise=0.0, outlier_blobs=0, seed=1)
    inv = 1.0 / gt
    for g, (s, t) in zip(groups, params):
        z = g.depth.float()
        s4, t4 = s.view(-1, 1, 1, 1), t.view(-1, 1, 1, 1)
        rec = s4 * z + t4
        x = inv[g.indices]
        # fp16 stores z with relative error <= 2^-11 (normal range), mapped back by s
        bound = s4.abs() * (z.abs() * 2.0**-11 + 2.0**-24) * 1.05 + 1e-6 * x.abs() + 1e-7
        assert ((rec - x).abs() <= bound).all()
        if mode == "b":
            assert z.amin(dim=(1, 2, 3)).eq(-1).all() and z.amax(dim=(1, 2, 3)).eq(1).all()

    gm = global_min_of(groups)
    shifted = true_params_after_min_shift(params, gm)
    merged = merge_aligned(groups, shifted, gm, gt.shape[0])
    # without renormalization the merge IS the GT inverse depth
    assert torch.allclose(merged, inv, rtol=1e-2, atol=1e-4)
    m = score_video(renormalize(merged), gt)
    assert m.absrel < 1e-2 and m.delta1 > 0.999


def test_noise_and_outliers_hurt_but_true_affine_stays_good(gt):
    groups, params, _ = make_snippets(gt, [1, 25], mode="b", noise=0.02, outlier_blobs=3, seed=2)
    gm = global_min_of(groups)
    merged = merge_aligned(groups, true_params_after_min_shift(params, gm), gm, gt.shape[0])
    m = score_video(merged, gt)
    assert 1e-3 < m.absrel < 0.1 and m.delta1 > 0.9
    # the identity params (no alignment) are much worse in mode a
    ga, pa, _ = make_snippets(gt, [1, 25], mode="a", noise=0.02, outlier_blobs=3, seed=2)
    gma = global_min_of(ga)
    ident = [(torch.ones_like(s), torch.zeros_like(t)) for s, t in pa]
    bad = score_video(merge_aligned(ga, ident, gma, gt.shape[0]), gt)
    assert bad.absrel > 2 * m.absrel


def test_min_shift_convention():
    s, t = torch.tensor([2.0, 0.5]), torch.tensor([1.0, -1.0])
    ((s2, t2),) = true_params_after_min_shift([(s, t)], torch.tensor(-0.25))
    z = torch.tensor([0.3, -0.1])
    assert torch.allclose(s2 * (z - (-0.25)) + t2, s * z + t)
