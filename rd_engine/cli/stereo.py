"""`rd-engine stereo`: stereo 3D re-rendered from a saved run's depth, without the model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rd_engine.cli.args import add_sequence_arguments, add_stereo_arguments, fps_value, stereo_options
from rd_engine.errors import UserError


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
    import numpy as np

    from rd_engine.io.sequence import DEFAULT_SEQUENCE_FPS, SequenceOptions
    from rd_engine.io.video import as_sequence, iter_frames
    from rd_engine.outputs.stereo import write_stereo
    from rd_engine.progress import StageClock
    from rd_engine.version import __version__

    opts = stereo_options(args)
    if not args.depth.is_file():
        raise UserError(f"{args.depth}: depth file not found (the run's <stem>.npz)")
    try:
        npz = np.load(args.depth, mmap_mode="r")
        depth = npz["depth"]
        meta = json.loads(str(npz["metadata"])) if "metadata" in npz.files else {}
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{args.depth}: not a run's .npz with a depth array ({e})") from None
    if depth.ndim != 3:
        raise UserError(f"{args.depth}: depth must be [frames, height, width], got {depth.shape}")
    settings = meta.get("settings", {})
    start = int(settings.get("start_frame", 0) or 0)
    seq_meta = meta.get("sequence") or {}
    seq_opts = SequenceOptions(
        fps=args.fps or seq_meta.get("fps") or DEFAULT_SEQUENCE_FPS,
        transform=args.linear_transform if args.linear_transform != "srgb" else seq_meta.get("transform", "srgb"),
        allow_gaps=args.allow_gaps or bool(seq_meta.get("allow_gaps", False)),
    )
    seq = as_sequence(args.input, seq_opts)
    source = seq if seq is not None else Path(args.input)
    n = int(depth.shape[0])
    timestamps = []

    def frames():
        for fr in iter_frames(source, start, n):
            timestamps.append(fr.timestamp)
            yield fr.rgb

    fps = args.fps or float(meta.get("fps") or (seq_opts.fps if seq is not None else 0)) or DEFAULT_SEQUENCE_FPS
    audio = source if (args.audio and seq is None) else None
    audio_start = float(npz["timestamps"][0]) if "timestamps" in npz.files and len(npz["timestamps"]) else 0.0
    stem = args.stem or args.depth.stem
    out = Path(args.output_dir)
    clock = StageClock(not args.quiet)
    about = {"software": f"rd-engine {__version__}", "source": str(args.input), "depth": str(args.depth)}
    with clock.stage("stereo", total=n) as tick:
        written = write_stereo(
            frames(),
            depth,
            out,
            stem,
            fps,
            opts,
            shots=args.shots,
            audio_from=audio,
            audio_start=audio_start,
            about=about,
            tick=tick,
            device=args.device,
        )
    print(f"{Path(args.input).name or args.input}: {n} frames | -> {', '.join(str(p) for p in written)}", flush=True)
    return 0
