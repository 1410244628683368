"""A live stream on a shared engine: `StreamSession.push(frame)` returns the frames that finished.

What "finished" means, how each snippet is aligned and how a stream is
normalized: `rd_engine.online.aligner`. The session adds the model: it keeps
the latents of the last window of frames, runs the snippets that end at each
new frame, and hands their decoded depth to its `OnlineAligner`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from rd_engine.coalign.metric import to_processed
from rd_engine.errors import UserError
from rd_engine.io.anchors import Anchors, check_points, points_from_image
from rd_engine.io.video import processed_size
from rd_engine.online.aligner import FinishedFrame, OnlineAligner
from rd_engine.online.metric import OnlineMetric
from rd_engine.pipeline.inference import (
    decode_depth,
    denoise_snippets,
    encode_frames,
    initial_noise,
    padded_size,
    pick_seed,
)
from rd_engine.pipeline.offline import Pipeline
from rd_engine.pipeline.shots import ShotOptions
from rd_engine.settings import Settings
from rd_engine.snippets.plan import check_dilations


@dataclass
class LatencyStats:
    """Push-to-finished latency of a stream's frames (seconds)."""

    values: list[float] = field(default_factory=list)

    def add(self, frames: list[FinishedFrame]) -> None:
        self.values.extend(f.latency for f in frames if f.latency is not None)

    def percentiles(self) -> dict[str, float]:
        if not self.values:
            return {}
        v = np.asarray(self.values)
        return {
            "p50": float(np.percentile(v, 50)),
            "p95": float(np.percentile(v, 95)),
            "p99": float(np.percentile(v, 99)),
            "max": float(v.max()),
            "frames": int(v.size),
        }


