"""`--rerun FILE.rrd`: a recording that rerun's own reader loads, with the expected entities per frame."""

import numpy as np
import pytest

from rd_engine import cli
from rd_engine.testing.media import write_test_video

rr = pytest.importorskip("rerun", reason="the viewer extra (rerun-sdk) is not installed")


def _entities(path):
    from rerun.chunk import RrdReader

    seen = {}
    for chunk in RrdReader(path).stream():
        if not chunk.is_static:
            seen.setdefault(chunk.entity_path, set()).update(chunk.timeline_names)
            seen.setdefault(chunk.entity_path + "#rows", set()).add(len(chunk))
    return seen


@pytest.mark.parametrize("stream", [False, True])
def test_rerun_recording_holds_every_frame(tmp_path, tiny_ckpt, capsys, stream):
    clip = tmp_path / "v.mp4"
    write_test_video(clip, n_frames=8, width=64, height=48, fps=8)
    rrd = tmp_path / "rec.rrd"
    args = ["run", str(clip), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), "--res", "48", "-d", "1", "3"]
    args += ["--seed", "1", "-q", "--cmap", "--rerun", str(rrd), "--fov", "60"]
    if stream:
        args.append("--stream")
    assert cli.main(args) == 0, capsys.readouterr().err
    ents = _entities(rrd)
    for e in ("/world/camera/rgb", "/world/camera/depth_relative", "/world/camera/confidence", "/world/points"):
        assert {"frame", "time"} <= ents[e], (e, sorted(ents))
    # one row per frame in each entity, over however many chunks the batcher made
    from rerun.chunk import RrdReader

    rows = {}
    for chunk in RrdReader(rrd).stream():
        if chunk.entity_path == "/world/camera/rgb":
            rows["n"] = rows.get("n", 0) + len(chunk)
    assert rows["n"] == 8
    assert not list(tmp_path.glob(".rec.rrd.partial*"))
    assert np.load(tmp_path / "o" / "v.npz")["depth"].shape[0] == 8
