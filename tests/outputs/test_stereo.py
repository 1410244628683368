"""Stereo 3D from the depth (`rd_engine.outputs.stereo`): geometry on synthetic input, layouts, anaglyph, and
`rd-engine stereo` from a saved run against `run --stereo`.

Synthetic scene: a near square (relative inverse depth 1) over a far plane (0), so nearness is exactly 1
on the square and 0 elsewhere; the documented parallax is ``divergence / 100 * W * (near - convergence)``.
"""

import json

import av
import numpy as np
import pytest
import torch

from rd_engine import cli
from rd_engine.outputs.stereo import (
    DUBOIS_LEFT,
    DUBOIS_RIGHT,
    LAYOUTS,
    StereoOptions,
    compose,
    nearness,
    render_pair,
    snap_edges,
    write_stereo,
)

W, H = 200, 60
SQ = (20, 40, 80, 120)  # y0, y1, x0, x1


def _scene():
    rng = np.random.default_rng(0)
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[..., 0] = 10  # the background has no strong red
    rgb[..., 1] = rng.integers(20, 250, (1, W))  # a column code, to find where pixels went
    rgb[..., 2] = rng.integers(20, 250, (H, 1))
    y0, y1, x0, x1 = SQ
    rgb[y0:y1, x0:x1] = (250, 5, 5)
    depth = np.zeros((H, W), np.float32)
    depth[y0:y1, x0:x1] = 1.0
    return rgb, depth


def _square_columns(view):
    red = (view[..., 0] > 200) & (view[..., 1] < 30)
    cols = np.nonzero(red[SQ[0] : SQ[1]].any(axis=0))[0]
    return cols.min(), cols.max()


@pytest.mark.parametrize("divergence,convergence", [(5.0, 0.0), (5.0, 0.5), (3.3, 1.0), (8.0, 0.25)])
def test_parallax_follows_the_formula_and_the_convergence_plane_has_none(divergence, convergence):
    rgb, depth = _scene()
    opts = StereoOptions(divergence=divergence, convergence=convergence)
    left, right = (v.numpy() for v in render_pair(rgb, nearness(depth, 0.0, 1.0), opts, impl="torch"))
    (l0, l1), (r0, r1) = _square_columns(left), _square_columns(right)
    expected = divergence / 100 * W * (1.0 - convergence)
    assert abs((l0 - r0) - expected) <= 1.0 and abs((l1 - r1) - expected) <= 1.0
    # the far plane's parallax: its column code moves by divergence / 100 * W * (0 - convergence)
    far = -divergence / 100 * W * convergence
    row = 5  # above the square: background only
    code = rgb[row, :, 1]
    for x in range(30, 60):
        xl = np.nonzero(left[row, :, 1] == code[x])[0]
        xr = np.nonzero(right[row, :, 1] == code[x])[0]
        if len(xl) == 1 and len(xr) == 1:
            assert abs((xl[0] - xr[0]) - far) <= 1.0
    if convergence == 0.0:
        # the convergence plane (here the far plane) stays where it was in both views, away from the square
        np.testing.assert_array_equal(left[:, :60], rgb[:, :60])
        np.testing.assert_array_equal(right[:, :60], rgb[:, :60])


def test_disocclusions_are_filled_from_the_background_side():
    rgb, depth = _scene()
    left, right = (
        v.numpy()
        for v in render_pair(rgb, nearness(depth, 0, 1), StereoOptions(divergence=5.0, convergence=0.0), "torch")
    )
    y0, y1, x0, x1 = SQ
    # the left view moved the square right by 5: columns x0..x0+4 were behind it and take the background
    # pixel at their left (x0 - 1), never the square's red
    for x in range(x0, x0 + 5):
        np.testing.assert_array_equal(left[y0:y1, x], rgb[y0:y1, x0 - 1])
    for x in range(x1 - 5, x1):
        np.testing.assert_array_equal(right[y0:y1, x], rgb[y0:y1, x1])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("size", [(60, 200), (31, 47)])
