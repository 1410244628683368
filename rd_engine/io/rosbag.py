"""ROS 2 bags without ROS (`rosbags`): images and sparse depth in, the messages of our outputs built.

Reads rosbag2 folders (sqlite3 or MCAP storage): `sensor_msgs/msg/Image` (`rgb8`, `bgr8`, `mono8`,
`rgba8`, `bgra8`) and `sensor_msgs/msg/CompressedImage` (JPEG, PNG) on the image topic; sparse depth on
the anchors topic as `sensor_msgs/msg/Image` `16UC1`/`mono16` (millimetres) or `32FC1` (metres; 0 or NaN
= no sample), as REP 118 has it. An anchors message belongs to the image frame with the nearest header
stamp within half the image period (a depth camera and its colour stream stamp alike; projected LiDAR
is stamped by its own clock).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError, needs_extra

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
COLOUR_ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")


def typestore():
    """The message definitions of ROS 2 Humble (sensor_msgs and std_msgs are the same in later releases)."""
    needs_extra("rosbags", "robotics", "reading and writing ROS 2 bags")
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def is_bag(path: str | Path) -> bool:
    """A rosbag2 folder (holds `metadata.yaml`), or the `.mcap`/`.db3` file of one."""
    p = Path(path)
    return (p.is_dir() and (p / "metadata.yaml").is_file()) or (
        p.is_file() and p.suffix in (".mcap", ".db3") and (p.parent / "metadata.yaml").is_file()
    )


def bag_folder(path: str | Path) -> Path:
    p = Path(path)
    return p if p.is_dir() else p.parent


def storage_of(path: str | Path) -> str:
    """The bag's storage: "mcap" or "sqlite3"."""
    text = (bag_folder(path) / "metadata.yaml").read_text()
    return "mcap" if "storage_identifier: mcap" in text else "sqlite3"


@dataclass
class BagFrame:
    """One image message."""

    index: int
    log_time: int  # nanoseconds, the bag's receive time
    stamp: tuple[int, int]  # header stamp (sec, nanosec)
    frame_id: str
    rgb: np.ndarray  # [H, W, 3] uint8

    @property
    def stamp_ns(self) -> int:
        return self.stamp[0] * 1_000_000_000 + self.stamp[1]

    @property
    def timestamp(self) -> float:
        return self.stamp[0] + self.stamp[1] * 1e-9

    @property
    def header(self) -> dict:
        return {"sec": self.stamp[0], "nanosec": self.stamp[1], "frame_id": self.frame_id, "log_time": self.log_time}


def _reader(path: Path):
    needs_extra("rosbags", "robotics", "reading ROS 2 bags")
    from rosbags.highlevel import AnyReader

    try:
        return AnyReader([bag_folder(path)], default_typestore=typestore())
    except Exception as e:  # rosbags raises its own error types for every unreadable bag
        raise UserError(f"{path}: not a readable ROS 2 bag ({e})") from None


def _connections(reader, path: Path, topic: str, types: tuple[str, ...]):
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        have = ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})) or "none"
        raise UserError(f"{path}: no topic {topic} (topics: {have})")
    bad = [c.msgtype for c in conns if c.msgtype not in types]
    if bad:
        raise UserError(f"{path}: topic {topic} holds {bad[0]}, not {' or '.join(types)}")
    return conns


def decode_image(msg, msgtype: str, where: str) -> np.ndarray:
    """An Image or CompressedImage message as `[H, W, 3]` uint8 RGB."""
    if msgtype.endswith("CompressedImage"):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(bytes(msg.data))) as im:
                return np.asarray(im.convert("RGB"))
        except OSError as e:
            raise UserError(f"{where}: cannot decode the compressed image ({msg.format}: {e})") from None
    enc = msg.encoding.lower()
    if enc not in COLOUR_ENCODINGS:
        raise UserError(f"{where}: image encoding {msg.encoding!r} (supported: {', '.join(COLOUR_ENCODINGS)})")
    ch = {"mono8": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}[enc]
    data = np.asarray(msg.data, np.uint8)
    if msg.step < msg.width * ch or data.size < msg.step * msg.height:
        raise UserError(f"{where}: image data of {data.size} bytes is short for {msg.width}x{msg.height} {enc}")
    img = data[: msg.step * msg.height].reshape(msg.height, msg.step)[:, : msg.width * ch].reshape(msg.height, -1, ch)
    if enc == "mono8":
        return np.repeat(img, 3, axis=2)
    if enc.startswith("bgr"):
        img = img[..., 2::-1]
    return np.array(img[..., :3], order="C")  # a copy: the message buffer is read-only


