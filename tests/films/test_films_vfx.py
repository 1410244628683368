"""Films and VFX end to end (docs/films-vfx.md): image sequences in, EXR/TIFF16/PNG16/FFV1 out, audio carried.

Every run uses the tiny random-weight checkpoint on real files: real EXRs written and read back with
OpenEXR, real TIFFs with tifffile, real videos with PyAV.
"""

import json

import av
import numpy as np
import OpenEXR
import pytest
import tifffile
from PIL import Image

from rd_engine import cli
from rd_engine.testing.media import synthetic_frame, write_test_video

FAST = ["--res", "48", "--align-iters", "10", "--seed", "3", "-q", "--cmap", "none"]
N, W, H = 8, 64, 48


def run(args, capsys):
    code = cli.main(["run", *args])
    return code, capsys.readouterr()


def _frames():
    return [synthetic_frame(i, N, W, H) for i in range(N)]


def _png_sequence(folder, first=1001, frames=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(frames if frames is not None else _frames()):
        Image.fromarray(rgb).save(folder / f"plate.{first + i:04d}.png")
    return folder


def _lossless_video(path, frames):
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = W, H, "bgr0"
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = i
            c.mux(s.encode(f))
        c.mux(s.encode())


def _exr_sequence(folder, first=101, pixel=np.float16):
    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(_frames()):
        linear = ((rgb / 255.0) ** 2.2).astype(pixel)  # scene-linear-ish values in [0, 1]
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with OpenEXR.File(header, {"RGB": linear}) as f:
            f.write(str(folder / f"shot_{first + i:04d}.exr"))
    return folder


def test_exr_sequence_in_gives_exr_z_out_with_its_frame_numbers(tmp_path, tiny_ckpt, capsys):
    _exr_sequence(tmp_path / "shot")
    out = tmp_path / "out"
    code, cap = run([str(tmp_path / "shot" / "shot_%04d.exr"), "-c", str(tiny_ckpt), "-o", str(out), *FAST,
                     "--exr", "--tiff16", "--png16", "--fps", "25"], capsys)  # fmt: skip
    assert code == 0, cap.err
    depth = np.load(out / "shot_pred.npy")
    assert depth.shape[0] == N
    exrs = sorted((out / "shot_exr").glob("*.exr"))
    assert [p.name for p in exrs] == [f"shot_{101 + i:06d}.exr" for i in range(N)]  # numbering starts at 101
    for i, p in enumerate(exrs):
        with OpenEXR.File(str(p), separate_channels=True) as f:
            ch = f.channels()
            assert list(ch) == ["Z"]
            z = ch["Z"].pixels
        assert z.dtype == np.float32
        np.testing.assert_array_equal(z, depth[i])  # float32 precision: exactly the .npy
    side = json.loads((out / "shot_exr" / "shot_exr.json").read_text())
    assert "near = large" in side["values"] and side["frame_numbers"] == {"first": 101, "last": 108, "count": N}
    assert side["fps"] == 25.0 and side["settings"]["seed"] == 3 and side["software"].startswith("rd-engine")
    meta = json.loads(str(np.load(out / "shot.npz")["metadata"]))
    assert meta["fps"] == 25.0 and meta["sequence"]["transform"] == "srgb"
    assert meta["frame_numbers"] == {"first": 101, "last": 108}
    # TIFF16 and PNG16: the 16-bit quantization decodes back with the sidecar's formula
    for kind, ext, read in (
        ("tiff16", "tif", lambda p: tifffile.imread(p)),
        ("png16", "png", lambda p: np.array(Image.open(p))),
    ):
        folder = out / f"shot_{kind}"
        side = json.loads((folder / f"shot_{kind}.json").read_text())
        files = sorted(folder.glob(f"*.{ext}"))
        assert [p.name for p in files] == [f"shot_{101 + i:06d}.{ext}" for i in range(N)]
        for i, p in enumerate(files):
            v = read(p)
            assert v.dtype == np.uint16 and v.shape == depth.shape[1:]
            back = side["vmin"] + v / 65535.0 * (side["vmax"] - side["vmin"])
            assert np.abs(back - depth[i]).max() <= (side["vmax"] - side["vmin"]) / 65535.0 * 0.5 + 1e-6


def test_half_exr_is_the_depth_to_half_precision(tmp_path, tiny_ckpt, capsys):
    _exr_sequence(tmp_path / "s", first=0, pixel=np.float32)
    out = tmp_path / "o"
    code, cap = run([str(tmp_path / "s"), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--npz", "--exr",
                     "--exr-type", "half", "--exr-compression", "piz"], capsys)  # fmt: skip
    assert code == 0, cap.err
    depth = np.load(out / "s_pred.npy")
    p = out / "s_exr" / "s_000000.exr"
    with OpenEXR.File(str(p), separate_channels=True) as f:
        z = f.channels()["Z"].pixels
    assert z.dtype == np.float16
    np.testing.assert_array_equal(z, depth[0].astype(np.float16))


def test_png_sequence_gives_bitwise_the_depth_of_the_same_frames_in_a_lossless_video(tmp_path, tiny_ckpt, capsys):
    frames = _frames()
    _png_sequence(tmp_path / "seq", first=1, frames=frames)
    _lossless_video(tmp_path / "clip.mkv", frames)
    code, cap = run([str(tmp_path / "seq"), "-c", str(tiny_ckpt), "-o", str(tmp_path / "a"), *FAST], capsys)
    assert code == 0, cap.err
    code, cap = run([str(tmp_path / "clip.mkv"), "-c", str(tiny_ckpt), "-o", str(tmp_path / "b"), *FAST], capsys)
    assert code == 0, cap.err
    a = np.load(tmp_path / "a" / "seq_pred.npy")
    b = np.load(tmp_path / "b" / "clip_pred.npy")
    assert a.tobytes() == b.tobytes()


def test_16bit_tiff_glob_sequence_runs(tmp_path, tiny_ckpt, capsys):
    folder = tmp_path / "t"
    folder.mkdir()
    for i, rgb in enumerate(_frames()):
        tifffile.imwrite(folder / f"f{i + 7}.tif", rgb.astype(np.uint16) * 257)  # 16-bit: 8-bit values exactly
    out = tmp_path / "o"
    code, cap = run([str(folder / "*.tif"), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--png16"], capsys)
    assert code == 0, cap.err
    names = sorted(p.name for p in (out / "t_png16").glob("*.png"))
    assert names[0] == "t_000007.png" and len(names) == N


def test_a_gap_is_a_one_line_error_unless_gaps_are_allowed(tmp_path, tiny_ckpt, capsys):
    seq = _png_sequence(tmp_path / "g", first=1)
    (seq / "plate.0004.png").unlink()
    code, cap = run([str(seq / "plate.%04d.png"), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), *FAST], capsys)
    assert code == 1
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("rd-engine: error")]
    assert len(lines) == 1 and "plate.0004.png" in lines[0] and "missing" in lines[0], cap.err
    assert "Traceback" not in cap.err
    code, cap = run([str(seq / "plate.%04d.png"), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), *FAST,
                     "--allow-gaps", "--png16"], capsys)  # fmt: skip
    assert code == 0, cap.err
    names = sorted(p.name for p in (tmp_path / "o" / "plate_png16").glob("*.png"))
    assert "plate_000004.png" not in names and "plate_000005.png" in names and len(names) == N - 1


