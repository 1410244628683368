"""Image sequences as input: a folder of frames, a printf pattern (``shot/frame.%04d.exr``) or a glob.

A sequence is what VFX and post-production move footage as: one image file per frame, numbered.
`find_sequence` turns what the user typed into an `ImageSequence` (the files in frame order and
their numbers); `rd_engine.io.video` then probes and decodes it exactly as it does a video, in its
background thread into its bounded queue, so the pipeline, the outputs and the cluster runner take
either.

Formats and what reaches the model (which sees 8-bit sRGB-like frames, as from a video):

* PNG (8 and 16 bit), JPEG: decoded with PyAV (FFmpeg's decoders: exact for 16-bit PNG, which
  Pillow would truncate to 8 bits on reading).
* TIFF (8 bit, 16 bit, 32-bit float; RGB, RGBA or grey): `tifffile`, which reads 16-bit and float
  RGB TIFFs that Pillow cannot open as such (Pillow has no 16-bit or float RGB mode).
* OpenEXR (half or float, RGB, RGBA or Y): OpenEXR's official Python bindings.

Integer frames are scaled to 8 bits with rounding (``round(v * 255 / 65535)`` for 16 bit).
Floating-point frames (EXR, float TIFF) are taken as scene-linear and encoded for display with the
`transform` of `SequenceOptions` before rounding to 8 bits: ``srgb`` (the default: the IEC 61966-2-1
curve), ``rec709`` (the BT.709 camera curve), ``gamma2.2`` (a pure power ``v ** (1 / 2.2)``) or
``none`` (the values are already display-referred: only clipped to [0, 1]). Values are clipped to
[0, 1] before the curve (highlights above 1.0 become white). Alpha is dropped, grey is repeated to
RGB.

Frame numbers come from the files' names (the last run of digits) and are kept: every per-frame
output is named with its input frame's number. A gap in the numbering is an error naming the first
missing frame unless `SequenceOptions.allow_gaps` is set; then the missing frames are simply absent
(the frames' timestamps still follow their numbers: ``(number - first) / fps``).
"""

from __future__ import annotations

import glob as globlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr")
TRANSFORMS = ("srgb", "rec709", "gamma2.2", "none")
DEFAULT_SEQUENCE_FPS = 24.0

_PRINTF = re.compile(r"%(0?)(\d*)d")
_HASHES = re.compile(r"#+")
_LAST_DIGITS = re.compile(r"(\d+)(?!.*\d)")
# FFmpeg's pixel formats of 16-bit PNGs (and TIFFs): decoded as 16 bits, not through 8
_DEEP_FORMATS = {"rgb48be", "rgb48le", "rgba64be", "rgba64le", "gray16be", "gray16le", "ya16be", "ya16le"}


@dataclass(frozen=True)
class SequenceOptions:
    """How a sequence is read.

    Attributes:
        fps: Frame rate of the sequence (images carry none): the timestamps, the output videos and
            the outputs' metadata use it.
        transform: Scene-linear to display encoding for floating-point frames (EXR, float TIFF):
            one of `TRANSFORMS`.
        allow_gaps: Accept missing frame numbers instead of failing.
    """

    fps: float = DEFAULT_SEQUENCE_FPS
    transform: str = "srgb"
    allow_gaps: bool = False

    def __post_init__(self):
        if self.transform not in TRANSFORMS:
            raise UserError(f"unknown transform {self.transform!r} for float frames (one of {', '.join(TRANSFORMS)})")
        if not self.fps > 0:
            raise UserError(f"a sequence's frame rate must be positive, got {self.fps}")


@dataclass(frozen=True)
class ImageSequence(os.PathLike):
    """The frames of one image sequence, in order, with their numbers.

    Behaves as a path where one is expected (``str()`` and ``os.fspath()`` give what the user typed),
    so a sequence travels through the run as its input.
    """

    spec: str  # the folder, pattern or glob as given
    files: tuple[Path, ...]
    numbers: tuple[int, ...]
    options: SequenceOptions = field(default_factory=SequenceOptions)

    def __fspath__(self) -> str:
        return self.spec

    def __str__(self) -> str:
        return self.spec

    @property
    def name(self) -> str:
        return Path(self.spec.rstrip("/" + os.sep)).name

    @property
    def stem(self) -> str:
        """The outputs' name: the pattern's file name without the number and extension, else the folder's name."""
        path = Path(self.spec.rstrip("/" + os.sep))
        if Path(self.spec).is_dir():
            return path.name or "sequence"
        name = path.name
        for ext in IMAGE_EXTENSIONS:
            if name.lower().endswith(ext):
                name = name[: -len(ext)]
                break
        name = _PRINTF.sub("", _HASHES.sub("", name))
        name = re.sub(r"[*?\[\]]", "", name).strip("._- ")
        return name or path.parent.name or "sequence"

    def with_options(self, options: SequenceOptions) -> ImageSequence:
        return find_sequence(self.spec, options)


