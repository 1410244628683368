"""Video encoding (rd_engine.io.video_writer)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from rd_engine.io.video import iter_frames, probe
from rd_engine.io.video_writer import VideoWriter
from rd_engine.testing.media import synthetic_frame


@pytest.mark.parametrize("width,height", [(67, 45), (64, 48), (150, 91)])
def test_video_writer_round_trip(tmp_path, width, height, leftovers):
    path = tmp_path / "depth.mp4"
    n = 5
    with VideoWriter(path, fps=30000 / 1001) as writer:
        for i in range(n):
            writer.write(synthetic_frame(i, n, width, height))
        assert not path.exists()  # only renamed at the end
    assert writer.frames_written == n
    assert leftovers(tmp_path) == []

    info = probe(path)
    padded = (width + width % 2, height + height % 2)
    assert (info.width, info.height) == padded
    assert info.num_frames == n
    assert info.fps == pytest.approx(30000 / 1001)
    frames = list(iter_frames(path))
    assert len(frames) == n
    for f in frames:
        assert f.rgb.shape == (padded[1], padded[0], 3)
        diff = np.abs(f.rgb[:height, :width].astype(float) - synthetic_frame(f.index, n, width, height))
        assert diff.mean() < 12.0


def test_video_writer_failure_and_misuse(tmp_path):
    path = tmp_path / "depth.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, fps=Fraction(24)) as writer:
            writer.write(synthetic_frame(0, 2, 32, 32))
            raise KeyboardInterrupt()
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(ValueError, match="differs"):
        with VideoWriter(path, fps=24) as writer:
            writer.write(np.zeros((32, 32, 3), np.uint8))
            writer.write(np.zeros((30, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(path, fps=24) as writer:
            writer.write(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(RuntimeError, match="nothing was written"):
        with VideoWriter(path, fps=24):
            pass
    assert list(tmp_path.iterdir()) == []


def test_video_writer_mpeg4_fallback(tmp_path, monkeypatch):
    """Without libx264 the writer falls back to MPEG-4 Part 2 (odd fps, odd size)."""
    monkeypatch.setattr("av.codecs_available", {"mpeg4"})
    path = tmp_path / "fallback.mp4"
    with VideoWriter(path, fps=30000 / 1001) as writer:
        for i in range(3):
            writer.write(synthetic_frame(i, 3, 45, 33))
    info = probe(path)
    assert info.codec == "mpeg4"
    assert (info.width, info.height) == (46, 34)
    assert info.fps == pytest.approx(30000 / 1001)
    assert len(list(iter_frames(path))) == 3


def test_same_frames_give_the_same_h264_bytes(tmp_path):
    """The same frames, encoded again and again with the heap churned in between, give one file.

    x264's macroblock tree reads memory it never wrote: with it on, these 25 encodes gave 5 different
    files on the development machine (up to 20 at 144x48 through PyAV directly); the writer turns it off.
    """
    import hashlib

    rng = np.random.default_rng(186)
    frames = [rng.integers(0, 256, (48, 138, 3), dtype=np.uint8) for _ in range(20)]
    digests = set()
    for k in range(25):
        junk = [np.random.default_rng(k).integers(0, 256, 138 * 48 * (j + 1), dtype=np.uint8) for j in range(4)]
        del junk
        p = tmp_path / "v.mp4"
        with VideoWriter(p, 10.0) as vw:
            for f in frames:
                vw.write(f)
        digests.add(hashlib.md5(p.read_bytes()).hexdigest())
    assert len(digests) == 1
    assert len(list(iter_frames(p, 0, 20))) == 20