def test_mixed_sizes_and_unreadable_frames_are_one_line_errors(tmp_path, tiny_ckpt, capsys):
    seq = _png_sequence(tmp_path / "m", first=1)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(seq / "plate.0005.png")
    code, cap = run([str(seq), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), *FAST], capsys)
    assert code == 1 and "plate.0005.png: 12x10" in cap.err and "Traceback" not in cap.err
    Image.fromarray(_frames()[4]).save(seq / "plate.0005.png")
    (seq / "plate.0003.png").write_bytes(b"not a png")
    code, cap = run([str(seq), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), *FAST], capsys)
    assert code == 1 and "plate.0003.png: unreadable image" in cap.err
    assert not list((tmp_path / "o").glob("*.npy"))  # nothing half-written


def _audio_duration(path):
    with av.open(str(path)) as c:
        assert c.streams.audio, f"{path.name} has no audio stream"
        a = c.streams.audio[0]
        last = 0.0
        for p in c.demux(a):
            if p.pts is not None and p.duration:
                last = max(last, float((p.pts + p.duration) * p.time_base))
        return last


def test_every_video_of_a_clip_with_audio_carries_it(tmp_path, tiny_ckpt, capsys):
    clip = tmp_path / "talk.mp4"
    write_test_video(clip, n_frames=12, width=W, height=H, fps=12, with_audio=True)
    src = _audio_duration(clip)
    out = tmp_path / "o"
    code, cap = run([str(clip), "-c", str(tiny_ckpt), "-o", str(out), "--res", "48", "--align-iters", "10", "-q",
                     "--cmap", "Spectral_r", "--ffv1", "--stereo", "half-sbs", "lr"], capsys)  # fmt: skip
    assert code == 0, cap.err
    videos = sorted(p for p in out.iterdir() if p.suffix in (".mp4", ".mkv"))
    assert [p.name for p in videos] == sorted(["talk_Spectral_r.mp4", "talk_rgbd.mp4", "talk_depth_ffv1.mkv",
        "talk_stereo_half-sbs.mp4", "talk_stereo_left.mp4", "talk_stereo_right.mp4"])  # fmt: skip
    for v in videos:
        # copied AAC: the same packets, so the same length to within one AAC frame (1024 samples at 16 kHz)
        assert _audio_duration(v) == pytest.approx(src, abs=1024 / 16000 + 1e-3), v.name
    code, cap = run([str(clip), "-c", str(tiny_ckpt), "-o", str(tmp_path / "n"), "--res", "48", "--align-iters",
                     "10", "-q", "--cmap", "Spectral_r", "--no-sbs", "--no-audio"], capsys)  # fmt: skip
    assert code == 0, cap.err
    with av.open(str(tmp_path / "n" / "talk_Spectral_r.mp4")) as c:
        assert not c.streams.audio


