"""Python API: one engine (models on a device), offline runs and any number of live streams.

Example:
    from rd_engine import Engine
    engine = Engine("path/to/rollingdepth-v1-0")          # or Engine.demo() for the tiny random model
    engine = Engine(engine="engines/rd")                   # or an engine folder (compiled components)
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

from rd_engine.errors import UserError
from rd_engine.io.sources import open_source
from rd_engine.online.session import FinishedFrame, StreamSession
from rd_engine.pipeline.offline import Budgets, Pipeline, Prediction
from rd_engine.pipeline.shots import ShotOptions, predict_shots
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
        self.backend = open_backend(None if engine is None else Path(engine), models, backend, self.device, torch_dtype)
        self.pipeline = Pipeline(self.backend, progress=progress, budgets=budgets)
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

    def run(
        self,
        video: str | Path,
        preset: str = "fast",
        keep_snippets: bool = False,
        shots: str | ShotOptions = "auto",
        **overrides,
    ) -> Prediction:
        """Offline depth for one video file (call `close()` on the result when done with large videos).

        `shots`: "auto" detects cuts and runs each shot on its own (the result's `shots` is the shot
        table), "off" runs the whole video as one shot, a path reads an editor's cut list
        (docs/edited-video.md); `ShotOptions` sets the detector's sensitivity.
        """
        s = self.settings(preset, **overrides)
        opts = shots if isinstance(shots, ShotOptions) else ShotOptions.parse(str(shots))
        if opts.off:
            return self.pipeline.predict(video, s, keep_snippets=keep_snippets)
        # snippets are kept for a video without a cut (a video cut into shots has them per shot)
        return predict_shots(self.pipeline, video, s, opts, keep_snippets=keep_snippets)

    def open_stream(
        self, preset: str = "fast", lag: int = 0, shots: str | ShotOptions = "auto", **overrides
    ) -> StreamSession:
        """A new online session; frames go in with `push`, finished depth comes out (`shots` as in `run`;
        `session.cut()` marks a cut the caller knows of).
        """
        return StreamSession(self.pipeline, self.settings(preset, **overrides), lag, shots)

    def stream(
        self, source: str | Path, preset: str = "fast", lag: int = 0, shots: str | ShotOptions = "auto", **overrides
    ) -> Iterator[FinishedFrame]:
        """Online depth over a file or a live source PyAV opens (camera device, RTSP/HTTP URL, pipe)."""
        session = self.open_stream(preset, lag, shots, **overrides)
        for ts, rgb in open_source(source):
            yield from session.push(rgb, ts)
        yield from session.flush()
