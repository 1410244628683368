"""`rd-engine`: command-line entry point."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from rd_engine.cli.args import (
    add_fast_arguments,
    add_sequence_arguments,
    add_stereo_arguments,
    check_output_dir,
    device_snippet_bytes,
    fast_paths,
    fps_value,
    int_at_least,
    output_options,
    sequence_options,
    shot_options,
    worded,
)
from rd_engine.errors import UserError
from rd_engine.io.shots import DEFAULT_MIN_SHOT_LEN, DEFAULT_THRESHOLD
from rd_engine.version import __version__

log = logging.getLogger("rd_engine")

_non_negative_int = int_at_least(0)  # the run options where 0 means "off" or "input size"


def _add_run_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="estimate depth for videos",
        description="Estimate temporally consistent (relative inverse) depth for one or more videos.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="*",
        help="video files, folders of videos, image sequences (a folder of frames, shot/frame.%%04d.exr, "
        "'frames/*.png'), or .txt lists of paths",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="run on a generated clip with a tiny RANDOM-weight model (needs no downloads)",
    )
    p.add_argument("-o", "--output-dir", default=None, help="output folder (default: ./rd-output)")
    src = p.add_argument_group("model")
    src.add_argument(
        "-c",
        "--checkpoint",
        default=None,
        help="diffusers-layout checkpoint folder or hub id (default: prs-eth/rollingdepth-v1-0)",
    )
    src.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    src.add_argument(
        "-e", "--engine", type=Path, default=None, help="engine folder from `rd-engine build` (ONNX Runtime / TensorRT)"
    )
    src.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "pytorch", "onnxruntime", "tensorrt", "aoti"],
        help="inference backend (auto: TensorRT, then AOTInductor packages, then ONNX Runtime, then PyTorch)",
    )

    m = p.add_argument_group("method (explicit values override the preset and are reported)")
    m.add_argument("-p", "--preset", default="fast", choices=["fast", "fast1024", "full", "paper"])
    m.add_argument(
        "--res", type=_non_negative_int, default=None, help="longer edge of the processed frames; 0 = input size"
    )
    m.add_argument(
        "-d", "--dilations", type=_non_negative_int, nargs="+", default=None, help="snippet dilations (must include 1)"
    )
    m.add_argument(
        "--cap-dilation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cap dilations for short videos as the reference does",
    )
    m.add_argument("--snippet-len", type=_non_negative_int, default=None, help="frames per snippet")
    m.add_argument("--refine-step", type=_non_negative_int, default=None, help="refinement steps (0 = off)")
    m.add_argument("--refine-snippet-len", type=_non_negative_int, default=None)
    m.add_argument("--refine-start-dilation", type=_non_negative_int, default=None)
    m.add_argument(
        "--dtype",
        choices=["fp16", "bf16", "fp32"],
        default=None,
        help="precision (preset value on GPU; fp32 on CPU unless given)",
    )
    m.add_argument(
        "--align",
        choices=["reference", "fast", "robust"],
        default=None,
        help="co-alignment: reference (the paper's Adam solve), fast (the same objective, solved to "
        "convergence) or robust (our objective and a robust per-pixel merge; see README)",
    )
    m.add_argument(
        "--align-iters", type=_non_negative_int, default=None, help="Adam iterations of the reference solver"
    )
    m.add_argument("--seed", type=_non_negative_int, default=None, help="seed of the initial noise (random if unset)")
    m.add_argument("--start-frame", type=_non_negative_int, default=None, help="first frame to process")
    m.add_argument("--frame-count", type=_non_negative_int, default=None, help="frames to process (0 = to the end)")
    m.add_argument("--snippet-batch", type=_non_negative_int, default=None, help="snippets per UNet call")
    m.add_argument("--vae-batch", type=_non_negative_int, default=None, help="frames per VAE call")

    sh = p.add_argument_group("shots (edited video: see docs/edited-video.md)")
    sh.add_argument(
        "--shots",
        default="auto",
        metavar="auto|off|FILE",
        help="auto: detect cuts (hard cuts, fades to/from black) and run each shot on its own; off: the "
        "whole input as one shot; FILE: the editor's cut list (frame numbers one per line, or the CSV "
        "of `scenedetect list-scenes`)",
    )
    sh.add_argument(
        "--shot-threshold",
        type=float,
        default=None,
        help=f"cut detection sensitivity: lower finds more cuts (default {DEFAULT_THRESHOLD:g})",
    )
    sh.add_argument(
        "--min-shot-len",
        type=int_at_least(1),
        default=None,
        help=f"frames a detected shot has at least (default {DEFAULT_MIN_SHOT_LEN})",
    )
    sh.add_argument(
        "--split-shots",
        action="store_true",
        help="write each shot as its own set of outputs (<stem>_shotNNN*), instead of one set per video",
    )

    st = p.add_argument_group("online mode")
    st.add_argument(
        "--stream",
        action="store_true",
        help="online: depth for each frame as soon as its lag has passed (inputs may be live sources: "
        "/dev/videoN, rtsp://..., http(s)://..., pipe:)",
    )
    st.add_argument(
        "--lag", type=_non_negative_int, default=0, help="frames of look-ahead before a frame is finished (0 = causal)"
    )
    st.add_argument(
        "--max-memory",
        type=float,
        default=None,
        help="GiB of host memory for snippet depth before it spills to disk (offline)",
    )

    add_fast_arguments(p)

    o = p.add_argument_group("outputs")
    o.add_argument("--npy", action=argparse.BooleanOptionalAction, default=True, help="<stem>_pred.npy [N,H,W] float32")
    o.add_argument(
        "--npz", action=argparse.BooleanOptionalAction, default=True, help="<stem>.npz: depth, timestamps and metadata"
    )
    o.add_argument(
        "--cmap",
        nargs="*",
        default=None,
        help="colormaps for colorized mp4s (default: Spectral_r Greys_r; give none to skip)",
    )
    o.add_argument(
        "--sbs", action=argparse.BooleanOptionalAction, default=True, help="side-by-side RGB|depth mp4 (first colormap)"
    )
    o.add_argument("--png16", action="store_true", help="16-bit PNG sequence + normalization JSON")
    o.add_argument("--save-snippets", action="store_true", help="raw snippet depth, indices, scales and shifts")
    o.add_argument("--restore-res", action="store_true", help="resize outputs back to the input resolution")
    o.add_argument(
        "--fps",
        type=fps_value,
        default=0.0,
        help="output video fps (0 = input fps); an image sequence's frame rate (0 = 24)",
    )
    o.add_argument("--exr", action="store_true", help="one single-channel Z EXR per frame (+ sidecar JSON)")
    o.add_argument("--exr-type", choices=["float", "half"], default="float", help="EXR sample type")
    o.add_argument(
        "--exr-compression", choices=["zip", "zips", "piz", "rle", "none"], default="zip", help="EXR compression"
    )
    o.add_argument("--tiff16", action="store_true", help="16-bit TIFF sequence (+ sidecar JSON)")
    o.add_argument("--ffv1", action="store_true", help="lossless 16-bit depth video (FFV1 in Matroska) + JSON")
    o.add_argument(
        "--audio",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the videos carry the input video's audio (--no-audio: silent)",
    )
    add_stereo_arguments(p.add_argument_group("stereo 3D (docs/films-vfx.md)"))
    add_sequence_arguments(p)

    from rd_engine.cli.cluster import add_cluster_arguments
    from rd_engine.cli.robotics import add_robotics_arguments

    add_robotics_arguments(p)
    add_cluster_arguments(p)

    v = p.add_argument_group("messages")
    v.add_argument("-q", "--quiet", action="store_true", help="errors and the summary only, no progress bars")
    v.add_argument("-v", "--verbose", action="store_true", help="debug messages and tracebacks")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rd-engine", description="RollingDepth video depth as a fast, streaming inference engine."
    )
    parser.add_argument("--version", action="version", version=f"rd-engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = _add_run_parser(sub)
    from rd_engine.cli.bench import add_bench_parser
    from rd_engine.cli.build import add_build_parser, add_info_parser

    add_build_parser(sub)
    add_info_parser(sub)
    add_bench_parser(sub)
    from rd_engine.cli.eval import add_eval_parser

    add_eval_parser(sub, run_parser)
    from rd_engine.cli.stereo import add_stereo_parser

    add_stereo_parser(sub)
    return parser


def _setup_logging(quiet: bool, verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rd-engine: %(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    # third-party chatter (weight-loading bars, deprecation notes) is noise to our users
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="diffusers")


def _usable_inputs(inputs: list, start_frame: int | None, seq_opts=None) -> tuple[list, int]:
    """The inputs that open as videos (or image sequences, read with ``seq_opts``) and reach `start_frame`
    (live sources are taken as they are), and the number of the others, each reported first with its
    one-line error.
    """
    from rd_engine.io.video import as_sequence, probe

    usable = []
    for path in inputs:
        try:
            if not isinstance(path, str):  # a live source (online mode) is opened when it runs
                path = as_sequence(path, seq_opts) or path
                n = probe(path).num_frames
                if start_frame and n is not None and start_frame >= n:
                    raise UserError(f"{path}: start frame {start_frame} is beyond the end of the video ({n} frames)")
            usable.append(path)
        except UserError as e:
            print(f"rd-engine: error: {worded(e)}", file=sys.stderr, flush=True)
    return usable, len(inputs) - len(usable)


def cmd_run(args) -> int:
    from rd_engine.cli.robotics import check_robotics_arguments, viewer_sinks

    if not args.inputs and not args.demo:
        raise UserError("no input videos given (pass files, folders or .txt lists, or --demo)")
    check_robotics_arguments(args)
    if args.cluster:
        from rd_engine.cli.cluster import cmd_run_cluster

        return cmd_run_cluster(args)
    from rd_engine.io.video import list_inputs
    from rd_engine.model.checkpoint import DEFAULT_CHECKPOINT, check_checkpoint

    out_dir = Path(args.output_dir) if args.output_dir else Path("rd-demo-output" if args.demo else "rd-output")
    check_output_dir(out_dir)

    checkpoint = args.checkpoint
    from rd_engine.io.rosbag import bag_folder, is_bag

    bags = [p for p in args.inputs if is_bag(p)]
    if bags and len(bags) != len(args.inputs):
        raise UserError("ROS 2 bags and videos in one run: run them separately")
    if bags and args.topic is None:
        raise UserError("a ROS 2 bag input needs --topic (the image topic, e.g. /camera/color/image_raw)")
    if not bags and (args.topic is not None or args.anchors_topic is not None):
        raise UserError("--topic and --anchors-topic belong to ROS 2 bag inputs (rosbag2 folders)")
    if bags:
        inputs = [bag_folder(p) for p in bags]
    elif args.stream:
        inputs = [
            p if ("://" in p or p.startswith(("/dev/video", "pipe:")) or p == "-") else Path(p) for p in args.inputs
        ]
        inputs = [
            p if isinstance(p, str) else q
            for p in inputs
            for q in ([p] if isinstance(p, str) else list_inputs([str(p)]))
        ]
    else:
        inputs = list_inputs([str(p) for p in args.inputs]) if args.inputs else []
    # fail fast: inputs, checkpoint and engine folder are checked before torch and the model load
    seq_opts = sequence_options(args)
    if bags:  # a bag's topics are checked when it runs (reading one needs no model either)
        unusable = 0
    else:
        inputs, unusable = _usable_inputs(inputs, args.start_frame, seq_opts)
    if unusable and not inputs:
        print(f"rd-engine: {unusable} of {unusable} videos failed (no model was loaded)", file=sys.stderr)
        return 1
    if checkpoint is not None:
        check_checkpoint(checkpoint)

    from rd_engine.model.checkpoint import load_checkpoint
    from rd_engine.model.factory import tiny_checkpoint_cached
    from rd_engine.pipeline.offline import Budgets, Pipeline
    from rd_engine.progress import StageClock
    from rd_engine.settings import pick_device, resolve

    if args.engine is not None:
        from rd_engine.engine_format.folder import open_engine_folder

        open_engine_folder(args.engine)
    if args.demo:
        from rd_engine.testing.media import write_test_video

        if checkpoint is None:
            log.warning(
                "DEMO: the model has RANDOM weights, so its depth is meaningless; "
                "this run only shows that the installation works end to end"
            )
            checkpoint = str(tiny_checkpoint_cached())
        if not inputs:
            clip = out_dir / "demo_clip.mp4"
            write_test_video(clip, n_frames=24, width=160, height=96, fps=12)
            inputs = [clip]

    device = pick_device(args.device)
    overrides = {
        k: getattr(args, k)
        for k in (
            "res",
            "dilations",
            "cap_dilation",
            "snippet_len",
            "refine_step",
            "refine_snippet_len",
            "refine_start_dilation",
            "dtype",
            "align",
            "align_iters",
            "seed",
            "start_frame",
            "frame_count",
            "snippet_batch",
            "vae_batch",
        )
    }
    if args.demo and args.res is None:
        overrides["res"] = 0  # the generated clip is already small
    settings, notes = resolve(args.preset, overrides, device)
    for note in notes:
        log.info(note)

    opts = output_options(args)  # an unknown colormap fails before any work
    shots = shot_options(args)  # so does a bad cut list

    t0 = time.perf_counter()
    from rd_engine.backends.select import open_backend

    models = None
    if args.engine is None or checkpoint is not None or args.backend == "pytorch":
        models = load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
    backend = open_backend(
        args.engine,
        models,
        args.backend,
        device,
        settings.torch_dtype(),
        snippet_lens=sorted({settings.snippet_len, settings.refine_snippet_len}),
        fast=fast_paths(args),
    )
    model_name = models.name if models is not None else str(args.engine)
    log.info(
        "backend: %s on %s (%s), model %s, loaded in %.1f s",
        backend.name,
        device,
        settings.dtype,
        model_name,
        time.perf_counter() - t0,
    )
    budgets = Budgets(device_snippets=device_snippet_bytes(args.device_snippet_budget))
    if args.max_memory is not None:
        budgets.host_snippets = int(args.max_memory * (1 << 30))
    pipe = Pipeline(
        backend, progress=not args.quiet, budgets=budgets, align_threads=args.align_threads, align_on=args.align_on
    )

    from rd_engine.io.video import as_sequence, input_stem

    failures = unusable
    stems: dict[str, int] = {}
    # --write-threads 2 or more and several videos: a video's outputs are written on a thread while the model
    # runs the next one (at most one video waiting to be written: two predictions in memory at once)
    writer, pending = None, None
    if opts.write_threads > 1 and len(inputs) > 1 and not args.stream and not bags:
        from rd_engine.outputs.lanes import writer_pool

        writer = writer_pool(1, "rd-write-video")
    try:
        for path in inputs:
            stem = input_stem(path)
            stems[stem] = stems.get(stem, 0) + 1
            if stems[stem] > 1:
                stem = f"{stem}_{stems[stem]}"  # two inputs with one name must not overwrite each other
            try:
                if bags:
                    from rd_engine.io.anchors import load_anchors
                    from rd_engine.io.rosbag import image_stamps
                    from rd_engine.outputs.bagrun import run_bag

                    anchors = None
                    if args.anchors is not None:
                        _, in_size = image_stamps(path, args.topic, settings.start_frame, 1)
                        anchors = load_anchors(args.anchors, in_size)
                    line = run_bag(
                        pipe,
                        settings,
                        path,
                        args.topic,
                        out_dir,
                        stem,
                        opts,
                        model_name,
                        backend.name,
                        anchors_topic=args.anchors_topic,
                        anchors=anchors,
                        stream=args.stream,
                        lag=args.lag,
                        progress=not args.quiet,
                        sinks=viewer_sinks(args),
                    )
                    print(line, flush=True)
                    continue
                if not isinstance(path, str):
                    path = as_sequence(path, seq_opts) or path
                if args.stream:
                    from rd_engine.outputs.stream import run_stream

                    anchors = None
                    if args.anchors is not None:
                        from rd_engine.io.anchors import load_anchors
                        from rd_engine.io.video import probe

                        info = probe(path)
                        anchors = load_anchors(args.anchors, (info.width, info.height))
                    line = run_stream(
                        pipe,
                        settings,
                        args.lag,
                        path,
                        out_dir,
                        stem,
                        opts,
                        model_name,
                        anchors=anchors,
                        frame_sinks=viewer_sinks(args),
                        shots=shots,
                    )
                    print(line, flush=True)
                    continue
                anchors = None
                if args.anchors is not None:
                    from rd_engine.io.anchors import load_anchors
                    from rd_engine.io.video import probe

                    info = probe(path)
                    anchors = load_anchors(args.anchors, (info.width, info.height))
                    if info.num_frames:  # a frame past the video's end fails before any work
                        anchors.check(info.width, info.height, max(0, info.num_frames - settings.start_frame))
                clock = StageClock(not args.quiet)
                confidence = opts.needs_confidence or args.rerun is not None
                if shots.off:
                    pred = pipe.predict(
                        path,
                        settings,
                        keep_snippets=opts.snippets,
                        confidence=confidence,
                        anchors=anchors,
                        anchor_window=args.anchor_window,
                    )
                else:
                    pred = run_shots(
                        pipe,
                        path,
                        settings,
                        shots,
                        out_dir,
                        stem,
                        opts,
                        model_name,
                        backend.name,
                        clock,
                        args,
                        confidence=confidence,
                        anchors=anchors,
                    )
                write = not args.split_shots or pred.shots is None
                if writer is None:
                    _finish_video(pred, path, out_dir, stem, opts, model_name, backend.name, clock, write, args)
                else:  # written while the model runs the next video; its line comes when it is written
                    failures, pending = failures + _settle(pending, args.verbose), None
                    quiet = StageClock(False)  # no bars beside the next video's, no device syncs on this thread
                    quiet.seconds = clock.seconds
                    job = (pred, path, out_dir, stem, opts, model_name, backend.name, quiet, write, args)
                    pending = (path, writer.submit(_finish_video, *job))
            except KeyboardInterrupt:
                raise
            except Exception as e:
                failures += 1
                _report_failure(path, e, args.verbose)
        if writer is not None:
            failures += _settle(pending, args.verbose)
    finally:
        if writer is not None:  # an interrupted run still finishes writing the video it was writing
            writer.shutdown()
    if args.demo:
        log.warning("DEMO finished: outputs in %s (random-weight model: the depth is NOT meaningful)", out_dir)
    if failures:
        print(f"rd-engine: {failures} of {len(inputs) + unusable} videos failed", file=sys.stderr)
        return 1
    return 0


def _finish_video(pred, path, out_dir, stem, opts, model_name, backend_name, clock, write: bool, args) -> None:
    """Write a video's outputs (unless its shots were written already), free it, print its line."""
    from rd_engine.cli.robotics import viewer_sinks
    from rd_engine.outputs.offline import write_outputs
    from rd_engine.progress import human_bytes, peak_host_bytes

    n_frames = len(pred.timestamps)
    try:
        if write:
            write_outputs(pred, out_dir, stem, opts, model_name, backend_name, clock, sinks=viewer_sinks(args))
    finally:
        pred.close()
    secs = {**pred.stage_seconds, **clock.seconds}
    stages = " ".join(f"{k} {v:.1f}s" for k, v in secs.items())
    mem = f"peak host {human_bytes(peak_host_bytes())}"
    if pred.peak_device_bytes:
        mem += f", peak device {human_bytes(pred.peak_device_bytes)}"
    name = Path(str(path)).name or str(path)
    cut = "" if pred.shots is None else f" in {len(pred.shots)} shot{'s' * (len(pred.shots) != 1)}"
    print(
        f"{name}: {n_frames} frames{cut} {pred.size[0]}x{pred.size[1]} | {stages} | {mem} | -> {out_dir}/{stem}*",
        flush=True,
    )


