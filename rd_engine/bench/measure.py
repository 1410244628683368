"""The measured runs: warm-up, timed repeats of the offline pipeline, their summary per stage, and the online run."""

from __future__ import annotations

import dataclasses
import logging
import math
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from rd_engine.bench.flops import FlopTable
from rd_engine.bench.schema import MODEL_STAGES, STAGE_FIELDS
from rd_engine.bench.timing import StageTimer, TimedBackend, nvtx, sync
from rd_engine.pipeline.offline import Pipeline

log = logging.getLogger("rd_engine")


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile of `values` (linear interpolation between the closest ranks)."""
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def count_frames(settings, path) -> int:
    """Frames of `path` that `settings` (start frame, frame count) selects."""
    from rd_engine.io.video import iter_frames

    return sum(1 for _ in iter_frames(path, settings.start_frame, settings.frame_count))


def _time_decode(path, settings) -> tuple[float, int]:
    from rd_engine.io.video import iter_frames

    t0 = time.perf_counter()
    n = sum(1 for _ in iter_frames(path, settings.start_frame, settings.frame_count))
    return time.perf_counter() - t0, n


def _time_resize(path, settings, size, device, dtype, timer: StageTimer) -> None:
    from rd_engine.io.video import iter_frames, preprocess

    buf = []

    def flush():
        frames = torch.stack(buf)
        with timer.region("resize", len(buf)):
            preprocess(frames, size, device, torch.float32).to(dtype)

    for fr in iter_frames(path, settings.start_frame, settings.frame_count):
        buf.append(torch.from_numpy(fr.rgb))
        if len(buf) == settings.vae_batch:
            flush()
            buf = []
    if buf:
        flush()


def _one_run(pipe, timed: TimedBackend, path, settings, write: bool, model_name: str, write_threads: int = 1) -> dict:
    """Predict (+ write) once; returns the wall times and the timer's per-key seconds."""
    from rd_engine.outputs.offline import OutputOptions, write_outputs
    from rd_engine.pipeline.shots import ShotOptions, predict_shots
    from rd_engine.progress import StageClock

    device = timed.device
    timed.timer.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    with nvtx(device, "rd:predict"):
        # as `rd-engine run` runs by default: cut detection while decoding (its own stage, "detect")
        pred = predict_shots(pipe, path, settings, ShotOptions("auto"))
        sync(device)
    t1 = time.perf_counter()
    try:
        write_s = None
        if write:
            with tempfile.TemporaryDirectory(prefix="rd-bench-out-") as tmp, nvtx(device, "rd:write"):
                w0 = time.perf_counter()
                write_outputs(
                    pred,
                    Path(tmp),
                    "bench",
                    OutputOptions(write_threads=write_threads),
                    model_name,
                    timed.name,
                    StageClock(False),
                )
                write_s = time.perf_counter() - w0
        t2 = time.perf_counter()
        device_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return {
            "predict": t1 - t0,
            "end_to_end": t2 - t0,
            "write": write_s,
            "frames": pred.num_frames,
            "stage_seconds": dict(pred.stage_seconds),
            "timer": timed.timer.collect(),
            "calls": dict(timed.timer.calls),
            "items": dict(timed.timer.items),
            "shapes": {k: Counter(v) for k, v in timed.timer.shapes.items()},
            "device_peak": device_peak,
            "dilations": list(pred.dilations),
        }
    finally:
        close = getattr(pred, "close", None)
        if close is not None:
            close()


