"""The protocol (rd_engine.eval.metrics): one affine per video in inverse depth, per-frame metrics."""

import numpy as np
import pytest
import torch

from rd_engine.errors import UserError
from rd_engine.eval.metrics import mean_scores, score_video


@pytest.fixture
def gt():
    rng = np.random.default_rng(0)
    return rng.uniform(0.5, 8.0, (5, 12, 16)).astype(np.float32)


@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (-3.0, 7.0), (0.02, -0.5)])
def test_prediction_equal_to_gt_under_an_affine_in_inverse_depth_is_perfect(gt, scale, shift):
    pred = scale / gt.astype(np.float64) + shift
    s = score_video(pred, gt)
    assert s.absrel < 1e-9 and s.delta1 == 1.0
    # the fit undoes the affine: 1 / gt = (pred - shift) / scale
    assert s.scale == pytest.approx(1.0 / scale, rel=1e-9)
    assert s.shift == pytest.approx(-shift / scale, rel=1e-9, abs=1e-9)
    assert s.pixels == gt.size
    assert np.all(s.frame_absrel < 1e-9) and np.all(s.frame_delta1 == 1.0)


def test_torch_tensors_and_float16_are_scored_like_numpy(gt):
    pred = (2.0 / gt + 1.0).astype(np.float16)
    a = score_video(pred, gt)
    b = score_video(torch.from_numpy(pred), torch.from_numpy(gt))
    assert a.absrel == b.absrel and a.delta1 == b.delta1


def test_depth_itself_is_not_an_affine_of_inverse_depth(gt):
    assert score_video(gt, gt).absrel > 0.05


def test_injected_errors_give_the_hand_computed_metrics():
    # Frame 0: predictions take two values, so the least-squares line passes through the two groups' mean
    # inverse depths: pred 0 -> 1/gt = 1, 1 (mean 1); pred 1 -> 1/gt = 2, 4 in frame 0 and 3 in frame 1
    # (mean 3). Scale 2, shift 1: aligned inverse depth 1 and 3, depth 1 and 1/3.
    nan = np.nan
    gt = np.array(
        [
            [[1.0, 1.0], [0.5, 0.25]],
            [[1.0, 1.0 / 3.0], [0.0, nan]],  # the last two pixels have no ground truth
        ]
    )
    pred = np.array([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [5.0, 7.0]]])
    s = score_video(pred, gt)
    assert s.scale == pytest.approx(2.0) and s.shift == pytest.approx(1.0)
    assert s.pixels == 6
    # frame 0: |1/3 - 1/2| / (1/2) = 1/3 and |1/3 - 1/4| / (1/4) = 1/3 on two of four pixels
    assert s.frame_absrel[0] == pytest.approx((0 + 0 + 1 / 3 + 1 / 3) / 4)
    # ratios 1, 1, 1.5, 4/3: two of four within 1.25
    assert s.frame_delta1[0] == pytest.approx(0.5)
    # frame 1 is exact on its two valid pixels
    assert s.frame_absrel[1] == pytest.approx(0.0, abs=1e-12) and s.frame_delta1[1] == 1.0
    # the video's metrics are means over frames (not over pixels: that would give 1/9 and 2/3)
    assert s.absrel == pytest.approx(1 / 12) and s.delta1 == pytest.approx(0.75)


def test_the_cap_clips_predicted_depth_and_the_floor_keeps_it_finite():
    # three pixels, predictions 0, 1, 2; inverse depths y = 3, 0.2, 0.2: the least-squares line through
    # equally spaced predictions has scale (y2 - y0) / 2 and passes through the means
    gt = np.array([[[1 / 3, 5.0, 5.0]]])
    pred = np.array([[[0.0, 1.0, 2.0]]])
    y = 1.0 / gt[0, 0]
    scale = (y[2] - y[0]) / 2
    shift = y.mean() - scale * 1.0
    aligned = shift + scale * np.array([0.0, 1.0, 2.0])
    assert aligned[2] < 0  # below the floor: the depth would be 1000 m
    d_capped = np.array([1 / aligned[0], 1 / aligned[1], 10.0])
    capped = score_video(pred, gt, max_depth=10.0)
    assert capped.scale == pytest.approx(scale) and capped.shift == pytest.approx(shift)
    assert capped.absrel == pytest.approx(np.mean(np.abs(d_capped - gt[0, 0]) / gt[0, 0]))
    # ratios: 1 / (aligned[0] / 3) < 1.25, the other two are not
    assert capped.delta1 == pytest.approx(1 / 3)
    uncapped = score_video(pred, gt)
    d = np.array([1 / aligned[0], 1 / aligned[1], 1000.0])
    assert uncapped.absrel == pytest.approx(np.mean(np.abs(d - gt[0, 0]) / gt[0, 0]))


