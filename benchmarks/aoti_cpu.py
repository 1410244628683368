r"""AOTInductor against ONNX Runtime and PyTorch eager on the CPU, for two model sizes.

    python -m benchmarks.aoti_cpu --out benchmarks/results/aoti_cpu.json

For each model, the tiny random-weight checkpoint (`tiny_checkpoint_cached`, at 128 px) and a
mid-size one (`make_random_checkpoint(size="mid")`: the RollingDepth/SD2 UNet and the SD2 VAE at
half width, random weights, at 256 px):

1. one engine folder is built, ``rd-engine build --backend aoti --device cpu --precision fp32
   --res R`` (the mid-size one with ``--min-res 72``: see ``--mid-min-res``), which holds the ONNX
   graphs and the AOTInductor packages (``.pt2``) of the VAE encoder, the VAE decoder and the
   snippet UNet step; the build seconds per component are read from the manifest
   (``build.seconds``);
2. ``rd-engine bench`` runs for ``--backend pytorch``, ``--backend onnxruntime --engine DIR`` and
   ``--backend aoti --engine DIR``, each in its own process, with the same settings (generated
   16:9 clip, ``--frames``, ``--repeats``, ``--threads``, preset fast, fp32);
3. the results are gathered into one JSON (machine, build seconds per component and in total,
   seconds per model stage and end to end (medians over the repeats) per backend, speedups against
   eager PyTorch) and a Markdown table is printed (and written next to the JSON, ``.md``).

Everything big (the mid-size checkpoint, the engine folders, the raw ``rd-engine bench`` results
and the command logs) lives in ``--work`` (default ``~/.cache/rd-engine/aoti-cpu-bench``); an
engine folder or a bench result already there with the same settings is reused (``--rebuild``,
``--rerun`` to redo them), so an interrupted run resumes.

CPU timings are only as good as the machine is quiet: with 2 threads on 2 cores, one busy process
elsewhere makes the OpenMP workers wait on each other and a run many times slower. So every bench
first waits until other processes use at most ``--max-other`` of the CPUs (sampled from
``/proc/stat``), and the CPU seconds other processes used during each build and bench are recorded;
a bench they disturbed by more than ``--max-other`` is run again (``--retries``), and the last
complete attempt is kept (all of them are recorded).

Run from the repository root (``benchmarks`` is not an installed package).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from benchmarks.cpu_quiet import machine, run_logged, tail, wait_quiet

MODELS = ("tiny", "mid")
BACKENDS = ("pytorch", "onnxruntime", "aoti")
COMPONENTS = ("vae_encoder", "vae_decoder", "unet_step_L3")
MODEL_STAGES = ("vae_encode", "unet", "vae_decode")
DEFAULT_WORK = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rd-engine" / "aoti-cpu-bench"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.aoti_cpu",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--tiny-res", type=int, default=128, help="longer edge for the tiny model")
    p.add_argument("--mid-res", type=int, default=256, help="longer edge for the mid-size model")
    p.add_argument(
        "--tiny-min-res", type=int, default=None, help="the tiny engine's --min-res (default: rd-engine build's)"
    )
    p.add_argument(
        "--mid-min-res",
        type=int,
        default=72,
        help="the mid-size engine's --min-res: the SD2 UNet halves the latent three times, and torch.export refuses "
        "a dynamic latent side whose bottom size can be 1 (latent 8, 64 px); 72 px (latent 9) exports",
    )
    p.add_argument("--frames", type=int, default=16, help="frames of the generated clip")
    p.add_argument("--mid-frames", type=int, default=None, help="frames for the mid-size model (default: --frames)")
    p.add_argument("--repeats", type=int, default=3, help="measured runs per backend")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime CPU threads of the bench runs")
    p.add_argument("--preset", default="fast")
    p.add_argument("--seed", type=int, default=0, help="seed of the mid-size checkpoint's weights")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="checkpoints, engines, raw results, logs")
    p.add_argument(
        "--rebuild",
        nargs="*",
        choices=MODELS,
        default=(),
        help="rebuild the engine folders of these models (no names: all) even where they exist",
    )
    p.add_argument(
        "--rerun",
        nargs="*",
        choices=MODELS,
        default=(),
        help="rerun the benches of these models (no names: all) even where their results exist",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per build or bench process")
    p.add_argument(
        "--max-other",
        type=float,
        default=0.1,
        help="share of the CPUs other processes may use: a bench waits for it (up to --wait-quiet seconds) and "
        "is rerun (up to --retries times) if others used more during it",
    )
    p.add_argument(
        "--wait-quiet", type=float, default=900.0, help="seconds to wait for a quiet machine per build or bench"
    )
    p.add_argument("--retries", type=int, default=1, help="reruns of a bench that other processes disturbed")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/aoti_cpu.json"), help="JSON results path")
    p.add_argument(
        "--table-only",
        action="store_true",
        help="only print the tables of the --out JSON and rewrite its .md (nothing is measured)",
    )
    return p


def _load_runs(path: Path) -> list[dict]:
    """The process records (`_run`) kept next to a reused engine or bench result, or [] without them."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return []


