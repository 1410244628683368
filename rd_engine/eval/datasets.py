"""The four benchmarks of the paper's Table 1: their layouts, ground-truth encodings, caps and splits.

A split is a folder of CSV lists, one per sequence, named after the sequence (``^`` stands for ``/`` in
the sequence's folder under the dataset root: ``test^cab_e_3rd.csv`` lists frames of
``ROOT/test/cab_e_3rd/``). Each list has the header ``rgb,depth`` and one row per evaluated frame, with
paths relative to the sequence folder. The paper's splits are carried in ``rd_engine/eval/splits/``
(source and license in ``splits/SOURCE.md``); any folder of such lists can be given instead.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from rd_engine.errors import UserError

SPLITS_DIR = Path(__file__).resolve().parent / "splits"


@dataclass(frozen=True)
class Benchmark:
    """How one benchmark's data is laid out and decoded.

    Attributes:
        name: The name `rd-engine eval --benchmark` takes.
        splits_folder: Its folder under ``splits/``.
        default_split: The split of the paper's Table 1.
        depth_format: ``"png16"`` (16-bit single-channel PNG) or ``"npy"`` (float array).
        metres_per_unit: Metres per stored value (``png16``), or the factor applied to ``npy`` values.
        max_depth: Ground truth at or above this many metres is invalid; predicted depth is capped here.
        crop: Border ``(top, bottom, left, right)`` in ground-truth pixels cut from the RGB frames before
            inference and from the ground truth before scoring (the frames a method sees are the
            cropped ones; see `crop_window`).
        no_measurement: Stored values that mean "no measurement" besides 0 (a renderer's far plane, a
            16-bit encoding's saturated value); decoded to 0.
        release: The public release whose layout the adapter reads (for messages and the docs).
    """

    name: str
    splits_folder: str
    default_split: str
    depth_format: str
    metres_per_unit: float
    max_depth: float
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    no_measurement: tuple[float, ...] = ()
    release: str = ""

    def decode_depth(self, path: Path) -> np.ndarray:
        """One ground-truth depth map in metres, float32 ``[H, W]``; 0 where there is no measurement."""
        if self.depth_format == "png16":
            from PIL import Image

            try:
                with Image.open(path) as im:
                    raw = np.asarray(im)
            except OSError as e:
                raise UserError(f"{path}: not a readable depth PNG ({e})") from None
            if raw.ndim != 2 or raw.dtype.kind not in "ui":
                raise UserError(f"{path}: not a single-channel 16-bit depth PNG (got {raw.dtype} {raw.shape})")
            return self._metres(raw)
        try:
            raw = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable .npy depth map ({e})") from None
        raw = np.squeeze(raw)
        if raw.ndim != 2 or raw.dtype.kind != "f":
            raise UserError(f"{path}: not a float [H, W] depth map (got {raw.dtype} {raw.shape})")
        return self._metres(raw)

    def _metres(self, raw: np.ndarray) -> np.ndarray:
        """Stored values to metres (float32), with the `no_measurement` values set to 0."""
        if raw.dtype.kind == "f":
            metres = (raw.astype(np.float32) * np.float32(self.metres_per_unit)).astype(np.float32)
        else:
            metres = (raw.astype(np.float64) * self.metres_per_unit).astype(np.float32)
        if self.no_measurement:
            metres[np.isin(raw, np.asarray(self.no_measurement, raw.dtype))] = 0.0
        return metres

    def crop_window(self, height: int, width: int) -> tuple[slice, slice]:
        """The rows and columns of a ``height x width`` frame that are kept (all of them without a crop).

        Raises:
            UserError: If the frame is not larger than its crop.
        """
        top, bottom, left, right = self.crop
        if top + bottom >= height or left + right >= width:
            raise UserError(f"{self.name}: frames of {width}x{height} are not larger than its crop {self.crop}")
        return slice(top, height - bottom), slice(left, width - right)

    def cropped_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` of a ``height x width`` frame after the crop."""
        rows, cols = self.crop_window(height, width)
        return rows.stop - rows.start, cols.stop - cols.start


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            "scannet",
            "scannet",
            "rgbd_test_90frame_crop",
            "png16",
            1e-3,
            10.0,
            crop=(8, 8, 11, 11),
            release="ScanNet v2 scans exported by its SensReader: <scene>/color/<i>.jpg (at the depth's 640x480), "
            "<scene>/depth/<i>.png (uint16 millimetres)",
        ),
        Benchmark(
            "bonn",
            "bonn_rgbd",
            "5_seq_110frame",
            "png16",
            1.0 / 5000.0,
            10.0,
            release="Bonn RGB-D Dynamic: <sequence>/rgb/<time>.png, <sequence>/depth/<time>.png "
            "(uint16, 5000 per metre, TUM format)",
        ),
        Benchmark(
            "pointodyssey",
            "pointodyssey",
            "selected_250frame_masked",
            "png16",
            1000.0 / 65535.0,
            1000.0,
            no_measurement=(65535,),  # the encoding's saturated value: 1000 m or farther
            release="PointOdyssey: <split>/<sequence>/rgbs/rgb_<i>.jpg, <split>/<sequence>/depths_masked/"
            "depth_<i>.png (uint16, 65535 = 1000 m, the release's depth encoding)",
        ),
        Benchmark(
            "dydtof",
            "dydtof",
            "extracted_200frame_sub16",
            "npy",
            1.0,
            1000.0,
            no_measurement=(50.0,),  # the renderer's far plane (no surface within 50 m)
            release="DyDToF: <scene>/<shot>/ColorImage/<shot>.<i>.jpeg, <scene>/<shot>/DepthMap/<shot>.<i>.npy "
            "(float metres)",
        ),
    )
}


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence of a split.

    Attributes:
        id: Its name in the split (``test^cab_e_3rd``); predictions are looked up by it.
        folder: Its folder relative to the dataset root (``test/cab_e_3rd``).
        rgb: The frames' RGB images, relative to ``folder``, in order.
        depth: The frames' ground-truth depth files, relative to ``folder``.
    """

    id: str
    folder: PurePosixPath
    rgb: tuple[str, ...]
    depth: tuple[str, ...]

    @property
    def frames(self) -> int:
        return len(self.rgb)


def benchmark(name: str) -> Benchmark:
    """The benchmark called ``name``."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise UserError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})") from None