def _settle(pending, verbose: bool) -> int:
    """Wait for the video being written on the writer thread; 1 if it failed (reported), else 0."""
    if pending is None:
        return 0
    path, future = pending
    try:
        future.result()
    except Exception as e:
        _report_failure(path, e, verbose)
        return 1
    return 0


def _report_failure(path, e: Exception, verbose: bool) -> None:
    """One line on stderr for a video that failed; the run goes on with the others."""
    import torch

    if isinstance(e, UserError):
        print(f"rd-engine: error: {worded(e)}", file=sys.stderr, flush=True)
    elif isinstance(e, (MemoryError, torch.cuda.OutOfMemoryError)):
        print(
            f"rd-engine: error: {path}: out of memory ({type(e).__name__}); "
            "lower --res, --snippet-batch or --vae-batch",
            file=sys.stderr,
            flush=True,
        )
    else:  # a bug: report it, keep going with the other videos
        print(
            f"rd-engine: error: {path}: internal error: {type(e).__name__}: {e}"
            + ("" if verbose else " (run with --verbose for the traceback)"),
            file=sys.stderr,
            flush=True,
        )
        if verbose:
            traceback.print_exception(e)


def run_shots(
    pipe, path, settings, shots, out_dir, stem, opts, model_name, backend_name, clock, args, confidence, anchors
):
    """One video shot by shot (`pipeline.shots`): with --split-shots each shot's outputs are written as soon
    as it is done and the video's result keeps only the shot table (written as `<stem>_shots.csv`). Each
    shot has its own metric fit to its anchors.
    """
    extra = {"confidence": confidence, "anchors": anchors, "anchor_window": args.anchor_window}
    from rd_engine.outputs.offline import write_outputs, write_shot_table
    from rd_engine.pipeline.shots import predict_shots

    if not args.split_shots:
        pred = predict_shots(pipe, path, settings, shots, keep_snippets=opts.snippets, **extra)
        if opts.snippets and pred.shots is not None:
            log.warning("%s: cut into shots: --save-snippets writes each shot's with --split-shots", path)
        return pred

    def on_shot(pred, i):
        write_outputs(pred, out_dir, f"{stem}_shot{i:03d}", opts, model_name, backend_name, clock)

    pred = predict_shots(pipe, path, settings, shots, on_shot=on_shot, keep=False, keep_snippets=opts.snippets, **extra)
    if pred.shots is not None:  # a video without a cut is written as one set of outputs, as today
        write_shot_table(out_dir / f"{stem}_shots.csv", pred)
    return pred


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers send to preempt a job), raised where Ctrl-C would be, so it cleans up the same way."""


_terminated = []  # SIGTERM arrived (a library may re-raise it as a plain KeyboardInterrupt)


def _raise_terminated(signum, frame):
    _terminated.append(signum)
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(getattr(args, "quiet", False), getattr(args, "verbose", False))
    import signal
    import threading

    _terminated.clear()
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if on_main_thread else None
    try:
        return _dispatch(parser, args)
    except KeyboardInterrupt as e:
        print("rd-engine: interrupted; no partial outputs were left behind", file=sys.stderr)
        terminated = isinstance(e, Terminated) or bool(_terminated)
        return 143 if terminated else 130  # 128 + the signal's number, as shells report it
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _dispatch(parser: argparse.ArgumentParser, args) -> int:
    try:
        if args.command == "run":
            return cmd_run(args)
        if args.command == "build":
            from rd_engine.cli.build import cmd_build

            return cmd_build(args)
        if args.command == "info":
            from rd_engine.cli.build import cmd_info

            return cmd_info(args)
        if args.command == "bench":
            from rd_engine.cli.bench import cmd_bench

            return cmd_bench(args)
        if args.command == "stereo":
            from rd_engine.cli.stereo import cmd_stereo

            return cmd_stereo(args)
        if args.command == "eval":
            from rd_engine.cli.eval import cmd_eval

            return cmd_eval(args)
        parser.error(f"unknown command {args.command}")
    except UserError as e:
        print(f"rd-engine: error: {worded(e)}", file=sys.stderr)
        return 1
    return 0
