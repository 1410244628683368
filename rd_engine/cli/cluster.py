"""`rd-engine run --cluster ray`: the run's videos on a Ray cluster (`rd_engine.batch`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from rd_engine.cli.args import int_at_least, output_options, sequence_options, shot_options
from rd_engine.errors import UserError

log = logging.getLogger("rd_engine")

SPLIT_CHOICES = ["auto", "always", "never"]  # rd_engine.batch.SPLITS (spelled out: `--help` starts without torch)
SPLIT_MIN_FRAMES = 3000  # rd_engine.batch.SPLIT_MIN_FRAMES


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    c = p.add_argument_group('cluster (Ray, an optional extra: pip install "rd-engine[ray]")')
    c.add_argument(
        "--cluster",
        choices=["ray"],
        default=None,
        help="run the videos on a Ray cluster: RAY_ADDRESS or --ray-address, else a local one (output: a folder "
        "the workers share, or a URL such as s3://bucket/prefix)",
    )
    c.add_argument("--ray-address", default=None, help="address of the Ray cluster (default: RAY_ADDRESS)")
    c.add_argument(
        "--workers", type=int_at_least(1), default=None, help="worker actors (default: one per GPU, else per CPU)"
    )
    c.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="auto",
        help="split long videos across the workers: at their cuts, else into frame ranges "
        "(auto: from --split-min-frames frames)",
    )
    c.add_argument("--split-min-frames", type=int_at_least(1), default=SPLIT_MIN_FRAMES)
    c.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="skip videos whose outputs are complete and were made with the same settings",
    )


def cmd_run_cluster(args) -> int:
    """Run `rd-engine run` on Ray; one line per video, then the summary's location."""
    from rd_engine.batch import run_cluster

    if args.stream:
        raise UserError("--stream runs on one machine; drop --cluster")
    if args.demo:
        raise UserError("--demo runs on one machine; drop --cluster")
    out = args.output_dir or "rd-output"  # a folder or a URL (a Path would fold "s3://" to "s3:/")
    options = output_options(args)  # an unknown colormap fails before any cluster starts
    overrides = settings_overrides(args)
    result = run_cluster(
        args.inputs,
        out,
        checkpoint=args.checkpoint,
        engine=None if args.engine is None else str(args.engine),
        backend=args.backend,
        device=args.device,
        preset=args.preset,
        overrides=overrides,
        options=options,
        address=args.ray_address,
        workers=args.workers,
        split=args.split,
        split_min_frames=args.split_min_frames,
        max_memory=args.max_memory,
        resume=args.resume,
        progress=not args.quiet,
        sequence=dataclasses.asdict(sequence_options(args)),
        shots=shot_options(args),
    )
    for job in result.jobs:
        name = Path(job.input).name or job.input
        if job.status == "error":
            print(f"rd-engine: error: {job.error}", file=sys.stderr, flush=True)
        elif job.status == "skipped":
            print(f"{name}: skipped (outputs complete, same settings)", flush=True)
        else:
            split = f" | {len(job.ranges)} ranges" if job.ranges else ""
            print(
                f"{name}: {job.frames} frames | {job.seconds:.1f}s | worker {job.worker}{split} | -> {out}/{job.stem}*",
                flush=True,
            )
    done = sum(j.frames or 0 for j in result.jobs if j.status == "done")
    print(
        f"cluster: {len(result.jobs)} videos, {done} frames in {result.seconds:.1f}s on {len(result.workers)} workers "
        f"| summary {result.summary}",
        flush=True,
    )
    if result.failures:
        print(f"rd-engine: {len(result.failures)} of {len(result.jobs)} videos failed", file=sys.stderr)
        return 1
    return 0


def settings_overrides(args) -> dict:
    """The run's explicit settings: every `Settings` field that has a flag of its name."""
    from rd_engine.settings import Settings

    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if hasattr(args, f.name)}
