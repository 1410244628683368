"""Colour maps, side-by-side frames and 16-bit PNGs (rd_engine.outputs.render)."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

from rd_engine.errors import UserError
from rd_engine.outputs.render import colorize, side_by_side, write_png16_sequence


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


def test_png16_round_trip_and_sidecar(tmp_path, leftovers):
    rng = np.random.default_rng(1)
    vmin, vmax = -0.25, 3.5
    depths = [rng.uniform(vmin, vmax, (9, 13)).astype(np.float32) for _ in range(3)]
    depths[0][0, :2] = [vmin - 1.0, vmax + 1.0]  # clipped values
    folder = tmp_path / "clip_png16"
    write_png16_sequence(folder, (d for d in depths), vmin, vmax, stem="clip")

    names = sorted(p.name for p in folder.iterdir())
    assert names == ["clip_000000.png", "clip_000001.png", "clip_000002.png", "clip_png16.json"]
    assert leftovers(tmp_path) == []

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
