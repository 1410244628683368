"""Small synthetic media files for the tests and the offline demo.

Everything here is deterministic (given the seed) and needs only numpy and
PyAV, so the demo can make a clip on a machine with nothing downloaded.

Rotation convention: ``rotation`` is the clockwise angle, in degrees, by which
a player turns the stored frames to show them upright. That is the meaning of
the legacy MP4 ``rotate`` tag and of what phones record for portrait video
(stored landscape, ``rotation=90``); `rd_engine.io.video.VideoInfo.rotation` uses
the same convention.
"""

from __future__ import annotations

import math
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Video time base used for variable frame rate clips: milliseconds are fine
# enough for irregular frame durations and exact in every container we write.
_VFR_TIME_BASE = Fraction(1, 1000)
_AUDIO_RATE = 16000


def synthetic_frame(index: int, n_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Render one frame of the synthetic test scene.

    The scene is a smooth colour gradient, a white orientation marker fixed in
    the top-left corner (so rotation and flips are easy to detect), a bright
    yellow square that moves from left to right over the clip, and a dark disc
    that drifts down. The background phase and the disc's column depend on the
    seed.

    Args:
        index: Frame number, 0-based.
        n_frames: Total number of frames of the clip (sets the motion speed).
        width: Frame width in pixels.
        height: Frame height in pixels.
        seed: Varies the background and the disc's position.

    Returns:
        uint8 array [height, width, 3], RGB.
    """
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0.0, 2.0 * math.pi)
    disc_x = rng.uniform(0.45, 0.8) * width

    t = index / max(n_frames - 1, 1)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xs / max(width - 1, 1)
    v = ys / max(height - 1, 1)
    frame = np.empty((height, width, 3), np.float32)
    frame[..., 0] = 30.0 + 150.0 * u
    frame[..., 1] = 30.0 + 150.0 * v
    frame[..., 2] = 100.0 + 50.0 * np.sin(2.0 * math.pi * (u + v) + phase + 2.0 * math.pi * t)

    short = min(width, height)
    # Dark disc, kept in the right half so it never covers the marker.
    radius = max(short / 6.0, 1.5)
    disc_y = (0.3 + 0.5 * t) * height
    frame[(xs - disc_x) ** 2 + (ys - disc_y) ** 2 <= radius**2] = 15.0

    # Bright square centred vertically, travelling across the whole width.
    side = max(short // 4, 2)
    left = int(round(t * (width - side)))
    top = (height - side) // 2
    frame[top : top + side, left : left + side] = (255.0, 230.0, 40.0)

    marker = max(short // 6, 2)
    frame[:marker, :marker] = 255.0
    return np.clip(frame, 0.0, 255.0).astype(np.uint8)


def write_test_video(
    path: str | os.PathLike,
    n_frames: int = 12,
    width: int = 64,
    height: int = 48,
    fps: float = 24,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    rotation: int = 0,
    vfr: bool = False,
    with_audio: bool = False,
    seed: int = 0,
    gop: int | None = None,
) -> list[float]:
    """Write a small synthetic clip (see `synthetic_frame`).

    The container is chosen from the file suffix (.mp4, .mkv, ...).

    Args:
        path: Output file.
        n_frames: Number of frames.
        width: Stored frame width (before rotation).
        height: Stored frame height (before rotation).
        fps: Frame rate; with ``vfr`` the average rate.
        pix_fmt: Encoder pixel format, e.g. ``yuv420p``, ``yuv444p`` or the
            10-bit ``yuv420p10le``. libx264 needs even sizes for 4:2:0; use
            ``yuv444p`` or ``codec="mpeg4"`` for odd sizes.
        codec: Encoder name. ``libx264`` falls back to ``mpeg4`` when this
            PyAV build has no libx264.
        rotation: Clockwise display rotation in degrees (0, 90, 180 or 270),
            stored as the stream's display matrix.
        vfr: Give the frames irregular durations (between 0.5 and 1.6 times
            the nominal one) instead of a constant frame rate.
        with_audio: Add an AAC sine-tone track as long as the video.
        seed: Varies the picture and the VFR durations.
        gop: Frames between keyframes at most (None: the encoder's default, 250 for libx264).

    Returns:
        The presentation time of each frame in seconds, as written.

    Raises:
        ValueError: For an unsupported rotation, codec or pixel format.
    """
    if rotation not in (0, 90, 180, 270):
        raise ValueError(f"rotation must be 0, 90, 180 or 270, got {rotation}")
    if codec == "libx264" and codec not in av.codecs_available:
        codec = "mpeg4"
    supported = [f.name for f in av.codec.Codec(codec, "w").video_formats or ()]
    if pix_fmt not in supported:
        raise ValueError(f"{codec} cannot encode {pix_fmt}; it supports {', '.join(supported)}")
    if codec == "libx264" and pix_fmt.startswith("yuv420") and (width % 2 or height % 2):
        raise ValueError(
            f"libx264 {pix_fmt} needs an even width and height, got {width}x{height}; "
            "use pix_fmt='yuv444p' or codec='mpeg4'"
        )

    rate = Fraction(fps).limit_denominator(1001)
    if vfr:
        rng = np.random.default_rng(seed + 1)
        nominal_ms = 1000.0 / float(rate)
        durations = np.maximum(1, np.round(nominal_ms * rng.uniform(0.5, 1.6, n_frames)))
        pts = np.concatenate([[0], np.cumsum(durations)[:-1]]).astype(int).tolist()
        time_base = _VFR_TIME_BASE
    else:
        pts = list(range(n_frames))
        time_base = 1 / rate

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.codec_context.gop_size = gop
        stream.time_base = time_base
        if rotation:
            # PyAV's angle is counter-clockwise (FFmpeg's display matrix sense).
            stream.set_display_rotation(-rotation)
        audio = None
        if with_audio:
            audio = container.add_stream("aac", rate=_AUDIO_RATE)
            audio.layout = "mono"

        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, n_frames, width, height, seed), format="rgb24")
            frame.pts = p
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode())

        if audio is not None:
            _encode_tone(container, audio, seconds=float(pts[-1] * time_base) + 1.0 / float(rate))
    return [float(p * time_base) for p in pts]


def _encode_tone(container: av.container.OutputContainer, stream, seconds: float) -> None:
    """Encode a 440 Hz sine tone of the given length into an audio stream."""
    n = max(int(seconds * _AUDIO_RATE), 1)
    tone = (0.2 * np.sin(2.0 * math.pi * 440.0 * np.arange(n) / _AUDIO_RATE)).astype(np.float32)
    # AAC takes 1024 samples per frame; PyAV's encoder does not re-chunk for us.
    chunk = 1024
    for start in range(0, n, chunk):
        samples = tone[start : start + chunk]
        if samples.size < chunk:
            samples = np.pad(samples, (0, chunk - samples.size))
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        frame.sample_rate = _AUDIO_RATE
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode())


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> None:
    """Write a file that holds only a sine tone, no video stream.

    Args:
        path: Output file; ``.wav`` gets 16-bit PCM, any other suffix
            (``.m4a``, ``.mp4``, ``.mkv``) gets AAC.
        seconds: Length of the tone.
    """
    with av.open(str(path), "w") as container:
        if str(path).lower().endswith(".wav"):
            stream = container.add_stream("pcm_s16le", rate=_AUDIO_RATE)
            stream.layout = "mono"
            n = int(seconds * _AUDIO_RATE)
            tone = 0.2 * np.sin(2.0 * math.pi * 440.0 * np.arange(n) / _AUDIO_RATE)
            frame = av.AudioFrame.from_ndarray((tone * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
            frame.sample_rate = _AUDIO_RATE
            frame.pts = 0
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
        else:
            stream = container.add_stream("aac", rate=_AUDIO_RATE)
            stream.layout = "mono"
            _encode_tone(container, stream, seconds)


def write_truncated_video(path: str | os.PathLike, keep_frames: int = 4, n_frames: int = 12) -> None:
    """Write an H.264 MP4 whose data is cut off in the middle of a frame.

    The clip is written with its index (moov atom) at the front, so the file
    still opens after the cut; the packet at ``keep_frames`` (in decoding
    order) is cut in half. Decoding yields the frames before it and then the
    H.264 decoder fails on the half packet, which is how a download or copy
    that stopped early looks. (Truncated MKV/TS/AVI files are not used: FFmpeg
    just ends them early without any error.)

    Args:
        path: Output file, should end in ``.mp4``.
        keep_frames: Number of intact packets before the cut; 0 gives a file
            with no decodable frame at all.
        n_frames: Frames in the clip before cutting; must exceed keep_frames.

    Raises:
        ValueError: If keep_frames is not below n_frames.
        RuntimeError: If this PyAV build has no H.264 encoder (the mpeg4
            decoder conceals damage instead of failing, so it cannot stand in).
    """
    if not 0 <= keep_frames < n_frames:
        raise ValueError(f"keep_frames must be in [0, {n_frames}), got {keep_frames}")
    if "libx264" not in av.codecs_available:
        raise RuntimeError("write_truncated_video needs libx264 in PyAV")
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        full = Path(tmp) / "full.mp4"
        with av.open(str(full), "w", options={"movflags": "faststart"}) as container:
            stream = container.add_stream("libx264", rate=24, options={"bframes": "0"})
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for i in range(n_frames):
                frame = av.VideoFrame.from_ndarray(synthetic_frame(i, n_frames, 64, 48), format="rgb24")
                frame.pts = i
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        with av.open(str(full)) as container:
            packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
        pos, size = packets[keep_frames]
        path.write_bytes(full.read_bytes()[: pos + size // 2])


def write_frames_video(path: str | os.PathLike, frames, fps: float = 24, pix_fmt: str = "yuv420p") -> int:
    """Write RGB frames (`[H, W, 3]` uint8, an iterable) as a video; returns the frame count."""
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    with av.open(str(path), "w") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=rate)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = pix_fmt
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
            n += 1
        if stream is not None:
            container.mux(stream.encode())
    return n


def shot_frame(index: int, n_frames: int, width: int, height: int, scene: int) -> np.ndarray:
    """One frame of scene `scene`: the synthetic scene with its own layout and colours (the colour
    channels permuted and scaled per scene, and a few large blocks of the scene's own colours), as
    unrelated shots of an edited video look.
    """
    rgb = synthetic_frame(index, n_frames, width, height, seed=scene).astype(np.float32)
    rng = np.random.default_rng(1000 + scene)
    rgb = rgb[..., rng.permutation(3)] * rng.uniform(0.5, 1.0)
    for _ in range(3):
        w, h = int(rng.integers(width // 4, width // 2 + 1)), int(rng.integers(height // 4, height // 2 + 1))
        x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        rgb[y : y + h, x : x + w] = rng.uniform(20, 235, 3)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def multishot_frames(shot_lengths: list[int], width: int, height: int, fade: int = 0):
    """Frames of an edited clip: shot `k` shows scene `k` for `shot_lengths[k]` frames. With `fade > 0`
    each shot after the first fades in from black over `fade` frames and each shot before the last
    fades out to black over `fade` frames (its last frames darkened), around `fade` black frames.

    Yields RGB frames; the cuts (first frames of shots after the first) are `multishot_cuts`.
    """
    for k, n in enumerate(shot_lengths):
        for i in range(n):
            rgb = shot_frame(i, n, width, height, k).astype(np.float32)
            if fade:
                if k > 0 and i < fade:
                    rgb *= (i + 1) / (fade + 1)
                if k < len(shot_lengths) - 1 and i >= n - fade:
                    rgb *= (n - i) / (fade + 1)
            yield np.ascontiguousarray(rgb.astype(np.uint8))
        if fade and k < len(shot_lengths) - 1:
            for _ in range(fade):
                yield np.zeros((height, width, 3), np.uint8)


def multishot_cuts(shot_lengths: list[int]) -> list[int]:
    """First frame of each shot after the first in `multishot_frames` without fades."""
    return [int(c) for c in np.cumsum(shot_lengths)[:-1]]
