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

import torch

from rd_engine.io.sources import open_source
from rd_engine.online.session import FinishedFrame, StreamSession
from rd_engine.pipeline.offline import Budgets, Pipeline, Prediction
from rd_engine.settings import Settings, resolve


class Engine:
    """Models loaded once on one device; sessions and runs keep their own state.

    Args:
        checkpoint: diffusers-layout checkpoint folder or hub id.
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: "fp16", "bf16" or "fp32" (default: fp16 on CUDA, fp32 on CPU).
        progress: show progress bars for offline runs.
        budgets: memory budgets for offline runs.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "auto",
        dtype: str | None = None,
        progress: bool = False,
        budgets: Budgets | None = None,
        models=None,
    ):
        from rd_engine.backends.torch_backend import TorchBackend
        from rd_engine.model.checkpoint import load_checkpoint

        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
        )
        self.dtype = dtype or ("fp16" if self.device.type == "cuda" else "fp32")
        models = models or load_checkpoint(checkpoint)
        torch_dtype = Settings(dtype=self.dtype).validate().torch_dtype()
        self.backend = TorchBackend(models, self.device, torch_dtype)
        self.pipeline = Pipeline(self.backend, progress=progress, budgets=budgets)
        self.model_name = models.name

    @classmethod
    def demo(cls, **kw) -> Engine:
        """The tiny RANDOM-weight model: for trying the API, not for meaningful depth."""
        from rd_engine.model.factory import tiny_checkpoint_cached

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
