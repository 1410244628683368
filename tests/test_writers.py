"""Tests for rd_engine.io.files (atomic outputs, colouring, videos, PNG16, arrays)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from rd_engine.errors import UserError
from rd_engine.testing.media import synthetic_frame
from rd_engine.io.video import iter_frames, probe
from rd_engine.io.files import atomic_output, open_npy_memmap_atomic, save_npy_atomic, save_npz_atomic
from rd_engine.io.video_writer import VideoWriter
from rd_engine.outputs.render import colorize, side_by_side, write_png16_sequence


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_atomic_output_success_keeps_suffix(tmp_path):
    final = tmp_path / "sub" / "depth.mp4"
    with atomic_output(final) as tmp:
        assert tmp.parent == final.parent
        assert tmp.name.startswith(".depth.mp4.partial-") and tmp.suffix == ".mp4"
        assert not final.exists()
        tmp.write_text("done")
    assert final.read_text() == "done"
    assert _leftovers(final.parent) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_failure_leaves_nothing(tmp_path, error):
    final = tmp_path / "out.npy"
    with pytest.raises(error):
        with atomic_output(final) as tmp:
            tmp.write_text("half")
            raise error()
    assert list(tmp_path.iterdir()) == []

    # An existing result survives a failed rewrite.
    final.write_text("old")
    with pytest.raises(error):
        with atomic_output(final) as tmp:
            tmp.write_text("half")
            raise error()
    assert final.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_output_nothing_written(tmp_path):
    with pytest.raises(RuntimeError, match="nothing was written"):
        with atomic_output(tmp_path / "x.mp4"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_file_over_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="taken"):
        with atomic_output(tmp_path / "taken") as tmp:
            tmp.write_text("x")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_output_folder(tmp_path, error):
    final = tmp_path / "png16"
    with atomic_output(final, folder=True) as tmp:
        assert tmp.is_dir()
        (tmp / "a.png").write_text("1")
    assert sorted(p.name for p in final.iterdir()) == ["a.png"]

    # Success replaces the old folder completely.
    with atomic_output(final, folder=True) as tmp:
        (tmp / "b.png").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["b.png"]

    # Failure keeps the old folder and removes the partial one.
    with pytest.raises(error):
        with atomic_output(final, folder=True) as tmp:
            (tmp / "c.png").write_text("3")
            raise error()
    assert sorted(p.name for p in final.iterdir()) == ["b.png"]
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("width,height", [(67, 45), (64, 48), (150, 91)])
def test_video_writer_round_trip(tmp_path, width, height):
    path = tmp_path / "depth.mp4"
    n = 5
    with VideoWriter(path, fps=30000 / 1001) as writer:
        for i in range(n):
            writer.write(synthetic_frame(i, n, width, height))
        assert not path.exists()  # only renamed at the end
    assert writer.frames_written == n
    assert _leftovers(tmp_path) == []

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


def test_colorize_matches_matplotlib():
    rng = np.random.default_rng(0)
    depth = rng.uniform(-0.5, 1.5, (3, 20, 30)).astype(np.float32)
    depth[0, 0, :4] = [0.0, 1.0, -1.0, 2.0]
    for cmap in ["Spectral", "inferno", "gray"]:
        got = colorize(depth, 0.0, 1.0, cmap)
        assert got.shape == (3, 20, 30, 3) and got.dtype == np.uint8
        x = np.clip((depth - 0.0) / (1.0 - 0.0), 0, 1)
        expected = (matplotlib.colormaps[cmap](x)[..., :3] * 255).astype(np.uint8)
        np.testing.assert_array_equal(got, expected)

    single = colorize(depth[0], 0.0, 1.0, "Spectral")
    assert single.shape == (20, 30, 3)
    np.testing.assert_array_equal(single, colorize(depth, 0.0, 1.0, "Spectral")[0])


def test_colorize_ranges():
    lut = matplotlib.colormaps["inferno"]
    low = (np.array(lut(0.0)[:3]) * 255).astype(np.uint8)
    high = (np.array(lut(1.0)[:3]) * 255).astype(np.uint8)
    depth = np.array([[2.0, 4.0, 1.0, 9.0]])
    got = colorize(depth, 2.0, 4.0, "inferno")
    np.testing.assert_array_equal(got[0, 0], low)  # vmin
    np.testing.assert_array_equal(got[0, 1], high)  # vmax
    np.testing.assert_array_equal(got[0, 2], low)  # below: clipped
    np.testing.assert_array_equal(got[0, 3], high)  # above: clipped

    flat = colorize(np.full((4, 4), 3.0), 3.0, 3.0, "inferno")  # vmax == vmin
    assert (flat == low).all()

    nan = colorize(np.array([[np.nan, 0.5]]), 0.0, 1.0, "inferno")
    assert (nan[0, 0] == 0).all()


def test_colorize_unknown_cmap():
    with pytest.raises(UserError, match="Spectral") as err:
        colorize(np.zeros((2, 2)), 0, 1, "no_such_map")
    assert "no_such_map" in str(err.value)


def test_side_by_side():
    rgb = np.full((20, 30, 3), 200, np.uint8)
    colored = np.full((20, 30, 3), 100, np.uint8)
    out = side_by_side(rgb, colored, gap=10)
    assert out.shape == (20, 70, 3) and out.dtype == np.uint8
    assert (out[:, :30] == 200).all()
    assert (out[:, 30:40] == 0).all()
    assert (out[:, 40:] == 100).all()

    smaller = np.full((10, 15, 3), 100, np.uint8)
    out = side_by_side(rgb, smaller, gap=4)
    assert out.shape == (20, 64, 3)
    assert (out[:, 34:] == 100).all()

    batch = side_by_side(np.stack([rgb, rgb]), np.stack([smaller, smaller]), gap=0)
    assert batch.shape == (2, 20, 60, 3)


def test_png16_round_trip_and_sidecar(tmp_path):
    rng = np.random.default_rng(1)
    vmin, vmax = -0.25, 3.5
    depths = [rng.uniform(vmin, vmax, (9, 13)).astype(np.float32) for _ in range(3)]
    depths[0][0, :2] = [vmin - 1.0, vmax + 1.0]  # clipped values
    folder = tmp_path / "clip_png16"
    write_png16_sequence(folder, (d for d in depths), vmin, vmax, stem="clip")

    names = sorted(p.name for p in folder.iterdir())
    assert names == ["clip_000000.png", "clip_000001.png", "clip_000002.png", "clip_png16.json"]
    assert _leftovers(tmp_path) == []

    sidecar = json.loads((folder / "clip_png16.json").read_text())
    assert sidecar["vmin"] == vmin and sidecar["vmax"] == vmax
    assert sidecar["decode"] == "depth = vmin + png / 65535 * (vmax - vmin)"
    assert "relative inverse depth" in sidecar["note"] and "not metric" in sidecar["note"]
    assert sidecar["num_frames"] == 3

    for i, depth in enumerate(depths):
        with Image.open(folder / f"clip_{i:06d}.png") as img:
            assert img.mode == "I;16"
            png = np.array(img)
        assert png.dtype == np.uint16 and png.shape == depth.shape
        decoded = vmin + png / 65535 * (vmax - vmin)
        expected = np.clip(depth, vmin, vmax)
        assert np.abs(decoded - expected).max() <= (vmax - vmin) / 65535
    assert png.max() > 60000  # the range is really used


def test_png16_failure_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((4, 4), np.float32)
        raise KeyboardInterrupt()

    with pytest.raises(KeyboardInterrupt):
        write_png16_sequence(tmp_path / "seq", frames(), 0.0, 1.0, stem="s")
    assert list(tmp_path.iterdir()) == []


def test_npy_npz_atomic(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_npy_atomic(tmp_path / "depth.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "depth.npy"), a)

    save_npy_atomic(tmp_path / "no_suffix", a)  # numpy must not append ".npy"
    np.testing.assert_array_equal(np.load(tmp_path / "no_suffix"), a)

    save_npz_atomic(tmp_path / "all.npz", depth=a, index=np.arange(3))
    with np.load(tmp_path / "all.npz") as data:
        np.testing.assert_array_equal(data["depth"], a)
        np.testing.assert_array_equal(data["index"], np.arange(3))
    assert _leftovers(tmp_path) == []


def test_npy_memmap_atomic(tmp_path):
    path = tmp_path / "big.npy"
    with open_npy_memmap_atomic(path, (4, 3, 2), np.float16) as array:
        assert not path.exists()
        for i in range(4):
            array[i] = i
    loaded = np.load(path)
    assert loaded.dtype == np.float16 and loaded.shape == (4, 3, 2)
    assert (loaded[3] == 3).all()

    with pytest.raises(KeyboardInterrupt):
        with open_npy_memmap_atomic(tmp_path / "other.npy", (2, 2), np.float32) as array:
            array[0] = 1
            raise KeyboardInterrupt()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy"]


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
