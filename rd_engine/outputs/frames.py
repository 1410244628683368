"""Per-frame outputs shared by offline runs and streams: one `FrameOut` per finished frame, handed to
sinks (point clouds, ROS 2 bags, the viewer) that write as frames arrive and appear atomically at the end.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rd_engine.io.files import atomic_output
from rd_engine.outputs.pointcloud import backproject, ply_bytes_into, relative_pseudo_depth


@dataclass
class FrameOut:
    """One finished frame, everything at the processed size."""

    index: int
    timestamp: float | None
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 relative inverse depth
    depth_m: np.ndarray | None = None  # [H, W] float32 metres, NaN where invalid (masked by confidence_min)
    confidence: np.ndarray | None = None  # [H, W] float32 in [0, 1]
    source: dict | None = None  # the input message's header: {"sec", "nanosec", "frame_id"} (bags)
    camera: tuple[float, float, float, float] | None = None  # processed-frame fx, fy, cx, cy, when known


def masked_metric(depth_m: np.ndarray | None, conf: np.ndarray | None, confidence_min: float) -> np.ndarray | None:
    """Metric depth with the pixels below `confidence_min` set to NaN (a copy)."""
    if depth_m is None:
        return None
    z = np.array(depth_m, np.float32)
    if conf is not None and confidence_min > 0:
        z[conf < confidence_min] = np.nan
    return z


def cloud_of(
    fo: FrameOut, k, depth_range=(0.0, math.inf), voxel: float = 0.0, confidence_min: float = 0.0
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """`(points, colours, metric)` of a frame: from its metric depth, else from the relative pseudo-depth."""
    metric = fo.depth_m is not None
    z = fo.depth_m.copy() if metric else relative_pseudo_depth(fo.depth)
    if fo.confidence is not None and confidence_min > 0:
        z[fo.confidence < confidence_min] = np.nan
    xyz, rgb = backproject(z, k, fo.rgb, depth_range, voxel)
    return xyz, rgb, metric


class PointCloudSink:
    """Binary PLYs ``{stem}_{index:06d}.ply`` in `folder`, which appears when the sink closes cleanly."""

    def __init__(self, folder: Path, stem: str, depth_range, voxel: float, confidence_min: float):
        self.folder, self.stem = folder, stem
        self.depth_range, self.voxel, self.confidence_min = depth_range, voxel, confidence_min
        self._stack = contextlib.ExitStack()
        self.tmp: Path | None = None

    def __enter__(self) -> PointCloudSink:
        self.tmp = self._stack.enter_context(atomic_output(self.folder, folder=True))
        return self

    def emit(self, fo: FrameOut) -> None:
        xyz, rgb, metric = cloud_of(fo, fo.camera, self.depth_range, self.voxel, self.confidence_min)
        note = "depth metric (metres)" if metric else "depth relative (pseudo-depth, NOT metres)"
        ply_bytes_into(
            self.tmp / f"{self.stem}_{fo.index:06d}.ply",
            xyz,
            rgb,
            [note, "frame camera optical (x right, y down, z fwd)"],
        )

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)
