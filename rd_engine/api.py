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

Films and VFX (docs/films-vfx.md):
    from rd_engine import Engine, OutputOptions, SequenceOptions, StereoOptions, render_stereo
    pred = engine.run("shot/plate.%04d.exr", sequence=SequenceOptions(fps=24, transform="srgb"))
    engine.save(pred, "out", OutputOptions(exr=True, stereo=StereoOptions(layouts=["half-sbs"])))
    render_stereo("shot/plate.%04d.exr", "out/plate.npz", "out3d", StereoOptions(divergence=3))
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from rd_engine.backends.fast import FastPaths
from rd_engine.errors import UserError
from rd_engine.io.sequence import DEFAULT_SEQUENCE_FPS, SequenceOptions
from rd_engine.io.sources import open_source
from rd_engine.io.video import as_sequence, input_stem, iter_frames
from rd_engine.online.session import FinishedFrame, StreamSession
from rd_engine.outputs.offline import OutputOptions, write_outputs
from rd_engine.outputs.stereo import StereoOptions, write_stereo
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
        fast: execution options of the PyTorch backend (`rd_engine.backends.fast.FastPaths`: channels_last,
            cudnn_benchmark, compile, attention); all off by default.
        align_threads: CPU threads of the host co-alignment solve (None: torch's setting).
        align_on: where the fast and robust solvers run: "host" or "device" (the GPU; `Pipeline`).
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
        align_on: str = "host",
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
        self.pipeline = Pipeline(
            self.backend, progress=progress, budgets=budgets, align_threads=align_threads, align_on=align_on
        )
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
        sequence: SequenceOptions | None = None,
        shots: str | ShotOptions = "auto",
        **overrides,
    ) -> Prediction:
        """Offline depth for one video file or image sequence (a folder of frames, ``frame.%04d.exr``, a
        glob; read with ``sequence``, default 24 fps and sRGB for float frames). Call `close()` on the
        result when done with large videos.

        `shots`: "auto" detects cuts and runs each shot on its own (the result's `shots` is the shot
        table), "off" runs the whole video as one shot, a path reads an editor's cut list
        (docs/edited-video.md); `ShotOptions` sets the detector's sensitivity.
        """
        source = as_sequence(video, sequence) or video
        s = self.settings(preset, **overrides)
        opts = shots if isinstance(shots, ShotOptions) else ShotOptions.parse(str(shots))
        if opts.off:
            return self.pipeline.predict(source, s, keep_snippets=keep_snippets)
        # snippets are kept for a video without a cut (a video cut into shots has them per shot)
        return predict_shots(self.pipeline, source, s, opts, keep_snippets=keep_snippets)

    def save(
        self, pred: Prediction, out_dir: str | Path, options: OutputOptions | None = None, stem: str | None = None
    ) -> list[Path]:
        """Write a run's files (as `rd-engine run`: npy, npz, videos, EXR/TIFF16/PNG16, FFV1, stereo), each atomic."""
        from rd_engine.progress import StageClock

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        clock = StageClock(self.pipeline.progress)
        return write_outputs(pred, out, stem or input_stem(pred.info.path), options or OutputOptions(), self.model_name,
                             self.backend.name, clock)  # fmt: skip

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


def render_stereo(
    source: str | Path,
    depth: str | Path,
    out_dir: str | Path,
    options: StereoOptions | None = None,
    fps: float = 0.0,
    audio: bool = True,
    shots: Sequence[tuple[int, int]] | None = None,
    sequence: SequenceOptions | None = None,
    stem: str | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> list[Path]:
    """Stereo 3D videos of ``source`` from the depth a run saved (its ``.npz``), without the model.

    The frames are read as the run read them (its start frame and count, its sequence options unless
    ``sequence`` is given); the video carries the source's audio unless ``audio`` is False.

    Returns:
        The files written (each atomic): one video per layout (two for ``lr``) and a sidecar JSON.
    """
    import numpy as np

    from rd_engine.progress import StageClock
    from rd_engine.version import __version__

    options = (options or StereoOptions()).validate()
    depth = Path(depth)
    if not depth.is_file():
        raise UserError(f"{depth}: depth file not found (the run's <stem>.npz)")
    try:
        npz = np.load(depth, mmap_mode="r")
        d = npz["depth"]
        meta = json.loads(str(npz["metadata"])) if "metadata" in npz.files else {}
        times = np.asarray(npz["timestamps"]) if "timestamps" in npz.files else np.zeros(0)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{depth}: not a run's .npz with a depth array ({e})") from None
    if d.ndim != 3:
        raise UserError(f"{depth}: depth must be [frames, height, width], got {d.shape}")
    start = int((meta.get("settings") or {}).get("start_frame", 0) or 0)
    if shots is None and meta.get("shots"):  # a run cut into shots: each shot's own depth range, as the run
        shots = [(int(sh["first"]) - start, int(sh["last"]) - start + 1) for sh in meta["shots"]]
    if sequence is None:
        seq_meta = meta.get("sequence") or {}
        sequence = SequenceOptions(
            fps=fps or seq_meta.get("fps") or DEFAULT_SEQUENCE_FPS,
            transform=seq_meta.get("transform", "srgb"),
            allow_gaps=bool(seq_meta.get("allow_gaps", False)),
        )
    seq = as_sequence(source, sequence)
    src = seq if seq is not None else Path(source)
    n = int(d.shape[0])
    rate = fps or float(meta.get("fps") or 0) or (sequence.fps if seq is not None else DEFAULT_SEQUENCE_FPS)
    about = {"software": f"rd-engine {__version__}", "source": str(source), "depth": str(depth)}
    clock = StageClock(progress)
    with clock.stage("stereo", total=n) as tick:
        return write_stereo(
            (fr.rgb for fr in iter_frames(src, start, n)),
            d,
            Path(out_dir),
            stem or depth.stem,
            rate,
            options,
            shots=shots,
            audio_from=src if (audio and seq is None) else None,
            audio_start=float(times[0]) if len(times) else 0.0,
            about=about,
            tick=tick,
            device=device,
        )