def split_names(bench: Benchmark) -> list[str]:
    """The splits carried for a benchmark."""
    folder = SPLITS_DIR / bench.splits_folder
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def split_folder(bench: Benchmark, split: str | Path | None) -> Path:
    """The folder of CSV lists of ``split``: a carried split's name, or a folder (None: the default split)."""
    if split is None:
        split = bench.default_split
    carried = SPLITS_DIR / bench.splits_folder / str(split)
    if isinstance(split, str) and "/" not in split and carried.is_dir():
        return carried
    folder = Path(split)
    if folder.is_dir():
        return folder
    raise UserError(
        f"split {str(split)!r} is neither a split of {bench.name} ({', '.join(split_names(bench))}) "
        "nor a folder of CSV frame lists"
    )


def load_split(bench: Benchmark, split: str | Path | None = None) -> list[SequenceSpec]:
    """The sequences of a split, in name order.

    Args:
        bench: The benchmark.
        split: A carried split's name, a folder of CSV lists, or None for the benchmark's default split.

    Returns:
        One `SequenceSpec` per CSV list.

    Raises:
        UserError: If the split does not exist, or a list is empty or malformed.
    """
    folder = split_folder(bench, split)
    lists = sorted(folder.glob("*.csv"))
    if not lists:
        raise UserError(f"split folder {folder} holds no .csv frame lists")
    return [_read_list(p) for p in lists]


def _read_list(path: Path) -> SequenceSpec:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows or [c.strip() for c in rows[0]] != ["rgb", "depth"]:
        raise UserError(f"{path}: a frame list starts with the header 'rgb,depth'")
    body = rows[1:]
    if not body or any(len(r) != 2 for r in body):
        raise UserError(f"{path}: needs one 'rgb,depth' pair per line and at least one frame")
    seq = path.stem
    return SequenceSpec(
        id=seq,
        folder=PurePosixPath(*seq.split("^")),
        rgb=tuple(r[0].strip() for r in body),
        depth=tuple(r[1].strip() for r in body),
    )


def sequence_dir(root: Path, seq: SequenceSpec) -> Path:
    return Path(root, *seq.folder.parts)


