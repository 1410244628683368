r"""ROS 2 bags for tests and the docs: a video's frames as image messages, plus synthetic sparse depth.

    python -m rd_engine.testing.rosbag /work/shared/samples/elephant.mp4 /tmp/elephant_bag \
        --storage mcap --frames 24 --sparse-depth

writes a rosbag2 folder with `/camera/color/image_raw` (`sensor_msgs/Image` rgb8, frame id
`camera_color_optical_frame`, stamps at the video's rate) and, with `--sparse-depth`,
`/camera/depth/sparse` (`16UC1` millimetres, 0 = no sample): LiDAR-like scan lines (every 8th row,
every 4th column) of a synthetic depth that grows from 2 m at the bottom of the frame to 8 m at the
top, 10 % of its samples replaced by outliers. It stands in for a robot's recording, not for true depth.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rd_engine.io.rosbag import image_message, typestore

IMAGE_TOPIC = "/camera/color/image_raw"
DEPTH_TOPIC = "/camera/depth/sparse"
FRAME_ID = "camera_color_optical_frame"


def write_bag(
    path: str | Path,
    frames: Iterable[np.ndarray],
    storage: str = "mcap",
    encoding: str = "rgb8",
    fps: float = 10.0,
    t0_ns: int = 1_700_000_000_123_000_000,
    sparse_depth=None,
    depth_encoding: str = "16UC1",
) -> list[int]:
    """Write frames (`[H, W, 3]` uint8 RGB) as a rosbag2 folder; returns the header stamps (ns).

    Args:
        path: The bag folder to create (must not exist).
        frames: RGB frames.
        storage: "mcap" or "sqlite3".
        encoding: "rgb8", "bgr8", "mono8" (sensor_msgs/Image) or "jpeg"/"png" (CompressedImage).
        fps: Frame rate of the stamps.
        t0_ns: The first stamp.
        sparse_depth: Optional `f(index, rgb) -> [h, w]` metres (0 = no sample), published on
            `DEPTH_TOPIC` with the frame's stamp.
        depth_encoding: "16UC1" (millimetres) or "32FC1" (metres).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    stamps = []
    compressed = encoding in ("jpeg", "png")
    img_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(Path(path), version=8, storage_plugin=plugin) as w:
        img = w.add_connection(IMAGE_TOPIC, img_type, typestore=ts)
        dep = w.add_connection(DEPTH_TOPIC, "sensor_msgs/msg/Image", typestore=ts) if sparse_depth else None
        for i, rgb in enumerate(frames):
            t = t0_ns + int(round(i * 1e9 / fps))
            header = {"sec": t // 1_000_000_000, "nanosec": t % 1_000_000_000, "frame_id": FRAME_ID}
            stamps.append(t)
            if compressed:
                msg = _compressed(ts, header, rgb, encoding)
            else:
                arr = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., 0]}[encoding]
                msg = image_message(ts, header, i, arr, encoding)
            w.write(img, t + 1_000_000, ts.serialize_cdr(msg, img_type))  # received 1 ms after the stamp
            if dep is not None:
                z = sparse_depth(i, rgb)
                arr = np.rint(z * 1000).astype(np.uint16) if depth_encoding == "16UC1" else z.astype(np.float32)
                dmsg = image_message(ts, header, i, arr, depth_encoding)
                w.write(dep, t + 2_000_000, ts.serialize_cdr(dmsg, "sensor_msgs/msg/Image"))
    return stamps


def _compressed(ts, header, rgb, fmt):
    import io

    from PIL import Image

    Msg = ts.types["sensor_msgs/msg/CompressedImage"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG" if fmt == "jpeg" else "PNG")
    return Msg(
        header=Header(stamp=Time(sec=header["sec"], nanosec=header["nanosec"]), frame_id=header["frame_id"]),
        format=fmt,
        data=np.frombuffer(buf.getvalue(), np.uint8),
    )


def scan_lines(shape: tuple[int, int], seed: int = 0, outliers: float = 0.1):
    """`f(index, rgb)` for `write_bag`: the synthetic sparse depth of the module doc."""
    h, w = shape

    def f(index: int, rgb) -> np.ndarray:
        rng = np.random.default_rng(seed + index)
        z = np.zeros((h, w))
        v, u = np.mgrid[0:h:8, 0:w:4]
        d = 2.0 + 6.0 * (1.0 - v / max(h - 1, 1))
        bad = rng.random(d.shape) < outliers
        d[bad] = rng.uniform(0.5, 20.0, int(bad.sum()))
        z[v, u] = d
        return z

    return f


def main(argv: list[str] | None = None) -> int:
    from rd_engine.io.video import iter_frames, probe

    p = argparse.ArgumentParser(description="A video as a ROS 2 bag (for trying `rd-engine run BAG --topic ...`)")
    p.add_argument("video")
    p.add_argument("bag", help="the rosbag2 folder to create")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--frames", type=int, default=0, help="frames to take (0 = all)")
    p.add_argument("--sparse-depth", action="store_true", help=f"add synthetic sparse depth on {DEPTH_TOPIC}")
    a = p.parse_args(argv)
    info = probe(a.video)
    sparse = scan_lines((info.height, info.width)) if a.sparse_depth else None
    frames = (f.rgb for f in iter_frames(a.video, 0, a.frames))
    stamps = write_bag(a.bag, frames, a.storage, fps=info.fps or 30.0, sparse_depth=sparse)
    print(f"{a.bag}: {len(stamps)} frames on {IMAGE_TOPIC}" + (f" and {DEPTH_TOPIC}" if sparse else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
