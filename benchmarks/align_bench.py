r"""Co-alignment solvers on synthetic ground truth (see rd_engine/testing/synthetic.py).

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
* objective = ``rd_engine.coalign.objective.objective_value`` at the solver's params;
* AbsRel / delta1 of the merged, re-normalized video against the GT depth after
  one global affine fit in inverse depth: ``rd_engine.eval.metrics.score_video``,
  the protocol of ``rd-engine eval`` (no depth cap, no crop).

Solvers (``rd_engine.coalign.solve.solve``): ``reference`` (``--reference-iters``),
``fast`` and ``robust``; ``true`` (the generating affines, i.e. the true-affine
optimum); ``upstream`` (the public implementation's aligner, ``--upstream``).
Each runs in ``benchmarks.align_child``.

    python -m benchmarks.align_bench --sizes 30 90 250 --dilations 1,25 1,10,25 \
        --modes a b --width 768 --height 432 --solvers reference fast robust true \
        --out benchmarks/results/align_cpu.json
    python -m benchmarks.align_bench --quick --out /tmp/align_quick.json

Run from the repository root (``benchmarks`` is not an installed package).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.align_child import SOLVERS, machine_info

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOLVERS = ("reference", "fast", "robust", "true")


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------


def _parse_dilations(text: str) -> list[int]:
    try:
        d = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"dilations must be comma-separated integers (got {text!r})") from None
    if not d or any(x < 1 for x in d):
        raise argparse.ArgumentTypeError(f"bad dilation list {text!r}")
    return d


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.align_bench",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[30, 90, 250], help="frame counts N")
    p.add_argument(
        "--dilations",
        type=_parse_dilations,
        nargs="+",
        default=None,
        help="dilation sets, each comma-separated (default: 1,25 1,10,25)",
    )
    p.add_argument(
        "--modes",
        nargs="+",
        choices=["a", "b"],
        default=["a", "b"],
        help="a: random affine per snippet; b: also normalized to [-1, 1] per snippet",
    )
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=432)
    p.add_argument(
        "--solvers",
        nargs="+",
        choices=list(SOLVERS),
        default=list(DEFAULT_SOLVERS),
        help="'upstream' runs the public implementation's aligner from --upstream",
    )
    p.add_argument(
        "--upstream",
        default=None,
        metavar="FILE",
        help="rollingdepth/depth_aligner.py of a local checkout of prs-eth/RollingDepth (not part of "
        "this project; nothing is installed): the 'upstream' solver runs its DepthAligner.run, "
        "co-alignment and merge, on the same snippets",
    )
    p.add_argument("--out", default="benchmarks/results/align_cpu.json", help="JSON results path")
    p.add_argument("--reference-iters", type=int, default=2000)
    p.add_argument(
        "--skip-reference-above",
        type=int,
        default=None,
        metavar="N",
        help="skip the reference solver for videos longer than N frames",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke test defaults: N=12, 64x48, dilations 1,25, reference iters 20"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--travel",
        type=float,
        default=None,
        help="metres the synthetic camera moves forward over the video (default: synthetic.TRAVEL, 7)",
    )
    p.add_argument("--noise", type=float, default=0.02)
    p.add_argument("--outlier-blobs", type=int, default=3)
    p.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="snippet storage dtype")
    p.add_argument("--no-cap", action="store_true", help="no dilation capping (paper preset)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each solver process")
    p.add_argument("--timeout", type=float, default=None, help="seconds per solver process (default: none)")
    p.add_argument(
        "--no-warmup",
        action="store_true",
        help="do not run each solver and the merge once on a tiny problem before measuring (then lazy imports, "
        "~150 MiB for Adam, and one-time compilation count as the solver's)",
    )
    p.add_argument("--cache-dir", default=None, help="keep generated data here (default: a temp dir, removed)")
    return p


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def markdown_table(results: list[dict]) -> str:
    head = [
        "N",
        "dilations",
        "mode",
        "solver",
        "objective",
        "AbsRel",
        "delta1",
        "seconds",
        "peak MiB",
        "speedup vs ref",
        "mem ratio vs ref",
        "solve s",
        "solve MiB",
    ]
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
        rows.append(
            "| "
            + " | ".join(
                [
                    str(r["N"]),
                    dil,
                    r["mode"],
                    r["solver"],
                    _fmt(r.get("objective"), ".5f"),
                    _fmt(r.get("absrel"), ".4f"),
                    _fmt(r.get("delta1"), ".4f"),
                    _fmt(r["seconds"], ".2f"),
                    _fmt(mib, ".1f"),
                    _fmt(r.get("speedup_vs_reference"), ".1f", "-") + ("x" if r.get("speedup_vs_reference") else ""),
                    _fmt(r.get("memory_ratio_vs_reference"), ".2f"),
                    _fmt(r["solve_seconds"], ".2f"),
                    _fmt(r["peak_extra_solve_bytes"] / 2**20, ".1f"),
                ]
            )
            + " |"
        )
    return "\n".join(rows)


def _run_child(spec: dict, workdir: Path, timeout) -> dict:
    tag = f"{spec['tag']}_{spec['solver']}"
    spec_path = workdir / f"spec_{tag}.json"
    spec["result"] = str(workdir / f"result_{tag}.json")
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "benchmarks.align_child", str(spec_path)]
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
        r["memory_ratio_vs_reference"] = (
            r["peak_extra_bytes"] / b["peak_extra_bytes"] if b["peak_extra_bytes"] > 0 else None
        )


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    report = dict(machine=machine_info(), args=vars(args), generation=[], results=[])

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
            gt = make_scene_depth(
                n, args.width, args.height, seed=args.seed, **({} if args.travel is None else dict(travel=args.travel))
            )
            gt_seconds = time.perf_counter() - t
            gt_path = workdir / f"gt_{n}.pt"
            torch.save(gt, gt_path)
            say(f"[gen] N={n} {args.width}x{args.height}: GT depth {gt_seconds:.1f} s")
            for dil in args.dilations:
                for mode in args.modes:
                    tag = f"n{n}_d{'-'.join(map(str, dil))}_{mode}"
                    t = time.perf_counter()
                    groups, true_params, effective = make_snippets(
                        gt,
                        dil,
                        cap=not args.no_cap,
                        mode=mode,
                        seed=args.seed,
                        noise=args.noise,
                        outlier_blobs=args.outlier_blobs,
                        dtype=dtype,
                    )
                    snip_seconds = time.perf_counter() - t
                    snip_path = workdir / f"snippets_{tag}.pt"
                    torch.save(
                        dict(
                            num_frames=n,
                            groups=[
                                dict(dilation=g.dilation, weight=g.weight, indices=g.indices, depth=g.depth)
                                for g in groups
                            ],
                            true_params=[[s, t] for s, t in true_params],
                        ),
                        snip_path,
                    )
                    n_snip = sum(g.indices.shape[0] for g in groups)
                    snip_bytes = sum(g.depth.numel() * g.depth.element_size() for g in groups)
                    del groups, true_params
                    report["generation"].append(
                        dict(
                            config=tag,
                            N=n,
                            width=args.width,
                            height=args.height,
                            dilations=dil,
                            effective_dilations=effective,
                            mode=mode,
                            gt_seconds=gt_seconds,
                            snippet_seconds=snip_seconds,
                            snippets=n_snip,
                            snippet_bytes=snip_bytes,
                        )
                    )
                    say(
                        f"[gen] {tag}: {n_snip} snippets ({snip_bytes / 2**20:.0f} MiB), "
                        f"effective dilations {effective}, {snip_seconds:.1f} s"
                    )
                    for solver in args.solvers:
                        base = dict(
                            config=tag,
                            N=n,
                            dilations=dil,
                            effective_dilations=effective,
                            mode=mode,
                            solver=solver,
                            width=args.width,
                            height=args.height,
                        )
                        if (
                            solver == "reference"
                            and args.skip_reference_above is not None
                            and n > args.skip_reference_above
                        ):
                            r = dict(status="skipped", error=f"N > {args.skip_reference_above}")
                        else:
                            say(f"[run] {tag} {solver} ...")
                            r = _run_child(
                                dict(
                                    tag=tag,
                                    solver=solver,
                                    snippets=str(snip_path),
                                    gt=str(gt_path),
                                    reference_iters=args.reference_iters,
                                    threads=args.threads,
                                    upstream=args.upstream,
                                    warmup=not args.no_warmup,
                                ),
                                workdir,
                                args.timeout,
                            )
                        r.update(base)
                        report["results"].append(r)
                        if r["status"] == "ok":
                            say(
                                f"[run] {tag} {solver}: {r['seconds']:.2f} s, "
                                f"{r['peak_extra_bytes'] / 2**20:.1f} MiB, objective {r['objective']:.5f}, "
                                f"AbsRel {r['absrel']:.4f}, delta1 {r['delta1']:.4f}"
                            )
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