def check_dataset(root: Path, bench: Benchmark, seqs: list[SequenceSpec]) -> None:
    """Check that every file of every sequence is there, before any work.

    Raises:
        UserError: One line naming the root, how many sequences are missing or incomplete, and the first
            missing file.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset root {root} is not a folder")
    incomplete: list[tuple[SequenceSpec, list[Path]]] = []
    for seq in seqs:
        base = sequence_dir(root, seq)
        gone = [base / f for f in (*seq.rgb, *seq.depth) if not (base / f).is_file()]
        if gone:
            incomplete.append((seq, gone))
    if not incomplete:
        return
    seq, gone = incomplete[0]
    first = gone[0]
    hint = ""
    if seq.depth[0].startswith("depths_masked/") and (sequence_dir(root, seq) / "depths").is_dir():
        hint = "; the public release has depths/ only: see docs/evaluation.md on depths_masked"
    if len(incomplete) == len(seqs) and all(len(g) == 2 * s.frames for s, g in incomplete):  # nothing at all
        raise UserError(
            f"{root} holds none of the {len(seqs)} sequences of this {bench.name} split (first missing: {first}); "
            f"the root is the folder that holds the sequence folders ({bench.release}){hint}"
        )
    files = sum(len(g) for _, g in incomplete)
    raise UserError(
        f"{root}: {len(incomplete)} of {len(seqs)} {bench.name} sequences are missing or incomplete "
        f"({files} files; first missing: {first}){hint}"
    )


class DepthFrames:
    """A sequence's ground truth in metres, ``[N, H, W]`` float32, decoded from its files on access.

    ``H x W`` is the benchmark's evaluated window: the stored frames (``full_shape``) less the
    benchmark's crop. Slicing along frames (``gt[a:b]``) decodes those frames; the video is never held
    whole, so a long sequence at full resolution costs a chunk of frames in memory. ``np.asarray(gt)``
    decodes all of it.
    """

    def __init__(self, root: Path, bench: Benchmark, seq: SequenceSpec):
        self.bench, self.seq = bench, seq
        self.base = sequence_dir(root, seq)
        first = bench.decode_depth(self.base / seq.depth[0])
        self.full_shape = (seq.frames, *first.shape)
        self.window = bench.crop_window(*first.shape)
        self.shape = (seq.frames, *bench.cropped_size(*first.shape))
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if not isinstance(index, slice):
            return self[index : index + 1][0] if index >= 0 else self[len(self) + index]
        frames = []
        for i in range(*index.indices(len(self))):
            path = self.base / self.seq.depth[i]
            depth = self.bench.decode_depth(path)
            if depth.shape != self.full_shape[1:]:
                first = self.base / self.seq.depth[0]
                raise UserError(
                    f"{path}: {depth.shape[1]}x{depth.shape[0]}, but {first} is "
                    f"{self.full_shape[2]}x{self.full_shape[1]}"
                )
            frames.append(depth[self.window])
        return np.stack(frames) if frames else np.empty((0, *self.shape[1:]), np.float32)

    def __array__(self, dtype=None, copy=None):
        return self[:].astype(dtype or np.float32, copy=False)


def load_depth(root: Path, bench: Benchmark, seq: SequenceSpec) -> DepthFrames:
    """The ground truth of one sequence in metres inside the benchmark's crop.

    ``[N, H, W]`` float32, decoded on access; 0 where there is no measurement.
    """
    return DepthFrames(root, bench, seq)


def _stored_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image or ``.npy`` array from its header."""
    if path.suffix == ".npy":
        try:
            shape = np.squeeze(np.load(path, mmap_mode="r", allow_pickle=False)).shape
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not a readable .npy depth map ({e})") from None
        return (shape[1], shape[0]) if len(shape) == 2 else (0, 0)
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


def check_rgb_size(root: Path, bench: Benchmark, seqs: list[SequenceSpec]) -> None:
    """Check, for a benchmark with a crop, that each sequence's RGB frames are at its depth's size.

    The crop is given in depth pixels and cut from the RGB frames before inference, so the frames must
    have the depth's size (ScanNet: colour exported at 640x480, not SensReader's default 1296x968).
    Each sequence's first RGB frame and depth map are compared (every frame of a sequence must share one
    size, which the engine run checks as it reads them).

    Raises:
        UserError: One line naming the first sequence whose sizes differ.
    """
    if not any(bench.crop):
        return
    for seq in seqs:
        base = sequence_dir(root, seq)
        rgb, depth = base / seq.rgb[0], base / seq.depth[0]
        rw, rh = _stored_size(rgb)
        dw, dh = _stored_size(depth)
        if (rw, rh) != (dw, dh):
            raise UserError(
                f"{rgb}: colour is {rw}x{rh} but its depth is {dw}x{dh}; {bench.name}'s crop {bench.crop} is in "
                f"depth pixels, so export the colour at the depth's size ({dw}x{dh}; see docs/evaluation.md)"
            )


def load_rgb(root: Path, seq: SequenceSpec, index: int) -> np.ndarray:
    """One RGB frame of a sequence, uint8 ``[H, W, 3]``."""
    from PIL import Image

    path = sequence_dir(root, seq) / seq.rgb[index]
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except OSError as e:
        raise UserError(f"{path}: not a readable image ({e})") from None
