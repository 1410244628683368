"""Per-video outputs. Every file appears atomically under its final name."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rd_engine.io.files import atomic_output, open_npy_memmap_atomic, save_npz_atomic
from rd_engine.io.video import iter_frames, preprocess
from rd_engine.io.video_writer import VideoWriter
from rd_engine.outputs.render import colorize, side_by_side, write_png16_sequence
from rd_engine.pipeline.offline import Prediction
from rd_engine.progress import StageClock
from rd_engine.version import __version__

DEFAULT_CMAPS = ("Spectral_r", "Greys_r")


@dataclass
class OutputOptions:
    """Which files a run writes for each video."""

    npy: bool = True
    npz: bool = True
    cmaps: list[str] = field(default_factory=lambda: list(DEFAULT_CMAPS))
    sbs: bool = True
    png16: bool = False
    snippets: bool = False
    restore_res: bool = False
    fps: float = 0.0  # 0 = the input's frame rate


def output_depth(pred: Prediction, restore_res: bool) -> np.ndarray:
    """The depth to write, `[N, H, W]` float32, optionally resized back to the input size (lazily per chunk)."""
    if not restore_res or (pred.info.width, pred.info.height) == pred.size:
        return pred.depth
    return _Resized(pred.depth, (pred.info.height, pred.info.width))


class _Resized:
    """A read-only `[N, H, W]` view that resizes frames on access (bilinear, as the reference's --restore-res)."""

    def __init__(self, depth: np.ndarray, hw: tuple[int, int]):
        self.depth, self.hw = depth, hw
        self.shape = (depth.shape[0], *hw)
        self.dtype = np.dtype(np.float32)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, i):
        sl = i if isinstance(i, slice) else slice(i, i + 1)
        x = torch.from_numpy(np.ascontiguousarray(self.depth[sl]))[:, None]
        y = F.interpolate(x, size=self.hw, mode="bilinear", align_corners=False, antialias=True)[:, 0].numpy()
        return y if isinstance(i, slice) else y[0]

    def __iter__(self):
        for i in range(self.shape[0]):
            yield self[i]

    def __array__(self, dtype=None, copy=None):
        return np.concatenate([self[a : a + 64] for a in range(0, self.shape[0], 64)]).astype(dtype or np.float32)

    def min(self):
        return min(float(self[a : a + 64].min()) for a in range(0, self.shape[0], 64))

    def max(self):
        return max(float(self[a : a + 64].max()) for a in range(0, self.shape[0], 64))


def metadata(pred: Prediction, model_name: str, backend: str, depth_shape, opts: OutputOptions | None = None) -> dict:
    meta = {
        "rd_engine_version": __version__,
        "source": str(pred.info.path),
        "model": model_name,
        "backend": backend,
        "frames": int(depth_shape[0]),
        "height": int(depth_shape[1]),
        "width": int(depth_shape[2]),
        "processed_size": list(pred.size),
        "input_size": [pred.info.width, pred.info.height],
        "fps": pred.info.fps,
        "settings": pred.settings.to_dict(),
        "effective_dilations": pred.dilations,
        "seed": pred.seed,
        "depth_kind": "relative inverse depth (affine-invariant; near = large), normalized to [-1, 1]",
    }
    if pred.shots is not None:  # a run cut into shots: each shot normalized on its own
        meta["shots"] = [dataclasses.asdict(sh) for sh in pred.shots]
        meta["depth_kind"] += ", each shot on its own (see shots)"
    if opts is not None:  # which files were written and how: with the settings, what a rerun compares
        meta["outputs"] = dataclasses.asdict(opts)
    return meta


SHOT_COLUMNS = ("shot", "first_frame", "last_frame", "frames", "depth_min", "depth_max", "dilations")


def write_shot_table(path: Path, pred: Prediction) -> None:
    """`<stem>_shots.csv`: one row per shot (frames inclusive, the video's frame numbers; the merged
    depth range each shot maps onto [-1, 1]; its effective dilations).
    """
    import csv
    import io

    buf = io.StringIO()
    wr = csv.writer(buf, lineterminator="\n")
    wr.writerow(SHOT_COLUMNS)
    for i, sh in enumerate(pred.shots or []):
        dil = " ".join(str(d) for d in sh.dilations)
        wr.writerow([i, sh.first, sh.last, sh.frames, repr(sh.depth_min), repr(sh.depth_max), dil])
    with atomic_output(path) as tmp:
        tmp.write_text(buf.getvalue())


