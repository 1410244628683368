"""Online latency of the C++ session (rd_stream) and the Python session, side by side on one engine.

Both run the same AOTInductor packages on the same decoded frames with the same settings, one after
the other in one run (each after a warm-up stream over the first frames, so that package loading is
not counted), `--repeats` times alternating, each after waiting for a quiet machine; the figures are
the medians over the repeats. Reported per side: push-to-finished latency p50/p95/p99 and the seconds
per stage, of which the non-model part is preprocess + alignment/merge + the rest (scheduling,
bookkeeping).

    python -m benchmarks.native_latency --engine ENGINE_DIR --build BUILD_DIR [--video V] [--res 128]
        [--lags 0 4] [--frames 60] [--repeats 3] [--json out.json] [--markdown out.md]

Run from the repository root. ENGINE_DIR: `rd-engine build --backend aoti --device cpu ...`;
BUILD_DIR: the CMake build holding rd_stream.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.cpu_quiet import machine, wait_quiet
from rd_engine.backends.aoti_backend import AotiBackend
from rd_engine.io.files import atomic_output
from rd_engine.io.video import iter_frames
from rd_engine.online import session as session_module
from rd_engine.online.session import StreamSession
from rd_engine.pipeline.offline import Pipeline
from rd_engine.settings import Settings
from rd_engine.testing.media import write_test_video

STAGES = ("preprocess", "encode", "denoise", "decode", "align", "total")


class _Timed:
    """Wraps a callable, adding its wall time to `clock[name]`."""

    def __init__(self, fn, clock: dict, name: str):
        self.fn, self.clock, self.name = fn, clock, name

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.clock[self.name] += time.perf_counter() - t0


def python_side(engine: Path, frames: list[np.ndarray], settings: Settings, lag: int, warmup: int) -> dict:
    backend = AotiBackend(engine, "cpu")
    clock = dict.fromkeys(STAGES, 0.0)
    backend.encode = _Timed(backend.encode, clock, "encode")
    backend.denoise = _Timed(backend.denoise, clock, "denoise")
    backend.decode = _Timed(backend.decode, clock, "decode")
    pipe = Pipeline(backend, progress=False)
    warm = StreamSession(pipe, settings, lag)
    for i, f in enumerate(frames[:warmup]):
        warm.push(f, i / 30)
    warm.flush()
    encode_frames = session_module.encode_frames
    session_module.encode_frames = _Timed(encode_frames, clock, "preprocess")  # minus encode, below
    try:
        for k in clock:
            clock[k] = 0.0
        ses = StreamSession(pipe, settings, lag)
        ses.aligner.add = _Timed(ses.aligner.add, clock, "align")
        ses.aligner.finish = _Timed(ses.aligner.finish, clock, "align")
        depth = []
        for i, f in enumerate(frames):
            t0 = time.perf_counter()
            depth += ses.push(f, i / 30)
            clock["total"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        depth += ses.flush()
        clock["total"] += time.perf_counter() - t0
    finally:
        session_module.encode_frames = encode_frames
    clock["preprocess"] -= clock["encode"]
    return {"latency_s": ses.latency.percentiles(), "stages_s": clock, "depth": np.stack([d.depth for d in depth])}


def cpp_side(build: Path, engine: Path, raw: bytes, size, settings: Settings, lag: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        cmd = [str(build / "rd_stream"), "--engine", str(engine), "--size", f"{size[0]}x{size[1]}", "--lag", str(lag)]
        cmd += ["--res", str(settings.res), "--dilations", *map(str, settings.dilations), "--seed", str(settings.seed)]
        cmd += ["--warmup", str(warmup), "--stats", str(stats)]
        r = subprocess.run(cmd, input=raw, capture_output=True, check=True)
        out = json.loads(stats.read_text())
    out["depth"] = np.frombuffer(r.stdout, np.float32)
    return out


def median_run(runs: list[dict]) -> dict:
    """Per figure, the median over the repeats."""
    return {
        key: {k: float(np.median([r[key][k] for r in runs])) for k in runs[0][key]} for key in ("latency_s", "stages_s")
    }


def non_model(stages: dict) -> float:
    return stages["total"] - stages["encode"] - stages["denoise"] - stages["decode"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", type=Path, required=True)
    ap.add_argument("--build", type=Path, required=True)
    ap.add_argument("--video", type=Path, help="default: a generated 128x80 clip")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--res", type=int, default=96)
    ap.add_argument("--dilations", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--lags", type=int, nargs="+", default=[0, 4])
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quiet-limit", type=float, default=0.1, help="wait until others use at most this CPU share")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        video = a.video or Path(tmp) / "clip.mp4"
        if a.video is None:
            write_test_video(video, n_frames=a.frames, width=128, height=80, fps=30, seed=3)
        frames = [f.rgb for f in iter_frames(video, frame_count=a.frames)]
    size = (frames[0].shape[1], frames[0].shape[0])
    raw = b"".join(np.ascontiguousarray(f).tobytes() for f in frames)
    settings = Settings(res=a.res, dilations=a.dilations, dtype="fp32", seed=7)
    rows = []
    for lag in a.lags:
        runs: dict[str, list[dict]] = {"python": [], "cpp": []}
        diff, busy = 0.0, []
        for _ in range(a.repeats):
            busy.append(wait_quiet(a.quiet_limit, 900))
            py = python_side(a.engine, frames, settings, lag, a.warmup)
            busy.append(wait_quiet(a.quiet_limit, 900))
            cpp = cpp_side(a.build, a.engine, raw, size, settings, lag, a.warmup)
            diff = max(diff, float(np.abs(py.pop("depth").reshape(-1) - cpp.pop("depth")).max()))
            runs["python"].append(py)
            runs["cpp"].append(cpp)
        rows.append(
            {
                "lag": lag,
                "python": median_run(runs["python"]),
                "cpp": median_run(runs["cpp"]),
                "runs": runs,
                "max_abs_diff": diff,
                "others_busy_before_runs": busy,
            }
        )
    report = {
        "command": "python -m benchmarks.native_latency " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "frames": len(frames),
        "input_size": list(size),
        "res": a.res,
        "dilations": a.dilations,
        "rows": rows,
    }
    lines = [
        "| lag | side | p50 ms | p95 ms | p99 ms | non-model s | of it: preprocess | align+merge | rest | model s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        for side in ("python", "cpp"):
            lat, st = row[side]["latency_s"], row[side]["stages_s"]
            nm = non_model(st)
            rest = nm - st["preprocess"] - st["align"]
            model = st["encode"] + st["denoise"] + st["decode"]
            lines.append(
                f"| {row['lag']} | {'C++' if side == 'cpp' else 'Python'} | {1e3 * lat['p50']:.1f} | "
                f"{1e3 * lat['p95']:.1f} | {1e3 * lat['p99']:.1f} | {nm:.3f} | {st['preprocess']:.3f} | "
                f"{st['align']:.3f} | {rest:.3f} | {model:.3f} |"
            )
    table = "\n".join(lines)
    print(table)
    print("max |C++ - Python| depth:", ", ".join(f"lag {r['lag']}: {r['max_abs_diff']:.2g}" for r in rows))
    if a.json:
        with atomic_output(a.json) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=2))
    if a.markdown:
        with atomic_output(a.markdown) as tmp:
            Path(tmp).write_text(table + "\n")


if __name__ == "__main__":
    main()
