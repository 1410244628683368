"""One worker of a cluster run: one engine (models loaded once), whole videos or frame ranges of one.

`Worker` is a plain class; the runner makes it a Ray actor (`rd_engine.batch.runner`), one per GPU
on CUDA or per CPU slot otherwise. It reads inputs and writes outputs itself, so frames and output
depth never travel through the driver: only solver copies (a few kB per snippet), timestamps and
the run's numbers do.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rd_engine.batch.destination import Destination
from rd_engine.batch.jobs import VideoJob, is_complete, output_names
from rd_engine.errors import UserError
from rd_engine.io.sequence import SequenceOptions
from rd_engine.io.video import as_sequence, probe
from rd_engine.outputs.offline import OutputOptions, write_outputs
from rd_engine.pipeline.offline import Budgets, Pipeline, Prediction
from rd_engine.pipeline.ranges import FrameRange
from rd_engine.pipeline.shots import ShotOptions, find_cuts, predict_shot, predict_shots, shot_entry
from rd_engine.pipeline.stores import OutputBuffer
from rd_engine.progress import StageClock
from rd_engine.settings import Settings, pick_device, resolve

log = logging.getLogger("rd_engine")


@dataclass
class EngineSpec:
    """How every worker builds its engine and what it computes (the same on each)."""

    checkpoint: str | None = None
    engine: str | None = None
    backend: str = "auto"
    device: str = "auto"
    preset: str = "fast"
    overrides: dict = field(default_factory=dict)
    max_memory: float | None = None  # GiB of host memory for snippet depth before spilling
    spill_dir: str | None = None
    threads: int | None = None  # PyTorch CPU threads: CPU results depend on it (None: Ray's choice)
    sequence: dict | None = None  # image-sequence inputs: SequenceOptions fields (fps, transform, allow_gaps)
    shots: ShotOptions = field(default_factory=lambda: ShotOptions("off"))  # cuts: each shot run alone


def describe(e: BaseException) -> str:
    """One line for a failed video: the user's mistake as it is, anything else named as internal."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        return f"out of memory ({type(e).__name__}); lower the resolution or the batch sizes"
    return f"internal error: {type(e).__name__}: {e}"