def test_ffv1_depth_video_is_the_16bit_quantization(tmp_path, tiny_ckpt, capsys):
    clip = tmp_path / "c.mp4"
    write_test_video(clip, n_frames=N, width=W, height=H, fps=8)
    out = tmp_path / "o"
    code, cap = run([str(clip), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--ffv1", "--png16"], capsys)
    assert code == 0, cap.err
    side = json.loads((out / "c_depth_ffv1.json").read_text())
    with av.open(str(out / "c_depth_ffv1.mkv")) as c:
        frames = [f.to_ndarray(format="gray16le") for f in c.decode(video=0)]
    pngs = sorted((out / "c_png16").glob("*.png"))
    assert len(frames) == len(pngs) == N
    for f, p in zip(frames, pngs):
        np.testing.assert_array_equal(f, np.array(Image.open(p)))
    assert side["vmin"] < side["vmax"] and "near = large" in side["values"]


def test_variable_frame_rate_keeps_its_frame_times_and_its_audio(tmp_path, tiny_ckpt, capsys):
    clip = tmp_path / "vfr.mp4"
    times = write_test_video(clip, n_frames=12, width=W, height=H, fps=12, vfr=True, with_audio=True)
    out = tmp_path / "o"
    code, cap = run([str(clip), "-c", str(tiny_ckpt), "-o", str(out), "--res", "48", "--align-iters", "10", "-q",
                     "--cmap", "Spectral_r", "--no-sbs", "--stereo", "anaglyph"], capsys)  # fmt: skip
    assert code == 0, cap.err
    for name in ("vfr_Spectral_r.mp4", "vfr_stereo_anaglyph.mp4"):
        with av.open(str(out / name)) as c:
            got = [float(f.time) for f in c.decode(video=0)]
        assert np.allclose(np.array(got) - got[0], np.array(times) - times[0], atol=1 / 60000 + 1e-6), name
        assert _audio_duration(out / name) == pytest.approx(_audio_duration(clip), abs=1024 / 16000 + 1e-3)


def test_audio_an_mp4_cannot_hold_is_re_encoded(tmp_path, tiny_ckpt, capsys):
    clip = tmp_path / "pcm.mkv"
    rate = 16000
    with av.open(str(clip), "w") as c:
        v = c.add_stream("ffv1", rate=8)
        v.width, v.height, v.pix_fmt = W, H, "bgr0"
        a = c.add_stream("pcm_s16le", rate=rate)
        a.layout = "mono"
        for i in range(8):
            f = av.VideoFrame.from_ndarray(synthetic_frame(i, 8, W, H), format="rgb24")
            f.pts = i
            c.mux(v.encode(f))
        c.mux(v.encode())
        t = np.arange(rate) / rate  # one second: as long as the 8 frames at 8 fps
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)[None]
        for k in range(0, rate, 1000):
            af = av.AudioFrame.from_ndarray(samples[:, k : k + 1000], format="s16", layout="mono")
            af.sample_rate, af.pts = rate, k
            c.mux(a.encode(af))
        c.mux(a.encode())
    out = tmp_path / "o"
    code, cap = run([str(clip), "-c", str(tiny_ckpt), "-o", str(out), "--res", "48", "--align-iters", "10", "-q",
                     "--cmap", "Spectral_r", "--no-sbs", "--ffv1"], capsys)  # fmt: skip
    assert code == 0, cap.err
    with av.open(str(out / "pcm_Spectral_r.mp4")) as c:
        assert c.streams.audio[0].codec_context.name == "aac"  # re-encoded: MP4 holds no PCM here
    with av.open(str(out / "pcm_depth_ffv1.mkv")) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"  # copied: Matroska takes it
    assert _audio_duration(out / "pcm_Spectral_r.mp4") == pytest.approx(1.0, abs=0.1)
    assert _audio_duration(out / "pcm_depth_ffv1.mkv") == pytest.approx(1.0, abs=0.01)
