"""`rd-engine run --stream`: online depth for a file or a live source, written as frames finish."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from rd_engine.io.files import open_npy_memmap_atomic, save_npz_atomic
from rd_engine.io.sources import open_source
from rd_engine.io.video_writer import VideoWriter
from rd_engine.online.session import StreamSession
from rd_engine.outputs.offline import OutputOptions
from rd_engine.outputs.render import colorize
from rd_engine.version import __version__

# a stream's depth lives in the affine frame fixed by its first snippet, spanning [-1, 1] (stream.py);
# colorized videos use that fixed range, so colors mean the same thing for the whole stream
STREAM_RANGE = (-1.0, 1.0)


class _Sink:
    """Appends finished frames to a raw temp file and to the colorized videos."""

    def __init__(self, raw, writers, cmaps):
        self.raw, self.writers, self.cmaps = raw, writers, cmaps
        self.timestamps: list[float] = []
        self.latencies: list[float] = []
        self.starts: list[bool] = []
        self.shape = None

    def emit(self, frames) -> None:
        for f in frames:
            self.shape = f.depth.shape
            self.raw.write(np.ascontiguousarray(f.depth, np.float32).tobytes())
            self.timestamps.append(np.nan if f.timestamp is None else f.timestamp)
            self.latencies.append(np.nan if f.latency is None else f.latency)
            self.starts.append(f.starts_shot)
            for c, w in zip(self.cmaps, self.writers):
                w.write(colorize(f.depth, *STREAM_RANGE, c))


def run_stream(
    pipe, settings, lag: int, source, out_dir: Path, stem: str, opts: OutputOptions, model_name: str, shots="auto"
) -> str:
    """Run one online session over `source`, writing outputs as frames finish. Returns the summary line."""
    from contextlib import ExitStack

    session = StreamSession(pipe, settings, lag, shots)
    fps = opts.fps or _source_fps(source)
    t0 = time.perf_counter()
    fd, raw_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=".stream-raw", dir=out_dir)
    raw_path = Path(raw_name)
    try:
        with os.fdopen(fd, "wb") as raw, ExitStack() as videos:
            writers = [videos.enter_context(VideoWriter(out_dir / f"{stem}_{c}.mp4", fps)) for c in opts.cmaps]
            sink = _Sink(raw, writers, opts.cmaps)
            for ts, rgb in open_source(source, start_frame=settings.start_frame, frame_count=settings.frame_count):
                sink.emit(session.push(rgb, ts))
            sink.emit(session.flush())
        n = len(sink.timestamps)
        if n and (opts.npy or opts.npz):
            depth = np.memmap(raw_path, dtype=np.float32, mode="r", shape=(n, *sink.shape))
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
            del depth
    finally:
        raw_path.unlink(missing_ok=True)  # the frames live on in the outputs; nothing half-written stays
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
