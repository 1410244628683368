"""Per-video outputs. Every file appears atomically under its final name."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from rd_engine.coalign.merge import CONFIDENCE_SPREAD
from rd_engine.io.files import atomic_output, open_npy_memmap_atomic, save_npz_atomic
from rd_engine.io.sequence import ImageSequence
from rd_engine.io.video import iter_frames, preprocess
from rd_engine.io.video_writer import VideoWriter
from rd_engine.outputs.frames import FrameOut, PointCloudSink
from rd_engine.outputs.lanes import writer_pool
from rd_engine.outputs.pointcloud import processed_intrinsics
from rd_engine.outputs.render import colorize, side_by_side, write_png16_mm_sequence, write_png16_sequence
from rd_engine.outputs.sequences import write_depth_sequence, write_ffv1_depth
from rd_engine.outputs.stereo import StereoOptions, write_stereo
from rd_engine.pipeline.offline import Prediction
from rd_engine.progress import StageClock
from rd_engine.version import __version__

DEFAULT_CMAPS = ("Spectral_r", "Greys_r")
CONFIDENCE_MEANING = (
    f"1 / (1 + spread / {CONFIDENCE_SPREAD}): spread = weighted std of the aligned snippet entries covering "
    "the pixel, in units of the [-1, 1] output; 0 where one entry covers the frame"
)


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
    exr: bool = False  # one single-channel Z EXR per frame
    exr_type: str = "float"  # float (float32) or half
    exr_compression: str = "zip"
    tiff16: bool = False
    ffv1: bool = False  # lossless 16-bit depth video (FFV1 in Matroska)
    audio: bool = True  # videos of a video input carry its audio
    stereo: StereoOptions | None = None
    shots: list[tuple[int, int]] | None = None  # frame ranges (of the processed frames) with one depth range each
    confidence: bool = False  # .npz key `confidence` (and a PNG16 folder with png16)
    confidence_min: float = 0.0  # metric depth and points are dropped where confidence < this
    pointcloud: bool = False  # per-frame binary PLY (outputs.pointcloud)
    intrinsics: tuple[float, float, float, float] | None = None  # fx fy cx cy in input pixels
    fov: float | None = None  # horizontal field of view (degrees), when no intrinsics
    depth_range: tuple[float, float] = (0.0, float("inf"))  # points kept between these depths
    voxel: float = 0.0  # voxel size of the point clouds (0 = every pixel)

    @property
    def needs_confidence(self) -> bool:
        return self.confidence or self.confidence_min > 0

    # outputs written at once, each on its own thread (colorizing and PyAV's encoding release the GIL); the
    # files are the same whatever the number
    write_threads: int = 1

    def recorded(self) -> dict:
        """What the outputs' metadata records (and a rerun compares): which files and how, not how fast."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "write_threads"}


def output_depth(pred: Prediction, restore_res: bool, array: np.ndarray | None = None) -> np.ndarray:
    """The depth to write (or another `[N, H, W]` map of the run, `array`), float32, optionally resized
    back to the input size (lazily per chunk).
    """
    array = pred.depth if array is None else array
    if not restore_res or (pred.info.width, pred.info.height) == pred.size:
        return array
    return _Resized(array, (pred.info.height, pred.info.width))


def metric_frames(pred: Prediction, depth, conf, confidence_min: float = 0.0):
    """Per frame, metric depth in metres (`[H, W]` float32, NaN where invalid or less confident than
    `confidence_min`) from the written relative depth.
    """
    for f in range(depth.shape[0]):
        z = pred.metric.depth(f, depth[f])
        if conf is not None and confidence_min > 0:
            z[conf[f] < confidence_min] = np.nan
        yield z


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
    if pred.confidence is not None:
        meta["confidence"] = CONFIDENCE_MEANING
    if pred.metric is not None:
        meta["metric"] = pred.metric.summary()
    if isinstance(pred.info.path, ImageSequence):
        seq = pred.info.path
        meta["sequence"] = {
            "fps": seq.options.fps,
            "transform": seq.options.transform,
            "allow_gaps": seq.options.allow_gaps,
            "pixel_format": pred.info.pix_fmt,
        }
    start = pred.settings.start_frame
    numbers = pred.info.numbers(start, int(depth_shape[0]))
    meta["frame_numbers"] = {"first": numbers[0] if numbers else None, "last": numbers[-1] if numbers else None}
    if pred.shots is not None:  # a run cut into shots: each shot normalized on its own
        meta["shots"] = [dataclasses.asdict(sh) for sh in pred.shots]
        meta["depth_kind"] += ", each shot on its own (see shots)"
    if opts is not None:  # which files were written and how: with the settings, what a rerun compares
        meta["outputs"] = opts.recorded()
    return meta


def shot_ranges_of(pred: Prediction) -> list[tuple[int, int]] | None:
    """The shots of a run cut into shots as frame ranges `(start, stop)` of its processed frames."""
    if not pred.shots:
        return None
    first = pred.settings.start_frame
    return [(sh.first - first, sh.last - first + 1) for sh in pred.shots]