def decode_depth(msg, where: str) -> np.ndarray:
    """A sparse depth Image message as float64 metres `[H, W]` (0 = no sample)."""
    enc = msg.encoding.upper()
    if enc in ("16UC1", "MONO16"):
        dtype, scale = np.dtype(">u2" if msg.is_bigendian else "<u2"), 1e-3
    elif enc == "32FC1":
        dtype, scale = np.dtype(">f4" if msg.is_bigendian else "<f4"), 1.0
    else:
        raise UserError(f"{where}: sparse depth encoding {msg.encoding!r} (supported: 16UC1 mm, 32FC1 m)")
    data = np.asarray(msg.data, np.uint8)
    if msg.step < msg.width * dtype.itemsize or data.size < msg.step * msg.height:
        raise UserError(f"{where}: depth data of {data.size} bytes is short for {msg.width}x{msg.height} {enc}")
    rows = data[: msg.step * msg.height].reshape(msg.height, msg.step)[:, : msg.width * dtype.itemsize]
    z = np.ascontiguousarray(rows).view(dtype).astype(np.float64) * scale
    z[~np.isfinite(z)] = 0.0
    return z


def read_images(path: str | Path, topic: str, start: int = 0, count: int = 0) -> Iterator[BagFrame]:
    """The image messages of `topic` in the bag's order (frames `start` .. `start + count`, 0 = all)."""
    path = Path(path)
    with _reader(path) as reader:
        conns = _connections(reader, path, topic, IMAGE_TYPES)
        index = 0
        for i, (conn, t, raw) in enumerate(reader.messages(connections=conns)):
            if i < start:
                continue
            if count and index >= count:
                break
            msg = reader.deserialize(raw, conn.msgtype)
            rgb = decode_image(msg, conn.msgtype, f"{path}: {topic} message {i}")
            st = msg.header.stamp
            yield BagFrame(index, int(t), (int(st.sec), int(st.nanosec)), str(msg.header.frame_id), rgb)
            index += 1


def image_stamps(path: str | Path, topic: str, start: int = 0, count: int = 0) -> tuple[list[int], tuple[int, int]]:
    """The header stamps (ns) of the frames `read_images` gives, and the frames' (width, height)."""
    path = Path(path)
    stamps, size = [], None
    with _reader(path) as reader:
        conns = _connections(reader, path, topic, IMAGE_TYPES)
        for i, (conn, _, raw) in enumerate(reader.messages(connections=conns)):
            if i < start:
                continue
            if count and len(stamps) >= count:
                break
            msg = reader.deserialize(raw, conn.msgtype)
            if size is None:
                rgb = decode_image(msg, conn.msgtype, f"{path}: {topic} message {i}")
                size = (rgb.shape[1], rgb.shape[0])
            st = msg.header.stamp
            stamps.append(int(st.sec) * 1_000_000_000 + int(st.nanosec))
    if size is None:
        raise UserError(f"{path}: no image messages on {topic}" + (f" from frame {start}" if start else ""))
    return stamps, size


def read_depth(path: str | Path, topic: str, input_size: tuple[int, int]) -> list[tuple[int, tuple]]:
    """`(header stamp in ns, (x, y, depth) in input-frame pixels)` of every sparse depth message of
    `topic` (`io.anchors.points_from_image`: the image covers the colour frame's field of view).
    """
    from rd_engine.io.anchors import points_from_image

    path = Path(path)
    out = []
    with _reader(path) as reader:
        conns = _connections(reader, path, topic, ("sensor_msgs/msg/Image",))
        for i, (conn, _, raw) in enumerate(reader.messages(connections=conns)):
            msg = reader.deserialize(raw, conn.msgtype)
            where = f"{path}: {topic} message {i}"
            st = msg.header.stamp
            pts = points_from_image(decode_depth(msg, where), input_size, where)
            out.append((int(st.sec) * 1_000_000_000 + int(st.nanosec), pts))
    return out