def measure(
    backend,
    path,
    settings,
    *,
    repeats: int,
    warmup_frames: int,
    write: bool,
    model_name: str,
    flops: FlopTable,
    peak: dict,
    mode: str,
    align_threads: int | None = None,
    align_on: str = "host",
    write_threads: int = 1,
    budgets=None,
    on_repeat=None,
) -> dict:
    """Warm up, then time `repeats` runs of one configuration; returns the result's measured part.

    Args:
        backend: The un-timed backend (it is wrapped here).
        path: The input video.
        settings: What to compute (`rd_engine.settings.Settings`).
        repeats: Measured runs.
        warmup_frames: Frames of the warm-up run (same size, fewer frames).
        write: Include the writers (the "write" stage).
        model_name: For the output metadata.
        flops: FLOP counts per shape (shared between configurations).
        peak: `measure_peak_tflops` result for the run's device and precision.
        mode: "optimized" or "baseline".
        align_threads: CPU threads of the host co-alignment (`Pipeline(align_threads=...)`).
        align_on: Where the fast and robust solvers run (`Pipeline(align_on=...)`).
        write_threads: Outputs written in parallel (`OutputOptions.write_threads`).
        budgets: The pipeline's memory budgets (default `Budgets()`).
        on_repeat: Called with the summary so far after every timed repeat (the caller writes it, so a run
            cut short still leaves what it measured).

    Returns:
        The measured part of a result, with the last run's shapes under "_shapes" (for `flop_summary`).
    """
    device = backend.device
    timer = StageTimer(device)
    timed = TimedBackend(backend, timer)
    pipe = Pipeline(  # refinement's backend calls are tagged
        timed, progress=False, on_phase=timed.set_phase, align_threads=align_threads, align_on=align_on, budgets=budgets
    )
    from rd_engine.io.video import probe, processed_size

    info = probe(path)
    size = processed_size(info.width, info.height, settings.res)

    # warm-up: same size, fewer frames, few solver iterations (imports, allocations, kernel choice)
    t0 = time.perf_counter()
    warm = dataclasses.replace(settings, frame_count=warmup_frames, align_iters=min(settings.align_iters, 20))
    _one_run(pipe, timed, path, warm, write, model_name, write_threads)
    _time_decode(path, warm)
    _time_resize(path, warm, size, device, backend.dtype, StageTimer(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    warmup_seconds = time.perf_counter() - t0
    log.info("%s: warm-up %.1f s", mode, warmup_seconds)

    runs = []
    for r in range(repeats):
        dec_s, n_dec = _time_decode(path, settings)
        timer.reset()
        _time_resize(path, settings, size, device, backend.dtype, timer)
        resize_s = timer.collect().get("resize", 0.0)
        resize_calls = timer.calls["resize"]
        run = _one_run(pipe, timed, path, settings, write, model_name, write_threads)
        run.update(decode=dec_s, decode_frames=n_dec, resize=resize_s, resize_calls=resize_calls)
        runs.append(run)
        log.info("%s: run %d/%d: %.3f s end to end (%d frames)", mode, r + 1, repeats, run["end_to_end"], run["frames"])
        if on_repeat is not None and r + 1 < repeats:
            on_repeat(_summary(runs, settings, flops, peak, mode, warmup_seconds, warmup_frames, size))

    return _summary(runs, settings, flops, peak, mode, warmup_seconds, warmup_frames, size)


def _summary(runs, settings, flops, peak, mode, warmup_seconds, warmup_frames, size) -> dict:
    host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return _summarize(runs, settings, flops, peak, mode, warmup_seconds, warmup_frames, host_peak, size)


def _summarize(
    runs, settings, flops: FlopTable, peak: dict, mode, warmup_seconds, warmup_frames, host_peak, size
) -> dict:
    """Medians per stage and end to end over `runs`, with FLOPs and the fraction of the peak."""
    last = runs[-1]
    n = last["frames"]
    peak_tflops = peak["tflops"]

    def med(values):
        return statistics.median(values)

    def flops_of(phase: str, op: str) -> int:
        key = f"{phase}.{op}"
        return flops.total(op, last["shapes"].get(key, Counter()))

    def entry(seconds_runs, calls, items, unit, flop_count=None, ran=True, note=None):
        if not ran or any(s is None for s in seconds_runs):
            return {"ran": False, **{k: None for k in STAGE_FIELDS}, "note": note}
        sec = med(seconds_runs)
        e = {
            "ran": True,
            "seconds": sec,
            "seconds_runs": list(seconds_runs),
            "calls": calls,
            "items": items,
            "unit": unit,
            "fps": n / sec if sec > 0 else None,
            "flops": None,
            "tflops": None,
            "fraction_of_peak": None,
        }
        if flop_count is not None:
            e["flops"] = flop_count
            e["tflops"] = flop_count / sec / 1e12 if sec > 0 else None
            e["fraction_of_peak"] = e["tflops"] / peak_tflops if e["tflops"] else None
        if note:
            e["note"] = note
        return e

    def timer_runs(key):
        return [r["timer"].get(key, 0.0) for r in runs]

    stages = {}
    stages["decode"] = entry(
        [r["decode"] for r in runs],
        last["decode_frames"],
        last["decode_frames"],
        "frames",
        note="video decoding alone (PyAV thread), own pass over the input",
    )
    stages["detect"] = entry(
        [r["stage_seconds"].get("detect") for r in runs],
        n,
        n,
        "frames",
        ran="detect" in last["stage_seconds"],
        note="cut detection while decoding (PySceneDetect on a downscaled copy), inside the pipeline's decode loop",
    )
    stages["resize"] = entry(
        [r["resize"] for r in runs],
        last["resize_calls"],
        n,
        "frames",
        note="preprocess alone: host->device copy, antialiased resize, normalization",
    )
    model_stages = (
        ("vae_encode", "encode", "frames", None),
        ("unet", "denoise", "snippet_steps", "UNet with cross-frame attention + fused DDIM update"),
        ("vae_decode", "decode", "frames", None),
    )
    for stage, op, unit, note in model_stages:  # the backend calls of the main phase, as timed
        key = f"main.{op}"
        stages[stage] = entry(
            timer_runs(key), last["calls"].get(key, 0), last["items"].get(key, 0), unit, flops_of("main", op), note=note
        )
    for name in ("align", "merge"):
        stages[name] = entry(
            [r["stage_seconds"].get(name) for r in runs],
            1,
            n,
            "frames",
            ran=name in last["stage_seconds"],
            note=None if name in last["stage_seconds"] else "stage not reported by the pipeline",
        )
    if settings.refine_step > 0 and "refine" in last["stage_seconds"]:
        ref_calls = sum(v for k, v in last["calls"].items() if k.startswith("refine."))
        ref_flops = sum(flops_of("refine", op) for op in ("encode", "denoise", "decode"))
        note = "latent-averaging refinement incl. its VAE encode and decode"
        if ref_calls == 0:
            note += "; its backend calls could not be told apart from the initial inference"
        stages["refine"] = entry(
            [r["stage_seconds"]["refine"] + r["stage_seconds"].get("decode", 0.0) for r in runs],
            ref_calls,
            n,
            "frames",
            ref_flops if ref_calls else None,
            note=note,
        )
    else:
        stages["refine"] = entry([], 0, 0, "frames", ran=False, note="refine_step = 0")
    if last["write"] is not None:
        stages["write"] = entry(
            [r["write"] for r in runs],
            1,
            n,
            "frames",
            note="default outputs: npy, npz, two colorized mp4s, side-by-side mp4",
        )
    else:
        stages["write"] = entry([], 0, 0, "frames", ran=False, note="--no-write")

    e2e_runs = [r["end_to_end"] for r in runs]
    e2e = med(e2e_runs)
    total_flops = sum(s["flops"] or 0 for k, s in stages.items() if k in MODEL_STAGES and s["ran"])
    e2e_tflops = total_flops / e2e / 1e12
    end_to_end = {
        "seconds": e2e,
        "fps": n / e2e,
        "ms_per_frame": 1000.0 * e2e / n,
        "frames": n,
        "runs": e2e_runs,
        "p50": percentile(e2e_runs, 50),
        "p95": percentile(e2e_runs, 95),
        "p99": percentile(e2e_runs, 99),
        "predict_seconds": med([r["predict"] for r in runs]),
        "flops": total_flops,
        "tflops": e2e_tflops,
        "fraction_of_peak": e2e_tflops / peak_tflops,
    }
    device_peaks = [r["device_peak"] for r in runs if r["device_peak"] is not None]
    return {
        "mode": mode,
        "settings": settings.to_dict(),
        "effective_dilations": last["dilations"],
        "processed_size": list(size),
        "repeats": len(runs),
        "warmup": {"runs": 1, "frames": warmup_frames, "seconds": warmup_seconds},
        "stages": stages,
        "end_to_end": end_to_end,
        "memory": {"host_peak_bytes": host_peak, "device_peak_bytes": max(device_peaks) if device_peaks else None},
        "_shapes": last["shapes"],
    }


class _ShapeLog:
    """A backend proxy that records the input shape of every `encode`, `denoise` and `decode` call."""

    def __init__(self, backend):
        self.inner = backend
        self.shapes: set[tuple[str, tuple[int, ...]]] = set()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        self.shapes.add(("encode", tuple(frames.shape)))
        return self.inner.encode(frames)

    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step) -> torch.Tensor:
        self.shapes.add(("denoise", tuple(depth.shape)))
        return self.inner.denoise(rgb, depth, step)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.shapes.add(("decode", tuple(latents.shape)))
        return self.inner.decode(latents)


def measure_online(backend, path: Path, settings, lag: int) -> dict:
    """Push every frame of `path` through one online session: push-to-finished latency percentiles.

    The warm-up is one whole session over the same frames first, so that every call shape of the timed
    session (batches of 1 and 2 snippets as dilations come due, the first frames' shapes) has run once:
    allocations, kernel choice and any compilation stay out of the timed loop. The result says whether
    the warm-up's shapes covered the timed ones.

    Args:
        backend: The un-timed backend.
        path: The input video.
        settings: What to compute.
        lag: Frames the session may wait before it finishes a frame.

    Returns:
        The result's "online" part: frames, seconds, frames/s and latency percentiles.
    """
    from rd_engine.io.video import iter_frames
    from rd_engine.online.session import StreamSession

    frames = [(f.rgb, f.timestamp) for f in iter_frames(path, settings.start_frame, settings.frame_count)]
    warm_log = _ShapeLog(backend)
    warm = StreamSession(Pipeline(warm_log, progress=False), settings, lag)
    for rgb, ts in frames:
        warm.push(rgb, ts)
    warm.flush()
    sync(backend.device)
    timed_log = _ShapeLog(backend)
    session = StreamSession(Pipeline(timed_log, progress=False), settings, lag)
    t0 = time.perf_counter()
    done = 0
    for rgb, ts in frames:
        done += len(session.push(rgb, ts))
    done += len(session.flush())
    sync(backend.device)
    seconds = time.perf_counter() - t0
    lat = session.latency.percentiles()
    return {
        "lag": lag,
        "frames": done,
        "seconds": seconds,
        "fps": done / seconds,
        "latency_p50": lat["p50"],
        "latency_p95": lat["p95"],
        "latency_p99": lat["p99"],
        "latency_max": lat["max"],
        "warmup": {"frames": len(frames), "call_shapes": len(warm_log.shapes)},
        "warmup_covered_every_call_shape": timed_log.shapes <= warm_log.shapes,
    }
