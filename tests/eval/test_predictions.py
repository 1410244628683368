"""Saved predictions (rd_engine.eval.predictions): every format read back, length and size checks."""

from pathlib import PurePosixPath

import numpy as np
import pytest

from rd_engine.errors import UserError
from rd_engine.eval.datasets import SequenceSpec, benchmark
from rd_engine.eval.predictions import check_predictions, load_prediction, to_benchmark_size, to_size
from rd_engine.eval.synthetic import PRED_FORMATS, write_prediction

SEQ = SequenceSpec("train^girl", PurePosixPath("train/girl"), ("rgbs/rgb_1.jpg", "rgbs/rgb_2.jpg"), ("d1", "d2"))


@pytest.mark.parametrize("fmt", PRED_FORMATS)
def test_every_format_reads_back_what_was_written(tmp_path, fmt):
    pred = np.random.default_rng(1).standard_normal((2, 6, 8)).astype(np.float32)
    path = write_prediction(tmp_path, SEQ, pred, fmt)
    loaded = load_prediction(tmp_path, SEQ)
    assert loaded.path == path
    np.testing.assert_array_equal(np.asarray(loaded.depth), pred)
    if fmt == "rd-npz":  # rd-engine's .npz carries the run's model, backend and settings
        assert loaded.metadata["model"] == "synthetic" and loaded.metadata["settings"] == {"res": 0}


def test_channel_axes_are_squeezed_and_wrong_shapes_refused(tmp_path):
    np.save(tmp_path / "train^girl.npy", np.ones((2, 1, 6, 8), np.float32))
    assert load_prediction(tmp_path, SEQ).depth.shape == (2, 6, 8)
    np.save(tmp_path / "train^girl.npy", np.ones((3, 6, 8), np.float32))
    with pytest.raises(UserError, match="3 frames, but sequence train\\^girl has 2"):
        load_prediction(tmp_path, SEQ)
    np.save(tmp_path / "train^girl.npy", np.ones((2, 6), np.float32))
    with pytest.raises(UserError, match=r"\[N, H, W\]"):
        load_prediction(tmp_path, SEQ)
    np.savez(tmp_path / "train^girl_depths.npz", other=np.ones((2, 6, 8)))
    (tmp_path / "train^girl.npy").unlink()
    with pytest.raises(UserError, match="holds none of the arrays depth, depths"):
        load_prediction(tmp_path, SEQ)
    (tmp_path / "train^girl_pred.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="not a readable prediction"):
        load_prediction(tmp_path, SEQ)


def test_missing_predictions_are_named_before_any_work(tmp_path):
    other = SequenceSpec("test^dancing", PurePosixPath("test/dancing"), ("a.jpg",), ("a.png",))
    write_prediction(tmp_path, SEQ, np.zeros((2, 4, 4), np.float32))
    with pytest.raises(UserError, match=r"no prediction for 1 of 2 sequences \(first: test\^dancing"):
        check_predictions(tmp_path, [SEQ, other])
    with pytest.raises(UserError, match="is not a folder"):
        check_predictions(tmp_path / "missing", [SEQ])


def test_predictions_are_resized_to_the_ground_truth_only_when_the_aspect_ratio_matches():
    x = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    same = to_size(x, 4, 6, "p")
    assert same is x
    view = to_size(x, 8, 12, "p")
    assert view.shape == (2, 8, 12)
    up = np.asarray(view)
    assert up.shape == (2, 8, 12) and up.dtype == np.float32
    np.testing.assert_array_equal(view[1:2], up[1:2])  # frames are resized as they are sliced
    # bilinear (half-pixel centres): the mean of a linear ramp is kept, corners stay in range
    assert up.mean() == pytest.approx(x.mean(), rel=1e-6) and up.min() >= x.min() and up.max() <= x.max()
    down = np.asarray(to_size(up, 4, 6, "p"))
    assert down.shape == (2, 4, 6) and np.abs(down - x).max() < 0.5 * np.abs(x).max()
    with pytest.raises(UserError, match="p: frames are 6x4, the ground truth is 6x6"):
        to_size(x, 6, 6, "p")


def test_scannet_takes_a_prediction_at_exactly_the_full_or_the_cropped_frame():
    bench = benchmark("scannet")
    full = np.random.default_rng(2).standard_normal((2, 48, 64)).astype(np.float32)
    np.testing.assert_array_equal(to_benchmark_size(full, bench, 48, 64, "p"), full[:, 8:-8, 11:-11])
    cropped = full[:, 8:-8, 11:-11].copy()  # Video Depth Anything / DepthCrafter: made from cropped RGB
    assert to_benchmark_size(cropped, bench, 48, 64, "p") is cropped
    # other sizes, even of (nearly) the same aspect ratio, are refused rather than stretched over the crop
    for h, w in [(48, 63), (63, 84), (32, 43)]:
        with pytest.raises(UserError, match=r"p: frames are .*exactly the full frame \(64x48\) or .*\(42x32\)"):
            to_benchmark_size(np.zeros((2, h, w), np.float32), bench, 48, 64, "p")
    # without a crop, a prediction of the same aspect ratio is resized
    assert to_benchmark_size(full, benchmark("bonn"), 96, 128, "p").shape == (2, 96, 128)
