"""Output files: atomic writes, depth colouring, videos, 16-bit PNGs, arrays.

Every output is written under a temporary name in its destination folder and
renamed into place only when complete, so an interrupted or failed run never
leaves a truncated file under the final name (a rerun sees it as missing and
writes it again). The temporary names start with a dot and contain
``.partial-``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rd_engine.errors import UserError

# Colour maps suggested when an unknown name is given.
_SUGGESTED_CMAPS = ("Spectral", "Spectral_r", "inferno", "magma", "viridis", "turbo", "gray")


def _partial_name(final: Path) -> Path:
    """Temporary sibling of ``final`` that keeps its suffix (for format guessing)."""
    return final.with_name(f".{final.name}.partial-{secrets.token_hex(4)}{final.suffix}")


def _remove(path: Path) -> None:
    """Delete a file or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_output(final_path: str | os.PathLike, folder: bool = False) -> Iterator[Path]:
    """Write to a temporary path that is renamed to ``final_path`` on success.

    The temporary path is in the same folder (so the rename is atomic) and
    ends with the same suffix. On any exception, KeyboardInterrupt included,
    it is deleted and the exception re-raised; an existing ``final_path`` is
    then left as it was.

    Args:
        final_path: Where the result should end up. Missing parent folders
            are created.
        folder: Yield a freshly created temporary folder instead of a file
            path; on success it replaces ``final_path``, an existing folder
            there included.

    Yields:
        The temporary path. In file mode nothing exists there yet; the body
        must create the file.

    Raises:
        UserError: If a file is to replace a folder.
        RuntimeError: If the body did not create the file.
    """
    final = Path(final_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_name(final)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        if folder:
            _replace_folder(tmp, final)
        else:
            if not tmp.exists():
                raise RuntimeError(f"{final}: nothing was written")
            if final.is_dir():
                raise UserError(f"{final}: is a folder, cannot write a file there")
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _replace_folder(tmp: Path, final: Path) -> None:
    """Rename folder ``tmp`` to ``final``, replacing whatever is there."""
    if not final.exists() and not final.is_symlink():
        os.replace(tmp, final)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside
    # first, and put it back if the second rename fails.
    old = final.with_name(f".{final.name}.partial-old-{secrets.token_hex(4)}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)


def _even_pad(frame: np.ndarray) -> np.ndarray:
    """Pad [H, W, 3] to even H and W by repeating the last row/column."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Write RGB frames to an MP4, atomically.

    H.264 (libx264, yuv420p, CRF 23) where PyAV has it, else MPEG-4 Part 2 at
    a fixed quality. yuv420p stores colour at half resolution, so it needs an
    even width and height: odd sizes are padded by one replicated row and/or
    column (the video is then e.g. 68x46 for 67x45 frames). The size comes from
    the first frame; all frames must have it.

    Use as a context manager::

        with VideoWriter(path, fps) as writer:
            writer.write(frame)  # uint8 [H, W, 3]

    The file appears under ``path`` only when the block ends without an error.
    """

    def __init__(self, path: str | os.PathLike, fps: float | Fraction, crf: int = 23):
        """Prepare a writer; nothing is written before `__enter__`.

        Args:
            path: Final output file (``.mp4``).
            fps: Frame rate, e.g. `VideoInfo.fps`.
            crf: libx264 quality (lower is better and larger).
        """
        if not fps > 0:
            raise ValueError(f"{path}: fps must be positive, got {fps}")
        self.path = Path(path)
        # Fraction() rejects numpy float32; go through a Python float.
        self.fps = fps if isinstance(fps, Fraction) else Fraction(float(fps))
        self.crf = crf
        self._atomic: contextlib.AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._size: tuple[int, int] | None = None
        self._count = 0

    def __enter__(self) -> VideoWriter:
        self._atomic = atomic_output(self.path)
        self._tmp = self._atomic.__enter__()
        return self

    def _open(self, height: int, width: int) -> None:
        """Create the container and stream for frames of this size."""
        options = {}
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            # Index at the front, so players can start before the whole file
            # has loaded (costs one rewrite of the file when closing).
            options["movflags"] = "+faststart"
        self._container = av.open(str(self._tmp), "w", options=options)
        rate = self.fps.limit_denominator(1001000)
        if "libx264" in av.codecs_available:
            stream = self._container.add_stream("libx264", rate=rate, options={"crf": str(self.crf)})
        else:
            # MPEG-4 Part 2 allows time base denominators up to 65535 only.
            rate = rate.limit_denominator(65535)
            # Fixed quantiser 3 (global_quality is in lambda units, 118 per
            # step): the default 200 kbit/s is far too low for depth maps.
            stream = self._container.add_stream(
                "mpeg4", rate=rate, options={"flags": "+qscale", "global_quality": str(3 * 118)}
            )
        stream.width = width + width % 2
        stream.height = height + height % 2
        stream.pix_fmt = "yuv420p"
        self._stream = stream
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        """Append one frame.

        Args:
            frame: uint8 [H, W, 3] RGB, the same size as the first frame.
        """
        if self._tmp is None:
            raise RuntimeError("VideoWriter must be used as a context manager")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
        if self._container is None:
            self._open(*frame.shape[:2])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first {self._size}")
        av_frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(_even_pad(frame)), format="rgb24"
        )
        av_frame.pts = self._count
        self._container.mux(self._stream.encode(av_frame))
        self._count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._container is not None:
                try:
                    if exc_type is None:
                        self._container.mux(self._stream.encode())
                finally:
                    self._container.close()
        except BaseException as close_error:
            # Let atomic_output delete the temporary file, then re-raise.
            self._atomic.__exit__(type(close_error), close_error, close_error.__traceback__)
            raise
        return bool(self._atomic.__exit__(exc_type, exc, tb))

    @property
    def frames_written(self) -> int:
        """Number of frames written so far."""
        return self._count


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
        raise UserError(
            f"unknown colour map {cmap!r}; try one of: {', '.join(_SUGGESTED_CMAPS)}"
        ) from None
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
            "note": (
                "Values are relative inverse depth (near = large, far = small), "
                "not metric depth; vmin and vmax are the range mapped to 0..65535."
            ),
            "files": f"{stem}_%06d.png",
            "num_frames": count,
            "bit_depth": 16,
        }
        (tmp / f"{stem}_png16.json").write_text(json.dumps(sidecar, indent=2) + "\n")


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as ``.npy``, atomically.

    Args:
        path: Output file; no ``.npy`` is appended.
        array: The array.
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        # A file object, so numpy does not append ".npy" to the name.
        np.save(f, np.asarray(array))


def save_npz_atomic(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save named arrays as an uncompressed ``.npz``, atomically.

    Args:
        path: Output file; no ``.npz`` is appended.
        **arrays: The arrays, by name.
    """
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def open_npy_memmap_atomic(
    path: str | os.PathLike, shape: tuple[int, ...], dtype: np.dtype | str
) -> Iterator[np.memmap]:
    """Fill a ``.npy`` file in place (memory-mapped), atomically.

    For results too large to hold in memory: write slices into the yielded
    array; the file is flushed and renamed to ``path`` when the block ends,
    or deleted if it raises.

    Args:
        path: Final ``.npy`` file.
        shape: Array shape.
        dtype: Array dtype.

    Yields:
        A writable `numpy.memmap`, initially zeros.
    """
    with atomic_output(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        yield array
        # Renaming (or, on failure, deleting) a mapped file is fine on POSIX.
        array.flush()