def looks_like_sequence(text: str) -> bool:
    """True for a printf pattern, a ``####`` pattern or a glob (whether or not files exist)."""
    name = Path(text).name
    return bool(_PRINTF.search(name) or _HASHES.search(name) or re.search(r"[*?\[]", text))


def image_folder(path: Path) -> bool:
    """True for a folder that holds image frames (and no video files: those make it a folder of videos)."""
    if not path.is_dir():
        return False
    return any(p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") for p in path.iterdir())


def find_sequence(spec: str | os.PathLike, options: SequenceOptions | None = None) -> ImageSequence:
    """The sequence a folder, a printf pattern (``%04d``, ``%d``, ``####``) or a glob names.

    Raises:
        UserError: No frames, frames that cannot be numbered, several sequences in one folder, mixed
            formats, or a gap in the numbering (unless ``options.allow_gaps``): one line that names
            the frame.
    """
    options = options or SequenceOptions()
    text = os.fspath(spec)
    path = Path(text)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        files = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise UserError(f"{text}: folder has no image frames ({', '.join(IMAGE_EXTENSIONS)})")
        groups: dict[tuple[str, str], list[tuple[int, Path]]] = {}
        for p in files:
            m = _LAST_DIGITS.search(p.name)
            if m is None:
                raise UserError(f"{p}: frame file name has no frame number")
            groups.setdefault((p.name[: m.start()], p.name[m.end() :]), []).append((int(m.group(1)), p))
        if len(groups) > 1:
            names = ", ".join(f"{a}#{b}" for a, b in sorted(groups)[:3])
            raise UserError(f"{text}: folder holds several sequences ({names}); give a pattern such as frame.%04d.png")
        numbered = next(iter(groups.values()))
    elif _PRINTF.search(path.name) or _HASHES.search(path.name):
        numbered = _match_pattern(path)
        if not numbered:
            raise UserError(f"{text}: no frames match the pattern")
    elif re.search(r"[*?\[]", text):
        matched = sorted(Path(p) for p in globlib.glob(text) if Path(p).is_file())
        if not matched:
            raise UserError(f"{text}: no files match")
        numbered = []
        for p in matched:
            m = _LAST_DIGITS.search(p.name)
            if m is None:
                raise UserError(f"{p}: frame file name has no frame number")
            numbered.append((int(m.group(1)), p))
    else:
        raise UserError(f"{text}: not an image sequence (a folder of frames, a pattern such as frame.%04d.exr, a glob)")
    numbered.sort(key=lambda t: (t[0], t[1].name))
    for (a, pa), (b, pb) in zip(numbered, numbered[1:]):
        if a == b:
            raise UserError(f"{pb}: frame {b} appears twice (also {pa.name})")
    suffixes = {p.suffix.lower().replace(".jpeg", ".jpg").replace(".tiff", ".tif") for _, p in numbered}
    if len(suffixes) > 1:
        raise UserError(f"{text}: the frames mix formats ({', '.join(sorted(suffixes))})")
    bad = [p for _, p in numbered if p.suffix.lower() not in IMAGE_EXTENSIONS]
    if bad:
        raise UserError(f"{bad[0]}: not a supported image format ({', '.join(IMAGE_EXTENSIONS)})")
    if not options.allow_gaps:
        for (a, pa), (b, _) in zip(numbered, numbered[1:]):
            if b != a + 1:
                raise UserError(
                    f"{_frame_name(pa, a + 1, a)}: frame {a + 1} of the sequence is missing (the numbers jump from "
                    f"{a} to {b}); --allow-gaps accepts gaps"
                )
    return ImageSequence(text, tuple(p for _, p in numbered), tuple(n for n, _ in numbered), options)


def _frame_name(known: Path, number: int, known_number: int) -> Path:
    """The file name a missing frame would have, from a neighbour's name."""
    m = _LAST_DIGITS.search(known.name)
    digits = m.group(1)
    width = len(digits) if digits.startswith("0") or len(str(known_number)) < len(digits) else 0
    return known.with_name(known.name[: m.start()] + f"{number:0{width}d}" + known.name[m.end() :])


def _match_pattern(path: Path) -> list[tuple[int, Path]]:
    """Files of the folder whose names a printf or #### pattern produces, with their numbers."""
    name = path.name
    m = _PRINTF.search(name) or _HASHES.search(name)
    if m.group(0).startswith("%"):
        width = int(m.group(2) or 0) if m.group(1) == "0" else 0
    else:
        width = len(m.group(0))  # #### is %04d
    prefix, suffix = name[: m.start()], name[m.end() :]
    rx = re.compile(re.escape(prefix) + r"(-?\d+)" + re.escape(suffix) + r"\Z")
    folder = path.parent
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found")
    out = []
    for p in folder.iterdir():
        mm = rx.match(p.name)
        if mm and p.is_file():
            n = int(mm.group(1))
            if mm.group(1) == f"{n:0{width}d}":  # exactly what the pattern writes: %04d is never 12345's "012345"
                out.append((n, p))
    return out


# -- reading ---------------------------------------------------------------------------------------


def read_frame(path: Path, options: SequenceOptions) -> np.ndarray:
    """One frame as the model's uint8 RGB [H, W, 3] (see the module's notes on bit depths and transforms).

    Raises:
        UserError: The file is missing or cannot be decoded (one line naming it).
    """
    return to_rgb8(read_image(path), options.transform)


def read_image(path: Path) -> np.ndarray:
    """The file's pixels as stored: [H, W, C] uint8, uint16 or float32 (C = 1, 3 or 4)."""
    if not path.is_file():
        raise UserError(f"{path}: frame file not found")
    ext = path.suffix.lower()
    try:
        if ext == ".exr":
            img = _read_exr(path)
        elif ext in (".tif", ".tiff"):
            import tifffile

            img = tifffile.imread(str(path))
            if img.ndim == 3 and img.shape[0] in (1, 3, 4) and img.shape[-1] not in (1, 3, 4):
                img = np.moveaxis(img, 0, -1)  # planar (separate) storage
        else:
            img = _read_av(path)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - every decoder's failure is the file's
        raise UserError(f"{path}: unreadable image ({type(e).__name__}: {e})") from None
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4) or img.shape[0] < 1 or img.shape[1] < 1:
        raise UserError(f"{path}: unsupported image layout {img.shape} (RGB, RGBA or grey)")
    if img.dtype == np.float16 or img.dtype == np.float64:
        img = img.astype(np.float32)
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise UserError(f"{path}: unsupported sample type {img.dtype} (8 or 16-bit integer, half or float)")
    return img


