"""Depth as frame sequences for post-production: single-channel ``Z`` EXR, 16-bit TIFF, 16-bit PNG.

Every sequence is one folder, written atomically (it appears, replacing an older one, only when
every frame is there), holding ``{stem}_{number:06d}.{ext}`` per frame, numbered with the input's
frame numbers (an image sequence's own numbers; a video's frame indices), and a sidecar
``{stem}_{kind}.json`` that says what the values are and which software and settings made them.

* EXR: the depth values themselves (float32, or half: 11 significant bits) in one channel ``Z``,
  exactly the run's ``.npy``: relative inverse depth, affine-invariant, near = large, normalized
  over the run to [-1, 1] (see the sidecar's ``normalization``). Lossless compressions only.
* TIFF16 and PNG16: ``round(clip((d - vmin) / (vmax - vmin), 0, 1) * 65535)`` as uint16 grey, with
  ``vmin``/``vmax`` (the run's range, one for every frame) in the sidecar to decode them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.files import atomic_output

EXR_COMPRESSIONS = ("zip", "zips", "piz", "rle", "none")  # the lossless ones (PXR24, B44 and DWA lose bits)
EXR_TYPES = ("float", "half")

VALUES = (
    "relative inverse depth (affine-invariant disparity): near = large, far = small; not metric depth "
    "(no metric anchors were given)"
)


def normalization(vmin: float, vmax: float) -> str:
    return (
        "the run's depth is re-normalized once over all its frames (never per frame) to [-1, 1]; "
        f"this run's values span [{vmin:.6g}, {vmax:.6g}]"
    )


def frame_name(stem: str, number: int, ext: str) -> str:
    return f"{stem}_{number:06d}.{ext}"


def _quantize16(depth: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    span = (vmax - vmin) or 1.0
    return np.round(np.clip((np.asarray(depth, np.float32) - vmin) / span, 0.0, 1.0) * 65535.0).astype(np.uint16)


def _write_sidecar(path: Path, sidecar: dict) -> None:
    path.write_text(json.dumps(sidecar, indent=2) + "\n")


def write_depth_sequence(
    folder: str | os.PathLike,
    kind: str,
    frames: Iterable[np.ndarray],
    numbers: Sequence[int],
    stem: str,
    vmin: float,
    vmax: float,
    about: dict | None = None,
    exr_type: str = "float",
    exr_compression: str = "zip",
    tick=None,
    exr_channels: dict[str, Iterable[np.ndarray]] | None = None,
) -> int:
    """Write one depth sequence (``kind``: ``exr``, ``tiff16`` or ``png16``) into ``folder``, atomically.

    Args:
        folder: The sequence's folder (replaced as a whole when complete).
        kind: ``exr``, ``tiff16`` or ``png16``.
        frames: Depth maps [H, W] float32, one per entry of ``numbers``.
        numbers: The input's frame number of each map (the file names use them).
        stem: File name prefix.
        vmin: The run's smallest depth value (the 16-bit formats store it as 0).
        vmax: Its largest (stored as 65535).
        about: What the sidecar records besides the format: software, source, settings.
        exr_type: ``float`` (float32) or ``half``.
        exr_compression: One of `EXR_COMPRESSIONS`.
        tick: Called with 1 after each frame (a progress bar).
        exr_channels: More channels of each EXR beside ``Z``, by name, one map per frame (``depth_m``:
            metres, ``confidence``); written float32 (or half) like ``Z``.

    Returns:
        Frames written.
    """
    if kind not in ("exr", "tiff16", "png16"):
        raise ValueError(f"unknown sequence kind {kind!r}")
    if exr_type not in EXR_TYPES:
        raise UserError(f"--exr-type must be one of {', '.join(EXR_TYPES)}, got {exr_type!r}")
    if exr_compression not in EXR_COMPRESSIONS:
        raise UserError(f"--exr-compression must be one of {', '.join(EXR_COMPRESSIONS)}, got {exr_compression!r}")
    ext = {"exr": "exr", "tiff16": "tif", "png16": "png"}[kind]
    count = 0
    last = None
    extra = {name: iter(maps) for name, maps in (exr_channels or {}).items()} if kind == "exr" else {}
    with atomic_output(folder, folder=True) as tmp:
        for number, depth in zip(numbers, frames):
            target = tmp / frame_name(stem, int(number), ext)
            if kind == "exr":
                write_exr_z(target, depth, exr_type, exr_compression, {k: next(v) for k, v in extra.items()})
            elif kind == "tiff16":
                import tifffile

                tifffile.imwrite(target, _quantize16(depth, vmin, vmax), compression="zlib", photometric="minisblack")
            else:
                from PIL import Image

                # level 1: depth PNGs are large, and harder compression costs several times the time
                Image.fromarray(_quantize16(depth, vmin, vmax)).save(target, compress_level=1)
            count += 1
            last = number
            if tick is not None:
                tick(1)
        if count != len(numbers):
            raise RuntimeError(f"{folder}: {count} depth maps for {len(numbers)} frame numbers")
        sidecar = {
            "format": {
                "exr": f"OpenEXR, channel{'s' * bool(extra)} {', '.join(repr(c) for c in ['Z', *extra])}, "
                f"{'float32' if exr_type == 'float' else 'half (float16)'}, {exr_compression} compression (lossless)",
                "tiff16": "TIFF, 16-bit unsigned grey, deflate compression",
                "png16": "PNG, 16-bit grey",
            }[kind],
            "values": VALUES,
            "normalization": normalization(vmin, vmax),
            "files": f"{stem}_%06d.{ext}",
            "frame_numbers": {"first": int(numbers[0]) if count else None, "last": last, "count": count},
            "num_frames": count,
        }
        if kind == "exr":
            sidecar["decode"] = "depth = Z (the values as written in the run's .npy)"
            sidecar.update({f"channel_{k}": EXR_CHANNEL_MEANING[k] for k in extra})
        else:
            sidecar.update(
                vmin=float(vmin),
                vmax=float(vmax),
                bit_depth=16,
                decode="depth = vmin + v / 65535 * (vmax - vmin)",
                note="Values are relative inverse depth (near = large, far = small), not metric depth; vmin and "
                "vmax are the range mapped to 0..65535.",
            )
        if about:
            sidecar.update(about)
        _write_sidecar(tmp / f"{stem}_{kind}.json", sidecar)
    return count


EXR_CHANNEL_MEANING = {
    "depth_m": "metric depth in metres along the optical axis (REP 118), NaN where invalid (docs/robotics.md)",
    "confidence": "per-pixel confidence in [0, 1] from the snippets' spread (docs/robotics.md, Confidence)",
}


def write_exr_z(
    path: Path,
    depth: np.ndarray,
    exr_type: str = "float",
    compression: str = "zip",
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """One EXR (scanline), float32 or half: channel ``Z`` and the `extra` ones (name: [H, W] map)."""
    import OpenEXR

    dtype = np.float32 if exr_type == "float" else np.float16
    comp = {
        "zip": OpenEXR.ZIP_COMPRESSION,
        "zips": OpenEXR.ZIPS_COMPRESSION,
        "piz": OpenEXR.PIZ_COMPRESSION,
        "rle": OpenEXR.RLE_COMPRESSION,
        "none": OpenEXR.NO_COMPRESSION,
    }[compression]
    header = {"compression": comp, "type": OpenEXR.scanlineimage}
    channels = {"Z": np.ascontiguousarray(np.asarray(depth), dtype=dtype)}
    for name, m in (extra or {}).items():
        channels[name] = np.ascontiguousarray(np.asarray(m), dtype=dtype)
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))


def read_exr_z(path: str | os.PathLike) -> np.ndarray:
    """The ``Z`` channel of an EXR (as stored: float32 or float16)."""
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        return np.array(f.channels()["Z"].pixels)


def write_ffv1_depth(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    vmin: float,
    vmax: float,
    about: dict | None = None,
    tick=None,
    audio_from=None,
    audio_start: float = 0.0,
    timestamps: Sequence[float] | None = None,
) -> int:
    """A lossless depth video: FFV1 in Matroska, 16-bit grey (the PNG16 quantization), with a sidecar JSON.

    ``path`` is the ``.mkv``; the sidecar is ``path`` with ``.json``. Both appear atomically. With
    ``audio_from`` the video carries that file's audio (copied: Matroska takes every codec).
    """
    from rd_engine.io.video_writer import VideoWriter

    path = Path(path)
    count = 0
    with VideoWriter(path, fps, codec="ffv1", audio_from=audio_from, audio_start=audio_start) as vw:
        for i, depth in enumerate(frames):
            vw.write(_quantize16(depth, vmin, vmax), None if timestamps is None else timestamps[i])
            count += 1
            if tick is not None:
                tick(1)
    sidecar = {
        "format": "FFV1 (level 3, lossless) in Matroska, 16-bit grey (gray16le)",
        "values": VALUES,
        "normalization": normalization(vmin, vmax),
        "vmin": float(vmin),
        "vmax": float(vmax),
        "decode": "depth = vmin + v / 65535 * (vmax - vmin)",
        "fps": float(fps),
        "num_frames": count,
        **(about or {}),
    }
    with atomic_output(path.with_suffix(".json")) as tmp:
        _write_sidecar(tmp, sidecar)
    return count
