"""Benchmark adapters (rd_engine.eval.datasets): layouts, encodings, units, masks, frame selection."""

import csv

import numpy as np
import pytest
from PIL import Image

from rd_engine.errors import UserError
from rd_engine.eval.datasets import (
    BENCHMARKS,
    SPLITS_DIR,
    benchmark,
    check_dataset,
    check_rgb_size,
    load_depth,
    load_rgb,
    load_split,
    split_names,
)


def _png16(path, units):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(units, np.uint16)).save(path)


def _rgb(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((3, 4, 3), value, np.uint8)).save(path)


def _split(folder, name, rows):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.csv", "w", newline="") as f:
        csv.writer(f).writerows([["rgb", "depth"], *rows])
    return folder


# stored value -> metres, as each release documents its encoding
UNITS = {
    "scannet": (np.array([[0, 1, 1000], [2500, 9999, 65535]]), 1 / 1000),  # millimetres
    "bonn": (np.array([[0, 1, 5000], [2500, 12345, 65535]]), 1 / 5000),  # 5000 per metre (TUM)
    "pointodyssey": (np.array([[0, 1, 65534], [6553, 32768, 100]]), 1000 / 65535),  # 65535 = 1000 m
}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_png16_depth_reads_back_in_metres_with_zero_for_no_measurement(tmp_path, name):
    units, per = UNITS[name]
    bench = benchmark(name)
    seq_dir = tmp_path / "root" / "a" / "b"
    top, bottom, left, right = bench.crop  # ScanNet's ground truth is read inside its crop
    frame = np.zeros((2 + top + bottom, 3 + left + right), np.uint16)
    frame[top : top + 2, left : left + 3] = units
    _png16(seq_dir / "d" / "0.png", frame)
    _rgb(seq_dir / "c" / "0.png", 7)
    split = _split(tmp_path / "split", "a^b", [["c/0.png", "d/0.png"]])
    (seq,) = load_split(bench, split)
    assert seq.folder.parts == ("a", "b")
    depth = np.asarray(load_depth(tmp_path / "root", bench, seq))
    assert depth.dtype == np.float32 and depth.shape == (1, 2, 3)
    np.testing.assert_allclose(depth[0], units * per, rtol=1e-6)
    assert depth[0, 0, 0] == 0.0
    assert (load_rgb(tmp_path / "root", seq, 0) == 7).all()


def test_dydtof_npy_depth_reads_back_as_stored_metres(tmp_path):
    bench = benchmark("dydtof")
    metres = np.array([[0.0, 1.25], [3.5, 17.0]], np.float32)
    seq_dir = tmp_path / "root" / "scene" / "shot1"
    (seq_dir / "DepthMap").mkdir(parents=True)
    np.save(seq_dir / "DepthMap" / "shot1.0050.npy", metres)
    _rgb(seq_dir / "ColorImage" / "shot1.0050.jpeg", 200)
    split = _split(tmp_path / "split", "scene^shot1", [["ColorImage/shot1.0050.jpeg", "DepthMap/shot1.0050.npy"]])
    (seq,) = load_split(bench, split)
    np.testing.assert_array_equal(load_depth(tmp_path / "root", bench, seq)[0], metres)
    # JPEG is lossy: a flat picture stays within a step or two
    assert np.abs(load_rgb(tmp_path / "root", seq, 0).astype(int) - 200).max() <= 2


