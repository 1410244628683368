"""Each fast path against the eager path, side by side in one process (part of `benchmarks/gpu/check.sh`).

    python3 -m benchmarks.gpu.fastpaths --out fastpaths.json [--device cuda] [--model full] [--res 768]
        [--frames 90] [--set eager|compile|write] [--only NAME ...]

One model and one generated clip serve every variant; each variant is one warm-up (12 frames) and one
timed run of the offline pipeline without writing (`rd_engine.bench.measure.measure`, `repeats=1`), or
for the online variants one warm-up session and one timed session at lag 0. The result file is written
again after every variant, so a step cut by its time box still returns what it measured. Each variant's
`speedup` is the eager variant's seconds over its own: `model_stages` (VAE encode + UNet + VAE decode, as
timed per call) and `pipeline` (the whole prediction, no writing); online variants give frames/s and
push-to-depth latency.

Sets: `eager` (layouts, cuDNN autotuning, batch sizes, precision, attention kernels, host solver threads,
the device snippet budget, online lag 0), `compile` (torch.compile "default" offline, and
"reduce-overhead", i.e. CUDA graphs, for the online per-frame calls), `write` (the writers serial
against parallel, `OutputOptions.write_threads`, and an online run's writing inline against on background
threads beside the model: measurable on a CPU too). Variants a device cannot run
(cuDNN's on a CPU) are listed under `skipped` with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch

EAGER = "eager"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict = dataclasses.field(default_factory=dict)  # settings
    fast: dict = dataclasses.field(default_factory=dict)  # FastPaths fields
    align_threads: int | None = None
    align_on: str = "host"
    device_budget: float | str = 4.0
    online: bool = False
    cuda_only: bool = False


SETS: dict[str, list[Variant]] = {
    "eager": [  # the likeliest defaults first: a step cut by its box keeps what it measured
        Variant(EAGER),
        Variant("channels_last+cudnn_benchmark", fast={"channels_last": True, "cudnn_benchmark": True}, cuda_only=True),
        Variant("channels_last", fast={"channels_last": True}),
        Variant("cudnn_benchmark", fast={"cudnn_benchmark": True}, cuda_only=True),
        Variant("vae_batch8", overrides={"vae_batch": 8}),
        Variant("vae_batch16", overrides={"vae_batch": 16}),
        Variant("attention_flash", fast={"attention": "flash"}),
        Variant("attention_cudnn", fast={"attention": "cudnn"}, cuda_only=True),
        Variant("snippet_batch16", overrides={"snippet_batch": 16}),
        Variant("bf16", overrides={"dtype": "bf16"}),
        Variant("align_threads1", align_threads=1),
        Variant("align_on_device", align_on="device", cuda_only=True),
        Variant("device_budget_auto", device_budget="auto", cuda_only=True),
        Variant("online_eager", online=True),
        Variant("attention_efficient", fast={"attention": "efficient"}, cuda_only=True),
    ],
    "compile": [
        Variant(EAGER),
        Variant("online_eager", online=True),
        Variant("online_reduce_overhead", fast={"compile": "reduce-overhead"}, online=True, cuda_only=True),
        Variant("compile_default", fast={"compile": "default"}),
    ],
    "write": [],  # measured by write_overlap
}


def _model_seconds(summary: dict) -> float:
    from rd_engine.bench.schema import MODEL_STAGES

    return sum(s["seconds"] for k, s in summary["stages"].items() if k in MODEL_STAGES and s["ran"])


def run_variant(v: Variant, models, device, base_settings, clip: Path, flops, peak) -> dict:
    """One variant: its warm-up and timed run (offline, no writing) or its online sessions."""
    from rd_engine.backends.fast import FastPaths
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.bench.measure import measure, measure_online
    from rd_engine.pipeline.offline import Budgets

    settings = dataclasses.replace(base_settings, **v.overrides).validate()
    be = TorchBackend(models, device, settings.torch_dtype(), FastPaths(**v.fast))
    t0 = time.perf_counter()
    if v.online:
        online = measure_online(be, clip, settings, lag=0)
        return {"online": online, "seconds_with_warmup": time.perf_counter() - t0}
    summary = measure(
        be,
        clip,
        settings,
        repeats=1,
        warmup_frames=min(12, settings.frame_count or 12),
        write=False,
        model_name="bench",
        flops=flops,
        peak=peak,
        mode="optimized",
        align_threads=v.align_threads,
        align_on=v.align_on,
        budgets=Budgets(device_snippets=Budgets.device_value(v.device_budget)),
    )
    summary.pop("_shapes", None)
    return {
        "pipeline_seconds": summary["end_to_end"]["predict_seconds"],
        "model_stage_seconds": _model_seconds(summary),
        "stages": {k: s["seconds"] for k, s in summary["stages"].items() if s["ran"]},
        "device_peak_bytes": summary["memory"]["device_peak_bytes"],
        "warmup_seconds": summary["warmup"]["seconds"],
        "seconds_with_warmup": time.perf_counter() - t0,
    }


def write_overlap(models, device, base_settings, clip: Path, threads: int) -> dict:
    """The default outputs of one prediction written serially and by `threads` parallel writers."""
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.outputs.offline import OutputOptions, write_outputs
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.progress import StageClock

    be = TorchBackend(models, device, base_settings.torch_dtype())
    t0 = time.perf_counter()
    pred = Pipeline(be, progress=False).predict(clip, base_settings)
    predict_s = time.perf_counter() - t0
    out: dict = {"predict_seconds": predict_s, "frames": pred.num_frames, "write_seconds": {}}
    try:
        for n in (1, threads, 1, threads):  # twice each, alternating: the second pair shows the spread
            with tempfile.TemporaryDirectory(prefix="rd-write-") as tmp:
                t = time.perf_counter()
                write_outputs(pred, Path(tmp), "w", OutputOptions(write_threads=n), "bench", be.name, StageClock(False))
                out["write_seconds"].setdefault(str(n), []).append(time.perf_counter() - t)
    finally:
        pred.close()
    serial, parallel = (min(out["write_seconds"][str(n)]) for n in (1, threads))
    out["threads"] = threads
    out["speedup"] = serial / parallel
    out["end_to_end_serial"] = predict_s + serial
    out["end_to_end_parallel_writers"] = predict_s + parallel
    return out


def stream_write_overlap(models, device, base_settings, clip: Path, threads: int, save=None, lag: int = 2) -> dict:
    """An online run (`run_stream`) three ways, twice each, alternating: the model alone (no outputs), the
    default outputs written inline, and written on `threads` background threads beside the model.

    Writing inline costs `inline - model_only`; written beside the model, end to end can approach
    `max(model_only, that)` instead of the sum. `save` is called after every run (a cut keeps what ran).
    """
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.outputs.offline import OutputOptions
    from rd_engine.outputs.stream import run_stream
    from rd_engine.pipeline.offline import Pipeline

    pipe = Pipeline(TorchBackend(models, device, base_settings.torch_dtype()), progress=False)
    ways = {
        "model_only": OutputOptions(npy=False, npz=False, cmaps=[], sbs=False),
        "inline": OutputOptions(write_threads=1),
        "background": OutputOptions(write_threads=threads),
    }
    out: dict = {"lag": lag, "threads": threads, "torch_threads": torch.get_num_threads(), "seconds": {}}
    for _ in range(2):
        for name, opts in ways.items():
            with tempfile.TemporaryDirectory(prefix="rd-stream-write-") as tmp:
                t = time.perf_counter()
                run_stream(pipe, base_settings, lag, clip, Path(tmp), "w", opts, "bench")
                out["seconds"].setdefault(name, []).append(time.perf_counter() - t)
            if save is not None:
                save(out)
    best = {k: min(v) for k, v in out["seconds"].items()}
    writing = max(best["inline"] - best["model_only"], 0.0)
    out["writing_inline_seconds"] = writing
    out["ideal_background_seconds"] = max(best["model_only"], writing)
    out["speedup"] = best["inline"] / best["background"]
    if save is not None:
        save(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu.fastpaths", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--model", choices=["tiny", "full"], default="full")
    p.add_argument("--res", type=int, default=768)
    p.add_argument("--frames", type=int, default=90)
    p.add_argument("--set", dest="which", choices=sorted(SETS), default="eager")
    p.add_argument("--only", nargs="+", default=None, help="these variants of the set (eager always runs first)")
    p.add_argument("--write-threads", type=int, default=4, help="parallel writers of the write set")
    p.add_argument("--stream-frames", type=int, default=24, help="frames of the write set's online runs (0: none)")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch's intra-op threads (0: its default); 1 on a CPU leaves the other cores to the writers, "
        "as a GPU does",
    )
    a = p.parse_args(argv)

    from rd_engine.bench.flops import FlopTable, measure_peak_tflops
    from rd_engine.bench.machine import library_versions, machine_info
    from rd_engine.bench.runner import generated_clip_size
    from rd_engine.model.checkpoint import load_checkpoint, quiet_libraries
    from rd_engine.model.factory import full_size_random, tiny_checkpoint_cached
    from rd_engine.settings import resolve
    from rd_engine.testing.media import write_test_video

    quiet_libraries()
    if a.torch_threads:
        torch.set_num_threads(a.torch_threads)
    device = torch.device(a.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    t0 = time.perf_counter()
    if a.model == "full":
        models = full_size_random(device=device, dtype=dtype)
    else:
        models = load_checkpoint(tiny_checkpoint_cached())
    result: dict = {
        "machine": machine_info(device),
        "libraries": library_versions(),
        "set": a.which,
        "model": a.model,
        "model_seconds_to_build": time.perf_counter() - t0,
        "variants": {},
        "skipped": {},
    }
    settings, _ = resolve(
        "fast", {"res": a.res, "seed": 0, "dtype": "fp16" if device.type == "cuda" else "fp32"}, device
    )
    settings = dataclasses.replace(settings, frame_count=a.frames).validate()
    result["settings"] = settings.to_dict()

    def save() -> None:
        tmp = a.out.with_name(a.out.name + ".partial")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, a.out)

    with tempfile.TemporaryDirectory(prefix="rd-fast-") as tmp:
        w, h = generated_clip_size(a.res, (16, 9))
        clip = Path(tmp) / "clip.mp4"
        t = time.perf_counter()
        write_test_video(clip, n_frames=a.frames, width=w, height=h, fps=24)
        result["clip"] = {"width": w, "height": h, "frames": a.frames, "seconds_to_write": time.perf_counter() - t}
        if a.which == "write":
            result["write_overlap"] = write_overlap(models, device, settings, clip, a.write_threads)
            save()
            print(json.dumps(result["write_overlap"]), flush=True)
            if a.stream_frames:

                def keep(part: dict) -> None:
                    result["stream_write_overlap"] = part
                    save()

                online = dataclasses.replace(settings, frame_count=min(a.stream_frames, a.frames)).validate()
                part = stream_write_overlap(models, device, online, clip, a.write_threads, keep)
                print(json.dumps(part), flush=True)
            return 0
        from rd_engine.backends.torch_backend import TorchBackend

        flops = FlopTable(TorchBackend(models, device, settings.torch_dtype()))
        peak = measure_peak_tflops(device, settings.torch_dtype(), None if device.type == "cuda" else 256)
        result["peak_tflops"] = peak["tflops"]
        for v in SETS[a.which]:
            if a.only and v.name != EAGER and v.name not in a.only:
                continue
            if v.cuda_only and device.type != "cuda":
                result["skipped"][v.name] = "CUDA only"
                continue
            try:
                r = run_variant(v, models, device, settings, clip, flops, peak)
            except Exception as e:  # one variant's failure (a kernel not available here) must not end the step
                result["skipped"][v.name] = f"failed: {type(e).__name__}: {str(e)[:300]}"
                save()
                continue
            r["fast"], r["overrides"], r["align_threads"] = v.fast, v.overrides, v.align_threads
            r["align_on"] = v.align_on
            r["device_budget"] = v.device_budget
            base = result["variants"].get("online_eager" if v.online else EAGER)
            if base is not None and not v.online:
                r["speedup"] = {
                    "model_stages": base["model_stage_seconds"] / r["model_stage_seconds"],
                    "pipeline": base["pipeline_seconds"] / r["pipeline_seconds"],
                }
            elif base is not None:
                r["speedup"] = {"online_fps": r["online"]["fps"] / base["online"]["fps"]}
            result["variants"][v.name] = r
            save()
            print(f"{v.name}: " + json.dumps(r.get("speedup") or r.get("online") or r["pipeline_seconds"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
