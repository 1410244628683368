"""`rd-engine eval`: its command-line options and handler (the evaluation is `rd_engine.eval`)."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from rd_engine.cli.args import check_output_dir
from rd_engine.errors import UserError
from rd_engine.eval import EVAL_PRESET, EVAL_SEED

log = logging.getLogger("rd_engine")

# the `run` option groups an engine run of `eval` takes, and the run options that make no sense here
# (the split decides the frames)
_RUN_GROUPS = ("model", "method", "online mode")
_NOT_FOR_EVAL = {"start_frame", "frame_count"}
# `run` options whose default differs for `eval`: Table 1's settings and reproducible noise
_EVAL_DEFAULTS = {
    "preset": (EVAL_PRESET, "settings preset (eval: the paper's, as in Table 1)"),
    "seed": (EVAL_SEED, "seed of the initial noise (eval: fixed, so that a rerun scores the same)"),
}


def _copy_run_options(run_parser: argparse.ArgumentParser, p: argparse.ArgumentParser) -> list[str]:
    """Give ``p`` the model, method and online options of `run` (the same flags, defaults and help).

    Returns:
        The destinations of the method options (the settings overrides), without ``preset``.
    """
    settings = []
    for group in run_parser._action_groups:  # argparse's `parents=` copies groups the same way
        title = group.title or ""
        if not title.startswith(_RUN_GROUPS):
            continue
        target = p.add_argument_group(f"engine run: {title}")
        for action in group._group_actions:
            if action.dest in _NOT_FOR_EVAL:
                continue
            if action.dest in _EVAL_DEFAULTS:  # a copy: the `run` command keeps its own default
                action = copy.copy(action)
                action.default, action.help = _EVAL_DEFAULTS[action.dest]
            target._add_action(action)
            if title.startswith("method") and action.dest != "preset":
                settings.append(action.dest)
    return settings


def add_eval_parser(subparsers, run_parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `eval` command to an argparse subparsers object; returns its parser.

    Args:
        subparsers: The `rd-engine` subparsers.
        run_parser: The `run` command's parser, whose model, method and online options `eval` shares.
    """
    from rd_engine.eval.datasets import BENCHMARKS

    p = subparsers.add_parser(
        "eval",
        help="score depth on the paper's benchmarks (ScanNet, Bonn, PointOdyssey, DyDToF)",
        description="Score rd-engine (by running it on each sequence) or saved predictions (--pred-dir: "
        "rd-engine's, Video Depth Anything's or DepthCrafter's) on a benchmark split with the paper's protocol: "
        "one least-squares scale and shift per sequence in inverse depth, AbsRel and delta1 per frame. "
        "Writes a Markdown and JSON table and a per-frame AbsRel plot per sequence (see docs/evaluation.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--benchmark", choices=list(BENCHMARKS), help="the benchmark")
    p.add_argument("--root", type=Path, help="dataset folder (the one holding the sequence folders)")
    p.add_argument(
        "--split",
        default=None,
        help="a carried split's name or a folder of CSV frame lists (default: the split of the paper's Table 1)",
    )
    p.add_argument(
        "--pred-dir",
        type=Path,
        default=None,
        help="score the predictions saved in this folder instead of running the engine",
    )
    p.add_argument(
        "--name",
        default=None,
        help="row label of the method (default: the prediction folder's name, or rd-engine-<preset>-<align>-<mode>)",
    )
    p.add_argument(
        "--max-depth",
        type=float,
        default=None,
        help="depth cap in metres (default: the benchmark's; see docs/evaluation.md)",
    )
    p.add_argument(
        "--clip-pred",
        action="store_true",
        help="clip the prediction at 1e-3 before the fit, as Video Depth Anything's and DepthCrafter's scripts do "
        "(for their non-negative outputs; off: the prediction is fitted as it is)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="TABLE",
        default=None,
        help="print earlier results (table.json files or result folders) side by side; nothing is scored",
    )
    p.add_argument("-o", "--output-dir", type=Path, default=Path("rd-eval"), help="output folder")
    p.add_argument(
        "--save-pred",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="engine runs: keep each sequence's prediction as <output-dir>/predictions/<sequence>_pred.npy",
    )
    p.set_defaults(settings_dests=_copy_run_options(run_parser, p))
    v = p.add_argument_group("messages")
    v.add_argument("-q", "--quiet", action="store_true", help="the table only, no progress")
    v.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    return p