def test_frames_come_from_the_carried_split_list_in_its_order(tmp_path):
    """ScanNet scene0707_00: the list takes every third frame; decoy frames in between are not read."""
    bench = benchmark("scannet")
    with open(SPLITS_DIR / "scannet" / "rgbd_test_90frame_crop" / "scene0707_00.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    listed = [int(r[1].split("/")[1].split(".")[0]) for r in rows]
    assert len(listed) == 90 and listed[:3] == [0, 3, 6]
    base = tmp_path / "scene0707_00"
    for i in range(max(listed) + 1):  # every frame of the scan, each depth map holding its frame number
        _png16(base / "depth" / f"{i}.png", np.full((18, 24), i + 1))  # 2x2 inside the crop
        _rgb(base / "color" / f"{i}.jpg", 0)
    seqs = {s.id: s for s in load_split(bench)}
    assert len(seqs) == 100 and set(seqs) == {
        p.stem for p in (SPLITS_DIR / "scannet/rgbd_test_90frame_crop").glob("*.csv")
    }
    depth = load_depth(tmp_path, bench, seqs["scene0707_00"])
    assert depth.shape == (90, 2, 2)
    np.testing.assert_allclose(np.asarray(depth)[:, 0, 0], (np.array(listed) + 1) / 1000, rtol=1e-6)
    # decoded on access: a slice reads just its frames
    np.testing.assert_allclose(depth[3:5][:, 1, 1], (np.array(listed[3:5]) + 1) / 1000, rtol=1e-6)


def test_every_carried_split_has_the_papers_frame_counts():
    expect = {
        ("scannet", "rgbd_test_90frame_crop"): (100, 90),
        ("scannet", "rgbd_test_90frame_crop_sub20"): (20, 90),
        ("bonn", "5_seq_110frame"): (5, 110),
        ("pointodyssey", "selected_250frame_masked"): (35, 250),
        ("pointodyssey", "selected_250frame_masked_sub10"): (10, 250),
        ("dydtof", "extracted_200frame_sub16"): (16, 200),
        ("dydtof", "extracted_100frame_sub16"): (16, 100),
    }
    for (name, split), (n_seq, n_frames) in expect.items():
        seqs = load_split(benchmark(name), split)
        assert len(seqs) == n_seq and {s.frames for s in seqs} == {n_frames}, (name, split)
    for b in BENCHMARKS.values():
        assert b.default_split in split_names(b)
    assert {s.folder.parts[0] for s in load_split(benchmark("pointodyssey"))} == {"test", "train"}


def test_saturated_and_far_plane_values_read_as_no_measurement(tmp_path):
    """PointOdyssey's 65535 (1000 m or farther) and DyDToF's far plane (50 m) are no measurement (0)."""
    po = benchmark("pointodyssey")
    _png16(tmp_path / "po.png", [[65535, 65534, 1]])
    np.testing.assert_allclose(po.decode_depth(tmp_path / "po.png"), [[0.0, 65534 / 65.535, 1 / 65.535]], rtol=1e-6)
    dy = benchmark("dydtof")
    np.save(tmp_path / "dy.npy", np.array([[50.0, 49.99, 3.0], [50.0, 50.01, 0.5]], np.float32))
    np.testing.assert_array_equal(
        dy.decode_depth(tmp_path / "dy.npy"), np.array([[0.0, 49.99, 3.0], [0.0, 50.01, 0.5]], np.float32)
    )
    # ScanNet and Bonn keep every stored value but 0
    _png16(tmp_path / "s.png", [[65535, 0]])
    assert benchmark("scannet").decode_depth(tmp_path / "s.png")[0, 0] == pytest.approx(65.535)


def test_scannet_ground_truth_is_cropped_to_the_published_window(tmp_path):
    """Video Depth Anything and DepthCrafter cut [8:-8, 11:-11]: 640x480 becomes 618x464."""
    bench = benchmark("scannet")
    assert bench.crop_window(480, 640) == (slice(8, 472), slice(11, 629))
    assert bench.cropped_size(480, 640) == (464, 618)
    units = np.arange(1, 48 * 64 + 1).reshape(48, 64)  # each pixel its own value
    _png16(tmp_path / "root" / "sc" / "depth" / "0.png", units)
    _rgb(tmp_path / "root" / "sc" / "color" / "0.jpg", 0)
    (seq,) = load_split(bench, _split(tmp_path / "split", "sc", [["color/0.jpg", "depth/0.png"]]))
    depth = load_depth(tmp_path / "root", bench, seq)
    assert depth.full_shape == (1, 48, 64) and depth.shape == (1, 32, 42)
    np.testing.assert_allclose(np.asarray(depth)[0], units[8:-8, 11:-11] / 1000, rtol=1e-6)
    assert benchmark("bonn").crop_window(480, 640) == (slice(0, 480), slice(0, 640))
    with pytest.raises(UserError, match="not larger than its crop"):
        bench.crop_window(16, 100)


def test_scannet_colour_must_be_at_the_depths_size(tmp_path):
    """SensReader's default colour export (1296x968) does not match the depth (640x480) the crop is given in."""
    bench = benchmark("scannet")
    base = tmp_path / "scene"
    _png16(base / "depth" / "0.png", np.ones((48, 64)))
    Image.fromarray(np.zeros((61, 81, 3), np.uint8)).save(base.parent / "c.jpg")
    (base / "color").mkdir()
    (base.parent / "c.jpg").rename(base / "color" / "0.jpg")
    seqs = load_split(bench, _split(tmp_path / "split", "scene", [["color/0.jpg", "depth/0.png"]]))
    with pytest.raises(UserError, match=r"colour is 81x61 but its depth is 64x48; .*export the colour at"):
        check_rgb_size(tmp_path, bench, seqs)
    check_rgb_size(tmp_path, benchmark("bonn"), seqs)  # no crop, no requirement
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(base / "color" / "0.jpg")
    check_rgb_size(tmp_path, bench, seqs)


def test_missing_and_partial_datasets_name_what_is_missing(tmp_path):
    bench = benchmark("bonn")
    seqs = load_split(bench)
    with pytest.raises(UserError, match="not a folder"):
        check_dataset(tmp_path / "nope", bench, seqs)
    with pytest.raises(UserError, match=r"holds none of the 5 sequences.*rgbd_bonn_balloon2/rgb/"):
        check_dataset(tmp_path, bench, seqs)
    # one sequence complete, one with a frame missing, the other three absent
    for seq in seqs[:2]:
        for r, d in zip(seq.rgb, seq.depth):
            _rgb(tmp_path / seq.folder / r, 0)
            _png16(tmp_path / seq.folder / d, np.ones((3, 4)))
    (tmp_path / seqs[1].folder / seqs[1].depth[17]).unlink()
    with pytest.raises(UserError) as e:
        check_dataset(tmp_path, bench, seqs)
    msg = str(e.value)
    assert "4 of 5 bonn sequences" in msg and str(tmp_path / seqs[1].folder / seqs[1].depth[17]) in msg
    check_dataset(tmp_path, bench, seqs[:1])
    # every sequence with some files but one missing is partial, not absent
    with pytest.raises(UserError, match="1 of 1 bonn sequences are missing or incomplete"):
        check_dataset(tmp_path, bench, seqs[1:2])


def test_bad_splits_and_depth_files_are_user_errors(tmp_path):
    bench = benchmark("scannet")
    with pytest.raises(UserError, match="neither a split of scannet"):
        load_split(bench, "no_such_split")
    with pytest.raises(UserError, match="no .csv"):
        load_split(bench, tmp_path)
    _split(tmp_path / "bad", "x", [["a", "b", "c"]])
    with pytest.raises(UserError, match="one 'rgb,depth' pair"):
        load_split(bench, tmp_path / "bad")
    _rgb(tmp_path / "root" / "s" / "d.png", 1)  # an RGB picture where a depth map should be
    split = _split(tmp_path / "s1", "s", [["d.png", "d.png"]])
    with pytest.raises(UserError, match="single-channel 16-bit"):
        load_depth(tmp_path / "root", bench, load_split(bench, split)[0])
    # depth maps of one sequence must share a size
    bonn = benchmark("bonn")
    _png16(tmp_path / "root" / "t" / "a.png", np.ones((3, 4)))
    _png16(tmp_path / "root" / "t" / "b.png", np.ones((4, 4)))
    split = _split(tmp_path / "s2", "t", [["a.png", "a.png"], ["b.png", "b.png"]])
    with pytest.raises(UserError, match="b.png: 4x4, but .*a.png is 4x3"):
        np.asarray(load_depth(tmp_path / "root", bonn, load_split(bonn, split)[0]))
    # ScanNet's ground truth must be larger than its crop
    with pytest.raises(UserError, match="scannet: frames of 4x3 are not larger than its crop"):
        load_depth(tmp_path / "root", bench, load_split(bench, split)[0])


def test_pointodyssey_without_its_masked_depth_gets_a_hint(tmp_path):
    bench = benchmark("pointodyssey")
    seqs = load_split(bench)
    (tmp_path / seqs[0].folder / "depths").mkdir(parents=True)  # the public release's folder
    with pytest.raises(UserError, match="depths_masked/depth_.*the public release has depths/ only"):
        check_dataset(tmp_path, bench, seqs)
