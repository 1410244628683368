"""Saved predictions: finding one sequence's in a folder, loading it, bringing it to the ground truth's size.

Looked for, in this order, for the sequence ``ID`` (its split list's name, e.g. ``test^cab_e_3rd``):

* ``ID_pred.npy`` ``[N, H, W]``: rd-engine's ``--npy`` output;
* ``ID.npz`` with ``depth``: rd-engine's ``--npz`` output and DepthCrafter's ``.npz``;
* ``ID_depths.npz`` with ``depths``: Video Depth Anything's ``--save_npz`` output;
* ``ID.npy`` ``[N, H, W]``: any method's video as one array;
* ``<sequence folder>/<RGB name>.npy`` ``[H, W]`` per frame (the sequence's RGB paths with ``.npy`` for
  their extension): the per-frame layout of Video Depth Anything's benchmark inference.

All of them hold inverse depth up to scale and shift (relative disparity); the protocol aligns it.

A benchmark with a crop (ScanNet) takes a prediction at exactly one of two sizes: the full frame (the
crop is cut from it) or the cropped frame (Video Depth Anything's and DepthCrafter's benchmark scripts
crop the RGB before inference, so their depth comes at that size; it lies inside the crop as it is).
Elsewhere a prediction of the ground truth's aspect ratio is resized to it (`to_size`).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rd_engine.errors import UserError
from rd_engine.eval.datasets import Benchmark, SequenceSpec

ASPECT_TOLERANCE = 0.03  # relative difference of width / height within which a prediction is resized
NPZ_KEYS = ("depth", "depths")


@dataclass
class LoadedPrediction:
    """One sequence's prediction as saved.

    Attributes:
        depth: ``[N, H, W]`` (possibly memory-mapped) at the saved size.
        path: The file (or the first per-frame file).
        metadata: rd-engine's run metadata where the ``.npz`` carries it (model, backend, settings).
    """

    depth: np.ndarray
    path: Path
    metadata: dict = field(default_factory=dict)


def _candidates(pred_dir: Path, seq: SequenceSpec) -> list[Path]:
    return [
        pred_dir / f"{seq.id}_pred.npy",
        pred_dir / f"{seq.id}.npz",
        pred_dir / f"{seq.id}_depths.npz",
        pred_dir / f"{seq.id}.npy",
    ]


def _per_frame(pred_dir: Path, seq: SequenceSpec) -> list[Path]:
    base = Path(pred_dir, *seq.folder.parts)
    return [(base / r).with_suffix(".npy") for r in seq.rgb]


def find_prediction(pred_dir: Path, seq: SequenceSpec) -> Path | None:
    """The file holding a sequence's prediction (the first per-frame file for that layout), or None."""
    for p in _candidates(pred_dir, seq):
        if p.is_file():
            return p
    frames = _per_frame(pred_dir, seq)
    return frames[0] if frames[0].is_file() else None


def check_predictions(pred_dir: Path, seqs: list[SequenceSpec]) -> None:
    """Check that a prediction exists for every sequence, before any work.

    Raises:
        UserError: One line naming the folder, how many are missing and the first one's expected names.
    """
    if not Path(pred_dir).is_dir():
        raise UserError(f"prediction folder {pred_dir} is not a folder")
    missing = [s for s in seqs if find_prediction(pred_dir, s) is None]
    if missing:
        s = missing[0]
        names = ", ".join(p.name for p in _candidates(pred_dir, s))
        raise UserError(
            f"{pred_dir}: no prediction for {len(missing)} of {len(seqs)} sequences (first: {s.id}: "
            f"expected {names} or per-frame .npy files)"
        )


def load_prediction(pred_dir: Path, seq: SequenceSpec) -> LoadedPrediction:
    """Load a sequence's prediction and check its length.

    Raises:
        UserError: If it is missing, unreadable, not ``[N, H, W]``, or has another frame count than the split.
    """
    path = find_prediction(pred_dir, seq)
    if path is None:
        check_predictions(pred_dir, [seq])
    assert path is not None
    meta: dict = {}
    try:
        if path.suffix == ".npz":
            depth, meta = _load_npz(path)
        elif path.name in {c.name for c in _candidates(pred_dir, seq)}:
            depth = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            files = _per_frame(pred_dir, seq)
            gone = [f for f in files if not f.is_file()]
            if gone:
                raise UserError(f"{gone[0]}: missing ({len(gone)} of {len(files)} per-frame predictions of {seq.id})")
            depth = np.stack([np.squeeze(np.load(f, allow_pickle=False)) for f in files])
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: not a readable prediction ({e})") from None
    depth = _squeeze_channel(depth)
    if depth.ndim != 3 or depth.dtype.kind not in "fiu":
        raise UserError(f"{path}: a prediction is a numeric [N, H, W] array (got {depth.dtype} {tuple(depth.shape)})")
    if depth.shape[0] != seq.frames:
        raise UserError(f"{path}: {depth.shape[0]} frames, but sequence {seq.id} has {seq.frames} in the split")
    return LoadedPrediction(depth, path, meta)


