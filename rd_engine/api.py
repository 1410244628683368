"""Python API: one engine (models on a device), offline runs and any number of live streams.

    from rd_engine import Engine
    engine = Engine("path/to/rollingdepth-v1-0")          # or Engine.demo() for the tiny random model
    pred = engine.run("video.mp4", preset="fast")          # offline, the reference method
    session = engine.open_stream(preset="fast", lag=0)     # online
    for frame, ts in camera:
        for done in session.push(frame, ts):
            publish(done.index, done.timestamp, done.depth)   # relative inverse depth, [H, W] float32
    session.flush()
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import torch

from rd_engine.errors import UserError
from rd_engine.pipeline.offline import Budgets, Pipeline, Prediction
from rd_engine.settings import Settings, resolve
from rd_engine.online.session import FinishedFrame, StreamSession


class Engine:
    """Models loaded once on one device; sessions and runs keep their own state.

    Args:
        checkpoint: diffusers-layout checkpoint folder or hub id.
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: "fp16", "bf16" or "fp32" (default: fp16 on CUDA, fp32 on CPU).
        progress: show progress bars for offline runs.
        budgets: memory budgets for offline runs.
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", dtype: str | None = None,
                 progress: bool = False, budgets: Budgets | None = None, models=None):
        from rd_engine.backends.torch_backend import TorchBackend
        from rd_engine.model.checkpoint import load_checkpoint

        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.dtype = dtype or ("fp16" if self.device.type == "cuda" else "fp32")
        models = models or load_checkpoint(checkpoint)
        torch_dtype = Settings(dtype=self.dtype).validate().torch_dtype()
        self.backend = TorchBackend(models, self.device, torch_dtype)
        self.pipeline = Pipeline(self.backend, progress=progress, budgets=budgets)
        self.model_name = models.name

    @classmethod
    def demo(cls, **kw) -> "Engine":
        """The tiny RANDOM-weight model: for trying the API, not for meaningful depth."""
        from rd_engine.model.checkpoint import tiny_checkpoint_cached

        return cls(tiny_checkpoint_cached(), **kw)

    def settings(self, preset: str = "fast", **overrides) -> Settings:
        """Preset plus overrides, at this engine's precision."""
        overrides = {**overrides, "dtype": self.dtype}
        return resolve(preset, overrides, self.device)[0]

    def run(self, video: str | Path, preset: str = "fast", keep_snippets: bool = False, **overrides) -> Prediction:
        """Offline depth for one video file (call `close()` on the result when done with large videos)."""
        return self.pipeline.predict(video, self.settings(preset, **overrides), keep_snippets=keep_snippets)

    def open_stream(self, preset: str = "fast", lag: int = 0, **overrides) -> StreamSession:
        """A new online session; frames go in with `push`, finished depth comes out."""
        return StreamSession(self.pipeline, self.settings(preset, **overrides), lag)

    def stream(self, source: str | Path, preset: str = "fast", lag: int = 0, **overrides) -> Iterator[FinishedFrame]:
        """Online depth over a file or a live source PyAV opens (camera device, RTSP/HTTP URL, pipe)."""
        session = self.open_stream(preset, lag, **overrides)
        for ts, rgb in open_source(source):
            yield from session.push(rgb, ts)
        yield from session.flush()


def open_source(source: str | Path, options: dict | None = None, start_frame: int = 0,
                frame_count: int = 0) -> Iterator[tuple[float | None, np.ndarray]]:
    """Decode `(timestamp, rgb uint8 [H, W, 3])` from a file, a camera device, a URL or a pipe.

    `/dev/videoN` opens through v4l2; `-` or `pipe:` reads a container from stdin.
    `start_frame`/`frame_count` window files only (live sources run until they end).
    """
    from rd_engine.io.video import iter_frames

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
