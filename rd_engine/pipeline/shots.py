"""An edited video, shot by shot: each shot is a frame range run by the unchanged offline method.

The video is decoded once. Each decoded frame goes to the cut detector (`io.shots.ShotDetector`,
no look-ahead) or is checked against the editor's cut list, then to the run of its shot
(`Pipeline.predict_frames`): a shot is exactly what `rd-engine run --start-frame A --frame-count N`
computes for its frames, with the same settings and seed, so no snippet crosses a cut and the
dilation cap, co-alignment, merge, normalization and refinement are the shot's own.

Each finished shot goes to `on_shot` (to be written on its own, `--split-shots`) and/or is appended
to the video's output: its depth is streamed into one raw file (memory-mapped at the end, or read
back when small), so memory stays bounded however many shots the video has.

The model stays busy across a cut: a shot's co-alignment, merge and writing (`on_shot`) run on a second
thread while the model runs the next shot (`Pipeline.infer_frames` / `Pipeline.finish_frames`), so at
most two shots are in memory at once: one finishing, one being inferred. Refinement calls the model
again, so with it each shot finishes before the next one starts. The results are the same either way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np
import torch

from rd_engine.errors import UserError
from rd_engine.io.anchors import Anchors
from rd_engine.io.shots import DEFAULT_MIN_SHOT_LEN, DEFAULT_THRESHOLD, FLASH_FRAMES, ShotDetector, read_cut_list
from rd_engine.io.video import SeekMismatch, iter_frames, probe, seek_frames
from rd_engine.pipeline.inference import pick_seed
from rd_engine.pipeline.metric import MetricVideo, fit_video
from rd_engine.pipeline.offline import Inferred, Pipeline, Prediction, Shot
from rd_engine.pipeline.stores import unlinked_temp_file
from rd_engine.settings import Settings


@dataclass
class ShotOptions:
    """How a run finds its shots: `mode` "auto" (detect), "off" (one shot: today's run) or "list"."""

    mode: str = "auto"
    cuts: list[int] = field(default_factory=list)  # "list": first frames of shots (the video's frame numbers)
    threshold: float = DEFAULT_THRESHOLD
    min_shot_len: int = DEFAULT_MIN_SHOT_LEN
    fades: bool = True

    @classmethod
    def parse(cls, spec: str | None, **kw) -> ShotOptions:
        """`auto`, `off`, or the path of a cut list (`io.shots.read_cut_list`)."""
        if spec is None or spec == "auto":
            return cls("auto", **kw)
        if spec == "off":
            return cls("off", **kw)
        return cls("list", read_cut_list(spec), **kw)

    @property
    def off(self) -> bool:
        return self.mode == "off"

    def cutter(self, start_frame: int, fps: float, online: bool = False) -> Cutter:
        """The cut finder of one video or stream (`Cutter`); `start_frame` is the window's first frame."""
        if self.mode == "list":
            return Cutter(cuts=[c - start_frame for c in self.cuts if c > start_frame])
        return Cutter(ShotDetector(self.threshold, self.min_shot_len, self.fades, 0 if online else FLASH_FRAMES, fps))


class Cutter:
    """Cuts of frames fed in order: from a detector (`io.shots.ShotDetector`) or a fixed list."""

    def __init__(self, detector: ShotDetector | None = None, cuts: list[int] | None = None):
        self.detector = detector
        self.fixed = set(cuts or [])
        self.delay = 0 if detector is None else detector.delay
        self.n = 0

    def push(self, rgb: np.ndarray) -> list[int]:
        """The next frame; returns cuts now known (frame positions, at most `delay` frames back)."""
        i = self.n
        self.n += 1
        if self.detector is None:
            return [i] if i in self.fixed else []
        return self.detector.push(rgb)

    def finish(self) -> list[int]:
        return [] if self.detector is None else self.detector.finish()


class _ShotFrames:
    """One decoder, cut into one frame iterator per shot (each ends where the next shot starts).

    Frames are held back `cutter.delay` frames (a detector's look-ahead), so a frame goes to its shot
    only once it is known whether a cut comes before it.
    """

    def __init__(self, frames: Iterator, cutter: Cutter):
        self.frames = iter(frames)
        self.cutter = cutter
        self.held: deque = deque()  # (position, frame) decoded but not handed out yet
        self.cuts: set[int] = set()
        self.i = 0  # position of the next frame decoded
        self.decoded_all = False
        self.started = False

    def _fill(self) -> None:
        """Decode until the first held frame's shot is known (or the video ended)."""
        while not self.decoded_all and len(self.held) <= self.cutter.delay:
            fr = next(self.frames, None)
            if fr is None:
                self.decoded_all = True
                self.cuts.update(self.cutter.finish())
                break
            self.cuts.update(self.cutter.push(fr.rgb))
            self.held.append((self.i, fr))
            self.i += 1

    def next_shot(self) -> Iterator | None:
        self._fill()
        if not self.held:
            return None

        def shot():
            first = True
            while True:
                self._fill()
                if not self.held:
                    return
                pos, fr = self.held[0]
                if pos in self.cuts and not first:
                    return
                self.held.popleft()
                first = False
                yield fr

        return shot()

    def close(self) -> None:
        close = getattr(self.frames, "close", None)
        if close is not None:
            close()


def predict_shots(
    pipe: Pipeline,
    path,
    settings: Settings,
    shots: ShotOptions,
    on_shot: Callable[[Prediction, int], None] | None = None,
    keep: bool = True,
    keep_snippets: bool = False,
    confidence: bool = False,
    anchors: Anchors | None = None,
    anchor_window: float = 0.0,
    overlap: bool | None = None,
) -> Prediction:
    """Run the method shot by shot over one video (see the module doc).

    Args:
        pipe: The pipeline (its progress flag shows each shot's stage bars).
        path: The video file.
        settings: The run's settings (its frame window is the one cut into shots).
        shots: How cuts are found (not "off": that is `Pipeline.predict`).
        on_shot: Called with each shot's own prediction and its number (0-based) as soon as it is done
            (its settings' window is the shot's frames); the prediction is closed after the call.
        keep: Keep the video's depth (all shots, in order) in the result; without it the result
            has an empty depth and only the shot table.
        keep_snippets: Keep each shot's snippets in the prediction `on_shot` gets.
        confidence: Compute each shot's per-pixel confidence (kept for the video with `keep`).
        anchors: Sparse metric depth of the window's frames: one metric fit per shot
            (`pipeline.metric.fit_video` with the shots as its ranges), in each shot's prediction and the
            video's.
        anchor_window: Frames of the metric fit's slowly varying correction (0: off).
        overlap: Finish each shot (co-alignment, merge, `on_shot`'s writing) on a second thread while the
            model runs the next shot (not with refinement, which calls the model); False: one after the
            other. The results are the same. None (default): on when the model runs on a GPU; off on the
            CPU, where the model already uses every core (measured on 2 cores: 0.82x, benchmarks/edited_video.py).

    Returns:
        The whole video's prediction: depth of every frame in order (each shot normalized on its
        own), timestamps, and the shot table `shots`. A video without a cut gives the plain run's
        prediction (`shots` None, its snippets kept on request): today's result exactly.
    """
    s = settings
    if overlap is None:
        overlap = pipe.backend.device.type != "cpu"
    info, size = pipe.check_video(path, s)
    seed = pick_seed(s.seed)  # one seed: each shot draws its noise as a fresh run with it would
    cutter = shots.cutter(s.start_frame, info.fps)
    source = _ShotFrames(iter_frames(path, s.start_frame, s.frame_count), cutter)
    table: list[Shot] = []
    timestamps: list[float] = []
    seconds: dict[str, float] = {}
    peak = 0
    w, h = size
    first = 0
    fits: list[MetricVideo] = []  # each shot's metric fit (with anchors)
    try:
        frames = source.next_shot()
        if frames is None:
            raise UserError(f"{path}: no frames to process")
        # nameless from the start (as the snippet spill file): no signal, not even SIGKILL, leaves it on disk
        spill = pipe.budgets.spill_dir or tempfile.gettempdir()
        raw = unlinked_temp_file(spill, ".rd-shots-", ".raw")
        raw_conf = unlinked_temp_file(spill, ".rd-shots-conf-", ".raw") if confidence and keep else None
        with raw, contextlib.ExitStack() as stack:
            if raw_conf is not None:
                stack.enter_context(raw_conf)
            # one thread finishes a shot (co-alignment, merge, writing) while the model runs the next one
            # (with the caller's torch thread count: a new thread would get OpenMP's default)
            finisher = stack.enter_context(
                ThreadPoolExecutor(1, "rd-shot", initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))
            )
            running = None  # the previous shot's finish on the finisher thread
            pending = None  # this shot's snippets until its finish owns them
            stack.callback(lambda: pending.close() if pending is not None else None)
            # after a failure here, the finisher's shot ends (its own error is not raised over this one)
            stack.callback(lambda: running is not None and wait([running]))

            def finish(done: Inferred, first: int, progress: bool | None) -> Prediction:
                """Shot `done` (its first frame `first` in the window) aligned and merged, with its own fit."""
                pred = pipe.finish_frames(done, keep_snippets, confidence=confidence, progress=progress)
                n = pred.num_frames
                if anchors is not None:  # the shot's own fit, to its own anchors (frames from its first)
                    ours = anchors.in_range(first, first + n)
                    ours.frame = ours.frame - first
                    pred.metric = fit_video(pred.depth, ours, (info.width, info.height), size, window=anchor_window)
                return pred

            def finish_and_write(done: Inferred, first: int, progress: bool | None) -> None:
                nonlocal peak
                pred = finish(done, first, progress)
                try:
                    n = pred.num_frames
                    if anchors is not None:
                        fits.append(pred.metric)
                    pred.settings = dataclasses.replace(s, start_frame=s.start_frame + first, frame_count=n)
                    table.append(shot_entry(pred))
                    timestamps.extend(pred.timestamps)
                    for k, v in pred.stage_seconds.items():
                        seconds[k] = seconds.get(k, 0.0) + v
                    peak = max(peak, pred.peak_device_bytes)
                    if keep:
                        for a in range(0, n, 64):
                            raw.write(np.ascontiguousarray(pred.depth[a : a + 64], np.float32).tobytes())
                            if raw_conf is not None:
                                raw_conf.write(np.ascontiguousarray(pred.confidence[a : a + 64], np.float32).tobytes())
                    if on_shot is not None:
                        on_shot(pred, len(table) - 1)
                finally:
                    pred.close()

            while frames is not None:
                # the shot's window: what `rd-engine run --start-frame A --frame-count N` would run
                # (its length is known once it ended, so its settings are completed afterwards)
                pending = pipe.infer_frames(frames, info, size, s, seed, None, progress=pipe.progress)
                n = pending.num_frames
                frames = source.next_shot()
                if first == 0 and frames is None:
                    # no cut: the plain run of the whole window, today's result exactly
                    done, pending = pending, None
                    pred = finish(done, 0, None)
                    if anchors is not None:
                        anchors.check(info.width, info.height, n, source="anchors")
                    _detect_seconds(pred.stage_seconds, cutter)
                    return pred
                if running is not None:  # shots finish in order, at most one besides the one inferred
                    job, running = running, None
                    job.result()
                done, pending = pending, None
                # refinement calls the model: that shot finishes before the next one starts
                if overlap and s.refine_step == 0 and frames is not None:
                    running = finisher.submit(finish_and_write, done, first, False)
                else:
                    finish_and_write(done, first, None)
                first += n
            if running is not None:
                job, running = running, None
                job.result()
            if anchors is not None:
                anchors.check(info.width, info.height, first, source="anchors")
            _detect_seconds(seconds, cutter)
            depth = _read_back(raw, keep, first, h, w, pipe.budgets.host_output)
            conf = None if raw_conf is None else _read_back(raw_conf, keep, first, h, w, pipe.budgets.host_output)
        return Prediction(
            depth=depth,
            coaligned=None,
            snippets=[],
            params=[],
            dilations=list(s.dilations),
            groups=[],
            timestamps=timestamps,
            info=info,
            size=size,
            seed=seed,
            settings=s,
            stage_seconds=seconds,
            peak_device_bytes=peak,
            shots=table,
            confidence=conf,
            metric=_joined(fits, table, s.start_frame) if anchors is not None else None,
        )
    finally:
        source.close()