class StreamSession:
    """One live stream on a shared engine: `push(frame)` returns the frames that finished.

    Sessions keep all their state here (latent window, accumulators, noise),
    so one engine serves any number of them.

    Shots: `cut()` ends the current shot (its frames are finished as `flush()` would finish a stream
    of that shot alone) and the next pushed frame starts a new one exactly like the first frame of a
    fresh session: new affine frame, new normalization, the same seed's noise. With `shots="auto"`
    each pushed frame first goes to the cut detector (`io.shots.ShotDetector`, no look-ahead: no
    lag is added), which calls `cut()` before a frame that starts a new shot. Frame indices count
    across cuts; `FinishedFrame.starts_shot` marks the first frame of each shot.

    Args:
        pipeline: The engine's pipeline (its backend runs the model).
        settings: The method's settings.
        lag: Frames of look-ahead before a frame is finished.
        shots: "auto" (detect cuts), "off", a cut list's path, or `ShotOptions` (a cut list's frame
            numbers are the video's: the first pushed frame is `settings.start_frame`).
    """

    def __init__(self, pipeline: Pipeline, settings: Settings, lag: int, shots="auto"):
        self.pipe = pipeline
        self.settings = settings
        self.lag = lag
        self.L = settings.snippet_len
        check_dilations(settings.dilations)
        self.dilations = sorted(dict.fromkeys(settings.dilations))
        self.weights = {d: settings.dilations.count(d) for d in self.dilations}
        self.window = (self.L - 1) * max(self.dilations) + 1
        self.aligner = OnlineAligner(self.L, lag)
        self.latents: dict[int, torch.Tensor] = {}
        self.noise = None
        self.size = None
        self.n = 0  # frames pushed (stream positions)
        self.shot_start = 0  # stream position of the current shot's first frame
        self.shot_starts: list[int] = []  # stream positions where shots start (the first frame included)
        self.latency = LatencyStats()
        self.closed = False
        self.steps = pipeline.backend.ddim.schedule(settings.init_steps)
        self.seed = pick_seed(settings.seed)
        self.metric: OnlineMetric | None = None  # created by the first anchors
        opts = shots if isinstance(shots, ShotOptions) else ShotOptions.parse(shots)
        # no look-ahead online: a cut is known by the push of its first frame (a flash may cut)
        self.cutter = None if opts.off else opts.cutter(settings.start_frame, 30.0, online=True)
        self.detector = None if self.cutter is None else self.cutter.detector

    @property
    def cuts_on(self) -> bool:
        """Whether this session finds cuts itself (detection or a cut list)."""
        return self.cutter is not None

    def cut(self) -> list[FinishedFrame]:
        """End the current shot before the next push (see the class doc); returns its last frames."""
        if self.closed:
            raise UserError("stream already flushed")
        return self._end_shot()

    def _end_shot(self) -> list[FinishedFrame]:
        k = self.n - self.shot_start  # frames of the current shot
        if k == 0:
            return []  # before any frame or right after a cut: no empty shot
        done = self._finish_shot(k)
        self.aligner = OnlineAligner(self.L, self.lag)
        self.latents.clear()
        self.noise = None
        self.metric = None  # a shot has its own affine frame, so its own metric fit
        self.shot_start = self.n
        return done

    def _finish_shot(self, k: int) -> list[FinishedFrame]:
        """Finish every frame of the current `k`-frame shot (short shots get one padded snippet)."""
        if 0 < k < self.L:  # 1- or 2-frame shot: one snippet repeating the last frame
            fr = tuple(min(j, k - 1) for j in range(self.L))
            rgb = torch.stack([self.latents[f] for f in fr])[None]
            idx = torch.arange(self.L, device=rgb.device)[None]
            be = self.pipe.backend
            x = denoise_snippets(be, rgb[0], self.noise, idx, self.steps)
            depth = decode_depth(be, x.reshape(-1, *x.shape[2:]), self.size, self.settings.vae_batch)
            self.aligner.add(1, fr, depth.reshape(self.L, self.size[1], self.size[0]))
        return self._out(self.aligner.finish(None, self.window + self.lag))

    def _out(self, done: list[FinishedFrame]) -> list[FinishedFrame]:
        """Shot-local finished frames as stream frames: positions and the first-of-shot flag."""
        for f in done:
            f.starts_shot = f.index == 0
            f.index += self.shot_start
        done = self._metric(done)
        self.latency.add(done)
        return done

    def push(self, frame, timestamp: float | None = None, anchors=None) -> list[FinishedFrame]:
        """Add one RGB frame (`[H, W, 3]` uint8, numpy or torch); returns newly finished frames.

        Args:
            frame: The RGB frame.
            timestamp: Its time (seconds), kept with its output.
            anchors: Optional sparse metric depth of this frame: `(x, y, depth)` arrays (input-frame
                pixels, centres at integers; metres), or a sparse depth image `[h, w]` covering the
                frame (uint16 millimetres or float metres, 0 = no sample). Finished frames then carry
                `depth_m` (metres) once a fit exists (docs/robotics.md).
        """
        if self.closed:
            raise UserError("stream already flushed")
        t0 = time.perf_counter()
        rgb = torch.as_tensor(np.asarray(frame))
        if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8:
            raise UserError(f"push() takes an [H, W, 3] uint8 RGB frame, got {tuple(rgb.shape)} {rgb.dtype}")
        if self.size is None:
            self.size = processed_size(rgb.shape[1], rgb.shape[0], self.settings.res)
            if min(self.size) < 8:
                raise UserError(f"processed size {self.size[0]}x{self.size[1]} is too small (at least 8x8 pixels)")
            self.pipe.backend.check_size(self.size)
            self.input_hw = tuple(rgb.shape[:2])
            self.padded = padded_size(self.size)
        elif tuple(rgb.shape[:2]) != self.input_hw:
            raise UserError(f"frame size changed mid-stream: {tuple(rgb.shape[:2])} after {self.input_hw}")
        before = []
        if self.cutter is not None and self.n in self.cutter.push(rgb.numpy()):
            before = self._end_shot()
        if self.n == self.shot_start:
            self.shot_starts.append(self.n)
        if anchors is not None:
            self._note_anchors(self.n, anchors)  # stream positions (the fit maps a shot's frames)
        i = self.n - self.shot_start  # the aligner and the latents work in shot positions
        self.n += 1
        self.aligner.note_frame(i, timestamp, t0)
        be = self.pipe.backend
        lat = encode_frames(be, rgb[None], self.size, self.padded)
        if self.noise is None:
            self.noise = initial_noise(be, self.seed, lat)
        self.latents[i] = lat[0]
        # the snippets that end at this frame, one per dilation
        ends = [d for d in self.dilations if i - (self.L - 1) * d >= 0]
        if ends:
            self._run(ends, i)
        for f in [f for f in self.latents if f <= i - self.window]:
            del self.latents[f]
        return before + self._out(self.aligner.finish(i, self.window + self.lag))

    def _note_anchors(self, i: int, anchors) -> None:
        hw = self.input_hw
        src = f"anchors of frame {i}"
        if isinstance(anchors, (tuple, list)) and len(anchors) == 3:
            x, y, z = check_points(*anchors, source=src)
        elif isinstance(anchors, dict):
            x, y, z = check_points(anchors.get("x"), anchors.get("y"), anchors.get("depth"), source=src)
        else:
            x, y, z = points_from_image(np.asarray(anchors), (hw[1], hw[0]), src)
        Anchors(np.full(x.size, i, np.int64), x, y, z).check(hw[1], hw[0], source=src)
        if self.metric is None:
            self.metric = OnlineMetric()
        xp, yp = to_processed(x, y, (hw[1], hw[0]), self.size)
        self.metric.note(i, xp, yp, z)

    def _metric(self, done: list[FinishedFrame]) -> list[FinishedFrame]:
        if self.metric is not None:
            for f in done:
                f.depth_m, f.metric_fit = self.metric.finish(f.index, f.depth)
        return done

    def _run(self, dilations: list[int], end: int) -> None:
        frames = [tuple(range(end - (self.L - 1) * d, end + 1, d)) for d in dilations]
        rgb = torch.stack([torch.stack([self.latents[f] for f in fr]) for fr in frames])
        idx = torch.arange(rgb.shape[0] * self.L, device=rgb.device).reshape(rgb.shape[0], self.L)
        be = self.pipe.backend
        x = denoise_snippets(be, rgb.reshape(-1, *rgb.shape[2:]), self.noise, idx, self.steps)
        depth = decode_depth(be, x.reshape(-1, *x.shape[2:]), self.size, self.settings.vae_batch)
        depth = depth.reshape(len(frames), self.L, self.size[1], self.size[0])
        for d, fr, dep in zip(dilations, frames, depth):
            self.aligner.add(d, fr, dep, float(self.weights[d]))

    def flush(self) -> list[FinishedFrame]:
        """End of stream: finish every remaining frame (short streams get one padded snippet)."""
        if self.closed:
            return []
        self.closed = True
        k = self.n - self.shot_start
        done = self._finish_shot(k) if k else []
        self.latents.clear()
        return done
