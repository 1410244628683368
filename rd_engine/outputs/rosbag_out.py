"""A run's outputs as a ROS 2 bag (rosbag2 folder, sqlite3 or MCAP, written with `rosbags`).

Topics under the namespace (default `/rd_engine`), each message with the input image's header (stamp
and frame id) and written at the input message's receive time (docs/robotics.md, "ROS 2 bags"):

* `<ns>/depth`: `sensor_msgs/Image` `32FC1`, metres (REP 118), NaN where invalid; only frames with
  metric depth (a stream's frames before its first fit have none);
* `<ns>/depth_relative`: `sensor_msgs/Image` `32FC1`, relative inverse depth (near = large, no unit),
  every frame;
* `<ns>/confidence`: `sensor_msgs/Image` `32FC1` in [0, 1], every frame;
* `<ns>/points`: `sensor_msgs/PointCloud2` (x, y, z float32 metres in the camera's optical frame,
  rgb packed) from metric depth, or `<ns>/points_relative` from the relative pseudo-depth where a frame
  has none (only with intrinsics or a field of view).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from rd_engine.io.files import atomic_output
from rd_engine.io.rosbag import image_message, pointcloud_message, typestore
from rd_engine.outputs.frames import FrameOut, cloud_of


class BagSink:
    """Writes `FrameOut`s into a new rosbag2 folder `folder`, which appears when the sink closes cleanly."""

    def __init__(
        self,
        folder: Path,
        storage: str = "mcap",
        namespace: str = "/rd_engine",
        depth_range=(0.0, math.inf),
        voxel: float = 0.0,
        confidence_min: float = 0.0,
    ):
        self.folder, self.storage, self.ns = folder, storage, namespace.rstrip("/")
        self.depth_range, self.voxel, self.confidence_min = depth_range, voxel, confidence_min
        self._stack = contextlib.ExitStack()
        self.ts = typestore()
        self.conns: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagSink:
        from rosbags.rosbag2 import StoragePlugin, Writer

        tmp = self._stack.enter_context(atomic_output(self.folder, folder=True))
        tmp.rmdir()  # the writer makes the bag's folder itself
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = self._stack.enter_context(Writer(tmp, version=8, storage_plugin=plugin))
        return self

    def _write(self, name: str, msgtype: str, msg, t: int) -> None:
        topic = f"{self.ns}/{name}"
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        self.writer.write(self.conns[topic], t, self.ts.serialize_cdr(msg, msgtype))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def emit(self, fo: FrameOut) -> None:
        h = fo.source
        t = h["log_time"] if h is not None else int(round((fo.timestamp or fo.index) * 1e9))
        img = "sensor_msgs/msg/Image"
        if fo.depth_m is not None:
            self._write("depth", img, image_message(self.ts, h, fo.index, fo.depth_m, "32FC1"), t)
        self._write("depth_relative", img, image_message(self.ts, h, fo.index, fo.depth, "32FC1"), t)
        if fo.confidence is not None:
            self._write("confidence", img, image_message(self.ts, h, fo.index, fo.confidence, "32FC1"), t)
        if fo.camera is not None:
            xyz, rgb, metric = cloud_of(fo, fo.camera, self.depth_range, self.voxel, self.confidence_min)
            msg = pointcloud_message(self.ts, h, fo.index, xyz, rgb)
            self._write("points" if metric else "points_relative", "sensor_msgs/msg/PointCloud2", msg, t)

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)
