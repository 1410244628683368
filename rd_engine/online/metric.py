"""Metric depth on a stream: the anchor fit (`coalign.metric`) updated as anchors arrive.

A frame's anchors wait until the frame is finished (its relative depth is final then); they join the
fit's samples, the fit is redone (started from the last one), and the frame is converted with the
updated fit. Frames never change once finished: a frame without anchors uses the fit current when it
finishes, and frames that finish before any fit exists have no metric depth (`depth_m` None: the flag).
The samples are the most recent `MAX_SAMPLES` (a stream's scale drifts slowly; the newest anchors
describe it best, and the fit's cost stays bounded: a refit from the last fit over 20 000 samples
takes 1-5 ms on the development CPU).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from rd_engine.coalign.metric import MetricFit, fit_metric, sample_nearest

MAX_SAMPLES = 20_000


class OnlineMetric:
    """The stream's anchors and fit. `note` a frame's anchors (processed-frame pixels) as it arrives;
    `finish` it with its final relative depth to get its metric depth.
    """

    def __init__(self, max_samples: int = MAX_SAMPLES):
        self.max_samples = max_samples
        self.pending: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.samples: deque[tuple[np.ndarray, np.ndarray]] = deque()  # (d, z) per anchored frame
        self.count = 0
        self.fit: MetricFit | None = None

    def note(self, frame: int, xp: np.ndarray, yp: np.ndarray, z: np.ndarray) -> None:
        if z.size:
            self.pending[frame] = (xp, yp, z)

    def finish(self, frame: int, depth: np.ndarray) -> tuple[np.ndarray | None, MetricFit | None]:
        """`(depth_m [H, W] float32 metres or None, the fit used)` of a frame finishing with `depth`."""
        got = self.pending.pop(frame, None)
        if got is not None:
            xp, yp, z = got
            self.samples.append((sample_nearest(depth, xp, yp).astype(np.float64), z))
            self.count += z.size
            while len(self.samples) > 1 and self.count - self.samples[0][1].size >= self.max_samples:
                self.count -= self.samples.popleft()[1].size
            d = np.concatenate([s[0] for s in self.samples])
            zz = np.concatenate([s[1] for s in self.samples])
            fit = fit_metric(d, zz, init=self.fit)
            if fit is not None:
                self.fit = fit
        if self.fit is None:
            return None, None
        return self.fit.depth(depth), self.fit
