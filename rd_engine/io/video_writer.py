"""Video encoding (H.264/H.265/FFV1 via PyAV) with the source's audio, written atomically
(`rd_engine.io.files.atomic_output`).

Audio: given ``audio_from`` (the input video), every audio stream of it is carried into the output:
copied packet for packet where the output container takes the codec (MP4: AAC, MP3, AC-3, E-AC-3,
ALAC, Opus, FLAC; Matroska: any), re-encoded to AAC otherwise (PCM in an MP4, say). Only the part
of the audio under the written frames is kept (from ``audio_start``, the source time of the first
frame, for as long as the frames last), with its timestamps moved by ``audio_start`` so that it
stays in sync with the frames; frames written with their source timestamps (``write(frame, ts)``,
variable frame rate) keep their own timing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.files import atomic_output


def _even_pad(frame: np.ndarray) -> np.ndarray:
    """Pad [H, W, 3] to even H and W by repeating the last row/column."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


# codecs an MP4/MOV takes as they are (the rest is re-encoded to AAC)
_MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "mp2"}
_TIME_BASE = Fraction(1, 60000)  # for frames written with their own timestamps


class VideoWriter:
    """Write RGB frames to an MP4 (or Matroska), atomically.

    H.264 (libx264, yuv420p, CRF 23) where PyAV has it, else MPEG-4 Part 2 at
    a fixed quality; ``codec="h265"`` (libx265) and ``ten_bit`` (yuv420p10le)
    where PyAV has them; ``codec="ffv1"`` is lossless, for uint16 grey frames
    (gray16le) or RGB (bgr0), in Matroska. yuv420p stores colour at half resolution, so it needs an
    even width and height: odd sizes are padded by one replicated row and/or
    column (the video is then e.g. 68x46 for 67x45 frames). The size comes from
    the first frame; all frames must have it.

    Use as a context manager::

        with VideoWriter(path, fps) as writer:
            writer.write(frame)  # uint8 [H, W, 3]

    The file appears under ``path`` only when the block ends without an error.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        crf: int = 23,
        codec: str = "h264",
        ten_bit: bool = False,
        audio_from: str | os.PathLike | None = None,
        audio_start: float = 0.0,
    ):
        """Prepare a writer; nothing is written before `__enter__`.

        Args:
            path: Final output file (``.mp4``; ``.mkv`` for FFV1).
            fps: Frame rate, e.g. `VideoInfo.fps`.
            crf: libx264/libx265 quality (lower is better and larger).
            codec: ``h264``, ``h265`` or ``ffv1``.
            ten_bit: 10-bit 4:2:0 (H.264 High 10, H.265 Main 10).
            audio_from: A media file whose audio streams the output carries (None: none).
            audio_start: Source time in seconds of the first frame written.
        """
        if codec not in ("h264", "h265", "ffv1"):
            raise ValueError(f"unknown codec {codec!r}")
        if not fps > 0:
            raise ValueError(f"{path}: fps must be positive, got {fps}")
        self.path = Path(path)
        # Fraction() rejects numpy float32; go through a Python float.
        self.fps = fps if isinstance(fps, Fraction) else Fraction(float(fps))
        self.crf = crf
        self.codec = codec
        self.ten_bit = ten_bit
        self.audio_from = None if audio_from is None else Path(os.fspath(audio_from))
        self.audio_start = float(audio_start)
        self._t0: float | None = None
        self._last_pts = -1
        self._end_time = 0.0
        self._gray = False
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self._count = 0

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_output(self.path)
        self._tmp = self._atomic.__enter__()
        return self

    def _open(self, height: int, width: int, gray: bool, timed: bool = False) -> None:
        """Create the container and stream for frames of this size."""
        options = {}
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            # Index at the front, so players can start before the whole file
            # has loaded (costs one rewrite of the file when closing).
            options["movflags"] = "+faststart"
        self._container = av.open(str(self._tmp), "w", options=options)
        rate = self.fps.limit_denominator(1001000)
        even = True
        if self.codec == "ffv1":
            stream = self._container.add_stream("ffv1", rate=rate, options={"level": "3", "slicecrc": "1"})
            stream.pix_fmt = "gray16le" if gray else "bgr0"
            even = False
        elif self.codec == "h265":
            if "libx265" not in av.codecs_available:
                raise UserError("H.265 needs FFmpeg with libx265, which this PyAV build lacks; use --stereo-codec h264")
            stream = self._container.add_stream("libx265", rate=rate, options={"crf": str(self.crf)})
            stream.pix_fmt = "yuv420p10le" if self.ten_bit else "yuv420p"
            if self.path.suffix.lower() in (".mp4", ".mov"):
                stream.codec_tag = "hvc1"  # what Apple's players want
        elif "libx264" in av.codecs_available:
            # mbtree off: x264's macroblock tree made the same frames encode to different bytes from one
            # run to the next (it reads memory it never wrote: 25 encodes of the same 144x48 frames gave up
            # to 20 different files, 0 without it), so a cluster worker's video differed from a single
            # process's; the tree only trades bits between frames, at a few percent of size at equal quality
            options = {"crf": str(self.crf), "x264-params": "mbtree=0"}
            stream = self._container.add_stream("libx264", rate=rate, options=options)
            stream.pix_fmt = "yuv420p10le" if self.ten_bit else "yuv420p"
        else:
            # MPEG-4 Part 2 allows time base denominators up to 65535 only.
            rate = rate.limit_denominator(65535)
            # Fixed quantiser 3 (global_quality is in lambda units, 118 per
            # step): the default 200 kbit/s is far too low for depth maps.
            stream = self._container.add_stream(
                "mpeg4", rate=rate, options={"flags": "+qscale", "global_quality": str(3 * 118)}
            )
            stream.pix_fmt = "yuv420p"
        if timed:
            # frames carry their own times: a time base fine enough for any rate (MPEG-4 allows <= 65535)
            stream.codec_context.time_base = _TIME_BASE
            stream.time_base = _TIME_BASE
        stream.width = width + (width % 2 if even else 0)
        stream.height = height + (height % 2 if even else 0)
        self._even = even
        self._stream = stream
        self._size = (height, width)
        self._gray = gray
        self._audio = self._add_audio() if self.audio_from is not None else []

    def _add_audio(self) -> list:
        """Output streams for the source's audio: (input index, output stream, copied?)."""
        try:
            src = av.open(str(self.audio_from), metadata_errors="replace")
        except (av.FFmpegError, OSError):
            return []
        with src:
            mp4 = self.path.suffix.lower() in (".mp4", ".mov", ".m4v")
            out = []
            for a in src.streams.audio:
                name = a.codec_context.name
                if not mp4 or name in _MP4_AUDIO:
                    out.append((a.index, self._container.add_stream_from_template(a), True))
                else:
                    enc = self._container.add_stream("aac", rate=a.rate or 48000)
                    channels = a.codec_context.channels or 2
                    # by channel count: a source's unordered layout ("1 channels") is refused by the encoder
                    enc.layout = {1: "mono", 2: "stereo"}.get(channels, a.layout.name)
                    out.append((a.index, enc, False))
            return out

    def _mux_audio(self) -> None:
        """Copy (or re-encode) the source's audio under the written frames' time span."""
        if not self._audio:
            return
        start = self.audio_start
        end = start + self._end_time
        by_index = {i: (o, copied) for i, o, copied in self._audio}
        with av.open(str(self.audio_from), metadata_errors="replace") as src:
            streams = [s for s in src.streams.audio if s.index in by_index]
            for packet in src.demux(streams):
                if packet.pts is None or packet.size == 0:
                    continue
                out, copied = by_index[packet.stream.index]
                t = float(packet.pts * packet.time_base)
                if t < start - 1e-6 or t >= end:
                    continue
                if copied:
                    shift = int(round(start / packet.time_base))
                    packet.pts -= shift
                    if packet.dts is not None:
                        packet.dts -= shift
                    packet.stream = out
                    self._container.mux(packet)
                else:
                    for frame in packet.decode():
                        frame.pts = None
                        self._container.mux(out.encode(frame))
            for out, copied in by_index.values():
                if not copied:
                    self._container.mux(out.encode(None))

    def write(self, frame: np.ndarray, timestamp: float | None = None) -> None:
        """Append one frame.

        Args:
            frame: uint8 [H, W, 3] RGB, the same size as the first frame; for FFV1 also uint16 [H, W] grey.
            timestamp: The frame's source time in seconds (variable frame rate kept); None: the next
                frame at the writer's rate.
        """
        if self._tmp is None:
            raise RuntimeError("VideoWriter must be used as a context manager")
        frame = np.asarray(frame)
        gray = frame.ndim == 2 and frame.dtype == np.uint16
        if gray and self.codec != "ffv1":
            raise ValueError("uint16 grey frames need codec='ffv1'")
        if not gray and (frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3):
            raise ValueError(f"expected uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        if self._container is None:
            self._open(*frame.shape[:2], gray, timestamp is not None)
        elif frame.shape[:2] != self._size or gray != self._gray:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first {self._size}")
        if gray:
            av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="gray16le")
        else:
            padded = _even_pad(frame) if self._even else frame
            av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")
        if timestamp is None:
            av_frame.pts = self._count
            self._end_time = (self._count + 1) / float(self.fps)
        else:
            if self._t0 is None:
                self._t0 = float(timestamp)
            rel = float(timestamp) - self._t0
            tb = self._stream.codec_context.time_base
            pts = max(self._last_pts + 1, int(round(rel / tb)))
            av_frame.pts = pts
            self._last_pts = pts
            self._end_time = rel + 1.0 / float(self.fps)
        self._container.mux(self._stream.encode(av_frame))
        self._count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._container is not None:
                try:
                    if exc_type is None:
                        self._container.mux(self._stream.encode())
                        self._mux_audio()
                finally:
                    self._container.close()
        except BaseException as close_error:
            # Let atomic_output delete the temporary file, then re-raise.
            self._atomic.__exit__(type(close_error), close_error, close_error.__traceback__)
            raise
        return bool(self._atomic.__exit__(exc_type, exc, tb))

    @property
    def frames_written(self) -> int:
        """Number of frames written so far."""
        return self._count


def write_lossless_video(path: Path, frames: Iterable[np.ndarray], fps: int = 30) -> None:
    """RGB frames ``[H, W, 3]`` uint8 as an FFV1 Matroska video that decodes back to the same values."""
    with av.open(str(path), "w") as container:
        stream = None
        for rgb in frames:
            if stream is None:
                stream = container.add_stream("ffv1", rate=Fraction(fps))
                stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "bgr0"
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        if stream is None:
            raise UserError(f"{path}: no frames to write")
        for packet in stream.encode():
            container.mux(packet)
