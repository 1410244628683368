"""Sparse metric anchors in: an `.npz` of points, a folder of sparse depth PNGs, or one frame's arrays.

Conventions (docs/robotics.md, "Anchors"): `frame` is the 0-based index of the processed frame (the
first frame after `--start-frame` is 0); `x`, `y` are pixel coordinates in the *input* frame with pixel
centres at integers (x right, y down); `depth` is the z-depth along the optical axis in metres (REP 118),
not the length of the ray. A sparse depth image covers the frame's field of view (any size: its pixel
centres are mapped proportionally); 0 means "no sample"; 16-bit images are millimetres (as RealSense and
Kinect write them), float images metres.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError

NPZ_KEYS = ("frame", "x", "y", "depth")


@dataclass
class Anchors:
    """Metric samples of a video: `[M]` arrays, sorted by frame."""

    frame: np.ndarray  # int64, processed frame index
    x: np.ndarray  # float64, input-frame pixels
    y: np.ndarray
    depth: np.ndarray  # float64, metres

    def __post_init__(self):
        order = np.argsort(self.frame, kind="stable")
        self.frame, self.x, self.y, self.depth = (a[order] for a in (self.frame, self.x, self.y, self.depth))

    def __len__(self) -> int:
        return int(self.frame.size)

    def in_range(self, f0: int, f1: int) -> Anchors:
        """The anchors of frames `[f0, f1)`."""
        a, b = np.searchsorted(self.frame, [f0, f1])
        return Anchors(self.frame[a:b], self.x[a:b], self.y[a:b], self.depth[a:b])

    def check(self, width: int, height: int, num_frames: int | None = None, source: str = "anchors") -> None:
        """Raise a one-line UserError unless every anchor lies in a `width x height` input frame and (when
        given) among the `num_frames` processed frames.
        """
        if len(self) == 0:
            return
        bad = (self.x < -0.5) | (self.x > width - 0.5) | (self.y < -0.5) | (self.y > height - 0.5)
        if bad.any():
            i = int(np.argmax(bad))
            raise UserError(
                f"{source}: anchor ({self.x[i]:g}, {self.y[i]:g}) of frame {self.frame[i]} lies outside the "
                f"{width}x{height} input frame (pixel centres at integers)"
            )
        if num_frames is not None and int(self.frame[-1]) >= num_frames:
            raise UserError(
                f"{source}: anchors for frame {int(self.frame[-1])}, but the run has {num_frames} frames "
                "(frames are 0-based indices of the processed frames)"
            )


def check_points(x, y, depth, source: str = "anchors") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One frame's (or a file's) `x`, `y`, `depth` as float64 `[M]` arrays, or a one-line UserError."""
    arrays = []
    for name, a in (("x", x), ("y", y), ("depth", depth)):
        a = np.asarray(a)
        if a.ndim != 1:
            raise UserError(f"{source}: {name} must be a 1-D array, got shape {a.shape}")
        if a.dtype.kind not in "iuf":
            raise UserError(f"{source}: {name} must be numbers, got {a.dtype}")
        arrays.append(a.astype(np.float64))
    x, y, depth = arrays
    if not (x.size == y.size == depth.size):
        raise UserError(f"{source}: x, y and depth differ in length ({x.size}, {y.size}, {depth.size})")
    for name, a in (("x", x), ("y", y), ("depth", depth)):
        if not np.isfinite(a).all():
            raise UserError(f"{source}: {name} holds NaN or Inf (leave invalid samples out)")
    if (depth <= 0).any():
        raise UserError(f"{source}: depth must be > 0 metres, got {float(depth.min()):g}")
    return x, y, depth


