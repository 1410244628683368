"""`rd-engine stereo`: stereo 3D re-rendered from a saved run's depth, without the model."""

from __future__ import annotations

import argparse
from pathlib import Path

from rd_engine.cli.args import add_sequence_arguments, add_stereo_arguments, fps_value, stereo_options


def add_stereo_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "stereo",
        help="stereo 3D from a saved run's depth (no model: tune the effect in seconds)",
        description="Render stereo 3D videos of INPUT from the depth a run saved (its .npz), without running "
        "the model again. The frames are read as the run read them (the same start frame and count).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", help="the run's input: a video or an image sequence")
    p.add_argument("--depth", required=True, type=Path, help="the run's <stem>.npz")
    p.add_argument("-o", "--output-dir", default="rd-output", help="output folder")
    p.add_argument("--stem", default=None, help="output name prefix (default: the .npz's name)")
    p.add_argument("--fps", type=fps_value, default=0.0, help="video fps (0 = the run's)")
    p.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True, help="carry the input's audio")
    p.add_argument("--device", default="cpu", help="where the warp runs: cpu, cuda or cuda:N")
    add_stereo_arguments(p.add_argument_group("stereo 3D (docs/films-vfx.md)"), layouts_flag=False)
    add_sequence_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages and tracebacks")
    return p


def cmd_stereo(args) -> int:
    from rd_engine.api import render_stereo
    from rd_engine.io.sequence import SequenceOptions

    opts = stereo_options(args)
    sequence = None
    if args.linear_transform != "srgb" or args.allow_gaps or args.fps:
        # explicit sequence options replace the run's recorded ones
        sequence = SequenceOptions(fps=args.fps or 24.0, transform=args.linear_transform, allow_gaps=args.allow_gaps)
    written = render_stereo(
        args.input,
        args.depth,
        args.output_dir,
        opts,
        fps=args.fps,
        audio=args.audio,
        shots=args.shots,
        sequence=sequence,
        stem=args.stem,
        progress=not args.quiet,
        device=args.device,
    )
    print(f"{Path(args.input).name or args.input}: -> {', '.join(str(p) for p in written)}", flush=True)
    return 0
