"""Video encoding (H.264 via PyAV), written atomically (`rd_engine.io.files.atomic_output`)."""

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


class VideoWriter:
    """Write RGB frames to an MP4, atomically.

    H.264 (libx264, yuv420p, CRF 23) where PyAV has it, else MPEG-4 Part 2 at
    a fixed quality. yuv420p stores colour at half resolution, so it needs an
    even width and height: odd sizes are padded by one replicated row and/or
    column (the video is then e.g. 68x46 for 67x45 frames). The size comes from
    the first frame; all frames must have it.

    Use as a context manager::

        with VideoWriter(path, fps) as writer:
            writer.write(frame)  # uint8 [H, W, 3]

    The file appears under ``path`` only when the block ends without an error.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, crf: int = 23):
        """Prepare a writer; nothing is written before `__enter__`.

        Args:
            path: Final output file (``.mp4``).
            fps: Frame rate, e.g. `VideoInfo.fps`.
            crf: libx264 quality (lower is better and larger).
        """
        if not fps > 0:
            raise ValueError(f"{path}: fps must be positive, got {fps}")
        self.path = Path(path)
        # Fraction() rejects numpy float32; go through a Python float.
        self.fps = fps if isinstance(fps, Fraction) else Fraction(float(fps))
        self.crf = crf
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

    def _open(self, height: int, width: int) -> None:
        """Create the container and stream for frames of this size."""
        options = {}
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            # Index at the front, so players can start before the whole file
            # has loaded (costs one rewrite of the file when closing).
            options["movflags"] = "+faststart"
        self._container = av.open(str(self._tmp), "w", options=options)
        rate = self.fps.limit_denominator(1001000)
        if "libx264" in av.codecs_available:
            stream = self._container.add_stream("libx264", rate=rate, options={"crf": str(self.crf)})
        else:
            # MPEG-4 Part 2 allows time base denominators up to 65535 only.
            rate = rate.limit_denominator(65535)
            # Fixed quantiser 3 (global_quality is in lambda units, 118 per
            # step): the default 200 kbit/s is far too low for depth maps.
            stream = self._container.add_stream(
                "mpeg4", rate=rate, options={"flags": "+qscale", "global_quality": str(3 * 118)}
            )
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        self._stream = stream
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        """Append one frame.

        Args:
            frame: uint8 [H, W, 3] RGB, the same size as the first frame.
        """
        if self._tmp is None:
            raise RuntimeError("VideoWriter must be used as a context manager")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        if self._container is None:
            self._open(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first {self._size}")
        av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even_pad(frame)), format="rgb24")
        av_frame.pts = self._count
        self._container.mux(self._stream.encode(av_frame))
        self._count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._container is not None:
                try:
                    if exc_type is None:
                        self._container.mux(self._stream.encode())
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
