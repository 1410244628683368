"""Per-video outputs. Every file appears atomically under its final name."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rd_engine.io.files import open_npy_memmap_atomic, save_npz_atomic
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
    # outputs written at once, each on its own thread (colorizing and PyAV's encoding release the GIL); the
    # files are the same whatever the number
    write_threads: int = 1

    def recorded(self) -> dict:
        """What the outputs' metadata records (and a rerun compares): which files and how, not how fast."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "write_threads"}


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
    if opts is not None:  # which files were written and how: with the settings, what a rerun compares
        meta["outputs"] = opts.recorded()
    return meta


def write_outputs(
    pred: Prediction, out_dir: Path, stem: str, opts: OutputOptions, model_name: str, backend: str, clock: StageClock
) -> list[Path]:
    """Write every requested output of one video; returns the paths written."""
    written: list[Path] = []
    depth = output_depth(pred, opts.restore_res)
    n, h, w = depth.shape
    fps = opts.fps or pred.info.fps
    meta = metadata(pred, model_name, backend, depth.shape, opts)
    tasks: list[tuple[Path, Callable[[], None]]] = []  # each output: its path and the call that writes it
    if opts.npy:

        def npy(p=out_dir / f"{stem}_pred.npy"):
            with open_npy_memmap_atomic(p, depth.shape, np.float32) as arr:  # streams, never a second copy in RAM
                for a in range(0, n, 64):
                    arr[a : a + 64] = depth[a : a + 64]

        tasks.append((out_dir / f"{stem}_pred.npy", npy))
    if opts.npz:

        def npz(p=out_dir / f"{stem}.npz"):
            save_npz_atomic(
                p,
                depth=np.asarray(depth),
                timestamps=np.asarray(pred.timestamps, dtype=np.float64),
                fps=np.float64(pred.info.fps),
                metadata=np.asarray(json.dumps(meta)),
            )

        tasks.append((out_dir / f"{stem}.npz", npz))
    vmin, vmax = float(depth.min()), float(depth.max())
    if opts.png16:
        p = out_dir / f"{stem}_png16"
        tasks.append((p, lambda p=p: write_png16_sequence(p, iter(depth), vmin, vmax, stem)))
    if opts.snippets and pred.snippets:

        def snippets(p=out_dir / f"{stem}_snippets.npz"):
            arrays = {}
            for g in pred.snippets:
                arrays[f"dilation{g.dilation}"] = g.depth.float().numpy()
                arrays[f"dilation{g.dilation}_indices"] = g.indices.numpy()
                arrays[f"dilation{g.dilation}_weight"] = np.int64(g.weight)
            for g, (s, t) in zip(pred.snippets, pred.params):
                arrays[f"dilation{g.dilation}_scale"] = s.float().numpy()
                arrays[f"dilation{g.dilation}_shift"] = t.float().numpy()
            save_npz_atomic(p, **arrays)

        tasks.append((out_dir / f"{stem}_snippets.npz", snippets))
    with clock.stage("write", total=n * (len(opts.cmaps) + int(opts.sbs and bool(opts.cmaps)))) as tick:
        lock = threading.Lock()

        def tick_safe(k: int) -> None:
            with lock:
                tick(k)

        for i, cmap in enumerate(opts.cmaps):

            def video(p=out_dir / f"{stem}_{cmap}.mp4", cmap=cmap):
                with VideoWriter(p, fps) as vw:
                    for f in range(n):
                        vw.write(colorize(depth[f], vmin, vmax, cmap))
                        tick_safe(1)

            tasks.append((out_dir / f"{stem}_{cmap}.mp4", video))
            if i == 0 and opts.sbs:
                p = out_dir / f"{stem}_rgbd.mp4"
                tasks.append(
                    (
                        p,
                        lambda p=p, cmap=cmap: _write_side_by_side(
                            pred, p, depth, vmin, vmax, cmap, fps, opts.restore_res, tick_safe
                        ),
                    )
                )
        if opts.write_threads <= 1 or len(tasks) <= 1:
            for _, write in tasks:
                write()
        else:
            with ThreadPoolExecutor(max_workers=opts.write_threads, thread_name_prefix="rd-write") as pool:
                for future in [pool.submit(write) for _, write in tasks]:
                    future.result()  # the first failure propagates; the others' temporary files are removed
        written.extend(path for path, _ in tasks)
    return written


def _write_side_by_side(
    pred: Prediction,
    path: Path,
    depth: np.ndarray,
    vmin: float,
    vmax: float,
    cmap: str,
    fps: float,
    restore_res: bool,
    tick,
) -> None:
    # The decoded video is never held whole: decode the input a second time, frame by frame.
    s = pred.settings
    h, w = depth.shape[1:]
    with VideoWriter(path, fps) as vw:
        for i, fr in enumerate(iter_frames(pred.info.path, s.start_frame, depth.shape[0])):
            if restore_res:
                rgb = fr.rgb
            else:
                x = preprocess(torch.from_numpy(fr.rgb)[None], (w, h), torch.device("cpu"), torch.float32)
                rgb = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            vw.write(side_by_side(rgb, colorize(depth[i], vmin, vmax, cmap)))
            tick(1)
