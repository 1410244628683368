"""Frame sources: files, camera devices, network streams and pipes, as `(timestamp, rgb)` pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.video import iter_frames


def open_source(
    source: str | Path, options: dict | None = None, start_frame: int = 0, frame_count: int = 0
) -> Iterator[tuple[float | None, np.ndarray]]:
    """Decode `(timestamp, rgb uint8 [H, W, 3])` from a file, a camera device, a URL or a pipe.

    `/dev/videoN` opens through v4l2; `-` or `pipe:` reads a container from stdin.
    `start_frame`/`frame_count` window files only (live sources run until they end).
    """
    text = str(source)
    path = Path(text)
    if path.exists() and path.is_file():
        for fr in iter_frames(path, start_frame, frame_count):
            yield fr.timestamp, fr.rgb
        return
    fmt = "v4l2" if text.startswith("/dev/video") else None
    if text == "-":
        text = "pipe:"
    if not (fmt or "://" in text or text.startswith("pipe:")):
        raise UserError(f"{source}: no such file (live sources: /dev/videoN, rtsp://..., http(s)://..., pipe:)")
    try:
        container = av.open(text, format=fmt, options=options or {}, timeout=(10.0, 10.0))
    except (av.FFmpegError, OSError) as e:
        raise UserError(f"{source}: cannot open live source ({e})") from None
    try:
        if not container.streams.video:
            raise UserError(f"{source}: no video stream")
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            ts = float(frame.pts * stream.time_base) if frame.pts is not None and stream.time_base else None
            yield ts, frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        raise UserError(f"{source}: live source failed ({e})") from None
    finally:
        container.close()
