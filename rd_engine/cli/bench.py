"""`rd-engine bench`: its command-line options and handler (the measuring is `rd_engine.bench`).

`python -m rd_engine.cli.bench ...` runs the same command without the rd-engine CLI around it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from rd_engine.bench.schema import BASELINE_ALIGN_ITERS, DEFAULT_FRAMES, DEFAULT_TINY_RES
from rd_engine.cli.args import add_fast_arguments, check_output_dir, int_at_least, worded
from rd_engine.errors import UserError

log = logging.getLogger("rd_engine")

_nonneg_int = int_at_least(0)
_pos_int = int_at_least(1)


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `bench` command to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "bench",
        help="latency and throughput benchmark (per stage, end to end, FLOPs, baseline ratios, fast paths)",
        description="Time the offline pipeline per stage and end to end, count FLOPs, measure the device's "
        "peak, and optionally the reference execution strategy in the same run. Results are "
        "printed as a table and written as JSON (see benchmarks/README.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--lag", type=int, default=0, help="lag of the online-mode latency measurement (frames)")
    src = p.add_argument_group("model and device")
    src.add_argument(
        "--model",
        choices=["tiny", "full"],
        default="tiny",
        help="tiny random-weight checkpoint (CI smoke) or the full-size architecture with random "
        "weights (speed does not depend on weights; meant for a GPU)",
    )
    src.add_argument("-c", "--checkpoint", default=None, help="a real checkpoint folder (overrides --model)")
    src.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    src.add_argument(
        "--backend",
        default="pytorch",
        choices=["pytorch", "onnxruntime", "aoti", "tensorrt"],
        help="inference backend (all but pytorch run the engine folder given with --engine, built from the same "
        "checkpoint; FLOPs are counted on the PyTorch modules, and the baseline is always PyTorch eager)",
    )
    src.add_argument("--engine", type=Path, default=None, help="engine folder for --backend onnxruntime/aoti/tensorrt")
    src.add_argument(
        "--threads",
        type=_pos_int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is steadier on a busy machine)",
    )

    inp = p.add_argument_group("input")
    inp.add_argument(
        "--input",
        type=Path,
        default=None,
        help="a video: its aspect ratio and frames are used (default: a generated clip)",
    )
    inp.add_argument(
        "--frames",
        type=_pos_int,
        default=None,
        help=f"frames (generated clip, or the first N of --input); default "
        f"{DEFAULT_FRAMES['tiny']} for tiny, {DEFAULT_FRAMES['full']} otherwise",
    )
    inp.add_argument("--aspect", default="16:9", help="aspect ratio of the generated clip")

    m = p.add_argument_group("method (explicit values override the preset)")
    m.add_argument("-p", "--preset", default="fast", choices=["fast", "fast1024", "full", "paper"])
    m.add_argument(
        "--res",
        type=_pos_int,
        nargs="+",
        default=None,
        help=f"longer edge(s); several values give several results (default: the preset's; "
        f"{DEFAULT_TINY_RES} for --model tiny)",
    )
    m.add_argument(
        "--dtype",
        choices=["fp16", "bf16", "fp32"],
        default=None,
        help="precision (preset value on GPU; fp32 on CPU unless given)",
    )
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
    b.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the writers (default outputs into a temporary folder)",
    )
    b.add_argument(
        "--baseline",
        action="store_true",
        help="measure only the reference execution strategy (one snippet per UNet call, eager, "
        "VAE batch 4, fp16 on GPU, Adam co-alignment)",
    )
    b.add_argument(
        "--with-baseline", action="store_true", help="also measure the baseline in this run and report speedups"
    )
    b.add_argument(
        "--baseline-align-iters",
        type=_pos_int,
        default=BASELINE_ALIGN_ITERS,
        help="Adam iterations of the baseline's co-alignment (the reference uses 2000)",
    )
    b.add_argument(
        "--peak-n",
        type=_pos_int,
        default=None,
        help="matrix size of the peak matmul (default 8192 on GPU, 1024 on CPU)",
    )

    add_fast_arguments(p)

    o = p.add_argument_group("output")
    o.add_argument(
        "-o",
        "--out",
        type=Path,
        default=None,
        help="result JSON (default benchmarks/results/<model>_<res>_<preset>_<backend>_<device>.json; "
        "with several --res, _<res> is added to the name)",
    )
    o.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        default=None,
        help="print two results side by side (nothing is measured)",
    )
    o.add_argument("--force", action="store_true", help="--compare results of different models or inputs")
    o.add_argument("-q", "--quiet", action="store_true", help="only the table")
    o.add_argument("-v", "--verbose", action="store_true", help="progress messages")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args) -> int:
    """Run `rd-engine bench` with parsed arguments (`--compare`, or a measurement).

    Args:
        args: From the parser of `add_bench_parser`.

    Returns:
        The exit status (0; errors raise `UserError`).
    """
    if args.compare:
        from rd_engine.bench.report import compare

        print(compare(*args.compare, force=args.force))
        return 0
    # fail fast: the input, checkpoint, engine and output folders are checked before torch and the model load
    from rd_engine.io.video import probe
    from rd_engine.model.checkpoint import check_checkpoint

    if args.input is not None:
        probe(args.input)
    if args.checkpoint:
        check_checkpoint(args.checkpoint)
    check_output_dir(args.out.parent if args.out else Path("benchmarks") / "results")
    import torch

    from rd_engine.bench.runner import run_bench

    if args.engine is not None:
        from rd_engine.engine_format.folder import open_engine_folder

        open_engine_folder(args.engine)
    try:
        run_bench(args)
    except (MemoryError, torch.cuda.OutOfMemoryError) as e:
        raise UserError(
            f"out of memory ({type(e).__name__}); lower --res, --frames, --snippet-batch or --vae-batch"
        ) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m rd_engine.cli.bench ...`: the same command without the rd-engine CLI around it.

    Args:
        argv: The options after `bench` (default: `sys.argv[1:]`).

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m rd_engine.cli.bench")
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
        print(f"rd-engine: error: {worded(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
