r"""Synthetic benchmark folders: a split's sequences in a benchmark's layout and encoding, and predictions.

The ground truth is the procedural scene of `rd_engine.testing.synthetic.make_scene_depth` (scaled to
indoor depths, at most ~9 m), one camera path per sequence, encoded as the benchmark's release stores it
(16-bit PNG in its unit, or float ``.npy``), with a hole of missing measurements (0) in every frame. The
RGB frames are a picture of the inverse depth. Predictions are the decoded ground truth's inverse depth
under an affine, optionally with multiplicative noise, saved in one of the formats `rd-engine eval
--pred-dir` reads.

From the command line (the whole default split of ScanNet at 64x48, and predictions with 5 % noise;
``--cropped`` writes them at the size inside ScanNet's crop instead)::

    python -m rd_engine.eval.synthetic --benchmark scannet --root /tmp/scannet --pred-dir /tmp/pred
    rd-engine eval --benchmark scannet --root /tmp/scannet --pred-dir /tmp/pred -o /tmp/eval
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError
from rd_engine.eval.datasets import Benchmark, SequenceSpec, benchmark, load_split, sequence_dir
from rd_engine.io.files import save_npy_atomic, save_npz_atomic

INDOOR_SCALE = 0.35  # the synthetic scene reaches ~25 m; indoor benchmarks (and Bonn's 16-bit range) need less
PRED_FORMATS = ("rd-npy", "rd-npz", "vda", "depthcrafter", "per-frame")


def encode_depth(bench: Benchmark, metres: np.ndarray) -> np.ndarray:
    """Depth in metres as the benchmark stores it (uint16 units, 0 = no measurement; or float32)."""
    if bench.depth_format == "npy":
        return (metres / bench.metres_per_unit).astype(np.float32)
    units = np.round(metres / bench.metres_per_unit)
    units[~np.isfinite(units) | (units > 65535) | (units < 0)] = 0  # out of the sensor's range: no measurement
    return units.astype(np.uint16)


def decode_depth(bench: Benchmark, stored: np.ndarray) -> np.ndarray:
    """The metres a stored array stands for (what the adapter reads back)."""
    return (stored.astype(np.float64) * bench.metres_per_unit).astype(np.float32)


def _save_image(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rgb_of(inv: np.ndarray, frame: int) -> np.ndarray:
    """A picture of a frame's inverse depth ``[H, W]``: uint8 ``[H, W, 3]``."""
    h, w = inv.shape
    v = inv / max(float(inv.max()), 1e-6)
    xx = np.linspace(0, 6 * np.pi, w)[None, :]
    r = 255 * v
    g = 127 + 100 * np.sin(xx + 0.2 * frame) * np.ones((h, 1))
    b = 255 * (1 - v)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def write_sequences(
    root: Path,
    bench: Benchmark,
    seqs: list[SequenceSpec],
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write RGB frames and encoded ground truth for ``seqs`` under ``root``.

    Args:
        root: The dataset root to create.
        bench: The benchmark whose layout and encoding to use.
        seqs: The sequences (their lists name the files).
        size: ``(width, height)`` of every frame.
        seed: Scene seed of the first sequence (the others count up).

    Returns:
        Per sequence id, the ground truth as the adapter should read it back: float32 ``[N, H, W]`` metres,
        0 where nothing was measured.
    """
    from rd_engine.testing.synthetic import make_scene_depth

    w, h = size
    out = {}
    for k, seq in enumerate(seqs):
        metres = make_scene_depth(seq.frames, w, h, seed=seed + k).numpy() * INDOOR_SCALE
        y0, x0 = h // 3, w // 3
        metres[:, y0 : y0 + max(1, h // 8), x0 : x0 + max(1, w // 8)] = 0.0  # a hole: no measurement
        base = sequence_dir(root, seq)
        decoded = np.empty_like(metres)
        for i in range(seq.frames):
            stored = encode_depth(bench, metres[i])
            dpath = base / seq.depth[i]
            dpath.parent.mkdir(parents=True, exist_ok=True)
            if bench.depth_format == "npy":
                np.save(dpath, stored)
            else:
                _save_image(dpath, stored)
            decoded[i] = decode_depth(bench, stored)
            inv = np.where(metres[i] > 0, 1.0 / np.maximum(metres[i], 1e-6), 0.0)
            _save_image(base / seq.rgb[i], _rgb_of(inv, i))
        out[seq.id] = decoded
    return out


def prediction_of(gt: np.ndarray, scale: float, shift: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """``scale / gt + shift`` (inverse depth under an affine), times ``1 + noise * N(0, 1)`` per pixel.

    Where the ground truth is 0 (no measurement), the prediction is the shift plus noise: it is not scored.
    """
    inv = np.where(gt > 0, 1.0 / np.where(gt > 0, gt, 1.0), 0.0)
    pred = scale * inv + shift
    if noise > 0:
        pred = pred * (1.0 + noise * np.random.default_rng(seed).standard_normal(pred.shape))
    return pred.astype(np.float32)


def write_prediction(pred_dir: Path, seq: SequenceSpec, pred: np.ndarray, fmt: str = "rd-npy") -> Path:
    """Save one sequence's prediction in a format `rd-engine eval --pred-dir` reads; returns the path."""
    pred_dir = Path(pred_dir)
    if fmt == "rd-npy":
        path = pred_dir / f"{seq.id}_pred.npy"
        save_npy_atomic(path, pred)
    elif fmt == "rd-npz":
        path = pred_dir / f"{seq.id}.npz"
        meta = np.asarray('{"model": "synthetic", "backend": "none", "settings": {"res": 0}}')
        save_npz_atomic(path, depth=pred, metadata=meta)
    elif fmt == "vda":
        path = pred_dir / f"{seq.id}_depths.npz"
        save_npz_atomic(path, depths=pred)
    elif fmt == "depthcrafter":
        path = pred_dir / f"{seq.id}.npz"
        save_npz_atomic(path, depth=pred)
    elif fmt == "per-frame":
        base = Path(pred_dir, *seq.folder.parts)
        for i, name in enumerate(seq.rgb):
            save_npy_atomic((base / name).with_suffix(".npy"), pred[i])
        path = (base / seq.rgb[0]).with_suffix(".npy")
    else:
        raise ValueError(f"unknown prediction format {fmt!r} (known: {', '.join(PRED_FORMATS)})")
    return path


def write_split(folder: Path, seqs: list[SequenceSpec]) -> None:
    """Write ``seqs`` as a split folder of CSV lists (e.g. a shortened copy of a carried split)."""
    folder.mkdir(parents=True, exist_ok=True)
    for seq in seqs:
        with open(folder / f"{seq.id}.csv", "w", newline="") as f:
            wr = csv.writer(f, lineterminator="\n")
            wr.writerow(["rgb", "depth"])
            wr.writerows(zip(seq.rgb, seq.depth))


def shortened(seqs: list[SequenceSpec], sequences: int | None, frames: int | None) -> list[SequenceSpec]:
    """The first ``sequences`` sequences with their first ``frames`` frames (None: all)."""
    out = seqs[:sequences] if sequences else list(seqs)
    if frames:
        out = [SequenceSpec(s.id, s.folder, s.rgb[:frames], s.depth[:frames]) for s in out]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m rd_engine.eval.synthetic",
        description="Write a synthetic dataset in a benchmark's layout and encoding, and predictions for it.",
    )
    p.add_argument("--benchmark", required=True, help="scannet, bonn, pointodyssey or dydtof")
    p.add_argument("--root", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--pred-dir", type=Path, default=None, help="also write predictions here")
    p.add_argument("--split", default=None, help="carried split name (default: the paper's) or a folder of lists")
    p.add_argument("--sequences", type=int, default=None, help="only the first N sequences (writes ROOT/split/)")
    p.add_argument("--frames", type=int, default=None, help="only the first N frames of each (writes ROOT/split/)")
    p.add_argument("--size", default="64x48", help="WIDTHxHEIGHT of the frames")
    p.add_argument("--noise", type=float, default=0.05, help="multiplicative noise of the predictions")
    p.add_argument("--format", choices=PRED_FORMATS, default="rd-npy", help="prediction file format")
    p.add_argument(
        "--cropped",
        action="store_true",
        help="predictions of the frames inside the benchmark's crop (ScanNet: as Video Depth Anything and "
        "DepthCrafter save theirs), not of the full frames",
    )
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    try:
        bench = benchmark(a.benchmark)
        try:
            w, h = (int(x) for x in a.size.lower().split("x"))
        except ValueError:
            raise UserError(f"--size must be WIDTHxHEIGHT, got {a.size!r}") from None
        seqs = shortened(load_split(bench, a.split), a.sequences, a.frames)
        if a.sequences or a.frames:
            write_split(a.root / "split", seqs)
        gts = write_sequences(a.root, bench, seqs, (w, h), a.seed)
        if a.pred_dir is not None:
            for k, seq in enumerate(seqs):
                gt = gts[seq.id]
                if a.cropped:
                    rows, cols = bench.crop_window(h, w)
                    gt = gt[:, rows, cols]
                pred = prediction_of(gt, 2.0 + 0.1 * k, -0.3, a.noise, seed=a.seed + k)
                write_prediction(a.pred_dir, seq, pred, a.format)
    except UserError as e:
        print(f"rd_engine.eval.synthetic: error: {e}", file=sys.stderr)
        return 1
    split_note = f" (split: {a.root / 'split'})" if a.sequences or a.frames else ""
    print(f"wrote {len(seqs)} {bench.name} sequences to {a.root}{split_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