def _audio_source(pred: Prediction, opts: OutputOptions):
    """The video whose audio the outputs carry (None for an image sequence or --no-audio)."""
    if not opts.audio or isinstance(pred.info.path, ImageSequence):
        return None
    return pred.info.path


def _is_vfr(timestamps: list[float], fps: float) -> bool:
    """Whether the frames' times leave the fixed-rate grid by more than half a frame."""
    if len(timestamps) < 2 or not fps:
        return False
    t0 = timestamps[0]
    return any(abs((t - t0) * fps - i) > 0.5 for i, t in enumerate(timestamps))


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
    pred: Prediction,
    out_dir: Path,
    stem: str,
    opts: OutputOptions,
    model_name: str,
    backend: str,
    clock: StageClock,
    sinks=(),
    sources: list[dict] | None = None,
) -> list[Path]:
    """Write every requested output of one video; returns the paths written.

    `sinks`: more per-frame writers (a ROS 2 bag, a Rerun recording: context managers with
    `emit(FrameOut)`); `sources`: per frame, the input message's header (bag inputs).
    """
    written: list[Path] = []
    depth = output_depth(pred, opts.restore_res)
    conf = None if pred.confidence is None else output_depth(pred, opts.restore_res, pred.confidence)
    n, h, w = depth.shape
    fps = opts.fps or pred.info.fps
    meta = metadata(pred, model_name, backend, depth.shape, opts)
    numbers = pred.info.numbers(pred.settings.start_frame, n)
    audio = _audio_source(pred, opts)
    audio_start = float(pred.timestamps[0]) if pred.timestamps else 0.0
    # frames keep their source times where the input's rate varies (the audio stays in sync)
    times = list(pred.timestamps) if (audio is not None and not opts.fps and _is_vfr(pred.timestamps, fps)) else None
    about = {
        "software": f"rd-engine {__version__}",
        "source": meta["source"],
        "model": model_name,
        "backend": backend,
        "fps": float(fps),
        "settings": meta["settings"],
        "seed": pred.seed,
    }
    per_frame = len(opts.cmaps) + int(opts.sbs and bool(opts.cmaps))
    per_frame += int(opts.exr) + int(opts.tiff16) + int(opts.png16) + int(opts.ffv1) + int(opts.stereo is not None)
    with clock.stage("write", total=n * per_frame) as tick:
        if opts.npy:
            p = out_dir / f"{stem}_pred.npy"
            with open_npy_memmap_atomic(p, depth.shape, np.float32) as arr:  # streams, never a second copy in RAM
                for a in range(0, n, 64):
                    arr[a : a + 64] = depth[a : a + 64]
            written.append(p)
        if opts.npz:
            p = out_dir / f"{stem}.npz"
            extra = {}
            if conf is not None:
                extra["confidence"] = np.asarray(conf, np.float32)
            if pred.metric is not None:
                extra["depth_m"] = np.stack(list(metric_frames(pred, depth, conf, opts.confidence_min)))
                extra["metric_scale"] = pred.metric.scale
                extra["metric_shift"] = pred.metric.shift
                extra["metric_valid"] = pred.metric.valid
            save_npz_atomic(
                p,
                depth=np.asarray(depth),
                timestamps=np.asarray(pred.timestamps, dtype=np.float64),
                fps=np.float64(pred.info.fps),
                frame_numbers=np.asarray(numbers, dtype=np.int64),
                metadata=np.asarray(json.dumps(meta)),
                **extra,
            )
            written.append(p)
        if pred.shots is not None:
            p = out_dir / f"{stem}_shots.csv"
            write_shot_table(p, pred)
            written.append(p)
        ranges = _color_ranges(pred, depth)
        vmin, vmax = min(r[2] for r in ranges), max(r[3] for r in ranges)
        for kind, wanted in (("exr", opts.exr), ("tiff16", opts.tiff16), ("png16", opts.png16)):
            if wanted:
                p = out_dir / f"{stem}_{kind}"
                channels = {}
                if kind == "exr" and pred.metric is not None:
                    channels["depth_m"] = metric_frames(pred, depth, conf, opts.confidence_min)
                if kind == "exr" and conf is not None:
                    channels["confidence"] = iter(conf)
                write_depth_sequence(
                    p,
                    kind,
                    iter(depth),
                    numbers,
                    stem,
                    vmin,
                    vmax,
                    about,
                    exr_type=opts.exr_type,
                    exr_compression=opts.exr_compression,
                    tick=tick,
                    exr_channels=channels,
                )
                written.append(p)
        if opts.ffv1:
            p = out_dir / f"{stem}_depth_ffv1.mkv"
            write_ffv1_depth(p, iter(depth), fps, vmin, vmax, about, tick, audio, audio_start, times)
            written += [p, p.with_suffix(".json")]
        if opts.png16:
            if pred.metric is not None:
                p = out_dir / f"{stem}_depth_mm"
                write_png16_mm_sequence(p, metric_frames(pred, depth, conf, opts.confidence_min), stem)
                written.append(p)
            if conf is not None:
                p = out_dir / f"{stem}_confidence_png16"
                write_png16_sequence(p, iter(conf), 0.0, 1.0, stem, CONFIDENCE_MEANING, "confidence")
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
        sinks = list(sinks)
        k = None
        if opts.intrinsics is not None or opts.fov is not None:
            k = processed_intrinsics(opts.intrinsics, opts.fov, (pred.info.width, pred.info.height), (w, h))
        if opts.pointcloud:
            p = out_dir / f"{stem}_pointcloud"
            sinks.insert(0, PointCloudSink(p, stem, opts.depth_range, opts.voxel, opts.confidence_min))
            written.append(p)
        if sinks:
            with contextlib.ExitStack() as stack:
                for sk in sinks:
                    stack.enter_context(sk)
                for fo in frame_outs(pred, depth, conf, opts, sources, k):
                    for sk in sinks:
                        sk.emit(fo)
        lock = threading.Lock()

        def tick_safe(k: int) -> None:
            with lock:
                tick(k)

        tasks: list[tuple[Path, Callable[[], None]]] = []  # each video: its path and the call that writes it
        for i, cmap in enumerate(opts.cmaps):

            def video(p=out_dir / f"{stem}_{cmap}.mp4", cmap=cmap):
                with VideoWriter(p, fps, audio_from=audio, audio_start=audio_start) as vw:
                    for a, b, lo, hi in ranges:
                        for f in range(a, b):
                            vw.write(colorize(depth[f], lo, hi, cmap), None if times is None else times[f])
                            tick_safe(1)

            tasks.append((out_dir / f"{stem}_{cmap}.mp4", video))
            if i == 0 and opts.sbs:
                p = out_dir / f"{stem}_rgbd.mp4"
                tasks.append(
                    (
                        p,
                        lambda p=p, cmap=cmap: _write_side_by_side(
                            pred, p, depth, ranges, cmap, fps, opts.restore_res, tick_safe, audio, audio_start, times
                        ),
                    )
                )
        if opts.write_threads <= 1 or len(tasks) <= 1:
            for _, write in tasks:
                write()
        else:
            with writer_pool(opts.write_threads, "rd-write") as pool:
                for future in [pool.submit(write) for _, write in tasks]:
                    future.result()  # the first failure propagates; the others' temporary files are removed
        written.extend(path for path, _ in tasks)
        if opts.stereo is not None:
            s = pred.settings
            frames = (fr.rgb for fr in iter_frames(pred.info.path, s.start_frame, n))
            written += write_stereo(
                frames,
                pred.depth,
                out_dir,
                stem,
                fps,
                opts.stereo,
                shots=opts.shots or shot_ranges_of(pred),
                audio_from=audio,
                audio_start=audio_start,
                about=about,
                tick=tick,
                timestamps=times,
            )
    return written


