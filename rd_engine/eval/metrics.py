"""The evaluation protocol: one affine fit per video in inverse depth, then AbsRel and delta1 per frame.

An affine-invariant inverse-depth video ``pred [N, H, W]`` is scored against metric ground truth
``gt [N, H, W]`` (metres) as follows (docs/evaluation.md gives the source of each step):

0. optionally (``pred_clip``, off by default) the prediction is clipped below at `PRED_CLIP` first, as
   the published video depth scripts do for their non-negative outputs;
1. valid pixels: finite ground truth with ``min_depth < gt < max_depth``, a finite prediction, and
   inside the optional evaluation mask ``region`` (the benchmarks crop their frames instead);
2. one scale ``s`` and shift ``t`` for the whole video, by least squares (float64) of ``s * pred + t``
   against the ground truth's inverse depth ``1 / gt`` over every valid pixel of every frame;
3. the aligned inverse depth is floored at ``DISPARITY_FLOOR`` (at most 1000 m), inverted, and the
   depth clipped to ``[min_depth, max_depth]``;
4. per frame: AbsRel ``= mean(|d - gt| / gt)`` and delta1 ``=`` the fraction of pixels with
   ``max(d / gt, gt / d) < 1.25``, over the frame's valid pixels; frames without a valid pixel are
   left out (NaN in the per-frame arrays);
5. the video's AbsRel and delta1 are the means over its scored frames; a benchmark's are the means over
   its videos.

Videos are processed in chunks of frames (two passes), so a long video needs no float64 copy of itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rd_engine.errors import UserError

DISPARITY_FLOOR = 1e-3  # aligned inverse depth is floored here before inversion (depth <= 1000 m)
MIN_DEPTH = 1e-3  # ground truth at or below this is invalid; predicted depth is clipped up to it
PRED_CLIP = 1e-3  # the compatibility switch's floor of the raw prediction (Video Depth Anything, DepthCrafter)
DELTA1_THRESHOLD = 1.25


@dataclass
class VideoScore:
    """The metrics of one video.

    Attributes:
        absrel: Mean over the scored frames of the per-frame AbsRel.
        delta1: Mean over the scored frames of the per-frame delta1.
        frame_absrel: Per-frame AbsRel, float64 ``[N]``; NaN where a frame has no valid pixel.
        frame_delta1: Per-frame delta1, float64 ``[N]``; NaN where a frame has no valid pixel.
        scale: The fitted scale (prediction to ground-truth inverse depth).
        shift: The fitted shift.
        pixels: Valid pixels over the whole video.
    """

    absrel: float
    delta1: float
    frame_absrel: np.ndarray
    frame_delta1: np.ndarray
    scale: float
    shift: float
    pixels: int

    @property
    def frames_scored(self) -> int:
        """Frames with at least one valid pixel."""
        return int(np.isfinite(self.frame_absrel).sum())


def _chunks(
    pred,
    gt,
    region: np.ndarray | None,
    min_depth: float,
    max_depth: float | None,
    chunk_frames: int,
    pred_clip: float | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """``(first frame, pred float64, gt float64, valid bool)`` per chunk of frames, all ``[B, H, W]``."""
    n = len(gt)
    for a in range(0, n, chunk_frames):
        p = np.asarray(pred[a : a + chunk_frames], dtype=np.float64)
        if pred_clip is not None:
            p = np.maximum(p, pred_clip)  # NaN stays NaN (and invalid)
        g = np.asarray(gt[a : a + chunk_frames], dtype=np.float64)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(g) & (g > min_depth) & np.isfinite(p)
            if max_depth is not None:
                valid &= g < max_depth
        if region is not None:
            valid &= region if region.ndim == 2 else region[a : a + chunk_frames]
        yield a, p, g, valid


def score_video(
    pred,
    gt,
    region: np.ndarray | None = None,
    min_depth: float = MIN_DEPTH,
    max_depth: float | None = None,
    chunk_frames: int = 8,
    pred_clip: float | None = None,
) -> VideoScore:
    """Align an affine-invariant inverse-depth video to metric ground truth once, and score it.

    Args:
        pred: Prediction ``[N, H, W]``, any array-like that slices along frames (numpy array or
            memory map, CPU torch tensor): inverse depth up to an unknown scale and shift.
        gt: Ground-truth depth ``[N, H, W]`` in metres; invalid pixels are 0, negative or not finite.
        region: Optional ``[H, W]`` or ``[N, H, W]`` boolean mask of the pixels to evaluate at all.
        min_depth: Ground truth at or below this is invalid; predicted depth is clipped up to it.
        max_depth: Ground truth at or above this is invalid and predicted depth is clipped down to it
            (None: no cap).
        chunk_frames: Frames per step.
        pred_clip: Clip the prediction below at this value before the fit (None: as it is).

    Returns:
        The video's `VideoScore`.

    Raises:
        UserError: If the shapes differ or no pixel is valid.
    """
    if tuple(pred.shape) != tuple(gt.shape) or len(gt.shape) != 3:
        raise UserError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} must be equal [N, H, W]")
    n = len(gt)

    # pass 1: least squares s * p + t ~ 1 / gt, from moments about an offset near the means (the first
    # chunk's), so that long videos lose no precision to cancellation
    count = 0
    kp = kg = None
    sp = sg = spp = spg = 0.0
    for _, p, g, valid in _chunks(pred, gt, region, min_depth, max_depth, chunk_frames, pred_clip):
        p, inv = p[valid], 1.0 / g[valid]
        if p.size == 0:
            continue
        if kp is None:
            kp, kg = float(p.mean()), float(inv.mean())
        p -= kp
        inv -= kg
        count += p.size
        sp += float(p.sum())
        sg += float(inv.sum())
        spp += float(p @ p)
        spg += float(p @ inv)
    if count == 0:
        raise UserError("no valid ground-truth pixels to score")
    mp, mg = sp / count, sg / count
    var, cov = spp / count - mp * mp, spg / count - mp * mg
    scale = cov / var if var > 0 else 0.0
    shift = (mg + kg) - scale * (mp + kp)

    # pass 2: per-frame metrics of the aligned depth
    frame_absrel = np.full(n, np.nan)
    frame_delta1 = np.full(n, np.nan)
    hi = np.inf if max_depth is None else max_depth
    for a, p, g, valid in _chunks(pred, gt, region, min_depth, max_depth, chunk_frames, pred_clip):
        for j in range(len(g)):
            v = valid[j]
            k = int(v.sum())
            if k == 0:
                continue
            d = np.clip(1.0 / np.maximum(p[j][v] * scale + shift, DISPARITY_FLOOR), min_depth, hi)
            t = g[j][v]
            frame_absrel[a + j] = float((np.abs(d - t) / t).sum()) / k
            frame_delta1[a + j] = float((np.maximum(d / t, t / d) < DELTA1_THRESHOLD).sum()) / k
    return VideoScore(
        absrel=float(np.nanmean(frame_absrel)),
        delta1=float(np.nanmean(frame_delta1)),
        frame_absrel=frame_absrel,
        frame_delta1=frame_delta1,
        scale=float(scale),
        shift=float(shift),
        pixels=int(count),
    )


def mean_scores(scores: list[VideoScore]) -> tuple[float, float]:
    """A benchmark's AbsRel and delta1: the means over its videos."""
    if not scores:
        raise ValueError("no videos")
    return float(np.mean([s.absrel for s in scores])), float(np.mean([s.delta1 for s in scores]))
