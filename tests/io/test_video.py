"""Tests for rd_engine.io.video (probing, decoding, input lists, preprocessing)."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rd_engine.errors import UserError
from rd_engine.io.video import (
    iter_frames,
    list_inputs,
    preprocess,
    probe,
    processed_size,
)
from rd_engine.testing.media import (
    synthetic_frame,
    write_audio_only,
    write_test_video,
    write_truncated_video,
)

N = 12


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("rd-decode")]


def _close(a: np.ndarray, b: np.ndarray, tol: float = 12.0) -> bool:
    """Frames match up to lossy-coding error (mean absolute difference)."""
    return a.shape == b.shape and float(np.abs(a.astype(float) - b.astype(float)).mean()) < tol


def _brightest_corner(rgb: np.ndarray) -> str:
    """Which corner holds the white orientation marker."""
    k = 4
    corners = {
        "top-left": rgb[:k, :k],
        "top-right": rgb[:k, -k:],
        "bottom-left": rgb[-k:, :k],
        "bottom-right": rgb[-k:, -k:],
    }
    return max(corners, key=lambda name: corners[name].astype(float).mean())


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_test_video(path, n_frames=N)
    return path


def test_probe_and_decode_normal_clip(clip):
    info = probe(clip)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(24.0)
    assert info.num_frames == N
    assert info.rotation == 0
    assert info.codec == "h264"
    assert info.pix_fmt == "yuv420p"
    assert info.path == clip

    frames = list(iter_frames(clip))
    assert [f.index for f in frames] == list(range(N))
    assert [f.timestamp for f in frames] == pytest.approx([i / 24 for i in range(N)])
    for f in frames:
        assert f.rgb.dtype == np.uint8 and f.rgb.flags.c_contiguous
        assert _close(f.rgb, synthetic_frame(f.index, N, 64, 48))
    assert not _decode_threads()


def test_clip_with_audio_track(tmp_path):
    path = tmp_path / "with_audio.mp4"
    write_test_video(path, with_audio=True)
    assert probe(path).num_frames == N
    assert len(list(iter_frames(path))) == N


@pytest.mark.parametrize(
    "width,height,pix_fmt,codec",
    [
        (150, 90, "yuv420p", "libx264"),
        (67, 45, "yuv444p", "libx264"),
        (67, 45, "yuv420p", "mpeg4"),
    ],
)
def test_odd_sizes(tmp_path, width, height, pix_fmt, codec):
    path = tmp_path / "odd.mp4"
    write_test_video(path, n_frames=4, width=width, height=height, pix_fmt=pix_fmt, codec=codec)
    info = probe(path)
    assert (info.width, info.height) == (width, height)
    frames = list(iter_frames(path))
    assert len(frames) == 4
    for f in frames:
        assert _close(f.rgb, synthetic_frame(f.index, 4, width, height))


@pytest.mark.parametrize("rotation,corner", [(90, "top-right"), (180, "bottom-right"), (270, "bottom-left")])
def test_rotation_gives_upright_frames(tmp_path, rotation, corner):
    path = tmp_path / f"rot{rotation}.mp4"
    write_test_video(path, n_frames=3, width=64, height=48, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    expected_size = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.width, info.height) == expected_size
    for f in iter_frames(path):
        assert f.rgb.shape == (info.height, info.width, 3)
        upright = np.rot90(synthetic_frame(f.index, 3, 64, 48), k=-rotation // 90)
        assert _close(f.rgb, upright)
        assert _brightest_corner(f.rgb) == corner


def test_rotation_matches_phone_display_matrix(tmp_path):
    """The matrix a phone writes for portrait video means 'turn 90 degrees clockwise'."""
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        # 16.16 fixed point a=0, b=1, c=-1, d=0: the MP4 tkhd matrix of a
        # portrait recording (legacy rotate tag 90).
        stream.set_display_matrix([0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30])
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, 2, 64, 48), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    info = probe(path)
    assert info.rotation == 90
    assert (info.width, info.height) == (48, 64)
    first = next(iter(iter_frames(path)))
    assert first.rgb.shape == (64, 48, 3)
    # Stored top-left marker is at the top right once turned clockwise.
    assert _brightest_corner(first.rgb) == "top-right"


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p"])
def test_10bit_and_444(tmp_path, pix_fmt):
    if pix_fmt not in [f.name for f in av.codec.Codec("libx264", "w").video_formats]:
        pytest.skip(f"libx264 in this PyAV cannot encode {pix_fmt}")
    path = tmp_path / f"{pix_fmt}.mp4"
    write_test_video(path, n_frames=4, pix_fmt=pix_fmt)
    info = probe(path)
    assert info.pix_fmt == pix_fmt
    frames = list(iter_frames(path))
    assert len(frames) == 4
    for f in frames:
        assert f.rgb.dtype == np.uint8
        assert _close(f.rgb, synthetic_frame(f.index, 4, 64, 48))


def test_10bit_ffv1_mkv(tmp_path):
    path = tmp_path / "ten.mkv"
    write_test_video(path, n_frames=3, pix_fmt="yuv420p10le", codec="ffv1")
    info = probe(path)
    assert info.pix_fmt == "yuv420p10le" and info.codec == "ffv1"
    assert info.num_frames is None  # MKV stores no frame count
    assert len(list(iter_frames(path))) == 3


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_vfr_timestamps_preserved(tmp_path, suffix):
    path = tmp_path / f"vfr{suffix}"
    written = write_test_video(path, n_frames=N, vfr=True)
    durations = np.diff(written)
    assert durations.min() < durations.max()  # really irregular
    stamps = [f.timestamp for f in iter_frames(path)]
    assert stamps == pytest.approx(written, abs=1e-9)
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


@pytest.mark.parametrize(
    "start,count,expected",
    [(3, 4, range(3, 7)), (10, 0, range(10, 12)), (0, 1, range(0, 1)), (9, 50, range(9, 12))],
)
def test_frame_windows(clip, start, count, expected):
    frames = list(iter_frames(clip, start_frame=start, frame_count=count))
    assert [f.index for f in frames] == list(expected)
    assert [f.timestamp for f in frames] == pytest.approx([i / 24 for i in expected])
    assert _close(frames[0].rgb, synthetic_frame(start, N, 64, 48))


def test_start_beyond_end(clip):
    with pytest.raises(UserError, match="beyond the end") as err:
        list(iter_frames(clip, start_frame=N))
    assert clip.name in str(err.value)


def test_negative_window_is_user_error(clip):
    with pytest.raises(UserError, match=clip.name):
        list(iter_frames(clip, start_frame=-1))


def _bad_input(kind: str, folder: Path) -> Path:
    """Create one kind of bad input under `folder` and return its path."""
    if kind == "missing":
        return folder / "missing_video.mp4"
    if kind == "directory":
        path = folder / "a_folder.mp4"
        path.mkdir()
        return path
    if kind == "text_as_mp4":
        path = folder / "notes.mp4"
        path.write_text("these are notes, not a video\n")
        return path
    if kind == "audio_m4a":
        path = folder / "tone.m4a"
        write_audio_only(path)
        return path
    if kind == "audio_wav":
        path = folder / "tone.wav"
        write_audio_only(path)
        return path
    if kind == "zero_frames":
        path = folder / "empty_cut.mp4"
        write_truncated_video(path, keep_frames=0)
        return path
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind,message",
    [
        ("missing", "not found"),
        ("directory", "is a folder"),
        ("text_as_mp4", "not a readable video"),
        ("audio_m4a", "no video stream"),
        ("audio_wav", "no video stream"),
        ("zero_frames", "no decodable video frames"),
    ],
)
def test_bad_inputs_raise_user_error(tmp_path, kind, message):
    path = _bad_input(kind, tmp_path)
    with pytest.raises(UserError, match=message) as err:
        probe(path)
    assert path.name in str(err.value)
    with pytest.raises(UserError, match=message) as err:
        list(iter_frames(path))
    assert path.name in str(err.value)
    assert not _decode_threads()


def test_truncated_stream_yields_frames_then_fails(tmp_path):
    path = tmp_path / "cut.mp4"
    write_truncated_video(path, keep_frames=5)
    assert probe(path).num_frames == 12  # the index still claims all frames
    got = []
    with pytest.raises(UserError, match="corrupt or truncated video stream after frame") as err:
        for frame in iter_frames(path):
            got.append(frame.index)
    assert path.name in str(err.value)
    assert got == list(range(5))
    assert "after frame 4" in str(err.value)
    assert not _decode_threads()


def test_early_stop_leaves_no_thread(tmp_path):
    path = tmp_path / "long.mp4"
    write_test_video(path, n_frames=40)
    for f in iter_frames(path, queue_size=1):
        if f.index == 1:
            break
    assert not _decode_threads()

    # The consumer raising.
    with pytest.raises(ZeroDivisionError):
        for _ in iter_frames(path, queue_size=2):
            raise ZeroDivisionError
    assert not _decode_threads()

    # A generator that is dropped without being closed.
    gen = iter_frames(path, queue_size=1)
    next(gen)
    del gen
    gc.collect()
    assert not _decode_threads()


def test_list_inputs_folder_txt_duplicates(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ["b.mp4", "a.MOV", "c.mkv", "notes.txt", "thumb.jpg", ".hidden.mp4"]:
        (videos / name).write_bytes(b"x")
    expected_folder = [videos / "a.MOV", videos / "b.mp4", videos / "c.mkv"]
    assert list_inputs([videos]) == expected_folder

    lists = tmp_path / "lists"
    lists.mkdir()
    txt = lists / "todo.txt"
    txt.write_text(f"# my videos\n\n../videos/b.mp4\n{videos / 'c.mkv'}\n  local.mp4  \nnot_there_yet.mp4\n../videos\n")
    (lists / "local.mp4").write_bytes(b"x")
    got = list_inputs([str(txt)])
    assert [p.resolve() for p in got] == [
        (videos / "b.mp4").resolve(),
        (videos / "c.mkv").resolve(),
        (lists / "local.mp4").resolve(),
        (lists / "not_there_yet.mp4").resolve(),
        (videos / "a.MOV").resolve(),
    ]

    # Duplicates across arguments are dropped, the first occurrence kept.
    got = list_inputs([videos / "c.mkv", str(videos), str(videos / "b.mp4")])
    assert got == [videos / "c.mkv", videos / "a.MOV", videos / "b.mp4"]

    # A missing video is kept for probe to report later.
    assert list_inputs([tmp_path / "gone.mp4"]) == [tmp_path / "gone.mp4"]


def test_list_inputs_errors(tmp_path):
    with pytest.raises(UserError, match="missing_list.txt"):
        list_inputs([tmp_path / "missing_list.txt"])
    with pytest.raises(UserError, match="no_such_folder"):
        list_inputs([str(tmp_path / "no_such_folder") + "/"])
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    (empty / "readme.txt").write_text("no videos here")
    with pytest.raises(UserError, match="empty_folder"):
        list_inputs([empty])


def test_processed_size():
    assert processed_size(1920, 1080, 768) == (768, 432)
    assert processed_size(1080, 1920, 768) == (432, 768)
    assert processed_size(640, 480, 1024) == (1024, 768)  # scales up too
    assert processed_size(67, 45, 0) == (67, 45)
    assert processed_size(67, 45, -1) == (67, 45)
    assert processed_size(1000, 333, 100) == (100, 33)


def test_preprocess():
    frames = np.random.default_rng(0).integers(0, 256, (2, 45, 67, 3), dtype=np.uint8)
    same = preprocess(frames, (67, 45), "cpu", torch.float32)
    assert same.shape == (2, 3, 45, 67) and same.dtype == torch.float32
    expected = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
    assert torch.equal(same, expected)
    assert same.min() >= -1.0 and same.max() <= 1.0

    small = preprocess(torch.from_numpy(frames), (32, 20), "cpu", torch.float16)
    assert small.shape == (2, 3, 20, 32) and small.dtype == torch.float16
    ref = F.interpolate(
        torch.from_numpy(frames).permute(0, 3, 1, 2).float(),
        size=(20, 32),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    ref = (ref / 255.0 * 2.0 - 1.0).half()
    assert torch.equal(small, ref)

    with pytest.raises(ValueError):
        preprocess(frames[0], (67, 45), "cpu", torch.float32)