def output_rgb(pred: Prediction, hw: tuple[int, int], restore_res: bool):
    """The input frames again (decoded a second time, one by one), at the written depth's size `hw`."""
    h, w = hw
    for fr in iter_frames(pred.info.path, pred.settings.start_frame, pred.num_frames):
        if restore_res:
            yield fr.rgb
        else:
            x = preprocess(torch.from_numpy(fr.rgb)[None], (w, h), torch.device("cpu"), torch.float32)
            yield ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def frame_outs(pred: Prediction, depth, conf, opts: OutputOptions, sources: list[dict] | None = None, camera=None):
    """The run's frames as `outputs.frames.FrameOut` (metric depth masked by `confidence_min`)."""
    zs = metric_frames(pred, depth, conf, opts.confidence_min) if pred.metric is not None else None
    for f, rgb in enumerate(output_rgb(pred, depth.shape[1:], opts.restore_res)):
        yield FrameOut(
            f,
            pred.timestamps[f],
            rgb,
            np.asarray(depth[f], np.float32),
            None if zs is None else next(zs),
            None if conf is None else np.asarray(conf[f], np.float32),
            None if sources is None else sources[f],
            camera,
        )


def _write_side_by_side(
    pred: Prediction,
    path: Path,
    depth: np.ndarray,
    ranges: list[tuple[int, int, float, float]],
    cmap: str,
    fps: float,
    restore_res: bool,
    tick,
    audio=None,
    audio_start: float = 0.0,
    times=None,
) -> None:
    # The decoded video is never held whole: decode the input a second time, frame by frame.
    s = pred.settings
    h, w = depth.shape[1:]
    span = {a: (lo, hi) for a, b, lo, hi in ranges}  # the colormap range changes where a shot starts
    vmin, vmax = ranges[0][2], ranges[0][3]
    with VideoWriter(path, fps, audio_from=audio, audio_start=audio_start) as vw:
        for i, fr in enumerate(iter_frames(pred.info.path, s.start_frame, depth.shape[0])):
            vmin, vmax = span.get(i, (vmin, vmax))
            if restore_res:
                rgb = fr.rgb
            else:
                x = preprocess(torch.from_numpy(fr.rgb)[None], (w, h), torch.device("cpu"), torch.float32)
                rgb = ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            vw.write(side_by_side(rgb, colorize(depth[i], vmin, vmax, cmap)), None if times is None else times[i])
            tick(1)
