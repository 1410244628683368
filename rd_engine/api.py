"""Python API: one engine (models on a device), offline runs and any number of live streams.

Example:
    from rd_engine import Engine
    engine = Engine("path/to/rollingdepth-v1-0")          # or Engine.demo() for the tiny random model
    engine = Engine(engine="engines/rd")                   # or an engine folder (compiled components)
    engine = Engine(ckpt, fast=FastPaths(channels_last=True, compile="default"))  # fast paths (PyTorch)
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

from rd_engine.backends.fast import FastPaths
from rd_engine.errors import UserError
from rd_engine.io.sources import open_source
from rd_engine.online.session import FinishedFrame, StreamSession
from rd_engine.pipeline.offline import Budgets, Pipeline, Prediction
from rd_engine.settings import Settings, pick_device, resolve


class Engine:
    """Models loaded once on one device; sessions and runs keep their own state.

    Args:
        checkpoint: diffusers-layout checkpoint folder or hub id (optional with an engine folder that
            holds compiled components).
        device: "auto", "cpu", "cuda" or "cuda:N".
        dtype: "fp16", "bf16" or "fp32" (default: fp16 on CUDA, fp32 on CPU).
        progress: show progress bars for offline runs.
        budgets: memory budgets for offline runs.
        models: already loaded checkpoint models (instead of `checkpoint`).
        engine: an engine folder made by `rd-engine build` (its backend is picked from its manifest).
        backend: "auto" (TensorRT, then AOTInductor, then ONNX Runtime, then PyTorch: the first that
            can run here), or one of "pytorch", "onnxruntime", "aoti", "tensorrt".
        fast: execution options of the PyTorch backend (`rd_engine.backends.fast.FastPaths`: channels_last,
            cudnn_benchmark, compile, attention); all off by default.
        align_threads: CPU threads of the host co-alignment solve (None: torch's setting).
    """

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        device: str = "auto",
        dtype: str | None = None,
        progress: bool = False,
        budgets: Budgets | None = None,
        models=None,
        engine: str | Path | None = None,
        backend: str = "auto",
        fast: FastPaths | None = None,
        align_threads: int | None = None,
    ):
        from rd_engine.backends.select import open_backend
        from rd_engine.model.checkpoint import load_checkpoint

        self.device = pick_device(device)
        self.dtype = dtype or ("fp16" if self.device.type == "cuda" else "fp32")
        if models is None and checkpoint is not None:
            models = load_checkpoint(checkpoint)
        if models is None and engine is None:
            raise UserError("Engine needs a checkpoint or an engine folder")
        torch_dtype = Settings(dtype=self.dtype).validate().torch_dtype()
        self.backend = open_backend(
            None if engine is None else Path(engine), models, backend, self.device, torch_dtype, fast=fast
        )
        self.pipeline = Pipeline(self.backend, progress=progress, budgets=budgets, align_threads=align_threads)
        self.model_name = models.name if models is not None else str(engine)

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
