"""Offline metric depth: the robust anchor fit (`coalign.metric`) over a run's output, per frame range.

One fit per frame range (by default the whole run is one range; a video cut into shots passes one range
per shot, so each shot gets its own fit). Frames of a range use its fit whether or not they hold
anchors; a range without enough anchors (`coalign.metric.MIN_SAMPLES`) has no metric depth (NaN, and
`valid` False). With `window > 0` the optional slowly varying correction refits every frame with
Gaussian temporal weights of that many frames (`coalign.metric.fit_windowed`), where the anchors are
dense enough; it is off by default because one affine is what co-aligned depth should need, and a
windowed fit follows the anchors' noise where they are few.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rd_engine.coalign.metric import MetricFit, fit_metric, fit_windowed, sample_nearest, to_metric, to_processed
from rd_engine.io.anchors import Anchors


@dataclass
class MetricVideo:
    """Per frame, the affine `1 / z = scale * d + shift` from relative inverse depth `d` to metres."""

    scale: np.ndarray  # [N] float64, NaN where the frame has no fit
    shift: np.ndarray  # [N] float64
    ranges: list[tuple[int, int, MetricFit | None]] = field(default_factory=list)  # (f0, f1, the range's fit)
    window: float = 0.0

    @property
    def valid(self) -> np.ndarray:
        """`[N]` bool: frames with metric depth."""
        return np.isfinite(self.scale)

    def depth(self, f: int, d: np.ndarray) -> np.ndarray:
        """Frame `f`'s metric depth (metres, float32, NaN where invalid) from its relative depth `d`."""
        if not np.isfinite(self.scale[f]):
            return np.full(np.shape(d), np.nan, np.float32)
        return to_metric(d, float(self.scale[f]), float(self.shift[f]))

    def summary(self) -> dict:
        """What the metadata records of the fit."""
        return {
            "depth_m": "metres along the optical axis (REP 118); NaN where invalid",
            "model": "1 / depth_m = metric_scale[f] * depth + metric_shift[f] (robust Tukey fit to the anchors)",
            "window_frames": self.window,
            "frames_with_metric": int(self.valid.sum()),
            "ranges": [
                {
                    "first": f0,
                    "end": f1,
                    "scale": None if fit is None else fit.scale,
                    "shift": None if fit is None else fit.shift,
                    "anchors": 0 if fit is None else fit.samples,
                    "inliers": 0 if fit is None else fit.inliers,
                    "residual_sigma": None if fit is None else fit.sigma,
                }
                for f0, f1, fit in self.ranges
            ],
        }


def anchor_samples(
    depth, anchors: Anchors, input_size: tuple[int, int], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(frame, d, z)` per anchor: the relative depth of `depth [N, H, W]` at each anchor's pixel."""
    xp, yp = to_processed(anchors.x, anchors.y, input_size, size)
    d = np.empty(len(anchors), np.float64)
    bounds = np.searchsorted(anchors.frame, np.unique(anchors.frame), side="left").tolist() + [len(anchors)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        d[a:b] = sample_nearest(np.asarray(depth[int(anchors.frame[a])]), xp[a:b], yp[a:b])
    return anchors.frame, d, anchors.depth


def fit_video(
    depth,
    anchors: Anchors,
    input_size: tuple[int, int],
    size: tuple[int, int],
    ranges: list[tuple[int, int]] | None = None,
    window: float = 0.0,
) -> MetricVideo:
    """The metric fit of a video's relative depth `[N, H, W]` (see module doc).

    Args:
        depth: The run's output (relative inverse depth), `[N, H, W]`, may be memory-mapped.
        anchors: Sparse metric depth, in input-frame pixels (`io.anchors`).
        input_size: (width, height) of the input frames.
        size: (width, height) of `depth`'s frames.
        ranges: Frame ranges `[f0, f1)` fitted separately (shots); None: the whole video.
        window: Frames of the slowly varying correction (0: off).
    """
    n = int(depth.shape[0])
    frame, d, z = anchor_samples(depth, anchors, input_size, size)
    scale = np.full(n, np.nan)
    shift = np.full(n, np.nan)
    out = MetricVideo(scale, shift, [], window)
    for f0, f1 in ranges or [(0, n)]:
        a, b = np.searchsorted(frame, [f0, f1])
        fit = fit_metric(d[a:b], z[a:b])
        out.ranges.append((f0, f1, fit))
        if fit is None:
            continue
        if window > 0:
            fits = fit_windowed(frame[a:b], d[a:b], z[a:b], fit, np.arange(f0, f1), window)
            scale[f0:f1] = [x.scale for x in fits]
            shift[f0:f1] = [x.shift for x in fits]
        else:
            scale[f0:f1], shift[f0:f1] = fit.scale, fit.shift
    return out