def _checkpoint(model: str, args) -> Path:
    from rd_engine.model.factory import make_random_checkpoint, tiny_checkpoint_cached

    if model == "tiny":
        return tiny_checkpoint_cached()
    folder = args.work / f"mid-seed{args.seed}"
    if not (folder / "model_index.json").is_file():
        print(f"writing the mid-size random checkpoint to {folder}", flush=True)
        tmp = folder.with_name(folder.name + ".partial")
        make_random_checkpoint(tmp, size="mid", seed=args.seed)
        tmp.rename(folder)
    return folder


def _build(model: str, ckpt: Path, res: int, min_res: int | None, args) -> dict:
    """Build (or reuse) the model's engine folder; returns the build part of the result."""
    engine = args.work / f"engine-{model}-{res}"
    manifest_path = engine / "manifest.json"
    runs_path = args.work / "logs" / f"build-{model}-{res}.runs.json"
    run = None
    reuse = model not in args.rebuild and manifest_path.is_file()
    if reuse:
        built = json.loads(manifest_path.read_text())["build"]["args"]
        reuse = built.get("res") == res and (min_res is None or built.get("min_res") == min_res)
    if not reuse:
        cmd = [sys.executable, "-m", "rd_engine.cli", "build", "-c", str(ckpt), "--backend", "aoti"]
        cmd += ["--device", "cpu", "--precision", "fp32", "--res", str(res)]
        cmd += [] if min_res is None else ["--min-res", str(min_res)]
        cmd += ["-o", str(engine), "--force"]
        quiet = wait_quiet(args.max_other, args.wait_quiet)
        run = run_logged(cmd, args.work / "logs" / f"build-{model}-{res}.log", args.timeout)
        run["other_processes_cpu_fraction_before"] = quiet
        if run["returncode"] != 0:
            return {"engine": str(engine), "ok": False, "run": run, "error": tail(Path(run["log"]))}
        runs_path.write_text(json.dumps([run], indent=2))
    else:
        run = (_load_runs(runs_path) or [None])[-1]
    manifest = json.loads(manifest_path.read_text())
    seconds = manifest["build"]["seconds"]
    components = {}
    for c in COMPONENTS:
        onnx = sum(v for k, v in seconds.items() if k.startswith(f"{c}.onnx."))
        aoti = seconds.get(f"{c}.aoti")
        components[c] = {"onnx": onnx, "aoti": aoti}
    files = manifest.get("files") or {}
    aoti_bytes = None
    if isinstance(files, dict):
        aoti_bytes = {k: v.get("bytes") for k, v in files.items() if k.startswith("aoti/") and isinstance(v, dict)}
    return {
        "engine": str(engine),
        "ok": True,
        "reused": reuse,
        "command": manifest["build"].get("command"),
        "profile": manifest.get("profile"),
        "run": run,
        "seconds": seconds,
        "components": components,
        "onnx_total": sum(c["onnx"] for c in components.values()),
        "aoti_total": sum(c["aoti"] or 0.0 for c in components.values()),
        "total": sum(seconds.values()),
        "aoti_files_bytes": aoti_bytes,
        "parity_max_abs_vs_pytorch": {
            c: {
                "onnx": (manifest["components"][c].get("onnx") or {}).get("fp32", {}).get("parity_max_abs_vs_pytorch"),
                "aoti": (manifest["components"][c].get("aoti") or {}).get("parity_max_abs_vs_pytorch"),
            }
            for c in COMPONENTS
            if c in manifest.get("components", {})
        },
    }


