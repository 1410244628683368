"""`run_bench`: one benchmark per requested resolution, from models and inputs to the written result.

It loads the models, makes the input (or probes `--input`), resolves the settings and the baseline's
execution strategy, measures (`rd_engine.bench.measure`), and assembles, prints and writes the result
(`rd_engine.bench.report`).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import re
import tempfile
import time
from pathlib import Path

import torch

from rd_engine.bench.flops import FlopTable, flop_summary, measure_peak_tflops
from rd_engine.bench.machine import device_slug, library_versions, machine_info, slug
from rd_engine.bench.measure import count_frames, measure, measure_online
from rd_engine.bench.report import check_finite_json, format_table, write_json
from rd_engine.bench.schema import (
    BASELINE_ALIGN_ITERS,
    BASELINE_VAE_BATCH,
    DEFAULT_FRAMES,
    DEFAULT_TINY_RES,
    MODEL_STAGES,
    NULLABLE,
    SCHEMA_VERSION,
    STAGES,
)
from rd_engine.errors import UserError

log = logging.getLogger("rd_engine")


def load_models(args, device: torch.device | None = None):
    """(models, kind, name) for --model / --checkpoint; the full-size random model is made on `device`
    in the run's precision (`--dtype`, else fp16 on a GPU and fp32 on the CPU).
    """
    from rd_engine.model.checkpoint import load_checkpoint, quiet_libraries
    from rd_engine.model.factory import full_size_random, tiny_checkpoint_cached

    quiet_libraries()
    if args.checkpoint:
        models = load_checkpoint(args.checkpoint)
        return models, "checkpoint", slug(Path(str(args.checkpoint)).name)
    if args.model == "tiny":
        return load_checkpoint(tiny_checkpoint_cached()), "tiny", "tiny"
    dev = device or torch.device("cpu")
    names = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dtype = (
        names[args.dtype] if getattr(args, "dtype", None) else (torch.float16 if dev.type == "cuda" else torch.float32)
    )
    return full_size_random(device=dev, dtype=dtype), "full", "full"


EXECUTION = {"pytorch": "eager", "onnxruntime": "onnxruntime", "aoti": "aot-compiled", "tensorrt": "tensorrt"}


def make_backend(kind: str, models, device: torch.device, dtype: torch.dtype, engine: Path | None = None, fast=None):
    """The `kind` backend on `device` and `dtype`: PyTorch on `models`, or an engine folder's backend.

    Raises:
        UserError: An engine backend without an engine folder, or one that cannot run here.
    """
    from rd_engine.backends.torch_backend import TorchBackend

    if kind == "pytorch":
        return TorchBackend(models, device, dtype, fast)
    if engine is None:
        raise UserError(f"--backend {kind} runs an engine folder: give it with --engine (build: rd-engine build)")
    from rd_engine.backends.select import open_backend

    return open_backend(engine, models, kind, device, dtype)


class EmptyingCache:
    """The baseline's backend: empties PyTorch's CUDA cache after every VAE call, as the reference does
    after each VAE batch (its emptying after each dilation has no counterpart: this pipeline interleaves
    the dilations). A no-op on other devices; everything else is forwarded.
    """

    def __init__(self, backend):
        self.inner = backend

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _empty(self) -> None:
        if self.inner.device.type == "cuda":
            torch.cuda.empty_cache()

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        out = self.inner.encode(frames)
        self._empty()
        return out

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        out = self.inner.decode(latents)
        self._empty()
        return out

    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step) -> torch.Tensor:
        return self.inner.denoise(rgb, depth, step)


def parse_aspect(text: str) -> tuple[int, int]:
    """`--aspect` ("16:9", "16x9" or "16/9") as (width, height); raises `UserError` otherwise."""
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
    one snippet per UNet call, VAE batch 4, fp16 on a GPU (fp32 on the CPU), the Adam solver.
    """
    return dataclasses.replace(
        settings,
        snippet_batch=1,
        vae_batch=BASELINE_VAE_BATCH,
        dtype="fp16" if device.type == "cuda" else "fp32",
        align="reference",
        align_iters=align_iters,
    ).validate()


def default_out_path(model: str, res: int, preset: str, backend: str, device: torch.device, mode: str) -> Path:
    """benchmarks/results/<model>_<res>_<preset>_<backend>_<device>[_baseline].json."""
    name = f"{model}_{res}_{preset}_{backend}_{device_slug(device)}"
    if mode == "baseline":
        name += "_baseline"
    return Path("benchmarks") / "results" / f"{name}.json"


