"""`--rerun FILE.rrd`: a Rerun recording of the run (rerun-sdk, the optional `viewer` extra).

Per frame, on the timelines `frame` (index) and `time` (the frame's timestamp: the bag's header stamp,
the video's presentation time): `world/camera/rgb` (the processed frame), `world/camera/depth` (metric
depth with `meter = 1`) or `world/camera/depth_relative` (relative inverse depth, where a frame has no
metric depth), `world/camera/confidence`; with intrinsics or a field of view also the pinhole
`world/camera` and the point cloud `world/points`. `world` is the camera's optical frame (RDF: x right,
y down, z forward, REP 103). Open it with `rerun FILE.rrd`.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from rd_engine.errors import needs_extra
from rd_engine.io.files import atomic_output
from rd_engine.outputs.frames import FrameOut, cloud_of


class RerunSink:
    """Logs `FrameOut`s into `path`, which appears when the sink closes cleanly."""

    def __init__(self, path: Path, depth_range=(0.0, math.inf), voxel: float = 0.0, confidence_min: float = 0.0):
        needs_extra("rerun", "viewer", "--rerun")
        self.path, self.depth_range, self.voxel, self.confidence_min = path, depth_range, voxel, confidence_min
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> RerunSink:
        import rerun as rr

        self.rr = rr
        self.tmp = self._stack.enter_context(atomic_output(self.path))
        self.rec = rr.RecordingStream("rd_engine", send_properties=False)
        self.rec.save(str(self.tmp))
        self._stack.callback(self.rec.disconnect)  # flushes and closes the file before it is renamed
        self.rec.log("world", rr.ViewCoordinates.RDF, static=True)
        return self

    def emit(self, fo: FrameOut) -> None:
        rr, rec = self.rr, self.rec
        rec.set_time("frame", sequence=fo.index)
        if fo.timestamp is not None:
            rec.set_time("time", duration=float(fo.timestamp))
        h, w = fo.depth.shape
        if fo.camera is not None:
            fx, fy, cx, cy = fo.camera
            rec.log(
                "world/camera",
                rr.Pinhole(
                    focal_length=[fx, fy],
                    principal_point=[cx + 0.5, cy + 0.5],  # Rerun's pixel centres are at half-integers
                    width=w,
                    height=h,
                    camera_xyz=rr.ViewCoordinates.RDF,
                ),
            )
        rec.log("world/camera/rgb", rr.Image(fo.rgb))
        if fo.depth_m is not None:
            rec.log("world/camera/depth", rr.DepthImage(fo.depth_m, meter=1.0))
        else:
            rec.log("world/camera/depth_relative", rr.Image(fo.depth))
        if fo.confidence is not None:
            rec.log("world/camera/confidence", rr.Image(fo.confidence))
        if fo.camera is not None:
            xyz, rgb, _ = cloud_of(fo, fo.camera, self.depth_range, self.voxel, self.confidence_min)
            rec.log("world/points", rr.Points3D(xyz, colors=rgb))

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)