def engine_dtype(preset: str, dtype: str | None, device) -> str:
    """The precision of an engine run: ``--dtype`` if given, else the preset's (fp32 on CPU), as `run` does.

    (The engine's own default, fp16 on CUDA, would override the `paper` preset's fp32.)
    """
    from rd_engine.settings import resolve

    return resolve(preset, {"dtype": dtype}, device)[0].dtype


def _engine_source(args):
    from rd_engine.api import Engine
    from rd_engine.engine_format.folder import open_engine_folder
    from rd_engine.eval.sources import EngineRun
    from rd_engine.model.checkpoint import DEFAULT_CHECKPOINT, check_checkpoint
    from rd_engine.settings import pick_device

    checkpoint = args.checkpoint
    if checkpoint is None and (args.engine is None or args.backend == "pytorch"):
        checkpoint = DEFAULT_CHECKPOINT
    if checkpoint is not None:
        check_checkpoint(checkpoint)  # before the model loads, as the engine folder below
    if args.engine is not None:
        open_engine_folder(args.engine)
    engine = Engine(
        checkpoint,
        device=args.device,
        dtype=engine_dtype(args.preset, args.dtype, pick_device(args.device)),
        progress=not args.quiet,
        engine=args.engine,
        backend=args.backend,
    )
    if args.max_memory is not None:
        engine.pipeline.budgets.host_snippets = int(args.max_memory * (1 << 30))
    overrides = {k: getattr(args, k) for k in args.settings_dests if k != "dtype"}
    save = args.output_dir / "predictions" if args.save_pred else None
    return EngineRun(engine, args.preset, overrides, args.lag if args.stream else None, save, args.name)


def cmd_eval(args) -> int:
    """Run `rd-engine eval` with parsed arguments: score, print the table, write the result folder (or `--compare`).

    Returns:
        The exit status (0; errors raise `UserError`).
    """
    from rd_engine.eval.datasets import benchmark, check_dataset, check_rgb_size, load_split
    from rd_engine.eval.report import compare_markdown, load_table, markdown, write_report
    from rd_engine.eval.runner import evaluate
    from rd_engine.eval.sources import PredictionFolder

    if args.compare:
        print(compare_markdown([load_table(p) for p in args.compare]), end="", flush=True)
        return 0
    if args.benchmark is None or args.root is None:
        raise UserError("--benchmark and --root are required (or --compare with earlier results)")
    bench = benchmark(args.benchmark)
    if args.max_depth is not None and not args.max_depth > 0:
        raise UserError(f"--max-depth must be > 0, got {args.max_depth}")
    check_output_dir(args.output_dir)  # the table is written at the end: an unwritable folder fails now
    if args.pred_dir is not None:
        source = PredictionFolder(args.pred_dir, args.name)
    else:
        seqs = load_split(bench, args.split)
        check_dataset(args.root, bench, seqs)  # before the model loads
        check_rgb_size(args.root, bench, seqs)
        source = _engine_source(args)

    def progress(r) -> None:
        log.info("%s: AbsRel %.4f, delta1 %.4f (%d frames)", r.id, r.absrel, r.delta1, r.frames)

    report = evaluate(
        bench, args.root, source, args.split, args.max_depth, on_sequence=progress, clip_pred=args.clip_pred
    )
    folder = write_report(report, args.output_dir)
    print(markdown(report), end="", flush=True)
    log.info("wrote %s (table.md, table.json, plots/)", folder)
    return 0