def match_depth(stamps_ns: list[int], depth: list[tuple[int, object]]) -> dict[int, object]:
    """Frame index -> sparse depth: each depth message to the frame with the nearest stamp, within half
    the median image period (1 ms for a single frame).
    """
    if not stamps_ns or not depth:
        return {}
    s = np.asarray(stamps_ns, np.int64)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    tol = int(np.median(np.diff(ss)) // 2) if ss.size > 1 else 1_000_000
    out: dict[int, object] = {}
    for t, z in depth:
        j = int(np.searchsorted(ss, t))
        best = min((k for k in (j - 1, j) if 0 <= k < ss.size), key=lambda k: abs(int(ss[k]) - t))
        if abs(int(ss[best]) - t) <= tol:
            out[int(order[best])] = z
    return out


# -- the messages of our outputs ---------------------------------------------------------------------


def _header(ts, header: dict | None, index: int):
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    if header is None:
        return Header(stamp=Time(sec=index, nanosec=0), frame_id="camera_optical_frame")
    return Header(stamp=Time(sec=header["sec"], nanosec=header["nanosec"]), frame_id=header["frame_id"])


def image_message(ts, header: dict | None, index: int, array: np.ndarray, encoding: str):
    """`sensor_msgs/msg/Image` of `array` (`32FC1`: float32 `[H, W]`; `16UC1`: uint16; `rgb8`: `[H, W, 3]`)."""
    Image = ts.types["sensor_msgs/msg/Image"]
    a = np.ascontiguousarray(array)
    if encoding == "32FC1":
        a = a.astype("<f4")
    elif encoding == "16UC1":
        a = a.astype("<u2")
    h, w = a.shape[:2]
    data = a.view(np.uint8).reshape(-1)
    return Image(
        header=_header(ts, header, index),
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=0,
        step=data.size // h,
        data=data,
    )


def pointcloud_message(ts, header: dict | None, index: int, xyz: np.ndarray, rgb: np.ndarray | None):
    """`sensor_msgs/msg/PointCloud2`: float32 x, y, z and the `rgb` float32 of PCL (0x00RRGGBB packed)."""
    PointCloud2 = ts.types["sensor_msgs/msg/PointCloud2"]
    PointField = ts.types["sensor_msgs/msg/PointField"]
    n = xyz.shape[0]
    names = [("x", 0), ("y", 4), ("z", 8)] + ([("rgb", 12)] if rgb is not None else [])
    step = 4 * len(names)
    rec = np.empty((n, len(names)), "<f4")
    rec[:, :3] = xyz
    if rgb is not None:
        packed = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2].astype(np.uint32)
        rec[:, 3] = packed.view("<f4")
    fields = [PointField(name=nm, offset=off, datatype=PointField.FLOAT32, count=1) for nm, off in names]
    return PointCloud2(
        header=_header(ts, header, index),
        height=1,
        width=n,
        fields=fields,
        is_bigendian=False,
        point_step=step,
        row_step=step * n,
        data=rec.view(np.uint8).reshape(-1),
        is_dense=True,
    )


def points_of(msg) -> tuple[np.ndarray, np.ndarray | None]:
    """`(xyz [M, 3] float32, rgb [M, 3] uint8 or None)` of a PointCloud2 written by `pointcloud_message`."""
    names = [f.name for f in msg.fields]
    rec = np.asarray(msg.data, np.uint8).view("<f4").reshape(msg.width * msg.height, len(names))
    rgb = None
    if "rgb" in names:
        p = rec[:, names.index("rgb")].copy().view(np.uint32)
        rgb = np.stack([(p >> 16) & 255, (p >> 8) & 255, p & 255], -1).astype(np.uint8)
    return rec[:, :3].copy(), rgb


def image_array(msg) -> np.ndarray:
    """The array of an Image message written by `image_message` (32FC1 float32, 16UC1 uint16, rgb8)."""
    dt = {"32FC1": "<f4", "16UC1": "<u2", "rgb8": "u1"}[msg.encoding]
    a = np.asarray(msg.data, np.uint8).view(dt)
    return a.reshape(msg.height, msg.width, -1).squeeze(-1) if msg.encoding != "rgb8" else a.reshape(msg.height, -1, 3)
