"""`rd-engine run BAG --topic ...`: a real rosbag2 (written with rosbags) in, an output bag read back."""

import json

import numpy as np
import pytest

from rd_engine import cli
from rd_engine.testing.media import synthetic_frame
from rd_engine.testing.rosbag import DEPTH_TOPIC, FRAME_ID, IMAGE_TOPIC, scan_lines, write_bag

N, W, H = 10, 64, 48
FAST = ["--res", "48", "-d", "1", "3", "--seed", "3", "-q", "--cmap"]


def _frames():
    return [synthetic_frame(i, N, W, H) for i in range(N)]


def _read(bag):
    from rosbags.highlevel import AnyReader

    from rd_engine.io.rosbag import typestore

    out = {}
    with AnyReader([bag], default_typestore=typestore()) as r:
        for conn, t, raw in r.messages():
            out.setdefault(conn.topic, []).append((t, r.deserialize(raw, conn.msgtype), conn.msgtype))
    return out


def _stamp(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.mark.parametrize("storage, stream", [("mcap", False), ("sqlite3", False), ("mcap", True)])
def test_bag_in_bag_out(tmp_path, tiny_ckpt, capsys, storage, stream):
    from rd_engine.io.rosbag import image_array, points_of

    bag = tmp_path / "in_bag"
    stamps = write_bag(bag, _frames(), storage, sparse_depth=scan_lines((H, W)))
    out = tmp_path / "out"
    args = ["run", str(bag), "--topic", IMAGE_TOPIC, "--anchors-topic", DEPTH_TOPIC, "-c", str(tiny_ckpt)]
    args += ["-o", str(out), *FAST, "--fov", "70", "--pointcloud"]
    if stream:
        args += ["--stream", "--lag", "2"]
    code = cli.main(args)
    cap = capsys.readouterr()
    assert code == 0, cap.err
    rel = np.load(out / "in_bag_pred.npy")
    z = np.load(out / "in_bag.npz")
    assert rel.shape == (N, 36, 48)
    got = _read(out / "in_bag_rosbag2")
    meta = (out / "in_bag_rosbag2" / "metadata.yaml").read_text()
    assert f"storage_identifier: {storage}" in meta
    for topic in ("depth", "depth_relative", "confidence", "points"):
        msgs = got[f"/rd_engine/{topic}"]
        assert len(msgs) == N, topic
        assert [_stamp(m) for _, m, _ in msgs] == stamps  # header stamps copied
        assert all(m.header.frame_id == FRAME_ID for _, m, _ in msgs)
        assert [t for t, _, _ in msgs] == [s + 1_000_000 for s in stamps]  # at the input's receive time
    for i, (_, m, _) in enumerate(got["/rd_engine/depth"]):
        assert m.encoding == "32FC1" and (m.height, m.width) == (36, 48)
        np.testing.assert_array_equal(image_array(m), z["depth_m"][i])  # metres, as in the .npz
    for i, (_, m, _) in enumerate(got["/rd_engine/depth_relative"]):
        np.testing.assert_array_equal(image_array(m), rel[i])  # equal to the .npy
    for i, (_, m, _) in enumerate(got["/rd_engine/confidence"]):
        np.testing.assert_array_equal(image_array(m), z["confidence"][i])
    xyz, rgb = points_of(got["/rd_engine/points"][4][1])
    assert xyz.shape[0] == np.isfinite(z["depth_m"][4]).sum() and rgb is not None
    np.testing.assert_allclose(np.sort(xyz[:, 2]), np.sort(z["depth_m"][4][np.isfinite(z["depth_m"][4])]), rtol=1e-6)
    # the synthetic sparse depth (2 m to 8 m, 10 % outliers) sets the scale: metres of that order
    assert 0.5 < np.nanmedian(z["depth_m"]) < 30
    assert json.loads(str(z["metadata"]))["metric"]["frames_with_metric"] == N
    assert len(list((out / "in_bag_pointcloud").glob("*.ply"))) == N
    assert "points" in cap.out


@pytest.mark.parametrize("encoding", ["bgr8", "mono8", "jpeg"])
def test_image_encodings_read_as_rgb(tmp_path, encoding):
    from rd_engine.io.rosbag import read_images

    frames = _frames()[:3]
    bag = tmp_path / "b"
    write_bag(bag, frames, "sqlite3", encoding=encoding)
    got = list(read_images(bag, IMAGE_TOPIC))
    assert len(got) == 3 and got[1].frame_id == FRAME_ID
    for f, rgb in zip(got, frames):
        if encoding == "bgr8":
            np.testing.assert_array_equal(f.rgb, rgb)
        elif encoding == "mono8":
            np.testing.assert_array_equal(f.rgb, np.repeat(rgb[..., :1], 3, 2))
        else:  # lossy
            assert f.rgb.shape == rgb.shape and np.abs(f.rgb.astype(int) - rgb).mean() < 12


def test_relative_only_bag_and_errors(tmp_path, tiny_ckpt, capsys):
    bag = tmp_path / "in_bag"
    write_bag(bag, _frames(), "mcap")
    out = tmp_path / "out"
    base = ["run", str(bag), "-c", str(tiny_ckpt), "-o", str(out), *FAST]
    assert cli.main([*base, "--topic", IMAGE_TOPIC, "--fov", "60", "--confidence"]) == 0
    got = _read(out / "in_bag_rosbag2")
    assert "/rd_engine/depth" not in got and len(got["/rd_engine/depth_relative"]) == N
    assert len(got["/rd_engine/points_relative"]) == N  # flagged by its topic: no metres without anchors
    capsys.readouterr()
    for extra, needle in [
        ([], "needs --topic"),
        (["--topic", "/nope"], "no topic /nope"),
        (["--topic", IMAGE_TOPIC, "--anchors-topic", "/nope"], "no topic /nope"),
    ]:
        assert cli.main([*base, *extra]) == 1
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