def find_cuts(path, settings: Settings, shots: ShotOptions) -> list[int]:
    """Where the shots of `settings`' window start (window positions, the first shot's 0 left out), as
    `predict_shots` finds them: the same detector on the same decoded frames, without the model (a
    cluster splits an edited video at them before any worker runs a shot).
    """
    s = settings
    info = probe(path)
    cutter = shots.cutter(s.start_frame, info.fps)
    cuts: set[int] = set()
    n = 0
    frames = iter_frames(path, s.start_frame, s.frame_count)
    try:
        for fr in frames:
            cuts.update(cutter.push(fr.rgb))
            n += 1
    finally:
        frames.close()
    cuts.update(cutter.finish())
    return sorted(c for c in cuts if 0 < c < n) + [n]  # ... and the window's length last


def predict_shot(
    pipe: Pipeline, path, settings: Settings, seed: int, first: int, n: int, keep_snippets: bool = False
) -> Prediction:
    """Shot `[first, first + n)` of `settings`' window, exactly as `predict_shots` computes it (the same
    call on the same frames): a cluster worker's share of an edited video. Its settings are the window's,
    completed with the shot's frames as `predict_shots` completes them.
    """
    s = settings
    info, size = pipe.check_video(path, s)

    def run(frames) -> Prediction:
        with contextlib.closing(frames):
            return pipe.predict_frames(frames, info, size, s, seed, None, keep_snippets, progress=pipe.progress)

    try:  # from the keyframe before the shot (as a frame range does), not by decoding every frame before it
        pred = run(seek_frames(path, s.start_frame + first, n))
    except SeekMismatch:  # the seek misled the decoder: decode from the start
        pred = run(iter_frames(path, s.start_frame + first, n))
    if pred.num_frames != n:
        pred.close()
        raise UserError(f"{path}: shot at frame {s.start_frame + first} has {pred.num_frames} frames, not {n}")
    pred.settings = dataclasses.replace(s, start_frame=s.start_frame + first, frame_count=n)
    return pred


