"""Point clouds from depth: the pinhole back-projection, voxel thinning, binary PLY with colour (plyfile).

Conventions (docs/robotics.md, "Point clouds"): points are in the camera's optical frame (REP 103
`_optical_frame`: x right, y down, z forward), metres when the depth is metric. The intrinsics are given
for the input frame (`fx fy cx cy` in its pixels, centres at integers) and scaled to the processed frame:
`fx' = fx * W'/W`, `cx' = (cx + 0.5) * W'/W - 0.5` (the same for y); `--fov` is the horizontal field of
view, with the principal point at the frame's centre and square pixels. A pixel `(u, v)` with depth `z`
becomes `((u - cx) z / fx, (v - cy) z / fy, z)`.

Without metric depth the points come from a pseudo-depth `1 / ((d + 1) / 2 + RELATIVE_OFFSET)` of the
relative inverse depth `d` in [-1, 1]: the scene's shape up to an unknown affine in inverse depth, NOT
metres. Such clouds say so (the PLY comment `depth relative`, PointCloud2 in a bag's frame id note).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from rd_engine.errors import needs_extra

RELATIVE_OFFSET = 0.1  # pseudo-depth of relative output: from 1/1.1 (nearest) to 10 (farthest)


def processed_intrinsics(
    intrinsics: tuple[float, float, float, float] | None,
    fov: float | None,
    input_size: tuple[int, int],
    size: tuple[int, int],
) -> tuple[float, float, float, float]:
    """`(fx, fy, cx, cy)` of the processed frame (see module doc)."""
    (wi, hi), (wp, hp) = input_size, size
    if intrinsics is not None:
        fx, fy, cx, cy = intrinsics
        sx, sy = wp / wi, hp / hi
        return fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5
    if fov is None:
        raise ValueError("intrinsics or fov needed")
    f = (wp / 2.0) / math.tan(math.radians(fov) / 2.0)
    return f, f, (wp - 1) / 2.0, (hp - 1) / 2.0


def relative_pseudo_depth(d: np.ndarray) -> np.ndarray:
    """A positive stand-in depth for relative inverse depth `d` in [-1, 1] (not metres)."""
    return (1.0 / ((np.asarray(d, np.float32) + 1.0) / 2.0 + RELATIVE_OFFSET)).astype(np.float32)


def backproject(
    z: np.ndarray,
    k: tuple[float, float, float, float],
    rgb: np.ndarray | None = None,
    depth_range: tuple[float, float] = (0.0, math.inf),
    voxel: float = 0.0,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Points `[M, 3]` float32 (and colours `[M, 3]` uint8) of depth `z [H, W]` through intrinsics `k`.

    Pixels with non-finite depth or depth outside `depth_range` are dropped; with `voxel > 0`, the points
    of each voxel (cubes of that side, from the origin) become their mean, colours too.
    """
    fx, fy, cx, cy = k
    h, w = z.shape
    v, u = np.mgrid[0:h, 0:w]
    z = np.asarray(z, np.float32)
    ok = np.isfinite(z) & (z >= depth_range[0]) & (z <= depth_range[1]) & (z > 0)
    zz = z[ok]
    xyz = np.stack([(u[ok] - cx) / fx * zz, (v[ok] - cy) / fy * zz, zz], -1).astype(np.float32)
    col = None if rgb is None else np.asarray(rgb, np.uint8)[ok]
    if voxel > 0 and xyz.shape[0]:
        keys = np.floor(xyz / voxel).astype(np.int64)
        _, inv, cnt = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        m = cnt.size
        xyz = (np.stack([np.bincount(inv, xyz[:, i], m) for i in range(3)], -1) / cnt[:, None]).astype(np.float32)
        if col is not None:
            c = np.stack([np.bincount(inv, col[:, i].astype(np.float64), m) for i in range(3)], -1) / cnt[:, None]
            col = np.rint(c).astype(np.uint8)
    return xyz, col


def ply_bytes_into(path: Path, xyz: np.ndarray, rgb: np.ndarray | None, comments: list[str]) -> None:
    """Write one binary little-endian PLY: float32 x, y, z and (with colour) uchar red, green, blue."""
    needs_extra("plyfile", "robotics", "writing PLY point clouds")
    from plyfile import PlyData, PlyElement

    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if rgb is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    v = np.empty(xyz.shape[0], dtype=fields)
    v["x"], v["y"], v["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if rgb is not None:
        v["red"], v["green"], v["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    PlyData([PlyElement.describe(v, "vertex")], text=False, byte_order="<", comments=comments).write(str(path))
