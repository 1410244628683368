"""Co-alignment solvers on synthetic ground truth (see benchmarks/synthetic.py).

For every configuration (frames x dilations x mode) the GT video and the
snippets are generated once and cached in a temporary directory; then every
solver runs in its OWN subprocess, so that its peak RSS is its own:

* peak extra memory = the child's peak resident set (VmHWM) at the end minus
  its resident set right after loading the snippets (``/proc/self/statm``,
  after ``malloc_trim``); the kernel's peak mark is reset at that point
  (``/proc/self/clear_refs``), so a transient of the load is not charged to
  the solver. Each child first runs its
  solver and the merge once on a tiny problem (``--no-warmup`` to skip), so that
  lazy imports (Adam pulls in torch._dynamo, ~150 MiB) and one-time
  compilation are not charged either;
* seconds = solve (global minimum, solver view, solver; for ``robust`` also the
  per-frame scales of its robust mean) + full-resolution merge
  (``merge_aligned`` + ``renormalize``), ``time.perf_counter``; solve-only
  numbers are kept in the JSON and the last two table columns;
* objective = ``rd_engine.coalign.problem.objective_value`` at the solver's params;
* AbsRel / delta1 of the merged, re-normalized video against the GT depth after
  one global affine fit in inverse depth.

Solvers: ``reference`` (``align_reference``, ``--reference-iters``), ``fast`` and
``robust`` (``rd_engine.coalign.solvers.solve``; recorded as unavailable if that module
cannot be imported), ``true`` (the generating affines, i.e. the true-affine
optimum).

    python -m benchmarks.align_bench --sizes 30 90 250 --dilations 1,25 1,10,25 \\
        --modes a b --width 768 --height 432 --solvers reference fast robust true \\
        --out benchmarks/results/align_cpu.json
    python -m benchmarks.align_bench --quick --out /tmp/align_quick.json

Run from the repository root (``benchmarks`` is not an installed package).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOLVERS = ("reference", "fast", "robust", "true", "upstream")
DEFAULT_SOLVERS = ("reference", "fast", "robust", "true")


# ---------------------------------------------------------------------------
# Memory helpers (Linux)
# ---------------------------------------------------------------------------


def _maxrss_bytes() -> int:
    """Peak resident set of this process since start or the last :func:`_reset_peak`.

    Read from VmHWM in /proc/self/status, which the reset clears; ``ru_maxrss``
    keeps the all-time peak (the load's) whatever the reset does.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) * (1 if sys.platform == "darwin" else 1024)


def _rss_bytes() -> int:
    """Current resident set of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return _maxrss_bytes()


def _trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc), so that the RSS baseline counts live memory only
    and a solver's allocations are not hidden in memory that loading freed but the heap kept."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux >= 4.0).

    VmHWM (what :func:`_maxrss_bytes` reads) follows it, so a transient while loading the data (or warming
    up) is not charged to the solver. Returns False where that is not possible.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def machine_info() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return dict(
        cpu_model=cpu, cpu_count=os.cpu_count(), usable_cores=usable, torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__, python=platform.python_version(), platform=platform.platform(),
        mem_total_bytes=mem, cuda=torch.cuda.is_available(),
    )


# ---------------------------------------------------------------------------
# Child: one solver on one cached configuration
# ---------------------------------------------------------------------------


@dataclass
class _Group:
    """The fields of rd_engine.pipeline.offline.SnippetGroup (not imported here: the child stays lean)."""

    dilation: int
    weight: int
    indices: "torch.Tensor"
    depth: "torch.Tensor"


def _load_upstream(path: str):
    """The public implementation's `DepthAligner` class from a local checkout's
    `rollingdepth/depth_aligner.py`, loaded from that file alone (it needs only
    torch and tqdm; the package's __init__ would pull in its pipeline)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_upstream_depth_aligner", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.DepthAligner


def _run_upstream(aligner_cls, groups, iters: int):
    """Co-alignment + merge by the public implementation: repeated dilations are separate entries
    there, as in its pipeline. Returns (merged [N, H, W] float32, per-group (scale, shift))."""
    import torch

    entries = [g for g in groups for _ in range(g.weight)]
    aligner = aligner_cls(device=torch.device("cpu"), num_iterations=iters)
    merged, scales, shifts, _ = aligner.run([g.depth[:, :, None] for g in entries], [g.dilation for g in entries])
    params, i = [], 0
    for g in groups:
        params.append((scales[i].detach().reshape(-1).float(), shifts[i].detach().reshape(-1).float()))
        i += g.weight
    return merged[:, 0].float(), params


def _warmup(solver: str, solve, upstream=None) -> None:
    """Run the solver and the merge once on a tiny random problem (8 frames, dilations 1 and 2)."""
    import torch

    from rd_engine.coalign.problem import AlignGroup, align_reference, solver_view
    from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize
    from rd_engine.snippets.plan import snippet_indices

    gen = torch.Generator().manual_seed(0)
    idx = [snippet_indices(8, 3, 1), snippet_indices(8, 3, 2)]
    depth = [torch.rand(i.shape[0], 3, 12, 16, generator=gen).half() for i in idx]
    gm = torch.stack([d.min() for d in depth]).min()
    groups = [AlignGroup(solver_view(d, gm), i, 1) for d, i in zip(depth, idx)]
    if solver == "upstream":
        _run_upstream(upstream, [_Group(1, 1, idx[0], depth[0]), _Group(2, 1, idx[1], depth[1])], 3)
        return
    if solver == "reference":
        params = align_reference(groups, 8, iters=3)
    elif solver == "true":
        params = [(torch.ones(i.shape[0]), torch.zeros(i.shape[0])) for i in idx]
    else:
        params = solve(groups, 8, solver)
    delta = merge_deltas(groups, params, 8) if solver == "robust" else None
    renormalize(merge_aligned([(d, i, 1) for d, i in zip(depth, idx)], params, gm, 8, delta))


def _child(spec_path: str) -> int:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["result"])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    solver = spec["solver"]
    res: dict = dict(solver=solver, status="ok", torch_threads=torch.get_num_threads())

    # imports before the baseline, so that they are not counted as the solver's memory
    from rd_engine.coalign.problem import AlignGroup, align_reference, objective_value, solver_view, solver_views
    from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize

    from rd_engine.testing.synthetic import global_affine_metrics, true_params_after_min_shift

    solve = None
    if solver in ("fast", "robust"):
        try:
            from rd_engine.coalign.solvers import solve
        except Exception as e:  # noqa: BLE001 - module may be missing or half-written
            res.update(status="unavailable", error=f"{type(e).__name__}: {e}")
            out.write_text(json.dumps(res))
            return 0
    elif solver == "upstream":
        try:
            upstream = _load_upstream(spec["upstream"])
        except Exception as e:  # noqa: BLE001 - a missing or foreign checkout is reported, not fatal
            res.update(status="unavailable", error=f"{type(e).__name__}: {e}")
            out.write_text(json.dumps(res))
            return 0
    elif solver not in SOLVERS:
        res.update(status="error", error=f"unknown solver {solver!r}")
        out.write_text(json.dumps(res))
        return 0

    if spec.get("warmup", True):
        # lazy imports on first use (Adam pulls in torch._dynamo / sympy, ~150 MiB) and any
        # one-time compilation would otherwise be charged to the solve
        t = time.perf_counter()
        try:
            _warmup(solver, solve, upstream if solver == "upstream" else None)
        except Exception as e:  # noqa: BLE001 - the real run will report the problem
            res["warmup_error"] = f"{type(e).__name__}: {e}"
        res["warmup_seconds"] = time.perf_counter() - t

    data = torch.load(spec["snippets"], weights_only=True)
    groups = [_Group(g["dilation"], g["weight"], g["indices"], g["depth"]) for g in data["groups"]]
    n = int(data["num_frames"])
    true_params = data["true_params"]
    del data
    res["maxrss_after_load_bytes"] = _maxrss_bytes()
    gc.collect()
    _trim_heap()
    res["peak_reset"] = _reset_peak()
    rss0 = _rss_bytes()
    res["rss_after_load_bytes"] = rss0

    try:
        t0 = time.perf_counter()
        if solver == "upstream":  # its own minimum shift, solve and merge, in one call
            merged, params = _run_upstream(upstream, groups, int(spec["reference_iters"]))
            t1 = time.perf_counter()
            peak_solve = _maxrss_bytes()
        else:
            global_min = torch.stack([g.depth.min() for g in groups]).min()
            views = solver_views([g.depth for g in groups], global_min)  # back to back, as the pipeline's
            align_groups = [AlignGroup(v, g.indices, g.weight) for v, g in zip(views, groups)]
            del views
            if solver == "reference":
                params = align_reference(align_groups, n, iters=int(spec["reference_iters"]))
            elif solver == "true":
                params = true_params_after_min_shift([(s, t) for s, t in true_params], global_min)
            else:
                params = solve(align_groups, n, solver)
            # robust: per-frame Cauchy scales for its robust mean (part of its merge)
            delta = merge_deltas(align_groups, params, n) if solver == "robust" else None
            t1 = time.perf_counter()
            peak_solve = _maxrss_bytes()
            merged = merge_aligned([(g.depth, g.indices, g.weight) for g in groups], params, global_min, n, delta)
        video = renormalize(merged, inplace=True)
        del merged
        t2 = time.perf_counter()
        peak_total = _maxrss_bytes()
        if solver == "upstream":  # for the objective, outside the measured region
            global_min = torch.stack([g.depth.min() for g in groups]).min()
            align_groups = [AlignGroup(solver_view(g.depth, global_min), g.indices, g.weight) for g in groups]
    except Exception as e:  # noqa: BLE001 - report, don't crash the whole benchmark
        res.update(status="error", error=f"{type(e).__name__}: {e}")
        out.write_text(json.dumps(res))
        return 0

    res.update(
        seconds=t2 - t0, solve_seconds=t1 - t0, merge_seconds=t2 - t1,
        peak_extra_bytes=max(0, peak_total - rss0), peak_extra_solve_bytes=max(0, peak_solve - rss0),
        # only non-zero when the peak mark could not be reset: then part of the peak may be the load's
        load_transient_bytes=0 if res["peak_reset"] else max(0, res["maxrss_after_load_bytes"] - rss0),
    )
    res["objective"] = objective_value(align_groups, params, n)
    if solver != "true":
        tp = true_params_after_min_shift([(s, t) for s, t in true_params], global_min)
        res["objective_true"] = objective_value(align_groups, tp, n)
    del align_groups
    gt = torch.load(spec["gt"], weights_only=True)
    m = global_affine_metrics(video, gt)
    res.update(absrel=m["absrel"], delta1=m["delta1"])
    res["params_finite"] = bool(all(torch.isfinite(s).all() and torch.isfinite(t).all() for s, t in params))
    out.write_text(json.dumps(res))
    return 0


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------


def _parse_dilations(text: str) -> list[int]:
    try:
        d = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"dilations must be comma-separated integers (got {text!r})")
    if not d or any(x < 1 for x in d):
        raise argparse.ArgumentTypeError(f"bad dilation list {text!r}")
    return d


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.align_bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[30, 90, 250], help="frame counts N")
    p.add_argument("--dilations", type=_parse_dilations, nargs="+", default=None,
                   help="dilation sets, each comma-separated (default: 1,25 1,10,25)")
    p.add_argument("--modes", nargs="+", choices=["a", "b"], default=["a", "b"],
                   help="a: random affine per snippet; b: also normalized to [-1, 1] per snippet")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=432)
    p.add_argument("--solvers", nargs="+", choices=list(SOLVERS), default=list(DEFAULT_SOLVERS),
                   help="'upstream' runs the public implementation's aligner from --upstream")
    p.add_argument("--upstream", default=None, metavar="FILE",
                   help="rollingdepth/depth_aligner.py of a local checkout of prs-eth/RollingDepth (not part of "
                        "this project; nothing is installed): the 'upstream' solver runs its DepthAligner.run, "
                        "co-alignment and merge, on the same snippets")
    p.add_argument("--out", default="benchmarks/results/align_cpu.json", help="JSON results path")
    p.add_argument("--reference-iters", type=int, default=2000)
    p.add_argument("--skip-reference-above", type=int, default=None, metavar="N",
                   help="skip the reference solver for videos longer than N frames")
    p.add_argument("--quick", action="store_true",
                   help="smoke test defaults: N=12, 64x48, dilations 1,25, reference iters 20")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--travel", type=float, default=None,
                   help="metres the synthetic camera moves forward over the video (default: synthetic.TRAVEL, 7)")
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--outlier-blobs", type=int, default=3)
    p.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="snippet storage dtype")
    p.add_argument("--no-cap", action="store_true", help="no dilation capping (paper preset)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each solver process")
    p.add_argument("--timeout", type=float, default=None, help="seconds per solver process (default: none)")
    p.add_argument("--no-warmup", action="store_true",
                   help="do not run each solver and the merge once on a tiny problem before measuring (then lazy imports, "
                        "~150 MiB for Adam, and one-time compilation count as the solver's)")
    p.add_argument("--cache-dir", default=None, help="keep generated data here (default: a temp dir, removed)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def markdown_table(results: list[dict]) -> str:
    head = ["N", "dilations", "mode", "solver", "objective", "AbsRel", "delta1", "seconds", "peak MiB",
            "speedup vs ref", "mem ratio vs ref", "solve s", "solve MiB"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        dil = ",".join(map(str, r["dilations"]))
        if r["effective_dilations"] != r["dilations"]:
            dil += " (" + ",".join(map(str, r["effective_dilations"])) + ")"
        if r["status"] != "ok":
            note = r["status"] + (f": {r['error']}" if r.get("error") else "")
            rows.append(f"| {r['N']} | {dil} | {r['mode']} | {r['solver']} | {note[:80]} |" + " |" * (len(head) - 5))
            continue
        mib = r["peak_extra_bytes"] / 2**20
        rows.append("| " + " | ".join([
            str(r["N"]), dil, r["mode"], r["solver"], _fmt(r.get("objective"), ".5f"),
            _fmt(r.get("absrel"), ".4f"), _fmt(r.get("delta1"), ".4f"), _fmt(r["seconds"], ".2f"),
            _fmt(mib, ".1f"), _fmt(r.get("speedup_vs_reference"), ".1f", "-") + ("x" if r.get("speedup_vs_reference") else ""),
            _fmt(r.get("memory_ratio_vs_reference"), ".2f"),
            _fmt(r["solve_seconds"], ".2f"), _fmt(r["peak_extra_solve_bytes"] / 2**20, ".1f"),
        ]) + " |")
    return "\n".join(rows)


def _run_child(spec: dict, workdir: Path, timeout) -> dict:
    tag = f"{spec['tag']}_{spec['solver']}"
    spec_path = workdir / f"spec_{tag}.json"
    spec["result"] = str(workdir / f"result_{tag}.json")
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "benchmarks.align_bench", "--child", str(spec_path)]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=timeout, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        return dict(status="timeout", error=f"over {timeout} s")
    rp = Path(spec["result"])
    if proc.returncode != 0 or not rp.exists():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-3:]
        return dict(status="crashed", error=f"exit {proc.returncode}: " + " / ".join(tail))
    return json.loads(rp.read_text())


