"""`rd-engine bench`: latency and throughput of the offline pipeline, per stage and end to end.

What one measurement is (see benchmarks/README.md for how to read the JSON):

* The backend is wrapped in `TimedBackend`, a proxy that times every
  `encode` / `denoise` / `decode` call (CUDA events plus NVTX ranges on a GPU,
  `time.perf_counter` on the CPU) without touching the pipeline. Events are
  read once per run, after one synchronize, so timing adds no stalls. UNet
  time is the time of the `denoise` calls (UNet + fused DDIM update).
* Video decoding and the resize (host->device copy, antialiased resize,
  normalization) run inside the pipeline on a decoder thread and overlap the
  model, so the harness times them in their own passes over the same input.
* align, merge and refine come from `Prediction.stage_seconds`; refine also
  includes its final VAE decode (the pipeline's "decode" stage). The writers
  (`rd_engine.outputs.offline.write_outputs`, default outputs) run into a temporary
  folder and make the "write" stage.
* End to end = wall time of `Pipeline.predict` + the writers. One warm-up run
  (a short clip of the same size) comes first; then `--repeats` runs, whose
  median is reported with p50/p95/p99.
* FLOPs are counted (`torch.utils.flop_counter.FlopCounterMode`) on one call
  of every distinct shape the run used, per snippet (UNet) or per frame (VAE),
  and multiplied by the number of snippets and frames. The device's peak is a
  large matmul in the run's precision, timed on the spot.
* `--with-baseline` repeats everything with the reference implementation's
  execution strategy (one snippet per UNet call, eager, VAE batch 4, fp16 on a
  GPU, the Adam co-alignment) in the same process, so every speedup is a ratio
  from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import importlib
import json
import logging
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import torch

from rd_engine.cli.args import int_at_least
from rd_engine.errors import UserError
from rd_engine.pipeline.offline import Pipeline
from rd_engine.progress import human_bytes

log = logging.getLogger("rd_engine")

SCHEMA_VERSION = 1
STAGES = ("decode", "resize", "vae_encode", "unet", "vae_decode", "align", "merge", "refine", "write")
MODEL_STAGES = ("vae_encode", "unet", "vae_decode", "refine")  # stages with counted FLOPs
STAGE_FIELDS = ("seconds", "seconds_runs", "calls", "items", "unit", "fps", "flops", "tflops",
                "fraction_of_peak")
# Fields that may be null, with the reason (benchmarks/README.md repeats this list).
NULLABLE = {
    "stages.<stage>.flops / tflops / fraction_of_peak": "decode, resize, align, merge, write (no model FLOPs)",
    "stages.<stage>.*": "a stage that did not run (ran = false): refine with refine_step 0, write with --no-write",
    "memory.device_peak_bytes": "CPU runs",
    "machine.gpu / driver / cuda / compute_capability / gpu_memory_bytes": "no GPU (gpu_count is then 0)",
    "libraries.<name>": "library not installed",
    "input.source": "generated clip",
    "baseline.strategy.dtype_note": "GPU runs",
    "baseline": "without --with-baseline",

}
DEFAULT_TINY_RES = 128  # the tiny model at 768 px spends its time in attention over 15k tokens
DEFAULT_FRAMES = {"tiny": 16, "full": 90, "checkpoint": 90}  # 90 >= 78: dilation 25 is not capped
BASELINE_VAE_BATCH = 4
BASELINE_ALIGN_ITERS = 2000


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


class StageTimer:
    """Accumulates time per key: CUDA events on a GPU (read at `collect`), perf_counter on the CPU.

    Args:
        device: The device whose work is timed.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.reset()

    def reset(self) -> None:
        self._events: dict[str, list] = defaultdict(list)
        self._seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.items: Counter = Counter()
        self.shapes: dict[str, Counter] = defaultdict(Counter)  # key -> {shape per item: items}

    @contextlib.contextmanager
    def region(self, key: str, items: int = 0, shape: tuple | None = None):
        """Time the enclosed device work under `key`; `items` frames or snippets of `shape` each."""
        if self.cuda:
            torch.cuda.nvtx.range_push(f"rd:{key}")
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                torch.cuda.nvtx.range_pop()
                self._events[key].append((start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._seconds[key] += time.perf_counter() - t0
        self.calls[key] += 1
        self.items[key] += items
        if shape is not None:
            self.shapes[key][shape] += items

    def collect(self) -> dict[str, float]:
        """Seconds per key so far (one device synchronize, then the events are read)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            for key, events in self._events.items():
                self._seconds[key] += sum(s.elapsed_time(e) for s, e in events) / 1000.0
            self._events.clear()
        return dict(self._seconds)


class TimedBackend:
    """A backend proxy that times `encode`, `denoise` and `decode` and forwards everything else.

    Calls are keyed `"<phase>.<op>"`; the phase is `"main"` (initial inference)
    or `"refine"` (set by `_PhasedPipeline`).

    Args:
        backend: Any object with the `rd_engine.backends.base.Backend` interface.
        timer: Where the times go.
    """

    def __init__(self, backend, timer: StageTimer):
        self.inner = backend
        self.timer = timer
        self.phase = "main"

    def __getattr__(self, name):  # name, device, dtype, ddim, models, ...
        return getattr(self.inner, name)

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        with self.timer.region(f"{self.phase}.encode", frames.shape[0], tuple(frames.shape[1:])):
            return self.inner.encode(frames)

    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step) -> torch.Tensor:
        with self.timer.region(f"{self.phase}.denoise", depth.shape[0], tuple(depth.shape[1:])):
            return self.inner.denoise(rgb, depth, step)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with self.timer.region(f"{self.phase}.decode", latents.shape[0], tuple(latents.shape[1:])):
            return self.inner.decode(latents)


def _phased_pipeline_class():
    from rd_engine.pipeline.offline import Pipeline

    class _PhasedPipeline(Pipeline):
        """The pipeline unchanged, except that backend calls made by the refinement are tagged."""

        def _refine(self, *args, **kwargs):
            self.backend.phase = "refine"
            try:
                return super()._refine(*args, **kwargs)
            finally:
                self.backend.phase = "main"

    return _PhasedPipeline


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _nvtx(device: torch.device, name: str):
    """An NVTX range on a GPU (visible in Nsight Systems), nothing on the CPU."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.nvtx.range_push(name)
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()


# ---------------------------------------------------------------------------
# FLOPs and the device's peak
# ---------------------------------------------------------------------------


class _AttentionFlops:
    """Counts attention FLOPs analytically from the shapes of every fused SDPA op, and which of
    them `FlopCounterMode` does not count (e.g. the CPU flash kernel in torch 2.13)."""

    def __new__(cls):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        class Mode(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.flops = 0
                self.uncounted = 0
                self.uncounted_ops: set[str] = set()

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = str(func)
                if "scaled_dot_product" in name and "backward" not in name and len(args) >= 3:
                    q, k, v = args[:3]
                    batch = math.prod(q.shape[:-2])
                    # QK^T and PV: 2 * q_len * kv_len * (d_qk + d_v) per batch*head
                    f = 2 * batch * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
                    self.flops += f
                    if func.overloadpacket not in flop_registry:
                        self.uncounted += f
                        self.uncounted_ops.add(name)
                return func(*args, **(kwargs or {}))

        return Mode()


def count_flops(fn, *args) -> dict:
    """FLOPs of one call `fn(*args)` (matmuls, convolutions and attention; elementwise ops are
    not counted). Attention that `FlopCounterMode` misses is added from the shapes."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter, _AttentionFlops() as att:
        fn(*args)
    total = int(counter.get_total_flops()) + att.uncounted
    if att.flops == 0:
        source = "no fused attention op (any attention ran as counted matmuls)"
    elif att.uncounted:
        source = f"analytic from shapes ({', '.join(sorted(att.uncounted_ops))} not counted by FlopCounterMode)"
    else:
        source = "FlopCounterMode"
    return {"flops": total, "attention_flops": int(att.flops), "attention_source": source}


class FlopTable:
    """FLOPs per item (frame or snippet) for each (op, shape) a run used, counted once."""

    def __init__(self, backend):
        self.backend = backend  # the un-timed backend
        self.cache: dict[tuple, dict] = {}

    def per_item(self, op: str, shape: tuple) -> dict:
        key = (op, shape)
        if key not in self.cache:
            be = self.backend
            gen = torch.Generator(device="cpu").manual_seed(1)

            def rand(*s):  # never zeros: they can hide work and run faster than real data
                return torch.randn(*s, generator=gen).clamp_(-1, 1).to(be.device, be.dtype)

            if op == "encode":
                res = count_flops(be.encode, rand(1, *shape))
            elif op == "decode":
                res = count_flops(be.decode, rand(1, *shape))
            elif op == "denoise":
                step = be.ddim.schedule(1)[0]
                res = count_flops(be.denoise, rand(1, *shape), rand(1, *shape), step)
            else:
                raise ValueError(op)
            self.cache[key] = res
        return self.cache[key]

    def total(self, op: str, shapes: Counter) -> int:
        return sum(self.per_item(op, s)["flops"] * n for s, n in shapes.items())


def measure_peak_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None) -> dict:
    """Achieved TFLOP/s of a large square matmul in `dtype` on `device` (after warm-up; median).

    Args:
        device: Where to measure.
        dtype: The run's precision.
        n: Matrix size (default 8192 on a GPU, 1024 on the CPU, 512 for CPU half precision).
    """
    cuda = device.type == "cuda"
    if n is None:
        n = 8192 if cuda else (1024 if dtype == torch.float32 else 512)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    c = torch.empty(n, n, device=device, dtype=dtype)
    inner = 10 if cuda else 1
    for _ in range(20 if cuda else 2):  # clocks up, handles created
        torch.mm(a, b, out=c)
    _sync(device)
    times = []
    deadline = time.perf_counter() + (2.0 if cuda else 1.5)
    while len(times) < 5 or (len(times) < 20 and time.perf_counter() < deadline):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                torch.mm(a, b, out=c)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000.0 / inner)
        else:
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return {"tflops": 2.0 * n**3 / t / 1e12, "n": n, "dtype": str(dtype).replace("torch.", ""),
            "seconds_per_matmul": t, "samples": len(times)}


# ---------------------------------------------------------------------------
# Machine and library description
# ---------------------------------------------------------------------------


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: torch.device) -> dict:
    info = {
        "hostname": platform.node(), "platform": platform.platform(), "cpu": _cpu_name(),
        "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": None, "gpu_count": 0, "driver": None, "cuda": None, "compute_capability": None,
        "gpu_memory_bytes": None,
    }
    if torch.cuda.is_available():
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
        info["driver"] = _nvidia_driver()
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            info["gpu"] = props.name
            info["compute_capability"] = f"{props.major}.{props.minor}"
            info["gpu_memory_bytes"] = int(props.total_memory)
    return info


def library_versions() -> dict:
    from importlib import metadata

    from rd_engine.version import __version__

    out = {"python": platform.python_version(), "rd_engine": __version__}
    for dist in ("torch", "diffusers", "transformers", "numpy", "av", "triton", "onnxruntime",
                 "onnxruntime-gpu", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        return slug(torch.cuda.get_device_name(device))
    return "cpu-" + slug(_cpu_name())


# ---------------------------------------------------------------------------
# One measurement
# ---------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _frames_of(settings, path) -> int:
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


def _one_run(pipe, timed: TimedBackend, path, settings, write: bool, model_name: str) -> dict:
    """Predict (+ write) once; returns the wall times and the timer's per-key seconds."""
    from rd_engine.outputs.offline import OutputOptions, write_outputs
    from rd_engine.progress import StageClock

    device = timed.device
    timed.timer.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    with _nvtx(device, "rd:predict"):
        pred = pipe.predict(path, settings)
        _sync(device)
    t1 = time.perf_counter()
    try:
        write_s = None
        if write:
            with tempfile.TemporaryDirectory(prefix="rd-bench-out-") as tmp, _nvtx(device, "rd:write"):
                w0 = time.perf_counter()
                write_outputs(pred, Path(tmp), "bench", OutputOptions(), model_name, timed.name, StageClock(False))
                write_s = time.perf_counter() - w0
        t2 = time.perf_counter()
        device_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        return {
            "predict": t1 - t0, "end_to_end": t2 - t0, "write": write_s, "frames": pred.num_frames,
            "stage_seconds": dict(pred.stage_seconds), "timer": timed.timer.collect(),
            "calls": dict(timed.timer.calls), "items": dict(timed.timer.items),
            "shapes": {k: Counter(v) for k, v in timed.timer.shapes.items()},
            "device_peak": device_peak, "dilations": list(pred.dilations),
        }
    finally:
        close = getattr(pred, "close", None)
        if close is not None:
            close()


def measure(backend, path, settings, *, repeats: int, warmup_frames: int, write: bool, model_name: str,
            flops: FlopTable, peak: dict, mode: str) -> dict:
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
    """
    device = backend.device
    timer = StageTimer(device)
    timed = TimedBackend(backend, timer)
    pipe = _phased_pipeline_class()(timed, progress=False)
    from rd_engine.io.video import probe, processed_size

    info = probe(path)
    size = processed_size(info.width, info.height, settings.res)

    # warm-up: same size, fewer frames, few solver iterations (imports, allocations, kernel choice)
    t0 = time.perf_counter()
    warm = dataclasses.replace(settings, frame_count=warmup_frames, align_iters=min(settings.align_iters, 20))
    _one_run(pipe, timed, path, warm, write, model_name)
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
        run = _one_run(pipe, timed, path, settings, write, model_name)
        run.update(decode=dec_s, decode_frames=n_dec, resize=resize_s, resize_calls=resize_calls)
        runs.append(run)
        log.info("%s: run %d/%d: %.3f s end to end (%d frames)", mode, r + 1, repeats, run["end_to_end"],
                 run["frames"])

    host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return _summarize(runs, settings, flops, peak, mode, warmup_seconds, warmup_frames, host_peak, size)


def _summarize(runs, settings, flops: FlopTable, peak: dict, mode, warmup_seconds, warmup_frames, host_peak,
               size) -> dict:
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
        e = {"ran": True, "seconds": sec, "seconds_runs": list(seconds_runs), "calls": calls, "items": items,
             "unit": unit, "fps": n / sec if sec > 0 else None, "flops": None, "tflops": None,
             "fraction_of_peak": None}
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
    stages["decode"] = entry([r["decode"] for r in runs], last["decode_frames"], last["decode_frames"], "frames",
                             note="video decoding alone (PyAV thread), own pass over the input")
    stages["resize"] = entry([r["resize"] for r in runs], last["resize_calls"], n, "frames",
                             note="preprocess alone: host->device copy, antialiased resize, normalization")
    stages["vae_encode"] = entry(timer_runs("main.encode"), last["calls"].get("main.encode", 0),
                                 last["items"].get("main.encode", 0), "frames", flops_of("main", "encode"))
    stages["unet"] = entry(timer_runs("main.denoise"), last["calls"].get("main.denoise", 0),
                           last["items"].get("main.denoise", 0), "snippet_steps", flops_of("main", "denoise"),
                           note="UNet with cross-frame attention + fused DDIM update")
    stages["vae_decode"] = entry(timer_runs("main.decode"), last["calls"].get("main.decode", 0),
                                 last["items"].get("main.decode", 0), "frames", flops_of("main", "decode"))
    for name in ("align", "merge"):
        stages[name] = entry([r["stage_seconds"].get(name) for r in runs], 1, n, "frames",
                             ran=name in last["stage_seconds"],
                             note=None if name in last["stage_seconds"] else "stage not reported by the pipeline")
    if settings.refine_step > 0 and "refine" in last["stage_seconds"]:
        ref_calls = sum(v for k, v in last["calls"].items() if k.startswith("refine."))
        ref_flops = sum(flops_of("refine", op) for op in ("encode", "denoise", "decode"))
        note = "latent-averaging refinement incl. its VAE encode and decode"
        if ref_calls == 0:
            note += "; its backend calls could not be told apart from the initial inference"
        stages["refine"] = entry([r["stage_seconds"]["refine"] + r["stage_seconds"].get("decode", 0.0)
                                  for r in runs], ref_calls, n, "frames", ref_flops if ref_calls else None,
                                 note=note)
    else:
        stages["refine"] = entry([], 0, 0, "frames", ran=False, note="refine_step = 0")
    if last["write"] is not None:
        stages["write"] = entry([r["write"] for r in runs], 1, n, "frames",
                                note="default outputs: npy, npz, two colorized mp4s, side-by-side mp4")
    else:
        stages["write"] = entry([], 0, 0, "frames", ran=False, note="--no-write")

    e2e_runs = [r["end_to_end"] for r in runs]
    e2e = med(e2e_runs)
    total_flops = sum(s["flops"] or 0 for k, s in stages.items() if k in MODEL_STAGES and s["ran"])
    e2e_tflops = total_flops / e2e / 1e12
    end_to_end = {
        "seconds": e2e, "fps": n / e2e, "ms_per_frame": 1000.0 * e2e / n, "frames": n,
        "runs": e2e_runs, "p50": _percentile(e2e_runs, 50), "p95": _percentile(e2e_runs, 95),
        "p99": _percentile(e2e_runs, 99), "predict_seconds": med([r["predict"] for r in runs]),
        "flops": total_flops, "tflops": e2e_tflops, "fraction_of_peak": e2e_tflops / peak_tflops,
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


def flop_summary(flops: FlopTable, runs_shapes: dict) -> dict:
    """Per-call FLOP counts of the main-phase shapes (UNet per snippet, VAE per frame)."""
    out = {}
    for name, (key, op) in {"unet_per_snippet": ("main.denoise", "denoise"),
                            "vae_encoder_per_frame": ("main.encode", "encode"),
                            "vae_decoder_per_frame": ("main.decode", "decode")}.items():
        shapes = runs_shapes.get(key)
        if not shapes:
            out[name] = None
            continue
        shape = shapes.most_common(1)[0][0]
        out[name] = {"input_shape": list(shape), **flops.per_item(op, shape)}
    return out


# ---------------------------------------------------------------------------
# Models, inputs, settings
# ---------------------------------------------------------------------------


def load_models(args):
    """(models, kind, name) for --model / --checkpoint."""
    from rd_engine.model.checkpoint import full_size_random, load_checkpoint, quiet_libraries, tiny_checkpoint_cached

    quiet_libraries()
    if args.checkpoint:
        models = load_checkpoint(args.checkpoint)
        return models, "checkpoint", slug(Path(str(args.checkpoint)).name)
    if args.model == "tiny":
        return load_checkpoint(tiny_checkpoint_cached()), "tiny", "tiny"
    return full_size_random(), "full", "full"


def make_backend(kind: str, models, device: torch.device, dtype: torch.dtype):
    if kind != "pytorch":
        raise UserError(f"backend {kind!r} is not available to the benchmark yet (use pytorch)")
    from rd_engine.backends.torch_backend import TorchBackend

    return TorchBackend(models, device, dtype)


def _parse_aspect(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[:x/]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise UserError(f"--aspect must look like 16:9, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def generated_clip_size(res: int, aspect: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a generated clip whose longer edge is `res` (both even, for x264)."""
    a, b = aspect
    if a >= b:
        w, h = res, res * b / a
    else:
        w, h = res * a / b, res
    return max(8, int(round(w / 2)) * 2), max(8, int(round(h / 2)) * 2)


def baseline_settings(settings, device: torch.device, align_iters: int):
    """The reference implementation's execution strategy on the same model, size and method:
    one snippet per UNet call, VAE batch 4, fp16 on a GPU (fp32 on the CPU), the Adam solver."""
    return dataclasses.replace(
        settings, snippet_batch=1, vae_batch=BASELINE_VAE_BATCH,
        dtype="fp16" if device.type == "cuda" else "fp32", align="reference", align_iters=align_iters,
    ).validate()


def default_out_path(model: str, res: int, preset: str, backend: str, device: torch.device, mode: str) -> Path:
    name = f"{model}_{res}_{preset}_{backend}_{device_slug(device)}"
    if mode == "baseline":
        name += "_baseline"
    return Path("benchmarks") / "results" / f"{name}.json"


def measure_online(backend, path: Path, settings, lag: int) -> dict:
    """Push every frame of `path` through one online session: push-to-finished latency percentiles."""
    from rd_engine.online.session import StreamSession
    from rd_engine.io.video import iter_frames

    session = StreamSession(Pipeline(backend, progress=False), settings, lag)
    frames = [(f.rgb, f.timestamp) for f in iter_frames(path, settings.start_frame, settings.frame_count)]
    warm = StreamSession(Pipeline(backend, progress=False), settings, lag)  # allocations, kernel choice
    for rgb, ts in frames[: min(len(frames), 6)]:
        warm.push(rgb, ts)
    warm.flush()
    t0 = time.perf_counter()
    done = 0
    for rgb, ts in frames:
        done += len(session.push(rgb, ts))
    done += len(session.flush())
    seconds = time.perf_counter() - t0
    lat = session.latency.percentiles()
    return {"lag": lag, "frames": done, "seconds": seconds, "fps": done / seconds,
            "latency_p50": lat["p50"], "latency_p95": lat["p95"], "latency_p99": lat["p99"],
            "latency_max": lat["max"]}


# ---------------------------------------------------------------------------
# Output: JSON and tables
# ---------------------------------------------------------------------------


def _cell(x, width: int, spec: str, scale: float = 1.0, suffix: str = "") -> str:
    """A right-aligned table cell: `x * scale` formatted with `spec` and `suffix`, or '-' for None."""
    text = "-" if x is None else format(x if scale == 1.0 else x * scale, spec) + suffix
    return text.rjust(width)


def _human_bytes(n) -> str:
    return "-" if n is None else human_bytes(n)


def format_table(result: dict) -> str:
    """The human-readable summary of one result."""
    m, s = result["machine"], result["settings"]
    base = result.get("baseline")
    lines = [
        f"rd-engine bench: model {result['model']['name']} | {result['input']['frames']} frames "
        f"{result['input']['processed_width']}x{result['input']['processed_height']} | preset {s['preset']} "
        f"res {s['res']} | {result['backend']['name']} on {result['backend']['device']} ({s['dtype']}) | "
        f"mode {result['mode']} | {result['repeats']} repeats",
        f"machine: {m['hostname']} | {m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads) | "
        f"GPU {m['gpu'] or 'none'}" + (f" (driver {m['driver']}, CUDA {m['cuda']})" if m["gpu"] else "")
        + f" | torch {result['libraries']['torch']}",
    ]
    head = f"{'stage':<11}{'seconds':>10}{'calls':>7}{'frames/s':>10}{'GFLOP':>11}{'TFLOP/s':>9}{'%peak':>8}"
    if base:
        head += f" | {'baseline s':>10}{'speedup':>9}"
    lines += [head, "-" * len(head)]

    def row(name, e, b=None, sp=None):
        line = (f"{name:<11}{_cell(e.get('seconds'), 10, '.4f')}{_cell(e.get('calls'), 7, 'd')}"
                f"{_cell(e.get('fps'), 10, '.1f')}{_cell(e.get('flops'), 11, '.2f', 1e-9)}"
                f"{_cell(e.get('tflops'), 9, '.4f')}{_cell(e.get('fraction_of_peak'), 8, '.1f', 100, '%')}")
        if base:
            line += f" | {_cell(None if b is None else b.get('seconds'), 10, '.4f')}{_cell(sp, 9, '.2f', 1, 'x')}"
        return line

    for name in STAGES:
        e = result["stages"][name]
        if not e["ran"]:
            lines.append(f"{name:<11}  (not run: {e.get('note') or 'no reason given'})")
            continue
        b = base["stages"].get(name) if base else None
        sp = base["speedup"]["stages"].get(name) if base else None
        lines.append(row(name, e, b, sp))
    lines.append("-" * len(head))
    e2e = result["end_to_end"]
    lines.append(row("end to end", {**e2e, "calls": 1}, base["end_to_end"] if base else None,
                     base["speedup"]["end_to_end"] if base else None))
    lines.append(f"runs: p50 {e2e['p50']:.4f} s  p95 {e2e['p95']:.4f} s  p99 {e2e['p99']:.4f} s  "
                 f"({len(e2e['runs'])} runs; predict only {e2e['predict_seconds']:.4f} s; "
                 f"{e2e['ms_per_frame']:.2f} ms/frame)")
    mem = result["memory"]
    lines.append(f"memory: host peak {_human_bytes(mem['host_peak_bytes'])} (process), "
                 f"device peak {_human_bytes(mem['device_peak_bytes'])}")
    pk = result["peak_matmul"]
    lines.append(f"peak: {result['peak_tflops']:.3f} TFLOP/s ({pk['dtype']} matmul {pk['n']}^3, measured now)")
    fc = result["flop_counts"]
    if fc.get("unet_per_snippet"):
        u = fc["unet_per_snippet"]
        lines.append(f"FLOPs: UNet {u['flops'] / 1e9:.2f} GFLOP per snippet {u['input_shape']} "
                     f"(attention {u['attention_flops'] / 1e9:.2f}, {u['attention_source']})")
    for key, label in (("vae_encoder_per_frame", "VAE encoder"), ("vae_decoder_per_frame", "VAE decoder")):
        if fc.get(key):
            lines.append(f"       {label} {fc[key]['flops'] / 1e9:.2f} GFLOP per frame {fc[key]['input_shape']}")
    if base:
        st = base["strategy"]
        lines.append(f"baseline: {st['description']}; align_iters {st['align_iters']}"
                     + (f"; {st['dtype_note']}" if st.get("dtype_note") else ""))
    on = result["online"]
    lines.append(f"online (lag {on['lag']}): {on['fps']:.1f} frames/s, push-to-depth latency p50 "
                 f"{on['latency_p50'] * 1e3:.1f} ms, p95 {on['latency_p95'] * 1e3:.1f} ms, "
                 f"p99 {on['latency_p99'] * 1e3:.1f} ms")
    return "\n".join(lines)


def check_finite_json(obj, path="result") -> None:
    """Raise if any number in `obj` is NaN or infinite (json would write them as invalid tokens)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{path} is {obj}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite_json(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_finite_json(v, f"{path}[{i}]")


def write_json(result: dict, path: Path) -> None:
    from rd_engine.io.files import atomic_output

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")


# ---------------------------------------------------------------------------
# --compare
# ---------------------------------------------------------------------------


def load_result(path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict) or "schema_version" not in data or "stages" not in data:
        raise UserError(f"{path}: not an rd-engine bench result")
    if data["schema_version"] != SCHEMA_VERSION:
        raise UserError(f"{path}: schema version {data['schema_version']}, this rd-engine reads {SCHEMA_VERSION}")
    return data


def compare(path_a, path_b, force: bool = False) -> str:
    """Side-by-side table of two results; refuses different models or inputs unless `force`."""
    a, b = load_result(path_a), load_result(path_b)
    problems, warnings = [], []
    if a["model"]["name"] != b["model"]["name"]:
        problems.append(f"models differ ({a['model']['name']} vs {b['model']['name']})")
    ia, ib = a["input"], b["input"]
    if (ia["frames"], ia["processed_width"], ia["processed_height"]) != \
            (ib["frames"], ib["processed_width"], ib["processed_height"]):
        problems.append(f"inputs differ ({ia['frames']} frames {ia['processed_width']}x{ia['processed_height']} vs "
                        f"{ib['frames']} frames {ib['processed_width']}x{ib['processed_height']})")
    if problems and not force:
        raise UserError("cannot compare: " + "; ".join(problems) + " (pass --force to compare anyway)")
    warnings += [f"warning: {p}" for p in problems]
    ma, mb = a["machine"], b["machine"]
    for key in ("hostname", "cpu", "gpu", "driver"):
        if ma.get(key) != mb.get(key):
            warnings.append(f"warning: machines differ in {key}: {ma.get(key)} vs {mb.get(key)}")
    for key in ("torch", "diffusers"):
        if a["libraries"].get(key) != b["libraries"].get(key):
            warnings.append(f"warning: {key} versions differ: {a['libraries'].get(key)} vs {b['libraries'].get(key)}")
    sa, sb = a["settings"], b["settings"]
    diff = [k for k in sorted(set(sa) | set(sb)) if sa.get(k) != sb.get(k)]
    lines = warnings + [
        f"A: {path_a} ({a['mode']}, {a['backend']['name']} {sa.get('dtype')}, {ma.get('gpu') or ma.get('cpu')})",
        f"B: {path_b} ({b['mode']}, {b['backend']['name']} {sb.get('dtype')}, {mb.get('gpu') or mb.get('cpu')})",
    ]
    if diff:
        lines.append("settings that differ: " + ", ".join(f"{k} {sa.get(k)} -> {sb.get(k)}" for k in diff))
    head = f"{'stage':<11}{'A seconds':>12}{'B seconds':>12}{'A/B':>9}{'A %peak':>9}{'B %peak':>9}"
    lines += [head, "-" * len(head)]

    def row(name, ea, eb):
        sa_, sb_ = ea.get("seconds"), eb.get("seconds")
        ratio = sa_ / sb_ if sa_ and sb_ else None
        return (f"{name:<11}{_cell(sa_, 12, '.4f')}{_cell(sb_, 12, '.4f')}{_cell(ratio, 9, '.2f', 1, 'x')}"
                f"{_cell(ea.get('fraction_of_peak'), 9, '.1f', 100, '%')}"
                f"{_cell(eb.get('fraction_of_peak'), 9, '.1f', 100, '%')}")

    for name in STAGES:
        lines.append(row(name, a["stages"].get(name, {}), b["stages"].get(name, {})))
    lines.append("-" * len(head))
    lines.append(row("end to end", a["end_to_end"], b["end_to_end"]))
    lines.append(f"{'fps':<11}{a['end_to_end']['fps']:12.2f}{b['end_to_end']['fps']:12.2f}")
    lines.append(f"{'p95 s':<11}{a['end_to_end']['p95']:12.4f}{b['end_to_end']['p95']:12.4f}")
    lines.append(f"{'peak TF/s':<11}{a['peak_tflops']:12.3f}{b['peak_tflops']:12.3f}")
    lines.append(f"{'dev. mem':<11}{_human_bytes(a['memory']['device_peak_bytes']):>12}"
                 f"{_human_bytes(b['memory']['device_peak_bytes']):>12}")
    lines.append("A/B > 1: B is faster")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


_nonneg_int = int_at_least(0)
_pos_int = int_at_least(1)


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `bench` command to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "bench", help="latency and throughput benchmark (per stage, end to end, FLOPs, baseline ratio)",
        description="Time the offline pipeline per stage and end to end, count FLOPs, measure the device's "
                    "peak, and optionally the reference execution strategy in the same run. Results are "
                    "printed as a table and written as JSON (see benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--lag", type=int, default=0, help="lag of the online-mode latency measurement (frames)")
    src = p.add_argument_group("model and device")
    src.add_argument("--model", choices=["tiny", "full"], default="tiny",
                     help="tiny random-weight checkpoint (CI smoke) or the full-size architecture with random "
                          "weights (speed does not depend on weights; meant for a GPU)")
    src.add_argument("-c", "--checkpoint", default=None, help="a real checkpoint folder (overrides --model)")
    src.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    src.add_argument("--backend", default="pytorch", choices=["pytorch"], help="inference backend")
    src.add_argument("--threads", type=_pos_int, default=None,
                     help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)")

    inp = p.add_argument_group("input")
    inp.add_argument("--input", type=Path, default=None,
                     help="a video: its aspect ratio and frames are used (default: a generated clip)")
    inp.add_argument("--frames", type=_pos_int, default=None,
                     help=f"frames (generated clip, or the first N of --input); default "
                          f"{DEFAULT_FRAMES['tiny']} for tiny, {DEFAULT_FRAMES['full']} otherwise")
    inp.add_argument("--aspect", default="16:9", help="aspect ratio of the generated clip")

    m = p.add_argument_group("method (explicit values override the preset)")
    m.add_argument("-p", "--preset", default="fast", choices=["fast", "fast1024", "full", "paper"])
    m.add_argument("--res", type=_pos_int, nargs="+", default=None,
                   help=f"longer edge(s); several values give several results (default: the preset's; "
                        f"{DEFAULT_TINY_RES} for --model tiny)")
    m.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None,
                   help="precision (preset value on GPU; fp32 on CPU unless given)")
    m.add_argument("-d", "--dilations", type=_pos_int, nargs="+", default=None)
    m.add_argument("--refine-step", type=_nonneg_int, default=None)
    m.add_argument("--align", choices=["reference", "fast", "robust"], default=None)
    m.add_argument("--align-iters", type=_pos_int, default=None)
    m.add_argument("--snippet-batch", type=_pos_int, default=None)
    m.add_argument("--vae-batch", type=_pos_int, default=None)
    m.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the initial noise")

    b = p.add_argument_group("measurement")
    b.add_argument("--repeats", type=_pos_int, default=3, help="measured runs after the warm-up")
    b.add_argument("--warmup-frames", type=_pos_int, default=12, help="frames of the warm-up run (at most --frames)")
    b.add_argument("--write", action=argparse.BooleanOptionalAction, default=True,
                   help="time the writers (default outputs into a temporary folder)")
    b.add_argument("--baseline", action="store_true",
                   help="measure only the reference execution strategy (one snippet per UNet call, eager, "
                        "VAE batch 4, fp16 on GPU, Adam co-alignment)")
    b.add_argument("--with-baseline", action="store_true",
                   help="also measure the baseline in this run and report speedups")
    b.add_argument("--baseline-align-iters", type=_pos_int, default=BASELINE_ALIGN_ITERS,
                   help="Adam iterations of the baseline's co-alignment (the reference uses 2000)")
    b.add_argument("--peak-n", type=_pos_int, default=None,
                   help="matrix size of the peak matmul (default 8192 on GPU, 1024 on CPU)")

    o = p.add_argument_group("output")
    o.add_argument("-o", "--out", type=Path, default=None,
                   help="result JSON (default benchmarks/results/<model>_<res>_<preset>_<backend>_<device>.json; "
                        "with several --res, _<res> is added to the name)")
    o.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), default=None,
                   help="print two results side by side (nothing is measured)")
    o.add_argument("--force", action="store_true", help="--compare results of different models or inputs")
    o.add_argument("-q", "--quiet", action="store_true", help="only the table")
    o.add_argument("-v", "--verbose", action="store_true", help="progress messages")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args) -> int:
    """Run `rd-engine bench` with parsed arguments; returns the exit status."""
    if args.compare:
        print(compare(*args.compare, force=args.force))
        return 0
    try:
        run_bench(args)
    except (MemoryError, torch.cuda.OutOfMemoryError) as e:
        raise UserError(f"out of memory ({type(e).__name__}); lower --res, --frames, --snippet-batch or "
                        "--vae-batch") from None
    return 0


def run_bench(args) -> list[tuple[Path, dict]]:
    """Measure every requested resolution; returns (path written, result) per resolution."""
    from rd_engine.testing.media import write_test_video
    from rd_engine.settings import pick_device, resolve
    from rd_engine.io.video import probe, processed_size

    if args.baseline and args.with_baseline:
        raise UserError("--baseline measures only the baseline; --with-baseline adds it to a normal run: pick one")
    if args.input is not None and not args.input.exists():
        raise UserError(f"{args.input}: file not found")
    _parse_aspect(args.aspect)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    models, model_kind, model_name = load_models(args)
    if model_kind != "tiny" and device.type == "cpu":
        log.warning("the full-size model on a CPU is very slow; the full-size benchmark is meant for a GPU")
    load_seconds = time.perf_counter() - t_start

    res_list = args.res or [DEFAULT_TINY_RES if model_kind == "tiny" and not args.checkpoint else None]
    frames = args.frames or DEFAULT_FRAMES[model_kind]
    machine, libs = machine_info(device), library_versions()
    out: list[tuple[Path, dict]] = []
    peaks: dict[torch.dtype, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rd-bench-") as tmp:
        for res in res_list:
            overrides = {"res": res, "dtype": args.dtype, "dilations": args.dilations,
                         "refine_step": args.refine_step, "align": args.align, "align_iters": args.align_iters,
                         "snippet_batch": args.snippet_batch, "vae_batch": args.vae_batch, "seed": args.seed}
            settings, notes = resolve(args.preset, overrides, device)
            if args.input is not None:
                path = args.input
                settings = dataclasses.replace(settings, frame_count=args.frames or 0)
                info = probe(path)
                src_size = (info.width, info.height)
                source = str(path)
            else:
                src_size = generated_clip_size(settings.res, _parse_aspect(args.aspect))
                path = Path(tmp) / f"clip_{src_size[0]}x{src_size[1]}_{frames}.mp4"
                if not path.exists():
                    write_test_video(path, n_frames=frames, width=src_size[0], height=src_size[1], fps=24)
                source = None
            n_frames = _frames_of(settings, path)
            size = processed_size(src_size[0], src_size[1], settings.res)
            warmup_frames = min(args.warmup_frames, n_frames)

            primary_settings = settings
            mode = "optimized"
            if args.baseline:
                primary_settings = baseline_settings(settings, device, args.baseline_align_iters)
                mode = "baseline"
            backend = make_backend(args.backend, models, device, primary_settings.torch_dtype())
            flops = FlopTable(backend)
            dtype = primary_settings.torch_dtype()
            if dtype not in peaks:
                peaks[dtype] = measure_peak_tflops(device, dtype, args.peak_n)
            peak = peaks[dtype]
            res_out = measure(backend, path, primary_settings, repeats=args.repeats, warmup_frames=warmup_frames,
                              write=args.write, model_name=model_name, flops=flops, peak=peak, mode=mode)
            flop_counts = flop_summary(flops, res_out.pop("_shapes"))
            online = measure_online(backend, path, primary_settings, args.lag)

            baseline = None
            if args.with_baseline:
                bs = baseline_settings(settings, device, args.baseline_align_iters)
                bdtype = bs.torch_dtype()
                if bdtype == dtype:
                    bbackend, bflops = backend, flops
                else:  # re-casts the shared modules: the optimized run is finished by now
                    bbackend = make_backend(args.backend, models, device, bdtype)
                    bflops = FlopTable(bbackend)
                if bdtype not in peaks:
                    peaks[bdtype] = measure_peak_tflops(device, bdtype, args.peak_n)
                baseline = measure(bbackend, path, bs, repeats=args.repeats, warmup_frames=warmup_frames,
                                   write=args.write, model_name=model_name, flops=bflops, peak=peaks[bdtype],
                                   mode="baseline")
                baseline["peak_tflops"] = peaks[bdtype]["tflops"]
                baseline["strategy"] = _baseline_strategy(device, args.baseline_align_iters)
                baseline["speedup"] = _speedups(baseline, res_out)

            result = {
                "schema_version": SCHEMA_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "options": _options(args),
                "machine": machine,
                "libraries": libs,
                "backend": {"name": backend.name, "device": str(device), "dtype": primary_settings.dtype,
                            "execution": "eager", "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
                            "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)},
                "model": _model_info(models, model_kind, model_name, load_seconds),
                "settings": {"preset": args.preset, **res_out.pop("settings"), "notes": notes},
                "input": {"source": source, "generated": source is None, "frames": n_frames,
                          "width": src_size[0], "height": src_size[1],
                          "processed_width": size[0], "processed_height": size[1]},
                "mode": res_out.pop("mode"),
                **{k: v for k, v in res_out.items() if not k.startswith("_")},
                "peak_tflops": peak["tflops"],
                "peak_matmul": peak,
                "flop_counts": flop_counts,
                "baseline": baseline,
                "online": online,
                "nullable": NULLABLE,
            }
            if baseline is not None:
                baseline["settings"] = {"preset": args.preset, **baseline["settings"]}
                baseline.pop("_shapes", None)
            check_finite_json(result)
            if args.out is not None:
                target = args.out if len(res_list) == 1 else \
                    args.out.with_name(f"{args.out.stem}_{settings.res}{args.out.suffix or '.json'}")
            else:
                target = default_out_path(model_name, settings.res, args.preset, args.backend, device, mode)
            write_json(result, target)
            print(format_table(result), flush=True)
            print(f"result: {target}", flush=True)
            out.append((target, result))
    return out


def _options(args) -> dict:
    """The command-line options of this run, as JSON values."""
    out = {}
    for k, v in vars(args).items():
        if callable(v):
            continue
        out[k] = str(v) if isinstance(v, Path) else [str(x) if isinstance(x, Path) else x for x in v] \
            if isinstance(v, (list, tuple)) else v
    return out


def _baseline_strategy(device: torch.device, align_iters: int) -> dict:
    return {
        "description": "reference execution strategy: one snippet per UNet call, eager PyTorch, VAE batch "
                       f"{BASELINE_VAE_BATCH}, {'fp16' if device.type == 'cuda' else 'fp32'}, "
                       "Adam co-alignment (lr 1e-3)",
        "snippet_batch": 1, "vae_batch": BASELINE_VAE_BATCH, "execution": "eager",
        "dtype": "fp16" if device.type == "cuda" else "fp32",
        "dtype_note": None if device.type == "cuda" else
        "fp32 on the CPU (CPU half-precision convolutions are many times slower; the reference's fp16 is a GPU choice)",
        "align": "reference", "align_iters": align_iters,
        "align_iters_reduced": align_iters != BASELINE_ALIGN_ITERS,
    }


def _speedups(baseline: dict, primary: dict) -> dict:
    stages = {}
    for name in STAGES:
        b, p = baseline["stages"][name], primary["stages"][name]
        if b["ran"] and p["ran"] and b["seconds"] and p["seconds"]:
            stages[name] = b["seconds"] / p["seconds"]
    return {"end_to_end": baseline["end_to_end"]["seconds"] / primary["end_to_end"]["seconds"], "stages": stages}


def _model_info(models, kind: str, name: str, load_seconds: float) -> dict:
    def params(module):
        try:
            return int(sum(p.numel() for p in module.parameters()))
        except Exception:
            return None

    return {"kind": kind, "name": name, "source": str(models.source) if models.source else models.name,
            "random_weights": kind != "checkpoint", "unet_parameters": params(models.unet),
            "vae_parameters": params(models.vae), "load_seconds": load_seconds}


def main(argv: list[str] | None = None) -> int:
    """`python -m rd_engine.bench ...`: the same command without the rd-engine CLI around it."""
    parser = argparse.ArgumentParser(prog="python -m rd_engine.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rd-engine: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False
    try:
        return cmd_bench(args)
    except UserError as e:
        print(f"rd-engine: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
