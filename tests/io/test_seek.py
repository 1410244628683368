"""Seeking to a frame range (for split videos) gives exactly the frames sequential decoding gives."""

from __future__ import annotations

import numpy as np
import pytest

from rd_engine.io.video import iter_frames, keyframe_index, seek_frames
from rd_engine.testing.media import write_test_video


@pytest.mark.parametrize("vfr,rotation", [(False, 0), (True, 0), (False, 90)])
def test_seek_frames_equal_sequential_decoding(tmp_path, vfr, rotation):
    p = tmp_path / "v.mp4"
    write_test_video(p, n_frames=60, width=64, height=48, fps=10, gop=8, vfr=vfr, rotation=rotation)
    pts, keys = keyframe_index(p)
    assert len(pts) == 60 and len(keys) > 5  # keyframes to seek to
    every = list(iter_frames(p))
    for start in (0, 5, 8, 13, 40, 57):
        got = list(seek_frames(p, start, 7))
        ref = every[start : start + 7]
        assert [f.index for f in got] == [f.index for f in ref]
        assert [f.timestamp for f in got] == [f.timestamp for f in ref]
        assert all(np.array_equal(g.rgb, r.rgb) for g, r in zip(got, ref))


def test_seek_frames_past_the_end_gives_nothing(tmp_path):
    p = tmp_path / "v.mp4"
    write_test_video(p, n_frames=20, width=64, height=48, gop=4)
    assert list(seek_frames(p, 25, 3)) == []
    assert [f.index for f in seek_frames(p, 18, 5)] == [18, 19]
