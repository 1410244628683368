"""Depth as pictures: colour maps, side-by-side frames, 16-bit PNG sequences."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rd_engine.errors import UserError
from rd_engine.io.files import atomic_output

# Colour maps suggested when an unknown name is given.
_SUGGESTED_CMAPS = ("Spectral", "Spectral_r", "inferno", "magma", "viridis", "turbo", "gray")


def colorize(depth: np.ndarray, vmin: float, vmax: float, cmap: str = "Spectral") -> np.ndarray:
    """Colour depth maps with a matplotlib colour map.

    Values are mapped with ``clip((d - vmin) / (vmax - vmin), 0, 1)`` and
    looked up in the colour map's 256-entry table; channels are scaled by 255
    and truncated to uint8. This gives the same bytes as
    ``(matplotlib.colormaps[cmap](x)[..., :3] * 255).astype(np.uint8)``
    without building a float64 RGBA array. NaN becomes black.

    Args:
        depth: float [H, W] or [B, H, W].
        vmin: Value shown at the low end of the colour map.
        vmax: Value shown at the high end (if equal to vmin, a range of 1
            is used instead).
        cmap: matplotlib colour map name, e.g. ``Spectral`` or ``inferno``.

    Returns:
        uint8 [..., 3] RGB.

    Raises:
        UserError: For an unknown colour map name.
    """
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise UserError(f"unknown colour map {cmap!r}; try one of: {', '.join(_SUGGESTED_CMAPS)}") from None
    # Same table and truncation as calling the colormap on floats.
    lut = (colormap(np.arange(colormap.N))[:, :3] * 255).astype(np.uint8)
    x = _normalize(depth, vmin, vmax)
    nan = np.isnan(x)
    # As matplotlib does: x * N, with the top value 1.0 put in the last bin.
    idx = np.minimum((np.where(nan, 0.0, x) * colormap.N).astype(np.intp), colormap.N - 1)
    colored = lut[idx]
    colored[nan] = 0
    return colored


def _normalize(depth: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """clip((d - vmin) / (vmax - vmin), 0, 1), with a range of 1 if vmax == vmin."""
    span = vmax - vmin
    if span == 0:
        span = 1.0
    return np.clip((np.asarray(depth) - vmin) / span, 0.0, 1.0)


def side_by_side(rgb: np.ndarray, colored: np.ndarray, gap: int = 10) -> np.ndarray:
    """Place an RGB frame and its coloured depth next to each other.

    Args:
        rgb: uint8 [H, W, 3] input frame (or [B, H, W, 3]).
        colored: uint8 [H2, W2, 3] coloured depth (or [B, H2, W2, 3]);
            resized bilinearly to H x W if the size differs.
        gap: Width of the black column between the two.

    Returns:
        uint8 [H, 2 * W + gap, 3] (or with the batch dimension).
    """
    h, w = rgb.shape[-3:-1]
    if colored.shape[-3:-1] != (h, w):
        flat = torch.from_numpy(np.ascontiguousarray(colored)).reshape(-1, *colored.shape[-3:])
        x = flat.permute(0, 3, 1, 2).to(torch.float32)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        colored = x.reshape(*colored.shape[:-3], h, w, 3).numpy()
    black = np.zeros((*rgb.shape[:-2], gap, 3), np.uint8)
    return np.concatenate([rgb, black, colored], axis=-2)


def write_png16_sequence(
    folder: str | os.PathLike,
    frames: Iterable[np.ndarray],
    vmin: float,
    vmax: float,
    stem: str,
    note: str | None = None,
    sidecar_name: str = "png16",
) -> None:
    """Save depth maps as 16-bit grayscale PNGs, atomically as a folder.

    Files are ``{stem}_{index:06d}.png`` (index from 0) with
    ``png = round(clip((d - vmin) / (vmax - vmin), 0, 1) * 65535)``, plus
    ``{stem}_png16.json`` holding vmin, vmax and the formula to get the
    values back. The folder appears (replacing an older one) only when all
    frames are written.

    Args:
        folder: Output folder.
        frames: float [H, W] depth maps, e.g. a generator.
        vmin: Depth value stored as 0.
        vmax: Depth value stored as 65535 (a range of 1 is used if equal
            to vmin).
        stem: File name prefix, usually the video's name.
        note: What the values are (default: relative inverse depth).
        sidecar_name: The sidecar is ``{stem}_{sidecar_name}.json``.
    """
    count = 0
    with atomic_output(folder, folder=True) as tmp:
        for index, depth in enumerate(frames):
            png = np.round(_normalize(depth, vmin, vmax) * 65535.0).astype(np.uint16)
            # Level 1: depth PNGs are large, and harder compression costs
            # several times the time for a few percent of size.
            Image.fromarray(png).save(tmp / f"{stem}_{index:06d}.png", compress_level=1)
            count = index + 1
        sidecar = {
            "vmin": float(vmin),
            "vmax": float(vmax),
            "decode": "depth = vmin + png / 65535 * (vmax - vmin)",
            "note": note
            or (
                "Values are relative inverse depth (near = large, far = small), "
                "not metric depth; vmin and vmax are the range mapped to 0..65535."
            ),
            "files": f"{stem}_%06d.png",
            "num_frames": count,
            "bit_depth": 16,
        }
        (tmp / f"{stem}_{sidecar_name}.json").write_text(json.dumps(sidecar, indent=2) + "\n")


MM_MAX = 65535  # the largest depth a 16UC1 image holds: 65.535 m


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Metres -> ROS `16UC1` millimetres (REP 118): `round(z * 1000)`, 0 where invalid (NaN, <= 0 or
    past 65.535 m, where 16 bits end).
    """
    z = np.asarray(depth_m, np.float64) * 1000.0
    ok = np.isfinite(z) & (z > 0) & (z <= MM_MAX + 0.5)
    return np.where(ok, np.rint(np.where(ok, z, 0.0)), 0).astype(np.uint16)


def write_png16_mm_sequence(folder: str | os.PathLike, frames_m: Iterable[np.ndarray], stem: str) -> None:
    """Save metric depth (metres) as 16-bit PNGs in millimetres (ROS `16UC1`), atomically as a folder:
    ``{stem}_{index:06d}.png`` plus ``{stem}_depth_mm.json`` (0 = no depth).
    """
    count = 0
    with atomic_output(folder, folder=True) as tmp:
        for index, z in enumerate(frames_m):
            Image.fromarray(depth_to_mm(z)).save(tmp / f"{stem}_{index:06d}.png", compress_level=1)
            count = index + 1
        sidecar = {
            "unit": "millimetre",
            "decode": "depth_m = png / 1000; png == 0: no depth",
            "note": "metric z-depth along the optical axis (REP 118 16UC1), from the fit to the anchors",
            "files": f"{stem}_%06d.png",
            "num_frames": count,
            "bit_depth": 16,
        }
        (tmp / f"{stem}_depth_mm.json").write_text(json.dumps(sidecar, indent=2) + "\n")