def _add_ratios(results: list[dict]) -> None:
    ref = {}
    for r in results:
        if r["solver"] == "reference" and r["status"] == "ok":
            ref[r["config"]] = r
    for r in results:
        b = ref.get(r["config"])
        if r["status"] != "ok" or b is None:
            continue
        r["speedup_vs_reference"] = b["seconds"] / r["seconds"] if r["seconds"] > 0 else None
        r["memory_ratio_vs_reference"] = (r["peak_extra_bytes"] / b["peak_extra_bytes"]
                                          if b["peak_extra_bytes"] > 0 else None)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child)
    if args.quick:  # smaller defaults; options given explicitly still win
        parser.set_defaults(sizes=[12], width=64, height=48, reference_iters=20, dilations=[[1, 25]])
        args = parser.parse_args(argv)
    if args.dilations is None:
        args.dilations = [[1, 25], [1, 10, 25]]

    import torch

    from rd_engine.testing.synthetic import make_scene_depth, make_snippets

    dtype = torch.float16 if args.dtype == "fp16" else torch.float32
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    own_cache = args.cache_dir is None
    workdir = Path(tempfile.mkdtemp(prefix="align_bench_")) if own_cache else Path(args.cache_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    report = dict(machine=machine_info(), args={k: v for k, v in vars(args).items() if k != "child"},
                  generation=[], results=[])

    def save():
        _add_ratios(report["results"])
        tmp = out_path.with_name(out_path.name + ".partial")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(out_path)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        for n in args.sizes:
            t = time.perf_counter()
            gt = make_scene_depth(n, args.width, args.height, seed=args.seed,
                                  **({} if args.travel is None else dict(travel=args.travel)))
            gt_seconds = time.perf_counter() - t
            gt_path = workdir / f"gt_{n}.pt"
            torch.save(gt, gt_path)
            say(f"[gen] N={n} {args.width}x{args.height}: GT depth {gt_seconds:.1f} s")
            for dil in args.dilations:
                for mode in args.modes:
                    tag = f"n{n}_d{'-'.join(map(str, dil))}_{mode}"
                    t = time.perf_counter()
                    groups, true_params, effective = make_snippets(
                        gt, dil, cap=not args.no_cap, mode=mode, seed=args.seed, noise=args.noise,
                        outlier_blobs=args.outlier_blobs, dtype=dtype)
                    snip_seconds = time.perf_counter() - t
                    snip_path = workdir / f"snippets_{tag}.pt"
                    torch.save(dict(
                        num_frames=n,
                        groups=[dict(dilation=g.dilation, weight=g.weight, indices=g.indices, depth=g.depth)
                                for g in groups],
                        true_params=[[s, t] for s, t in true_params]), snip_path)
                    n_snip = sum(g.indices.shape[0] for g in groups)
                    snip_bytes = sum(g.depth.numel() * g.depth.element_size() for g in groups)
                    del groups, true_params
                    report["generation"].append(dict(
                        config=tag, N=n, width=args.width, height=args.height, dilations=dil,
                        effective_dilations=effective, mode=mode, gt_seconds=gt_seconds,
                        snippet_seconds=snip_seconds, snippets=n_snip, snippet_bytes=snip_bytes))
                    say(f"[gen] {tag}: {n_snip} snippets ({snip_bytes / 2**20:.0f} MiB), "
                        f"effective dilations {effective}, {snip_seconds:.1f} s")
                    for solver in args.solvers:
                        base = dict(config=tag, N=n, dilations=dil, effective_dilations=effective, mode=mode,
                                    solver=solver, width=args.width, height=args.height)
                        if (solver == "reference" and args.skip_reference_above is not None
                                and n > args.skip_reference_above):
                            r = dict(status="skipped", error=f"N > {args.skip_reference_above}")
                        else:
                            say(f"[run] {tag} {solver} ...")
                            r = _run_child(dict(tag=tag, solver=solver, snippets=str(snip_path), gt=str(gt_path),
                                                reference_iters=args.reference_iters, threads=args.threads,
                                                upstream=args.upstream,
                                                warmup=not args.no_warmup),
                                           workdir, args.timeout)
                        r.update(base)
                        report["results"].append(r)
                        if r["status"] == "ok":
                            say(f"[run] {tag} {solver}: {r['seconds']:.2f} s, "
                                f"{r['peak_extra_bytes'] / 2**20:.1f} MiB, objective {r['objective']:.5f}, "
                                f"AbsRel {r['absrel']:.4f}, delta1 {r['delta1']:.4f}")
                        else:
                            say(f"[run] {tag} {solver}: {r['status']} {r.get('error', '')}")
                        save()
                    if own_cache:
                        snip_path.unlink(missing_ok=True)
            del gt
    finally:
        if own_cache:
            shutil.rmtree(workdir, ignore_errors=True)
    save()
    print(markdown_table(report["results"]))
    say(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