def points_from_image(image: np.ndarray, input_size: tuple[int, int], source: str = "sparse depth image"):
    """A sparse depth image (`[h, w]`; uint16 millimetres or float metres, 0 = no sample) as
    `(x, y, depth)` in the input frame's pixels (`input_size` = (width, height)).
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2:
        raise UserError(f"{source}: a sparse depth image has one channel, got shape {img.shape}")
    if img.dtype == np.uint16:
        metres = img.astype(np.float64) / 1000.0
    elif img.dtype.kind == "f":
        metres = img.astype(np.float64)
        metres[~np.isfinite(metres)] = 0.0  # NaN is "no sample" in ROS's 32FC1
    else:
        raise UserError(f"{source}: sparse depth must be 16-bit millimetres or float metres, got {img.dtype}")
    if (metres < 0).any():
        raise UserError(f"{source}: negative depth {float(metres.min()):g}")
    v, u = np.nonzero(metres > 0)
    h, w = img.shape
    wi, hi = input_size
    x = (u + 0.5) * (wi / w) - 0.5
    y = (v + 0.5) * (hi / h) - 0.5
    return x.astype(np.float64), y.astype(np.float64), metres[v, u]


def load_anchors(path: str | Path, input_size: tuple[int, int]) -> Anchors:
    """Read `--anchors PATH`: an `.npz` with `frame`, `x`, `y`, `depth`, or a folder of 16-bit PNG sparse
    depth images in millimetres named by frame number (`000012.png`, `depth_12.png`: the last number in
    the name). Raises one-line UserErrors for every problem.
    """
    p = Path(path)
    if p.is_dir():
        return _load_png_folder(p, input_size)
    if not p.is_file():
        raise UserError(f"{p}: no such anchors file or folder")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise UserError(f"{p}: anchors .npz lacks {', '.join(missing)} (needs {', '.join(NPZ_KEYS)})")
            arrays = {k: z[k] for k in NPZ_KEYS}
    except UserError:
        raise
    except (OSError, ValueError) as e:
        raise UserError(f"{p}: not a readable .npz ({e})") from None
    frame = np.asarray(arrays["frame"])
    if frame.ndim != 1 or frame.dtype.kind not in "iu":
        raise UserError(f"{p}: frame must be a 1-D integer array, got {frame.dtype} of shape {frame.shape}")
    x, y, depth = check_points(arrays["x"], arrays["y"], arrays["depth"], str(p))
    if frame.size != x.size:
        raise UserError(f"{p}: frame has {frame.size} entries, x, y and depth {x.size}")
    if frame.size and int(frame.min()) < 0:
        raise UserError(f"{p}: frame indices must be >= 0, got {int(frame.min())}")
    a = Anchors(frame.astype(np.int64), x, y, depth)
    a.check(*input_size, source=str(p))
    return a


def _load_png_folder(folder: Path, input_size: tuple[int, int]) -> Anchors:
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() == ".png")
    if not files:
        raise UserError(f"{folder}: no .png sparse depth images")
    parts: list[tuple[int, tuple]] = []
    seen: dict[int, Path] = {}
    for f in files:
        m = re.search(r"(\d+)(?!.*\d)", f.stem)
        if m is None:
            raise UserError(f"{f}: a sparse depth image is named by its frame number (e.g. 000012.png)")
        idx = int(m.group(1))
        if idx in seen:
            raise UserError(f"{f}: frame {idx} also has {seen[idx].name}")
        seen[idx] = f
        try:
            with Image.open(f) as im:
                img = np.asarray(im)
        except OSError as e:
            raise UserError(f"{f}: not a readable PNG ({e})") from None
        if img.dtype != np.uint16:
            if img.dtype == np.int32 and int(img.max(initial=0)) <= 65535:  # PIL reads some 16-bit PNGs as I
                img = img.astype(np.uint16)
            else:
                raise UserError(f"{f}: sparse depth PNGs are 16-bit millimetres, got {img.dtype}")
        parts.append((idx, points_from_image(img, input_size, str(f))))
    frame = np.concatenate([np.full(p[1][0].size, p[0], np.int64) for p in parts])
    x, y, d = (np.concatenate([p[1][i] for p in parts]) for i in range(3))
    return Anchors(frame, x, y, d)