class Worker:
    """Loads the models once; then runs videos, probes, or the phases of frame ranges.

    Errors a user can fix (a bad checkpoint, a bad setting) do not fail the construction: `info()`
    reports them, so that the driver prints one line instead of a remote traceback.
    """

    def __init__(self, spec: EngineSpec):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        self.spec = spec
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.error: str | None = None
        self.settings: Settings | None = None
        self.notes: list[str] = []
        self.ranges: dict[str, FrameRange] = {}
        try:
            self._load()
        except Exception as e:  # reported by info(); the driver stops with it
            self.error = describe(e)

    def _load(self) -> None:
        from rd_engine.backends.select import open_backend
        from rd_engine.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint

        spec = self.spec
        self.device = pick_device(spec.device)
        self.settings, self.notes = resolve(spec.preset, dict(spec.overrides), self.device)
        models = None
        if spec.engine is None or spec.checkpoint is not None or spec.backend == "pytorch":
            models = load_checkpoint(spec.checkpoint or DEFAULT_CHECKPOINT)
        s = self.settings
        self.backend = open_backend(
            None if spec.engine is None else Path(spec.engine),
            models,
            spec.backend,
            self.device,
            s.torch_dtype(),
            snippet_lens=sorted({s.snippet_len, s.refine_snippet_len}),
        )
        self.model_name = models.name if models is not None else str(spec.engine)
        self.budgets = Budgets(spill_dir=spec.spill_dir)
        if spec.max_memory is not None:
            self.budgets.host_snippets = int(spec.max_memory * (1 << 30))
        self.pipeline = Pipeline(self.backend, progress=False, budgets=self.budgets)

    def info(self) -> dict:
        """Who this worker is and what it computes (or the error that stops it)."""
        if self.error is not None:
            return {"name": self.name, "pid": os.getpid(), "error": self.error}
        return {
            "name": self.name,
            "pid": os.getpid(),
            "error": None,
            "device": str(self.device),
            "settings": self.settings,
            "notes": self.notes,
            "model": self.model_name,
            "backend": self.backend.name,
        }

    def _input(self, job: VideoJob):
        """The job's input: a video's path, or its image sequence read with the run's sequence options."""
        options = SequenceOptions(**self.spec.sequence) if self.spec.sequence else None
        return as_sequence(job.input, options) or job.input

    # -- before the run -----------------------------------------------------------------------
    def survey(self, jobs: list[VideoJob], dest: Destination, opts: OutputOptions, resume: bool) -> list[VideoJob]:
        """Per video: frames in the processed window (when the container says), or the error that
        makes it fail; `skipped` when its outputs are complete and made the same way.
        """
        s = self.settings
        for job in jobs:
            try:
                if resume and is_complete(dest, job, s, opts, self.model_name, self.backend.name):
                    job.status = "skipped"
                    continue
                info = probe(self._input(job))
                if info.num_frames:
                    left = max(0, info.num_frames - s.start_frame)
                    job.frames = min(left, s.frame_count) if s.frame_count else left
            except Exception as e:
                job.status, job.error, job.worker = "error", describe(e), self.name
        return jobs

    # -- whole videos ---------------------------------------------------------------------------
    def run_video(self, job: VideoJob, dest: Destination, opts: OutputOptions) -> VideoJob:
        """Run one video and write its outputs; a failure becomes the job's error."""
        t0 = time.perf_counter()
        job.worker = self.name
        try:
            src = self._input(job)
            if self.spec.shots.off:
                pred = self.pipeline.predict(src, self.settings, keep_snippets=opts.snippets)
            else:  # shot by shot, as `rd-engine run` does (its shot table with the outputs)
                pred = predict_shots(self.pipeline, src, self.settings, self.spec.shots)
            try:
                job.frames = pred.num_frames
                self._write(pred, job, dest, opts)
            finally:
                pred.close()
            job.status, job.error = "done", None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            job.status, job.error = "error", describe(e)
            if not isinstance(e, UserError):
                log.debug("%s", traceback.format_exc())
        job.seconds = time.perf_counter() - t0
        return job

    def _write(self, pred: Prediction, job: VideoJob, dest: Destination, opts: OutputOptions) -> None:
        clock = StageClock(False)
        if not dest.is_url:
            write_outputs(pred, dest.folder, job.stem, opts, self.model_name, self.backend.name, clock)
            return
        with tempfile.TemporaryDirectory(prefix="rd-engine-out-", dir=self.budgets.spill_dir) as tmp:
            write_outputs(pred, Path(tmp), job.stem, opts, self.model_name, self.backend.name, clock)
            names = output_names(job.stem, opts) + ([f"{job.stem}_shots.csv"] if pred.shots is not None else [])
            dest.publish(Path(tmp), names)

    # -- one video split into frame ranges (driver: rd_engine.batch.runner.run_split) -----------
    def range_infer(self, key: str, job: VideoJob, n: int, seed: int, a: int, b: int, window=None) -> dict:
        """Phase 1 of a frame range: snippet inference; returns the solver copies it owns and more.
        `window` (first, n): the range lies in that shot of the processed window, split as a video is.
        """
        self.range_drop(key)
        s = self.settings
        if window is not None:
            s = dataclasses.replace(s, start_frame=s.start_frame + window[0], frame_count=window[1])
        fr = FrameRange(self.backend, self._input(job), s, n, seed, a, b, self.budgets)
        self.ranges[key] = fr
        out = fr.infer()
        out["worker"] = self.name
        return out

    def range_merge(self, key: str, params, gmin: float, delta) -> tuple[float, float]:
        """Phase 2: merge the range's frames; returns their min and max."""
        return self._range(key).merge(params, gmin, delta)

    def range_finish(self, key: str, lo: float, hi: float, dest: Destination, part: str) -> None:
        """Phase 3: re-normalize by the video's min and max and store the range's depth as a part."""
        fr = self._range(key)
        try:
            dest.put_array(part, fr.finish(lo, hi))
        finally:
            self.range_drop(key)

    def assemble(self, job: VideoJob, dest: Destination, opts: OutputOptions, parts: list[str], meta: dict) -> VideoJob:
        """Phase 4: the video's outputs from its parts (in range or shot order), as a whole run writes them
        (`meta["shots"]`: the shot table of a video split at its cuts).
        """
        t0 = time.perf_counter()
        info = probe(self._input(job))
        arrays = []
        with tempfile.TemporaryDirectory(prefix="rd-engine-parts-", dir=self.budgets.spill_dir) as scratch:
            for p in parts:
                arrays.append(dest.get_array(p, Path(scratch)))
            n = sum(x.shape[0] for x in arrays)
            out = OutputBuffer((n, *arrays[0].shape[1:]), self.budgets.host_output, self.budgets.spill_dir, [])
            f = 0
            for x in arrays:
                out.array[f : f + x.shape[0]] = x
                f += x.shape[0]
            del arrays
        pred = Prediction(
            depth=out.array,
            coaligned=None,
            snippets=[],
            params=meta["params"],
            dilations=meta["dilations"],
            groups=meta["groups"],
            timestamps=meta["timestamps"],
            info=info,
            size=tuple(meta["size"]),
            seed=meta["seed"],
            settings=self.settings,
            shots=meta.get("shots"),
        )
        try:
            self._write(pred, job, dest, opts)
        finally:
            pred.close()
        job.worker = self.name
        job.seconds += time.perf_counter() - t0
        return job

    # -- one edited video split at its cuts (driver: rd_engine.batch.runner._run_shots) ----------
    def find_cuts(self, job: VideoJob) -> list[int]:
        """The window positions where the video's shots start after the first, then its length."""
        return find_cuts(self._input(job), self.settings, self.spec.shots)

    def shot_infer(self, job: VideoJob, seed: int, first: int, n: int, dest: Destination, part: str) -> dict:
        """One shot of the video, as a single-process run computes it; its depth is stored as a part."""
        t0 = time.perf_counter()
        pred = predict_shot(self.pipeline, self._input(job), self.settings, seed, first, n)
        try:
            dest.put_array(part, pred.depth)
            return {
                "shot": shot_entry(pred),
                "timestamps": list(pred.timestamps),
                "size": list(pred.size),
                "worker": self.name,
                "seconds": time.perf_counter() - t0,
            }
        finally:
            pred.close()

    def range_drop(self, key: str) -> None:
        fr = self.ranges.pop(key, None)
        if fr is not None:
            fr.close()

    def _range(self, key: str) -> FrameRange:
        if key not in self.ranges:
            raise RuntimeError(f"frame range {key} is not on this worker (restarted?)")
        return self.ranges[key]