def _bench_cmd(model: str, ckpt: Path, backend: str, engine: str, res: int, frames: int, out: Path, args) -> list:
    cmd = [sys.executable, "-m", "rd_engine.cli", "bench"]
    cmd += ["--model", "tiny"] if model == "tiny" else ["-c", str(ckpt)]
    cmd += ["--device", "cpu", "--backend", backend]
    if backend != "pytorch":
        cmd += ["--engine", engine]
    cmd += ["--res", str(res), "--frames", str(frames), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    cmd += ["--preset", args.preset, "--dtype", "fp32", "-o", str(out), "-v"]
    return cmd


def _same_settings(result: dict, backend: str, res: int, frames: int, args) -> bool:
    o = result.get("options", {})
    return (
        o.get("backend") == backend
        and o.get("res") == [res]
        and o.get("frames") == frames
        and o.get("repeats") == args.repeats
        and o.get("threads") == args.threads
        and o.get("preset") == args.preset
    )


def _backend_summary(result: dict, run: dict | None, path: Path) -> dict:
    stages = result["stages"]
    e2e = result["end_to_end"]
    return {
        "ok": True,
        "raw_result": str(path),
        "run": run,
        "backend": result["backend"],
        "input": result["input"],
        "settings": result["settings"],
        "effective_dilations": result.get("effective_dilations"),
        "warmup": result.get("warmup"),
        "stages": {
            k: {f: v[f] for f in ("seconds", "seconds_runs", "calls", "items", "unit", "flops") if f in v}
            for k, v in stages.items()
            if v.get("ran")
        },
        "seconds": {k: stages[k]["seconds"] for k in MODEL_STAGES},
        "end_to_end": {k: e2e[k] for k in ("p50", "p95", "runs", "predict_seconds", "fps")},
        "memory": result.get("memory"),
        "online": result.get("online"),
        "model": result.get("model"),
    }


def _bench(model: str, ckpt: Path, backend: str, build: dict, res: int, frames: int, args) -> dict:
    out = args.work / "results" / f"{model}_{res}_{frames}f_{backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs_path = out.with_suffix(".runs.json")
    if model not in args.rerun and out.is_file():
        result = json.loads(out.read_text())
        if _same_settings(result, backend, res, frames, args):
            print(f"reusing {out}", flush=True)
            attempts = _load_runs(runs_path)
            kept = [a for a in attempts if a.get("kept", True)]
            summary = _backend_summary(result, kept[-1] if kept else None, out)
            summary["attempts"] = attempts
            summary["reused"] = True
            return summary
    if backend != "pytorch" and not build.get("ok"):
        return {"ok": False, "error": "no engine folder (the build failed)"}
    cmd = _bench_cmd(model, ckpt, backend, build["engine"], res, frames, out, args)
    log = args.work / "logs" / f"bench-{model}-{res}-{frames}f-{backend}.log"
    attempts = []
    previous = out.with_suffix(".previous.json")
    previous.unlink(missing_ok=True)
    for attempt in range(args.retries + 1):
        quiet = wait_quiet(args.max_other, args.wait_quiet)
        out.unlink(missing_ok=True)
        run = run_logged(cmd, log.with_name(f"{log.stem}.{attempt}.log") if attempt else log, args.timeout)
        run["other_processes_cpu_fraction_before"] = quiet
        attempts.append(run)
        if run["returncode"] != 0 or not out.is_file():
            if not previous.is_file():
                return {"ok": False, "run": run, "attempts": attempts, "error": tail(Path(run["log"]))}
            previous.rename(out)  # a failed rerun: keep the disturbed but complete result before it
            run = attempts[-2]
            break
        busy = run["other_processes_cpu_fraction"]
        if busy is None or busy <= args.max_other:
            break
        print(f"  other processes used {busy:.0%} of the CPUs during the run", flush=True)
        out.rename(previous)
        if attempt == args.retries:
            previous.rename(out)
    previous.unlink(missing_ok=True)
    for a in attempts:
        a["kept"] = a is run
    runs_path.write_text(json.dumps(attempts, indent=2))
    summary = _backend_summary(json.loads(out.read_text()), run, out)
    summary["attempts"] = attempts
    summary["reused"] = False
    return summary


def _speedups(backends: dict) -> None:
    """Add eager-PyTorch seconds / backend seconds, end to end and per model stage, to each backend."""
    base = backends.get("pytorch")
    for b in backends.values():
        if not (b.get("ok") and base and base.get("ok")):
            continue
        b["speedup_vs_pytorch"] = {
            "end_to_end": base["end_to_end"]["p50"] / b["end_to_end"]["p50"],
            **{k: base["seconds"][k] / b["seconds"][k] for k in MODEL_STAGES if b["seconds"][k]},
        }


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _share(run: dict | None) -> str:
    v = (run or {}).get("other_processes_cpu_fraction")
    return "-" if v is None else f"{v:.0%}"


def markdown(result: dict) -> str:
    """The results as Markdown: a header (command, machine, settings), seconds per stage and end to end per model
    and backend, the build seconds per component, and the notes.
    """
    m_info, st = result["machine"], result["settings"]
    libs = m_info.get("libraries", {})
    mem = m_info.get("memory_bytes")
    lines = [
        "# AOTInductor vs ONNX Runtime vs eager PyTorch on the CPU",
        "",
        f"`{result['command']}` ({result['created']})",
        "",
        f"Machine: {m_info['cpu']}, {m_info['cores']} cores"
        f"{'' if mem is None else f', {mem / (1 << 30):.0f} GiB'}, {m_info['gpu'] or 'no GPU'}; "
        f"torch {libs.get('torch')}, onnxruntime {libs.get('onnxruntime')}, diffusers {libs.get('diffusers')}. "
        f"Bench: preset {st['preset']}, {st['dtype']}, --threads {st['threads']}, {st['repeats']} repeats after a "
        f"warm-up, {st['aspect']}.",
        "",
        "| model | res | frames | backend | VAE encode s | UNet s | VAE decode s | end to end s (p50) "
        "| speedup vs eager | build s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        build = m.get("build", {})
        for backend in BACKENDS:
            b = m.get("backends", {}).get(backend)
            if b is None:
                continue
            build_s = None
            if build.get("ok"):
                build_s = {"onnxruntime": build["onnx_total"], "aoti": build["aoti_total"]}.get(backend)
            head = f"| {name} | {m['res']} | {m['frames']} | {backend} |"
            if not b.get("ok"):
                lines.append(f"{head} failed | | | | | {_fmt(build_s, '.1f')} |")
                continue
            s = b["seconds"]
            speed = (b.get("speedup_vs_pytorch") or {}).get("end_to_end")
            lines.append(
                f"{head} {_fmt(s['vae_encode'])} | {_fmt(s['unet'])} | {_fmt(s['vae_decode'])} | "
                f"{_fmt(b['end_to_end']['p50'])} | {_fmt(speed)}x | {_fmt(build_s, '.1f')} |"
            )
    lines += [
        "",
        "Build seconds per component (the engine manifest's `build.seconds`; ONNX: export + ONNX Runtime "
        "flavour, without the self-check; AOTInductor: torch.export + compile + package; the last column is the "
        "share of the CPUs other processes used during the build, - where unknown):",
        "",
        "| model | component | ONNX s | AOTInductor s | others' CPU share |",
        "|---|---|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        build = m.get("build", {})
        if not build.get("ok"):
            lines.append(f"| {name} | (build failed) | | | {_share(build.get('run'))} |")
            continue
        for c, v in build["components"].items():
            lines.append(f"| {name} | {c} | {_fmt(v['onnx'], '.1f')} | {_fmt(v['aoti'], '.1f')} | |")
        lines.append(
            f"| {name} | total incl. load + hash: {build['total']:.1f} s | {build['onnx_total']:.1f} "
            f"| {build['aoti_total']:.1f} | {_share(build.get('run'))} |"
        )
    notes = list(result.get("notes", []))
    limit = st.get("max_other", 0.1)
    for name, m in result["models"].items():
        steps = [("build", m.get("build", {}).get("run"))]
        steps += [(f"{b} bench", r.get("run")) for b, r in m.get("backends", {}).items()]
        for step, run in steps:
            share = (run or {}).get("other_processes_cpu_fraction")
            if share is not None and share > limit:
                notes.append(
                    f"{name} {step}: other processes used {share:.0%} of the CPUs during it (its seconds are inflated)"
                )
    lines += ["", "Notes:", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _write(result: dict, out: Path) -> None:
    from rd_engine.bench.report import write_json

    write_json(result, out)
    out.with_suffix(".md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.table_only:
        table = markdown(json.loads(args.out.read_text()))
        args.out.with_suffix(".md").write_text(table)
        print(table, flush=True)
        return 0
    args.rebuild = MODELS if args.rebuild == [] else args.rebuild
    args.rerun = MODELS if args.rerun == [] else args.rerun
    args.work = args.work.expanduser().resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    settings = {
        "preset": args.preset,
        "dtype": "fp32",
        "threads": args.threads,
        "repeats": args.repeats,
        "frames": args.frames,
        "mid_frames": args.mid_frames or args.frames,
        "max_other": args.max_other,
        "aspect": "16:9 (generated clip)",
        "engine_build": "rd-engine build --backend aoti --device cpu --precision fp32 --res R",
    }
    result = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": shlex.join(
            [sys.executable.rsplit("/", 1)[-1], "-m", "benchmarks.aoti_cpu", *(argv or sys.argv[1:])]
        ),
        "machine": machine(),
        "settings": settings,
        "notes": [
            "seconds are medians over the repeats (stages) and the p50 of the end-to-end runs; stage seconds are the "
            "backend calls of the main pass (vae_encode, unet = snippet UNet step with the DDIM update, vae_decode)",
            "speedup vs eager = PyTorch eager end-to-end p50 / this backend's end-to-end p50, same process settings",
            "build s in the first table: ONNX export seconds of the three components for onnxruntime, AOTInductor "
            "compile seconds for aoti (one `--backend aoti` build makes both)",
            "random weights: speed does not depend on the weights",
            f"the mid-size engine is built with --min-res {args.mid_min_res}: with the default 64 px (latent 8) "
            "torch.export of the SD2 UNet step fails (three downsamplings make the bottom latent side 1 at latent 8, "
            "and torch.export specializes sizes of 1: 'Constraints violated (h, w)')",
        ],
        "models": {},
    }
    for model in args.models:
        res = args.tiny_res if model == "tiny" else args.mid_res
        frames = args.frames if model == "tiny" else (args.mid_frames or args.frames)
        ckpt = _checkpoint(model, args)
        entry = {"checkpoint": str(ckpt), "res": res, "frames": frames, "backends": {}}
        result["models"][model] = entry
        min_res = args.tiny_min_res if model == "tiny" else args.mid_min_res
        entry["build"] = _build(model, ckpt, res, min_res, args)
        _write(result, args.out)
        for backend in args.backends:
            entry["backends"][backend] = _bench(model, ckpt, backend, entry["build"], res, frames, args)
            _speedups(entry["backends"])
            _write(result, args.out)
    table = markdown(result)
    print()
    print(table, flush=True)
    print(f"results: {args.out} and {args.out.with_suffix('.md')}")
    failed = [m for m, e in result["models"].items() if not e["build"].get("ok")]
    failed += [f"{m}/{b}" for m, e in result["models"].items() for b, r in e["backends"].items() if not r.get("ok")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