def test_max_depth_and_region_leave_pixels_out_of_fit_and_score():
    gt = np.array([[[1.0, 2.0, 50.0, 4.0]]])
    pred = 1.0 / gt
    pred[0, 0, 2] = 123.0  # wrong, but its ground truth is beyond the cap
    pred[0, 0, 3] = -9.0  # wrong, but outside the region
    region = np.array([[True, True, True, False]])
    s = score_video(pred, gt, region=region, max_depth=10.0)
    assert s.pixels == 2 and s.absrel == pytest.approx(0.0, abs=1e-12) and s.delta1 == 1.0
    assert score_video(pred, gt).absrel > 0.1
    # a per-frame region [N, H, W] over more frames than one chunk
    gt3 = np.tile(gt, (5, 1, 1))
    pred3 = np.tile(pred, (5, 1, 1))
    region3 = np.tile(region, (5, 1, 1))
    region3[4, 0, 1] = False
    s3 = score_video(pred3, gt3, region=region3, max_depth=10.0, chunk_frames=2)
    assert s3.pixels == 9 and s3.absrel == pytest.approx(0.0, abs=1e-12)


def test_frames_without_valid_pixels_are_left_out():
    gt = np.ones((3, 2, 2))
    gt[1] = 0.0
    pred = 1.0 / np.where(gt > 0, gt, 1.0) + np.arange(4).reshape(1, 2, 2) * 0.0
    s = score_video(pred, gt)
    assert np.isnan(s.frame_absrel[1]) and s.frames_scored == 2


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="must be equal"):
        score_video(np.zeros((2, 3, 4)), np.ones((2, 3, 5)))
    with pytest.raises(UserError, match="no valid"):
        score_video(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))


def test_a_benchmark_is_the_mean_over_its_videos(gt):
    a = score_video(1.0 / gt, gt)
    b = score_video(gt, gt)
    absrel, delta1 = mean_scores([a, b])
    assert absrel == pytest.approx((a.absrel + b.absrel) / 2) and delta1 == pytest.approx((a.delta1 + b.delta1) / 2)


def test_pred_clip_fits_the_clipped_prediction_as_the_published_scripts_do(gt):
    """`--clip-pred`: Video Depth Anything's and DepthCrafter's eval clip the raw prediction at 1e-3 first."""
    rng = np.random.default_rng(3)
    pred = (2.0 / gt + rng.normal(0.0, 0.3, gt.shape)).astype(np.float32)  # noisy, partly negative
    assert (pred < 1e-3).any()
    s = score_video(pred, gt, pred_clip=1e-3)
    clipped = np.maximum(pred.astype(np.float64), 1e-3)
    a = np.stack([clipped.ravel(), np.ones(clipped.size)], 1)
    (scale, shift), *_ = np.linalg.lstsq(a, 1.0 / gt.astype(np.float64).ravel(), rcond=None)
    assert s.scale == pytest.approx(scale, rel=1e-9) and s.shift == pytest.approx(shift, rel=1e-9, abs=1e-12)
    d = np.clip(1.0 / np.maximum(scale * clipped + shift, 1e-3), 1e-3, None)
    assert s.absrel == pytest.approx(np.mean(np.abs(d - gt) / gt, axis=(1, 2)).mean(), rel=1e-9)
    assert score_video(pred, gt).scale != pytest.approx(s.scale)  # without the switch: the raw prediction
