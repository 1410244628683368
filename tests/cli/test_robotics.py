"""`rd-engine run` with metric anchors, confidence and point clouds (offline), and their bad inputs."""

import json

import numpy as np
import pytest

from rd_engine import cli
from rd_engine.testing.media import write_test_video

# 64x48 input processed at 48x36: anchors in input pixels must be mapped through the resize
FAST = ["--res", "48", "-d", "1", "3", "--seed", "3", "-q", "--cmap", "--no-npy"]
A, B = 0.21, 0.27  # the test's true affine: 1 / z = A d + B


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    p = tmp_path_factory.mktemp("robotics") / "v.mp4"
    write_test_video(p, n_frames=12, width=64, height=48, fps=8)
    return p


@pytest.fixture(scope="module")
def plain(video, tiny_ckpt, tmp_path_factory):
    """The run without anchors: its relative depth defines the anchors of the exact test."""
    out = tmp_path_factory.mktemp("plain")
    assert cli.main(["run", str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST]) == 0
    return np.load(out / "v.npz")["depth"]


def _exact_anchors(depth, path, frames=range(0, 12, 2), per_frame=25, seed=0):
    """Anchors that are exactly `1 / (A d + B)` of the relative output at processed pixels, given in
    input-frame pixels (the inverse of the resize's mapping).
    """
    rng = np.random.default_rng(seed)
    n, h, w = depth.shape
    rows = []
    for f in frames:
        u, v = rng.integers(0, w, per_frame), rng.integers(0, h, per_frame)
        x, y = (u + 0.5) * (64 / w) - 0.5, (v + 0.5) * (48 / h) - 0.5
        rows.append((np.full(per_frame, f), x, y, 1.0 / (A * depth[f, v, u].astype(np.float64) + B)))
    frame, x, y, z = (np.concatenate([r[i] for r in rows]) for i in range(4))
    np.savez(path, frame=frame, x=x, y=y, depth=z)
    return path


def run(args, capsys):
    code = cli.main(["run", *args])
    return code, capsys.readouterr()