def _load_npz(path: Path) -> tuple[np.ndarray, dict]:
    with np.load(path, allow_pickle=False) as z:
        key = next((k for k in NPZ_KEYS if k in z.files), None)
        if key is None:
            raise UserError(f"{path}: holds none of the arrays {', '.join(NPZ_KEYS)} (has {', '.join(z.files)})")
        depth = z[key]
        meta = {}
        if "metadata" in z.files:
            try:
                meta = json.loads(str(z["metadata"]))
            except ValueError:
                meta = {}
    return depth, meta


def _squeeze_channel(depth: np.ndarray) -> np.ndarray:
    """``[N, 1, H, W]`` or ``[N, H, W, 1]`` to ``[N, H, W]``."""
    if depth.ndim == 4 and depth.shape[1] == 1:
        return depth[:, 0]
    if depth.ndim == 4 and depth.shape[-1] == 1:
        return depth[..., 0]
    return depth


def to_size(depth: np.ndarray, height: int, width: int, what: str) -> np.ndarray:
    """A prediction at the ground truth's size: as is, or resized (bilinear) if only the scale differs.

    Args:
        depth: ``[N, h, w]``.
        height: Ground-truth height.
        width: Ground-truth width.
        what: Names the prediction in errors.

    Returns:
        ``[N, height, width]``: the input itself when it already has that size, else a read-only view that
        resizes the frames it is sliced for (float32), so a long video is never resized whole.

    Raises:
        UserError: If the aspect ratio differs from the ground truth's by more than `ASPECT_TOLERANCE`.
    """
    n, h, w = depth.shape
    if (h, w) == (height, width):
        return depth
    if abs((w / h) / (width / height) - 1.0) > ASPECT_TOLERANCE:
        raise UserError(
            f"{what}: frames are {w}x{h}, the ground truth is {width}x{height} (another aspect ratio; "
            "predictions must cover the whole frame)"
        )
    return _Resized(depth, height, width)


def to_benchmark_size(depth: np.ndarray, bench: Benchmark, height: int, width: int, what: str) -> np.ndarray:
    """A prediction on the pixels a benchmark scores: inside its crop, at the ground truth's size.

    Args:
        depth: ``[N, h, w]``.
        bench: The benchmark (its crop decides).
        height: Height of the stored ground truth (the full frame, before the crop).
        width: Width of the stored ground truth.
        what: Names the prediction in errors.

    Returns:
        ``[N, H, W]`` with ``H x W`` the cropped size: a full-frame prediction's crop (a view), a
        cropped-size one as it is; without a crop, `to_size`'s result.

    Raises:
        UserError: With a crop, a size that is neither the full frame nor the cropped frame; without
            one, another aspect ratio (`to_size`).
    """
    if not any(bench.crop):
        return to_size(depth, height, width, what)
    n, h, w = depth.shape
    ch, cw = bench.cropped_size(height, width)
    if (h, w) == (ch, cw):
        return depth
    if (h, w) == (height, width):
        rows, cols = bench.crop_window(height, width)
        return depth[:, rows, cols]
    raise UserError(
        f"{what}: frames are {w}x{h}; {bench.name} takes a prediction at exactly the full frame ({width}x{height}) "
        f"or the frame inside its crop {bench.crop} ({cw}x{ch})"
    )


class _Resized:
    """``[N, H, W]`` frames of ``depth`` resized (bilinear, antialiased when shrinking) as they are sliced."""

    def __init__(self, depth: np.ndarray, height: int, width: int):
        self.depth = depth
        self.shape = (depth.shape[0], height, width)
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return self[index : index + 1][0] if index >= 0 else self[len(self) + index]
        x = torch.from_numpy(np.array(self.depth[index], np.float32))[:, None]  # a writable copy
        if x.shape[0] == 0:
            return np.empty((0, *self.shape[1:]), np.float32)
        h, w = x.shape[-2:]
        shrink = h > self.shape[1] or w > self.shape[2]
        return F.interpolate(x, size=self.shape[1:], mode="bilinear", align_corners=False, antialias=shrink)[
            :, 0
        ].numpy()

    def __array__(self, dtype=None, copy=None):
        return self[:].astype(dtype or np.float32, copy=False)