def shot_entry(pred: Prediction) -> Shot:
    """A finished shot's row of the video's shot table."""
    lo, hi = pred.norm
    a = pred.settings.start_frame
    return Shot(a, a + pred.num_frames - 1, lo, hi, list(pred.dilations))


def _read_back(raw, keep: bool, n: int, h: int, w: int, budget: int) -> np.ndarray:
    """The `[n, h, w]` float32 frames streamed into `raw`: in memory when small, else memory-mapped."""
    raw.flush()
    if not keep:
        return np.empty((0, h, w), np.float32)
    if n * h * w * 4 <= budget:
        raw.seek(0)
        return np.fromfile(raw, np.float32).reshape(n, h, w)
    # the map holds its own reference to the (nameless) file: closing it keeps the data
    return np.memmap(raw, dtype=np.float32, mode="r+", shape=(n, h, w))


def _joined(fits: list[MetricVideo], table: list[Shot], start_frame: int) -> MetricVideo:
    """The video's metric fit from its shots' (each shot one range, frames counted from the window's first)."""
    ranges = []
    for fit, shot in zip(fits, table):
        f0 = shot.first - start_frame
        ranges.extend((f0 + a, f0 + b, one) for a, b, one in fit.ranges)
    return MetricVideo(
        np.concatenate([f.scale for f in fits]),
        np.concatenate([f.shift for f in fits]),
        ranges,
        fits[0].window if fits else 0.0,
    )


def _detect_seconds(seconds: dict[str, float], cutter: Cutter) -> None:
    """Detection runs inside the shots' decode loop: its time becomes its own stage, out of "encode"."""
    det = cutter.detector
    if det is not None:
        seconds["detect"] = det.seconds
        seconds["encode"] = max(0.0, seconds.get("encode", 0.0) - det.seconds)