def _read_av(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        name = frame.format.name
        deep = name in _DEEP_FORMATS
        if name.startswith(("gray", "ya")):
            return frame.to_ndarray(format="gray16le" if deep else "gray")
        return frame.to_ndarray(format="rgb48le" if deep else "rgb24")


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        channels = f.channels()
        if all(c in channels for c in "RGB"):
            planes = [channels[c].pixels for c in "RGB"]
        elif "Y" in channels:
            planes = [channels["Y"].pixels]
        elif len(channels) == 1:
            planes = [next(iter(channels.values())).pixels]
        else:
            raise UserError(f"{path}: EXR has no R, G, B or Y channels (has {', '.join(sorted(channels))})")
        return np.stack([np.asarray(p, dtype=np.float32) for p in planes], axis=-1)


def encode_linear(x: np.ndarray, transform: str) -> np.ndarray:
    """Scene-linear values to display encoding in [0, 1] (float32), clipped first."""
    x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32)
    if transform == "srgb":
        return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)
    if transform == "rec709":
        return np.where(x < 0.018, 4.5 * x, 1.099 * np.power(x, 0.45) - 0.099).astype(np.float32)
    if transform == "gamma2.2":
        return np.power(x, 1 / 2.2).astype(np.float32)
    return x


def to_rgb8(img: np.ndarray, transform: str) -> np.ndarray:
    """Stored pixels [H, W, C] to uint8 RGB [H, W, 3]: alpha dropped, grey repeated, 8 bits rounded."""
    c = img.shape[-1]
    img = img[..., :3] if c >= 3 else img[..., :1]
    if img.dtype == np.uint8:
        out = img
    elif img.dtype == np.uint16:
        out = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    else:
        out = np.round(encode_linear(img, transform) * 255.0).astype(np.uint8)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    return np.ascontiguousarray(out)


def describe_format(img: np.ndarray, path: Path) -> str:
    """A short pixel-format name, e.g. ``exr float32 rgb`` or ``png uint16 rgb``."""
    kind = {1: "grey", 2: "grey+alpha", 3: "rgb", 4: "rgba"}[img.shape[-1]]
    return f"{path.suffix.lower().lstrip('.')} {img.dtype} {kind}"