def _color_ranges(pred: Prediction, depth) -> list[tuple[int, int, float, float]]:
    """`(a, b, vmin, vmax)` frame spans with their colormap range: each shot its own, else the video's."""
    n = depth.shape[0]
    if not pred.shots:
        return [(0, n, float(depth.min()), float(depth.max()))]
    out, a = [], 0
    for sh in pred.shots:
        b = a + sh.frames
        part = depth[a:b]
        out.append((a, b, float(part.min()), float(part.max())))
        a = b
    return out


def write_outputs(
    pred: Prediction, out_dir: Path, stem: str, opts: OutputOptions, model_name: str, backend: str, clock: StageClock
) -> list[Path]:
    """Write every requested output of one video; returns the paths written."""
    written: list[Path] = []
    depth = output_depth(pred, opts.restore_res)
    n, h, w = depth.shape
    fps = opts.fps or pred.info.fps
    meta = metadata(pred, model_name, backend, depth.shape, opts)
    with clock.stage("write", total=n * (len(opts.cmaps) + int(opts.sbs and bool(opts.cmaps)))) as tick:
        if opts.npy:
            p = out_dir / f"{stem}_pred.npy"
            with open_npy_memmap_atomic(p, depth.shape, np.float32) as arr:  # streams, never a second copy in RAM
                for a in range(0, n, 64):
                    arr[a : a + 64] = depth[a : a + 64]
            written.append(p)
        if opts.npz:
            p = out_dir / f"{stem}.npz"
            save_npz_atomic(
                p,
                depth=np.asarray(depth),
                timestamps=np.asarray(pred.timestamps, dtype=np.float64),
                fps=np.float64(pred.info.fps),
                metadata=np.asarray(json.dumps(meta)),
            )
            written.append(p)
        if pred.shots is not None:
            p = out_dir / f"{stem}_shots.csv"
            write_shot_table(p, pred)
            written.append(p)
        ranges = _color_ranges(pred, depth)
        vmin, vmax = min(r[2] for r in ranges), max(r[3] for r in ranges)
        if opts.png16:
            p = out_dir / f"{stem}_png16"
            write_png16_sequence(p, iter(depth), vmin, vmax, stem)
            written.append(p)
        if opts.snippets and pred.snippets:
            p = out_dir / f"{stem}_snippets.npz"
            arrays = {}
            for g in pred.snippets:
                arrays[f"dilation{g.dilation}"] = g.depth.float().numpy()
                arrays[f"dilation{g.dilation}_indices"] = g.indices.numpy()
                arrays[f"dilation{g.dilation}_weight"] = np.int64(g.weight)
            for g, (s, t) in zip(pred.snippets, pred.params):
                arrays[f"dilation{g.dilation}_scale"] = s.float().numpy()
                arrays[f"dilation{g.dilation}_shift"] = t.float().numpy()
            save_npz_atomic(p, **arrays)
            written.append(p)
        for i, cmap in enumerate(opts.cmaps):
            p = out_dir / f"{stem}_{cmap}.mp4"
            with VideoWriter(p, fps) as vw:
                for a, b, lo, hi in ranges:
                    for f in range(a, b):
                        vw.write(colorize(depth[f], lo, hi, cmap))
                        tick(1)
            written.append(p)
            if i == 0 and opts.sbs:
                p = out_dir / f"{stem}_rgbd.mp4"
                _write_side_by_side(pred, p, depth, ranges, cmap, fps, opts.restore_res, tick)
                written.append(p)
    return written


def _write_side_by_side(
    pred: Prediction,
    path: Path,
    depth: np.ndarray,
    ranges: list[tuple[int, int, float, float]],
    cmap: str,
    fps: float,
    restore_res: bool,
    tick,
) -> None:
    # The decoded video is never held whole: decode the input a second time, frame by frame.
    s = pred.settings
    h, w = depth.shape[1:]
    span = {a: (lo, hi) for a, b, lo, hi in ranges}  # the colormap range changes where a shot starts
    vmin, vmax = ranges[0][2], ranges[0][3]
    with VideoWriter(path, fps) as vw:
        for i, fr in enumerate(iter_frames(pred.info.path, s.start_frame, depth.shape[0])):
            vmin, vmax = span.get(i, (vmin, vmax))
            if restore_res:
                rgb = fr.rgb
            else:
                x = preprocess(torch.from_numpy(fr.rgb)[None], (w, h), torch.device("cpu"), torch.float32)
                rgb = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            vw.write(side_by_side(rgb, colorize(depth[i], vmin, vmax, cmap)))
            tick(1)