def run_bench(args) -> list[tuple[Path, dict]]:
    """Measure every requested resolution; prints each result's table and writes its JSON.

    Args:
        args: The parsed `rd-engine bench` options (`rd_engine.cli.bench.add_bench_parser`).

    Returns:
        (path written, result) per resolution.
    """
    from rd_engine.io.video import probe, processed_size
    from rd_engine.settings import pick_device, resolve
    from rd_engine.testing.media import write_test_video

    if args.baseline and args.with_baseline:
        raise UserError("--baseline measures only the baseline; --with-baseline adds it to a normal run: pick one")
    if args.input is not None and not args.input.exists():
        raise UserError(f"{args.input}: file not found")
    parse_aspect(args.aspect)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    models, model_kind, model_name = load_models(args, device)
    if model_kind != "tiny" and device.type == "cpu":
        log.warning("the full-size model on a CPU is very slow; the full-size benchmark is meant for a GPU")
    load_seconds = time.perf_counter() - t_start

    from rd_engine.backends.fast import FastPaths
    from rd_engine.pipeline.offline import Budgets

    fast = FastPaths.from_args(args)
    budgets = Budgets(device_snippets=Budgets.device_value(args.device_snippet_budget))
    res_list = args.res or [DEFAULT_TINY_RES if model_kind == "tiny" and not args.checkpoint else None]
    frames = args.frames or DEFAULT_FRAMES[model_kind]
    machine, libs = machine_info(device), library_versions()
    out: list[tuple[Path, dict]] = []
    peaks: dict[torch.dtype, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rd-bench-") as tmp:
        for res in res_list:
            overrides = {
                "res": res,
                "dtype": args.dtype,
                "dilations": args.dilations,
                "refine_step": args.refine_step,
                "align": args.align,
                "align_iters": args.align_iters,
                "snippet_batch": args.snippet_batch,
                "vae_batch": args.vae_batch,
                "seed": args.seed,
            }
            settings, notes = resolve(args.preset, overrides, device)
            if args.input is not None:
                path = args.input
                settings = dataclasses.replace(settings, frame_count=args.frames or 0)
                info = probe(path)
                src_size = (info.width, info.height)
                source = str(path)
            else:
                src_size = generated_clip_size(settings.res, parse_aspect(args.aspect))
                path = Path(tmp) / f"clip_{src_size[0]}x{src_size[1]}_{frames}.mp4"
                if not path.exists():
                    write_test_video(path, n_frames=frames, width=src_size[0], height=src_size[1], fps=24)
                source = None
            n_frames = count_frames(settings, path)
            size = processed_size(src_size[0], src_size[1], settings.res)
            warmup_frames = min(args.warmup_frames, n_frames)

            primary_settings = settings
            mode = "optimized"
            if args.baseline:
                primary_settings = baseline_settings(settings, device, args.baseline_align_iters)
                mode = "baseline"
            dtype = primary_settings.torch_dtype()
            backend = make_backend(args.backend, models, device, dtype, args.engine, fast)
            # FLOPs are the model's: counted on the eager PyTorch modules whatever runs them
            eager = args.backend == "pytorch" and not fast.any
            reference = backend if eager else make_backend("pytorch", models, device, dtype)
            flops = FlopTable(reference)
            if dtype not in peaks:
                peaks[dtype] = measure_peak_tflops(device, dtype, args.peak_n)
            peak = peaks[dtype]
            if args.out is not None:
                target = (
                    args.out
                    if len(res_list) == 1
                    else args.out.with_name(f"{args.out.stem}_{settings.res}{args.out.suffix or '.json'}")
                )
            else:
                target = default_out_path(model_name, settings.res, args.preset, args.backend, device, mode)

            def partial(what: str, summary: dict, target=target) -> None:
                """What is measured so far, under the result's name (replaced by the full result)."""
                done = {k: v for k, v in summary.items() if not k.startswith("_")}
                write_json({"schema_version": SCHEMA_VERSION, "partial": True, "measuring": what, what: done}, target)

            res_out = measure(
                backend,
                path,
                primary_settings,
                repeats=args.repeats,
                warmup_frames=warmup_frames,
                write=args.write,
                model_name=model_name,
                flops=flops,
                peak=peak,
                mode=mode,
                align_threads=args.align_threads,
                align_on=args.align_on,
                write_threads=args.write_threads,
                budgets=budgets,
                on_repeat=lambda summary, mode=mode: partial(mode, summary),
            )
            partial(mode, res_out)
            flop_counts = flop_summary(flops, res_out.pop("_shapes"))
            online = measure_online(backend, path, primary_settings, args.lag)

            baseline = None
            if args.with_baseline:
                bs = baseline_settings(settings, device, args.baseline_align_iters)
                bdtype = bs.torch_dtype()
                if bdtype == dtype:  # the baseline is the reference strategy on the eager PyTorch backend
                    bbackend, bflops = reference, flops
                else:  # re-casts the shared modules: the optimized run is finished by now
                    bbackend = make_backend("pytorch", models, device, bdtype)
                    bflops = FlopTable(bbackend)
                if bdtype not in peaks:
                    peaks[bdtype] = measure_peak_tflops(device, bdtype, args.peak_n)
                baseline = measure(
                    EmptyingCache(bbackend),
                    path,
                    bs,
                    repeats=args.repeats,
                    warmup_frames=warmup_frames,
                    write=args.write,
                    model_name=model_name,
                    flops=bflops,
                    peak=peaks[bdtype],
                    mode="baseline",
                    on_repeat=lambda summary: partial("baseline", summary),
                )
                baseline["peak_tflops"] = peaks[bdtype]["tflops"]
                baseline["strategy"] = _baseline_strategy(device, args.baseline_align_iters)
                baseline["speedup"] = _speedups(baseline, res_out)

            result = {
                "schema_version": SCHEMA_VERSION,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "options": _options(args),
                "machine": machine,
                "libraries": libs,
                "backend": {
                    "name": backend.name,
                    "device": str(device),
                    "dtype": primary_settings.dtype,
                    "execution": EXECUTION[backend.name],
                    "engine": None if args.engine is None else str(args.engine),
                    "fast_paths": fast.to_dict() if args.backend == "pytorch" else None,
                    "align_threads": args.align_threads,
                    "align_on": args.align_on,
                    "write_threads": args.write_threads,
                    "device_snippet_budget": args.device_snippet_budget,
                    "cudnn_benchmark": bool(fast.cudnn_benchmark and device.type == "cuda"),
                    "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                    "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
                },
                "model": _model_info(models, model_kind, model_name, load_seconds),
                "settings": {"preset": args.preset, **res_out.pop("settings"), "notes": notes},
                "input": {
                    "source": source,
                    "generated": source is None,
                    "frames": n_frames,
                    "width": src_size[0],
                    "height": src_size[1],
                    "processed_width": size[0],
                    "processed_height": size[1],
                },
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
        out[k] = (
            str(v)
            if isinstance(v, Path)
            else [str(x) if isinstance(x, Path) else x for x in v]
            if isinstance(v, (list, tuple))
            else v
        )
    return out


def _baseline_strategy(device: torch.device, align_iters: int) -> dict:
    """The result's "baseline.strategy" part: what the baseline run does differently."""
    return {
        "description": "reference execution strategy: one snippet per UNet call, eager PyTorch, VAE batch "
        f"{BASELINE_VAE_BATCH}, {'fp16' if device.type == 'cuda' else 'fp32'}, "
        "Adam co-alignment (lr 1e-3), the CUDA cache emptied after every VAE call",
        "empty_cache_after_vae_calls": True,
        "snippet_batch": 1,
        "vae_batch": BASELINE_VAE_BATCH,
        "execution": "eager",
        "dtype": "fp16" if device.type == "cuda" else "fp32",
        "dtype_note": None
        if device.type == "cuda"
        else (
            "fp32 on the CPU (CPU half-precision convolutions are many times slower; "
            "the reference's fp16 is a GPU choice)"
        ),
        "align": "reference",
        "align_iters": align_iters,
        "align_iters_reduced": align_iters != BASELINE_ALIGN_ITERS,
    }


def _speedups(baseline: dict, primary: dict) -> dict:
    """Baseline seconds / optimized seconds, end to end and per stage that both ran."""
    stages = {}
    for name in STAGES:
        b, p = baseline["stages"][name], primary["stages"][name]
        if b["ran"] and p["ran"] and b["seconds"] and p["seconds"]:
            stages[name] = b["seconds"] / p["seconds"]

    def model_seconds(r: dict) -> float | None:
        parts = [r["stages"][k] for k in MODEL_STAGES if r["stages"][k]["ran"]]
        return sum(p["seconds"] for p in parts) if parts else None

    bm, pm = model_seconds(baseline), model_seconds(primary)
    return {
        # three ratios, each baseline / optimized: what they measure differs (docs/gpu-check.md)
        "model_stages": bm / pm if bm and pm else None,  # VAE encode + UNet + VAE decode, as timed per call
        "pipeline": baseline["end_to_end"]["predict_seconds"] / primary["end_to_end"]["predict_seconds"],
        "end_to_end": baseline["end_to_end"]["seconds"] / primary["end_to_end"]["seconds"],  # writing included
        "stages": stages,
    }


def _model_info(models, kind: str, name: str, load_seconds: float) -> dict:
    """The result's "model" part: kind, name, source, parameter counts and load time."""

    def params(module):
        try:
            return int(sum(p.numel() for p in module.parameters()))
        except Exception:
            return None

    return {
        "kind": kind,
        "name": name,
        "source": str(models.source) if models.source else models.name,
        "random_weights": kind != "checkpoint",
        "unet_parameters": params(models.unet),
        "vae_parameters": params(models.vae),
        "load_seconds": load_seconds,
    }
