"""Metric anchors and confidence on a live session (tiny real model): exact fits, late anchors, bad input."""

import numpy as np
import pytest

A, B = 0.21, 0.27  # the test's true affine: 1 / z = A d + B
KW = dict(res=48, dilations=[1, 3], seed=5)


@pytest.fixture(scope="module")
def engine(tiny_ckpt):
    from rd_engine import Engine

    return Engine(tiny_ckpt, device="cpu")


@pytest.fixture(scope="module")
def frames(clip):
    from rd_engine.io.video import iter_frames

    return [(f.rgb, f.timestamp) for f in iter_frames(clip)]  # 96x64, processed at 48x32


def _run(engine, frames, lag, anchors=None):
    s = engine.open_stream(lag=lag, **KW)
    out = []
    for i, (rgb, ts) in enumerate(frames):
        out += s.push(rgb, ts, anchors=None if anchors is None else anchors.get(i))
    return out + s.flush()


def _anchors_from(depth_by_frame, first=0, per_frame=20, seed=0):
    """Per frame, `(x, y, depth)` in input pixels that are exactly `1 / (A d + B)` of the relative output."""
    rng = np.random.default_rng(seed)
    out = {}
    for f, d in depth_by_frame.items():
        if f < first:
            continue
        h, w = d.shape
        u, v = rng.integers(0, w, per_frame), rng.integers(0, h, per_frame)
        x, y = (u + 0.5) * 2 - 0.5, (v + 0.5) * 2 - 0.5  # 96x64 input, 48x32 processed
        out[f] = (x, y, 1.0 / (A * d[v, u].astype(np.float64) + B))
    return out


@pytest.mark.parametrize("lag", [0, 2])
def test_exact_anchors_online_and_the_relative_depth_unchanged(engine, frames, lag):
    plain = _run(engine, frames, lag)
    assert all(f.depth_m is None and f.metric_fit is None for f in plain)
    anchored = _run(engine, frames, lag, _anchors_from({f.index: f.depth for f in plain}))
    assert [f.index for f in anchored] == [f.index for f in plain]
    for p, a in zip(plain, anchored):
        np.testing.assert_array_equal(a.depth, p.depth)  # bit for bit
        truth = 1.0 / (A * p.depth.astype(np.float64) + B)
        assert np.abs(a.depth_m / truth - 1).max() < 1e-4
        assert a.confidence.shape == a.depth.shape and 0 <= a.confidence.min() and a.confidence.max() <= 1


def test_anchors_starting_late_flag_the_frames_before_and_fit_the_rest(engine, frames):
    lag = 1
    plain = _run(engine, frames, lag)
    first = 6
    anchored = _run(engine, frames, lag, _anchors_from({f.index: f.depth for f in plain}, first=first))
    before = [f for f in anchored if f.index < first]
    assert before and all(f.depth_m is None and f.metric_fit is None for f in before)
    for f in anchored[first:]:
        truth = 1.0 / (A * f.depth.astype(np.float64) + B)
        assert np.abs(f.depth_m / truth - 1).max() < 1e-4


def test_sparse_depth_image_anchors(engine, frames):
    plain = _run(engine, frames, 0)
    images = {}
    rng = np.random.default_rng(3)
    for f in plain:
        img = np.zeros((64, 96), np.float32)  # metres, 0 = no sample, at the input's size
        ys, xs = rng.integers(0, 64, 30), rng.integers(0, 96, 30)
        img[ys, xs] = 1.0 / (A * f.depth[ys // 2, xs // 2].astype(np.float64) + B)
        images[f.index] = img
    anchored = _run(engine, frames, 0, images)
    for f in anchored:
        truth = 1.0 / (A * f.depth.astype(np.float64) + B)
        assert np.abs(f.depth_m / truth - 1).max() < 1e-4


@pytest.mark.parametrize(
    "anchors, needle",
    [
        ((np.array([1.0, 2.0]), np.array([1.0]), np.array([2.0, 3.0])), "differ in length"),
        ((np.array([1.0, np.nan]), np.array([1.0, 2.0]), np.array([2.0, 3.0])), "NaN"),
        ((np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([2.0, -3.0])), "> 0"),
        ((np.array([1.0, 200.0]), np.array([1.0, 2.0]), np.array([2.0, 3.0])), "outside the 96x64"),
        (np.zeros((4, 4, 3), np.uint16), "one channel"),
        (np.full((4, 4), -1.0, np.float32), "negative"),
    ],
)
def test_bad_anchors_in_push(engine, frames, anchors, needle):
    from rd_engine.errors import UserError

    s = engine.open_stream(lag=0, **KW)
    with pytest.raises(UserError, match=needle):
        s.push(frames[0][0], 0.0, anchors=anchors)
