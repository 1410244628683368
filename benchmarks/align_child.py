"""One co-alignment solver on one cached configuration, in its own process (see `benchmarks.align_bench`).

    python -m benchmarks.align_child SPEC.json

Its peak resident set is its own: the parent starts one such process per
solver and configuration and reads the result file the spec names.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

SOLVERS = ("reference", "fast", "robust", "true", "upstream")  # rd_engine.coalign.solve.SOLVERS + two baselines


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
    and a solver's allocations are not hidden in memory that loading freed but the heap kept.
    """
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
        cpu_model=cpu,
        cpu_count=os.cpu_count(),
        usable_cores=usable,
        torch_threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        python=platform.python_version(),
        platform=platform.platform(),
        mem_total_bytes=mem,
        cuda=torch.cuda.is_available(),
    )


# ---------------------------------------------------------------------------
# Child: one solver on one cached configuration
# ---------------------------------------------------------------------------


def _load_upstream(path: str):
    """The public implementation's `DepthAligner` class from a local checkout's
    `rollingdepth/depth_aligner.py`, loaded from that file alone (it needs only
    torch and tqdm; the package's __init__ would pull in its pipeline).
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location("_upstream_depth_aligner", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.DepthAligner


def _run_upstream(aligner_cls, groups, iters: int):
    """Co-alignment + merge by the public implementation: repeated dilations are separate entries
    there, as in its pipeline. Returns (merged [N, H, W] float32, per-group (scale, shift)).
    """
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

    from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize
    from rd_engine.coalign.problem import solver_view
    from rd_engine.snippets.plan import SnippetGroup, snippet_indices

    gen = torch.Generator().manual_seed(0)
    idx = [snippet_indices(8, 3, 1), snippet_indices(8, 3, 2)]
    depth = [torch.rand(i.shape[0], 3, 12, 16, generator=gen).half() for i in idx]
    gm = torch.stack([d.min() for d in depth]).min()
    full = [SnippetGroup(dil, 1, i, d) for dil, i, d in zip((1, 2), idx, depth)]
    if solver == "upstream":
        _run_upstream(upstream, full, 3)
        return
    groups = [g.with_depth(solver_view(g.depth, gm)) for g in full]
    if solver == "true":
        params = [(torch.ones(i.shape[0]), torch.zeros(i.shape[0])) for i in idx]
    else:
        params = solve(groups, 8, solver, iters=3)
    delta = merge_deltas(groups, params, 8) if solver == "robust" else None
    renormalize(merge_aligned(full, params, gm, 8, delta))


def run_child(spec_path: str) -> int:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["result"])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    solver = spec["solver"]
    res: dict = dict(solver=solver, status="ok", torch_threads=torch.get_num_threads())

    # imports before the baseline, so that they are not counted as the solver's memory
    from rd_engine.coalign.merge import merge_aligned, merge_deltas, renormalize
    from rd_engine.coalign.objective import objective_value
    from rd_engine.coalign.problem import solver_view, solver_views
    from rd_engine.coalign.solve import solve
    from rd_engine.eval.metrics import score_video
    from rd_engine.snippets.plan import SnippetGroup
    from rd_engine.testing.synthetic import true_params_after_min_shift

    upstream = None
    if solver == "upstream":
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
            _warmup(solver, solve, upstream)
        except Exception as e:  # noqa: BLE001 - the real run will report the problem
            res["warmup_error"] = f"{type(e).__name__}: {e}"
        res["warmup_seconds"] = time.perf_counter() - t

    data = torch.load(spec["snippets"], weights_only=True)
    groups = [SnippetGroup(g["dilation"], g["weight"], g["indices"], g["depth"]) for g in data["groups"]]
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
            align_groups = [g.with_depth(v) for v, g in zip(views, groups)]
            del views
            if solver == "true":
                params = true_params_after_min_shift([(s, t) for s, t in true_params], global_min)
            else:
                params = solve(align_groups, n, solver, iters=int(spec["reference_iters"]))
            # robust: per-frame Cauchy scales for its robust mean (part of its merge)
            delta = merge_deltas(align_groups, params, n) if solver == "robust" else None
            t1 = time.perf_counter()
            peak_solve = _maxrss_bytes()
            merged = merge_aligned(groups, params, global_min, n, delta)
        video = renormalize(merged, inplace=True)
        del merged
        t2 = time.perf_counter()
        peak_total = _maxrss_bytes()
        if solver == "upstream":  # for the objective, outside the measured region
            global_min = torch.stack([g.depth.min() for g in groups]).min()
            align_groups = [g.with_depth(solver_view(g.depth, global_min)) for g in groups]
    except Exception as e:  # noqa: BLE001 - report, don't crash the whole benchmark
        res.update(status="error", error=f"{type(e).__name__}: {e}")
        out.write_text(json.dumps(res))
        return 0

    res.update(
        seconds=t2 - t0,
        solve_seconds=t1 - t0,
        merge_seconds=t2 - t1,
        peak_extra_bytes=max(0, peak_total - rss0),
        peak_extra_solve_bytes=max(0, peak_solve - rss0),
        # only non-zero when the peak mark could not be reset: then part of the peak may be the load's
        load_transient_bytes=0 if res["peak_reset"] else max(0, res["maxrss_after_load_bytes"] - rss0),
    )
    res["objective"] = objective_value(align_groups, params, n)
    if solver != "true":
        tp = true_params_after_min_shift([(s, t) for s, t in true_params], global_min)
        res["objective_true"] = objective_value(align_groups, tp, n)
    del align_groups
    gt = torch.load(spec["gt"], weights_only=True)
    m = score_video(video, gt)
    res.update(absrel=m.absrel, delta1=m.delta1)
    res["params_finite"] = bool(all(torch.isfinite(s).all() and torch.isfinite(t).all() for s, t in params))
    out.write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(run_child(sys.argv[1]))