def test_no_unfilled_pixel_and_the_layouts_sizes(layout, size):
    h, w = size
    rng = np.random.default_rng(1)
    rgb = rng.integers(1, 256, (h, w, 3), dtype=np.uint8)  # no zero anywhere: a zero would be an unfilled pixel
    depth = rng.random((h, w)).astype(np.float32)
    left, right = render_pair(rgb, nearness(depth, 0, 1), StereoOptions(divergence=6.0, convergence=0.3), "torch")
    assert (left.numpy() > 0).all() and (right.numpy() > 0).all()
    frames = compose(left, right, layout)
    shapes = {
        "sbs": [(h, 2 * w, 3)],
        "half-sbs": [(h, 2 * (w // 2), 3)],
        "tb": [(2 * h, w, 3)],
        "half-tb": [(2 * (h // 2), w, 3)],
        "anaglyph": [(h, w, 3)],
        "lr": [(h, w, 3), (h, w, 3)],
    }[layout]
    assert [f.shape for f in frames] == shapes
    if layout != "anaglyph":  # the anaglyph's matrices can make a channel 0 legitimately
        assert all((f > 0).all() for f in frames)


def test_anaglyph_channels_are_the_dubois_matrices():
    rng = np.random.default_rng(2)
    left = torch.from_numpy(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    right = torch.from_numpy(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8))
    out = compose(left, right, "anaglyph")[0].astype(np.float64)
    expect = left.numpy() / 255.0 @ DUBOIS_LEFT.T.astype(np.float64) + right.numpy() / 255.0 @ DUBOIS_RIGHT.T
    expect = np.floor(np.clip(expect, 0, 1) * 255 + 0.5)
    assert np.abs(out - expect).max() <= 1  # float32 arithmetic against float64
    # red from the left eye only, green and blue mostly from the right
    assert DUBOIS_LEFT[0].sum() > 1 and DUBOIS_RIGHT[2, 2] > 1


def test_soft_depth_edges_are_snapped_so_they_move_as_one_piece():
    near = torch.zeros(3, 30)
    near[:, 10:20] = 1.0
    near[:, 8], near[:, 9] = 0.33, 0.66  # the model's soft edge
    near[:, 20], near[:, 21] = 0.66, 0.33
    snapped = snap_edges(near, 2, 0.05)
    assert set(snapped.unique().tolist()) == {0.0, 1.0}
    assert snapped[0, 9] == 1.0 and snapped[0, 8] == 0.0  # each snaps to the nearer extreme


def _decode(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_one_depth_range_per_shot(tmp_path):
    rgb, depth = _scene()
    depth = np.stack([depth, depth * 0.5, depth * 0.5, depth])
    frames = [rgb] * 4
    write_stereo(iter(frames), depth, tmp_path, "s", 4.0, StereoOptions(layouts=["sbs"]), shots=[(0, 1), (1, 4)])
    side = json.loads((tmp_path / "s_stereo.json").read_text())
    assert [(s["vmin"], s["vmax"]) for s in side["shots"]] == [(0.0, 1.0), (0.0, 1.0)]
    write_stereo(iter(frames), depth, tmp_path, "t", 4.0, StereoOptions(layouts=["sbs"]))
    side = json.loads((tmp_path / "t_stereo.json").read_text())
    assert [(s["vmin"], s["vmax"]) for s in side["shots"]] == [(0.0, 1.0)]  # never per frame


def test_rd_engine_stereo_from_the_npz_equals_run_stereo(tmp_path, tiny_ckpt, capsys):
    from rd_engine.testing.media import write_test_video

    clip = tmp_path / "v.mp4"
    write_test_video(clip, n_frames=8, width=64, height=48, fps=8, with_audio=True)
    # CRF 0 is lossless: the decoded frames are the rendered ones, whatever the encoder's threads decided
    # (at a lossy CRF, x264's threaded encoding of the same frames was seen to differ between processes)
    common = ["--divergence", "4", "--convergence", "0.2", "--stereo-crf", "0"]
    run = ["run", str(clip), "-c", str(tiny_ckpt), "-o", str(tmp_path / "r"), "--res", "48", "--align-iters", "10"]
    code = cli.main([*run, "-q", "--cmap", "none", "--stereo", "sbs", "anaglyph", *common])
    assert code == 0, capsys.readouterr().err
    code = cli.main(["stereo", str(clip), "--depth", str(tmp_path / "r" / "v.npz"), "-o", str(tmp_path / "s"),
                     "--layout", "sbs", "anaglyph", "-q", *common])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for layout in ("sbs", "anaglyph"):
        a = _decode(tmp_path / "r" / f"v_stereo_{layout}.mp4")
        b = _decode(tmp_path / "s" / f"v_stereo_{layout}.mp4")
        assert len(a) == len(b) == 8
        diffs = [int(np.abs(x.astype(np.int16) - y).max()) for x, y in zip(a, b)]
        assert diffs == [0] * 8, (layout, diffs)
    with av.open(str(tmp_path / "s" / "v_stereo_sbs.mp4")) as c:
        assert c.streams.audio  # the source's audio
    # another divergence re-renders differently, without the model
    again = ["stereo", str(clip), "--depth", str(tmp_path / "r" / "v.npz"), "-o", str(tmp_path / "d"), "-q"]
    code = cli.main([*again, "--layout", "sbs", "--divergence", "9", "--convergence", "0.2", "--stereo-crf", "0"])
    assert code == 0
    c = _decode(tmp_path / "d" / "v_stereo_sbs.mp4")
    b = _decode(tmp_path / "s" / "v_stereo_sbs.mp4")
    assert any(not np.array_equal(x, y) for x, y in zip(b, c))
    side = json.loads((tmp_path / "d" / "v_stereo.json").read_text())
    assert side["stereo"]["divergence"] == 9.0


def test_stereo_bad_options_are_one_line_errors(tmp_path, capsys):
    code = cli.main(["stereo", "x.mp4", "--depth", str(tmp_path / "missing.npz"), "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "missing.npz: depth file not found" in err and "Traceback" not in err
    code = cli.main(["stereo", "x.mp4", "--depth", str(tmp_path / "m.npz"), "--divergence", "50"])
    assert code == 1 and "--divergence must be in [0, 20]" in capsys.readouterr().err


@pytest.mark.parametrize("codec,ten_bit,pix_fmt", [("h264", True, "yuv420p10le"), ("h265", True, "yuv420p10le"),
                                                   ("h265", False, "yuv420p")])  # fmt: skip
def test_stereo_codecs_and_bit_depths(tmp_path, codec, ten_bit, pix_fmt):
    rgb, depth = _scene()
    opts = StereoOptions(layouts=["half-sbs"], codec=codec, ten_bit=ten_bit, crf=20)
    (video, side) = write_stereo(iter([rgb] * 3), np.stack([depth] * 3), tmp_path, "c", 8.0, opts)
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == {"h264": "h264", "h265": "hevc"}[codec]
        frames = [f for f in c.decode(s)]
        assert len(frames) == 3 and frames[0].format.name == pix_fmt
        assert (frames[0].width, frames[0].height) == (W, H)
    assert json.loads(side.read_text())["stereo"]["codec"] == codec
