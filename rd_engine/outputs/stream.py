"""`rd-engine run --stream`: online depth for a file or a live source, written as frames finish."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from rd_engine.errors import UserError
from rd_engine.io.anchors import Anchors
from rd_engine.io.files import open_npy_memmap_atomic, save_npz_atomic
from rd_engine.io.sources import open_source
from rd_engine.io.video import processed_size
from rd_engine.io.video_writer import VideoWriter
from rd_engine.online.session import StreamSession
from rd_engine.outputs.frames import FrameOut, PointCloudSink, masked_metric
from rd_engine.outputs.lanes import WriteLanes
from rd_engine.outputs.offline import CONFIDENCE_MEANING, OutputOptions
from rd_engine.outputs.pointcloud import processed_intrinsics
from rd_engine.outputs.render import colorize, write_png16_mm_sequence
from rd_engine.version import __version__

# a stream's depth lives in the affine frame fixed by its first snippet, spanning [-1, 1] (stream.py);
# colorized videos use that fixed range, so colors mean the same thing for the whole stream
STREAM_RANGE = (-1.0, 1.0)


class _Raw:
    """Finished frames appended to a raw float32 temp file beside the outputs (read back memory-mapped)."""

    def __init__(self, out_dir: Path, stem: str, name: str):
        fd, path = tempfile.mkstemp(prefix=f".{stem}.{name}.", suffix=".stream-raw", dir=out_dir)
        self.path = Path(path)
        self.file = os.fdopen(fd, "wb")
        self.frames = 0

    def write(self, a: np.ndarray) -> None:
        self.file.write(np.ascontiguousarray(a, np.float32).tobytes())
        self.frames += 1

    def read(self, shape) -> np.ndarray:
        self.file.flush()
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.frames, *shape))

    def remove(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


class _Sink:
    """Appends finished frames to the raw temp files, the colorized videos and the per-frame sinks.

    The raw files are appended at once; the colorized videos (a lane each) and the frame sinks (one lane,
    in frame order) go through `lanes`, on background threads with `--write-threads` 2 or more.
    """

    def __init__(self, out_dir: Path, stem: str, writers, cmaps, opts: OutputOptions, frame_sinks, size, camera, lanes):
        self.out_dir, self.stem, self.opts, self.camera = out_dir, stem, opts, camera
        self.writers, self.cmaps, self.frame_sinks, self.size = writers, cmaps, frame_sinks, size
        self.lanes: WriteLanes = lanes
        self.raw = {"depth": _Raw(out_dir, stem, "depth")}
        self.timestamps: list[float] = []
        self.latencies: list[float] = []
        self.metric_valid: list[bool] = []
        self.starts: list[bool] = []
        self.shape = None
        self.rgb: dict[int, np.ndarray] = {}  # frames pushed and not finished yet (for the frame sinks)
        self.sources: dict[int, dict | None] = {}

    def _raw(self, name: str) -> _Raw:
        if name not in self.raw:
            self.raw[name] = _Raw(self.out_dir, self.stem, name)
            for _ in range(self.raw["depth"].frames - 1):  # frames before the first value: NaN
                self.raw[name].write(np.full(self.shape, np.nan, np.float32))
        return self.raw[name]

    def pushed(self, index: int, rgb: np.ndarray, source: dict | None) -> None:
        if self.frame_sinks:
            self.rgb[index], self.sources[index] = rgb, source

    def emit(self, frames) -> None:
        for f in frames:
            self.shape = f.depth.shape
            self.raw["depth"].write(f.depth)
            depth_m = masked_metric(f.depth_m, f.confidence, self.opts.confidence_min)
            if f.depth_m is not None or "depth_m" in self.raw:
                self._raw("depth_m").write(np.full(self.shape, np.nan, np.float32) if depth_m is None else depth_m)
            if f.confidence is not None and self.opts.needs_confidence:
                self._raw("confidence").write(f.confidence)
            self.metric_valid.append(f.depth_m is not None)
            self.timestamps.append(np.nan if f.timestamp is None else f.timestamp)
            self.latencies.append(np.nan if f.latency is None else f.latency)
            self.starts.append(f.starts_shot)
            for lane, (c, w) in enumerate(zip(self.cmaps, self.writers)):
                self.lanes.submit(lane, _colorized, w, f.depth, c)
            if self.frame_sinks:
                self.lanes.submit(
                    len(self.cmaps),
                    self._frame_out,
                    f,
                    self.rgb.pop(f.index),
                    depth_m,
                    self.sources.pop(f.index),
                )

    def _frame_out(self, f, rgb: np.ndarray, depth_m, source) -> None:
        fo = FrameOut(
            f.index, f.timestamp, processed_rgb(rgb, self.size), f.depth, depth_m, f.confidence, source, self.camera
        )
        for sk in self.frame_sinks:
            sk.emit(fo)

    def remove(self) -> None:
        for r in self.raw.values():
            r.remove()


def _colorized(writer: VideoWriter, depth: np.ndarray, cmap: str) -> None:
    writer.write(colorize(depth, *STREAM_RANGE, cmap))


def processed_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An input frame at the processed size, as the model saw it (`io.video.preprocess`), uint8."""
    import torch

    from rd_engine.io.video import preprocess

    x = preprocess(torch.from_numpy(np.ascontiguousarray(rgb))[None], size, torch.device("cpu"), torch.float32)
    return ((x[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def file_frames(source, settings, anchors: Anchors | None) -> Iterator[tuple]:
    """`(timestamp, rgb, anchors of the frame or None, source header or None)` of a file or live source."""
    for i, (ts, rgb) in enumerate(
        open_source(source, start_frame=settings.start_frame, frame_count=settings.frame_count)
    ):
        fa = None
        if anchors is not None:
            a = anchors.in_range(i, i + 1)
            fa = (a.x, a.y, a.depth) if len(a) else None
        yield ts, rgb, fa, None


def run_stream(
    pipe,
    settings,
    lag: int,
    source,
    out_dir: Path,
    stem: str,
    opts: OutputOptions,
    model_name: str,
    anchors: Anchors | None = None,
    frames: Iterator[tuple] | None = None,
    frame_sinks=(),
    shots="auto",
) -> str:
    """Run one online session over `source`, writing outputs as frames finish. Returns the summary line.

    Args:
        pipe: The pipeline (its backend runs the model).
        settings: The method's settings.
        lag: Frames of look-ahead.
        source: A file or live source (its name when `frames` is given).
        out_dir: Output folder.
        stem: Output file prefix.
        opts: What to write.
        model_name: Recorded in the metadata.
        anchors: Sparse metric depth of a file source (by frame index).
        frames: Instead of decoding `source`: `(timestamp, rgb, anchors or None, header or None)` per
            frame (a ROS 2 bag).
        frame_sinks: More per-frame writers (`outputs.frames`: a bag, a Rerun recording); context
            managers, entered here.
        shots: Cut detection (`pipeline.shots.ShotOptions` or its string): a cut restarts the stream's
            affine frame (docs/edited-video.md).
    """
    session = StreamSession(pipe, settings, lag, shots)
    fps = opts.fps or (_source_fps(source) if frames is None else 30.0)
    frames = file_frames(source, settings, anchors) if frames is None else frames
    t0 = time.perf_counter()
    sink = None
    try:
        with ExitStack() as outputs:
            writers = [outputs.enter_context(VideoWriter(out_dir / f"{stem}_{c}.mp4", fps)) for c in opts.cmaps]
            sinks = list(frame_sinks)
            n_pushed = 0
            for i, (ts, rgb, fa, header) in enumerate(frames):
                if i == 0:
                    size = processed_size(rgb.shape[1], rgb.shape[0], settings.res)
                    k = None
                    if opts.intrinsics is not None or opts.fov is not None:
                        k = processed_intrinsics(opts.intrinsics, opts.fov, (rgb.shape[1], rgb.shape[0]), size)
                    if opts.pointcloud:
                        folder = out_dir / f"{stem}_pointcloud"
                        sinks.insert(0, PointCloudSink(folder, stem, opts.depth_range, opts.voxel, opts.confidence_min))
                    for sk in sinks:
                        outputs.enter_context(sk)
                    # entered last, so it is closed first: every queued write lands before its file closes
                    lanes = outputs.enter_context(WriteLanes(len(opts.cmaps) + bool(sinks), opts.write_threads))
                    sink = _Sink(out_dir, stem, writers, opts.cmaps, opts, sinks, size, k, lanes)
                sink.pushed(i, rgb, header)
                sink.emit(session.push(rgb, ts, anchors=fa))
                n_pushed = i + 1
            if sink is not None:
                sink.emit(session.flush())
            if anchors is not None and len(anchors) and int(anchors.frame[-1]) >= n_pushed:
                raise UserError(
                    f"anchors for frame {int(anchors.frame[-1])}, but the stream had {n_pushed} frames "
                    "(frames are 0-based indices of the processed frames)"
                )
        n = len(sink.timestamps) if sink is not None else 0
        if n and (opts.npy or opts.npz):
            depth = sink.raw["depth"].read(sink.shape)
            if opts.npy:
                with open_npy_memmap_atomic(out_dir / f"{stem}_pred.npy", depth.shape, np.float32) as arr:
                    for a in range(0, n, 64):
                        arr[a : a + 64] = depth[a : a + 64]
            if opts.npz:
                meta = {
                    "rd_engine_version": __version__,
                    "source": str(source),
                    "model": model_name,
                    "mode": "online",
                    "lag": lag,
                    "settings": settings.to_dict(),
                    "seed": session.seed,
                    "normalization": "affine frame fixed by the first snippet (its values span [-1, 1]); "
                    "no per-frame renormalization",
                    "depth_kind": "relative inverse depth (affine-invariant; near = large)",
                    "latency": session.latency.percentiles(),
                }
                extra = {}
                if "confidence" in sink.raw:
                    extra["confidence"] = sink.raw["confidence"].read(sink.shape)
                    meta["confidence"] = CONFIDENCE_MEANING
                if "depth_m" in sink.raw:
                    extra["depth_m"] = sink.raw["depth_m"].read(sink.shape)
                    extra["metric_valid"] = np.asarray(sink.metric_valid)
                    fit = session.metric.fit if session.metric is not None else None
                    meta["metric"] = {
                        "depth_m": "metres along the optical axis (REP 118); NaN where invalid",
                        "model": "1 / depth_m = a * depth + b, the fit current when each frame finished",
                        "frames_with_metric": int(np.sum(sink.metric_valid)),
                        "last_fit": None if fit is None else {"scale": fit.scale, "shift": fit.shift},
                    }
                if session.cuts_on:  # each shot in its own affine frame (a cut restarts the normalization)
                    meta["shot_starts"] = list(session.shot_starts)
                    extra["starts_shot"] = np.asarray(sink.starts, dtype=bool)
                save_npz_atomic(
                    out_dir / f"{stem}.npz",
                    depth=depth,
                    timestamps=np.asarray(sink.timestamps),
                    latency=np.asarray(sink.latencies),
                    metadata=np.asarray(json.dumps(meta)),
                    **extra,
                )
            if opts.png16 and "depth_m" in sink.raw:
                z = sink.raw["depth_m"].read(sink.shape)
                write_png16_mm_sequence(out_dir / f"{stem}_depth_mm", iter(z), stem)
            del depth
    finally:
        if sink is not None:
            sink.remove()  # the frames live on in the outputs; nothing half-written stays
    lat = session.latency.percentiles()
    secs = time.perf_counter() - t0
    lat_txt = " ".join(f"{k} {lat[k] * 1000:.0f}ms" for k in ("p50", "p95", "p99")) if lat else "n/a"
    return (
        f"{Path(str(source)).name}: {n} frames online (lag {lag}) in {secs:.1f}s "
        f"({n / max(secs, 1e-9):.1f} frames/s) | latency {lat_txt} | -> {out_dir}/{stem}*"
    )


def _source_fps(source) -> float:
    from rd_engine.io.video import probe

    if not os.path.isfile(str(source)):
        return 30.0  # live sources: the nominal rate of most cameras
    return probe(source).fps