def test_exact_affine_anchors_give_exact_metric_depth_and_leave_the_relative_depth_alone(
    video, tiny_ckpt, plain, tmp_path, capsys
):
    anchors = _exact_anchors(plain, tmp_path / "a.npz")
    out = tmp_path / "out"
    code, cap = run([str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--anchors", str(anchors)], capsys)
    assert code == 0, cap.err
    z = np.load(out / "v.npz")
    np.testing.assert_array_equal(z["depth"], plain)  # anchors change nothing of the relative output
    truth = 1.0 / (A * plain.astype(np.float64) + B)
    assert z["depth_m"].dtype == np.float32 and z["depth_m"].shape == plain.shape
    assert np.abs(z["depth_m"] / truth - 1).max() < 1e-4  # every pixel of every frame, anchored or not
    assert z["metric_valid"].all()
    meta = json.loads(str(z["metadata"]))
    assert meta["metric"]["ranges"][0]["anchors"] == 150


def test_png16_writes_millimetres_and_confidence(video, tiny_ckpt, plain, tmp_path, capsys):
    from PIL import Image

    anchors = _exact_anchors(plain, tmp_path / "a.npz")
    out = tmp_path / "out"
    args = [str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--anchors", str(anchors)]
    code, cap = run([*args, "--png16", "--confidence"], capsys)
    assert code == 0, cap.err
    z = np.load(out / "v.npz")
    np.testing.assert_array_equal(z["depth"], plain)  # confidence changes nothing either
    mm = np.asarray(Image.open(out / "v_depth_mm" / "v_000005.png"))
    assert mm.dtype == np.uint16
    np.testing.assert_array_equal(mm, np.rint(z["depth_m"][5].astype(np.float64) * 1000).astype(np.uint16))
    c = z["confidence"]
    assert c.shape == plain.shape and c.dtype == np.float32 and 0 <= c.min() and c.max() <= 1
    assert c.std() > 0  # the tiny random model's snippets disagree, and not everywhere alike
    assert len(list((out / "v_confidence_png16").glob("*.png"))) == 12


def test_confidence_min_masks_metric_depth(video, tiny_ckpt, plain, tmp_path, capsys):
    anchors = _exact_anchors(plain, tmp_path / "a.npz")
    out = tmp_path / "out"
    args = [str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--anchors", str(anchors)]
    code, cap = run([*args, "--confidence", "--confidence-min", "0.99"], capsys)
    assert code == 0, cap.err
    z = np.load(out / "v.npz")
    low = z["confidence"] < 0.99  # about half the pixels of the tiny random model
    assert low.any() and (~low).any()
    assert np.isnan(z["depth_m"][low]).all() and np.isfinite(z["depth_m"][~low]).all()


def test_pointcloud_follows_the_pinhole_model(video, tiny_ckpt, plain, tmp_path, capsys):
    from plyfile import PlyData

    anchors = _exact_anchors(plain, tmp_path / "a.npz")
    out = tmp_path / "out"
    fx, fy, cx, cy = 60.0, 58.0, 31.5, 23.0  # input pixels; processed at 0.75
    args = [str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--anchors", str(anchors), "--pointcloud"]
    code, cap = run([*args, "--intrinsics", str(fx), str(fy), str(cx), str(cy)], capsys)
    assert code == 0, cap.err
    depth_m = np.load(out / "v.npz")["depth_m"]
    ply = PlyData.read(str(out / "v_pointcloud" / "v_000003.ply"))
    assert not ply.text and ply.byte_order == "<" and any("metric" in c for c in ply.comments)
    v = ply["vertex"].data
    assert v.size == 48 * 36 and {"red", "green", "blue"} <= set(v.dtype.names)
    # each point projects back to its pixel through the scaled intrinsics, at its metric depth
    s = 0.75
    u = v["x"] / v["z"] * fx * s + (cx + 0.5) * s - 0.5
    w = v["y"] / v["z"] * fy * s + (cy + 0.5) * s - 0.5
    ui, wi = np.rint(u).astype(int), np.rint(w).astype(int)
    assert np.abs(u - ui).max() < 1e-3 and np.abs(w - wi).max() < 1e-3
    np.testing.assert_allclose(v["z"], depth_m[3, wi, ui], rtol=1e-6)
    assert sorted(zip(wi.tolist(), ui.tolist())) == [(a, b) for a in range(36) for b in range(48)]


def test_pointcloud_range_voxels_and_relative_flag(video, tiny_ckpt, tmp_path, capsys):
    from plyfile import PlyData

    out = tmp_path / "out"
    args = [str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--pointcloud", "--fov", "70"]
    code, cap = run([*args, "--max-depth", "3", "--voxel-size", "0.2"], capsys)
    assert code == 0, cap.err
    ply = PlyData.read(str(out / "v_pointcloud" / "v_000000.ply"))
    assert any("relative" in c for c in ply.comments)
    v = ply["vertex"].data
    assert 0 < v.size < 48 * 36 and v["z"].max() <= 3.0
    keys = np.floor(np.stack([v["x"], v["y"], v["z"]], 1) / 0.2)
    # a voxel's mean lies in its voxel, one point per voxel
    assert np.unique(keys, axis=0).shape[0] == v.size


@pytest.mark.parametrize(
    "arrays, needle",
    [
        (dict(frame=[0, 1], x=[1.0, 2.0], y=[1.0], depth=[1.0, 2.0]), "differ in length"),
        (dict(frame=[0, 1], x=[1.0, np.nan], y=[1.0, 2.0], depth=[1.0, 2.0]), "NaN"),
        (dict(frame=[0, 1], x=[1.0, 2.0], y=[1.0, 2.0], depth=[1.0, -2.0]), "must be > 0"),
        (dict(frame=[0, 99], x=[1.0, 2.0], y=[1.0, 2.0], depth=[1.0, 2.0]), "frame 99"),
        (dict(frame=[0, 1], x=[1.0, 200.0], y=[1.0, 2.0], depth=[1.0, 2.0]), "outside the 64x48"),
        (dict(frame=[0, 1], x=[1.0, 2.0], depth=[1.0, 2.0]), "lacks y"),
        (dict(frame=[0.5, 1], x=[1.0, 2.0], y=[1.0, 2.0], depth=[1.0, 2.0]), "integer"),
    ],
)
def test_bad_anchors_are_one_line_errors(video, tiny_ckpt, tmp_path, capsys, arrays, needle):
    p = tmp_path / "bad.npz"
    np.savez(p, **{k: np.asarray(v) for k, v in arrays.items()})
    out = tmp_path / "out"
    code, cap = run([str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--anchors", str(p)], capsys)
    assert code == 1
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("rd-engine: error")]
    assert lines and needle in lines[0] and "Traceback" not in cap.err
    assert not (out / "v.npz").exists()


def test_png_folder_anchors(video, tiny_ckpt, plain, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "sparse"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for f in (1, 4, 9):
        # sparse depth at the input's size (64x48), in mm; the processed pixel under each sample is known
        img = np.zeros((48, 64), np.uint16)
        ys, xs = rng.integers(0, 48, 40), rng.integers(0, 64, 40)
        xp, yp = np.rint((xs + 0.5) * 0.75 - 0.5).astype(int), np.rint((ys + 0.5) * 0.75 - 0.5).astype(int)
        img[ys, xs] = np.rint(1000.0 / (A * plain[f, yp, xp].astype(np.float64) + B)).astype(np.uint16)
        Image.fromarray(img).save(folder / f"depth_{f:04d}.png")
    out = tmp_path / "out"
    code, cap = run([str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--anchors", str(folder)], capsys)
    assert code == 0, cap.err
    z = np.load(out / "v.npz")
    truth = 1.0 / (A * plain.astype(np.float64) + B)
    assert np.abs(z["depth_m"] / truth - 1).max() < 2e-3  # the millimetre rounding of the samples


def test_flag_errors(video, tiny_ckpt, tmp_path, capsys):
    base = [str(video), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), *FAST]
    for extra, needle in [
        (["--pointcloud"], "--intrinsics"),
        (["--fov", "60", "--intrinsics", "1", "1", "1", "1"], "both given"),
        (["--min-depth", "5", "--max-depth", "2"], "below"),
        (["--anchors", str(tmp_path / "missing.npz")], "no such anchors"),
        (["--split-shots", "--rerun", str(tmp_path / "r.rrd")], "leave out --split-shots"),
    ]:
        code, cap = run([*base, *extra], capsys)
        assert code == 1 and needle in cap.err, (extra, cap.err)


def test_stream_with_anchors_file(video, tiny_ckpt, tmp_path, capsys):
    plain_out = tmp_path / "plain"
    base = [str(video), "-c", str(tiny_ckpt), *FAST, "--stream", "--lag", "1"]
    code, cap = run([*base, "-o", str(plain_out)], capsys)
    assert code == 0, cap.err
    rel = np.load(plain_out / "v.npz")["depth"]
    late = 4  # anchors from frame 4 on: the frames finished before that are flagged
    anchors = _exact_anchors(rel, tmp_path / "a.npz", frames=range(late, 12))
    out = tmp_path / "out"
    code, cap = run([*base, "-o", str(out), "--anchors", str(anchors), "--confidence", "--png16"], capsys)
    assert code == 0, cap.err
    z = np.load(out / "v.npz")
    np.testing.assert_array_equal(z["depth"], rel)
    valid = z["metric_valid"]
    assert not valid[:late].any() and valid[late:].all()
    assert np.isnan(z["depth_m"][~valid]).all()
    truth = 1.0 / (A * rel[valid].astype(np.float64) + B)
    assert np.abs(z["depth_m"][valid] / truth - 1).max() < 1e-4
    assert z["confidence"].shape == rel.shape
    assert len(list((out / "v_depth_mm").glob("*.png"))) == 12


def test_exr_carries_metric_depth_and_confidence_channels(video, tiny_ckpt, plain, tmp_path, capsys):
    import OpenEXR

    anchors = _exact_anchors(plain, tmp_path / "a.npz")
    out = tmp_path / "out"
    args = [str(video), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--anchors", str(anchors)]
    code, cap = run([*args, "--exr", "--confidence"], capsys)
    assert code == 0, cap.err
    z = np.load(out / "v.npz")
    with OpenEXR.File(str(out / "v_exr" / "v_000007.exr"), separate_channels=True) as f:
        ch = {k: np.array(c.pixels) for k, c in f.channels().items()}
    assert set(ch) == {"Z", "depth_m", "confidence"}
    np.testing.assert_array_equal(ch["Z"], z["depth"][7])
    np.testing.assert_array_equal(ch["depth_m"], z["depth_m"][7])
    np.testing.assert_array_equal(ch["confidence"], z["confidence"][7])
    sidecar = json.loads((out / "v_exr" / "v_exr.json").read_text())
    assert "metres" in sidecar["channel_depth_m"] and "confidence" in sidecar["format"]
