"""Argument types and error wording shared by the subcommands."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rd_engine.errors import SettingError, UserError


def flag(name: str) -> str:
    """The command-line flag of a setting (every setting's flag is its name with dashes)."""
    return "--" + name.replace("_", "-")


def worded(error: UserError) -> str:
    """An error's one line for the command line: a setting is named by its flag."""
    if isinstance(error, SettingError):
        return f"{flag(error.name)} {error.problem}"
    return str(error)


def check_output_dir(path: Path) -> None:
    """Make the output folder and try a write in it (before any work), with a one-line error if it fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".rd-engine-write-test-"):
            pass
    except OSError as e:
        raise UserError(f"output folder {path} is not writable ({e.strerror or e})") from None


def int_at_least(lo: int):
    """An argparse type: an integer >= `lo`, with a one-line error otherwise."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}: {text}")
        return v

    return parse


def fps_value(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (v >= 0 and v < 10000):
        raise argparse.ArgumentTypeError(f"must be in [0, 10000): {text}")
    return v


def output_options(args: argparse.Namespace):
    """The run's `OutputOptions` from its flags (`run`, local or on a cluster). An unknown colormap fails
    here, before any work.
    """
    import numpy as np

    from rd_engine.outputs.offline import DEFAULT_CMAPS, OutputOptions
    from rd_engine.outputs.render import colorize

    cmaps = list(DEFAULT_CMAPS) if args.cmap is None else [c for c in args.cmap if c.lower() != "none"]
    for c in cmaps:
        colorize(np.zeros((1, 1), np.float32), 0.0, 1.0, c)
    return OutputOptions(
        exr=args.exr,
        exr_type=args.exr_type,
        exr_compression=args.exr_compression,
        tiff16=args.tiff16,
        ffv1=args.ffv1,
        audio=args.audio,
        stereo=stereo_options(args) if args.stereo else None,
        npy=args.npy,
        npz=args.npz,
        cmaps=cmaps,
        sbs=args.sbs and bool(cmaps),
        png16=args.png16,
        snippets=args.save_snippets,
        restore_res=args.restore_res,
        fps=args.fps,
        confidence=getattr(args, "confidence", False),
        confidence_min=getattr(args, "confidence_min", 0.0),
        pointcloud=getattr(args, "pointcloud", False),
        intrinsics=None if getattr(args, "intrinsics", None) is None else tuple(args.intrinsics),
        fov=getattr(args, "fov", None),
        depth_range=(getattr(args, "min_depth", 0.0), getattr(args, "max_depth", float("inf"))),
        voxel=getattr(args, "voxel_size", 0.0),
        write_threads=getattr(args, "write_threads", 1),
    )


def add_fast_arguments(parser: argparse.ArgumentParser) -> None:
    """The fast-path options of the PyTorch backend and of the host side (`run` and `bench` share them)."""
    from rd_engine.backends.fast import ATTENTION_BACKENDS, COMPILE_MODES

    g = parser.add_argument_group(
        "fast paths (PyTorch backend and host; all off by default: docs/performance.md says what each does)"
    )
    g.add_argument(
        "--channels-last", action="store_true", help="UNet and VAE in NHWC memory layout (faster convolutions)"
    )
    g.add_argument(
        "--cudnn-benchmark", action="store_true", help="let cuDNN time its convolution algorithms per shape (CUDA)"
    )
    g.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="off",
        help="torch.compile the VAE and the UNet step in this mode (reduce-overhead: CUDA graphs, for the online "
        "mode's per-frame calls)",
    )
    g.add_argument(
        "--attention",
        choices=ATTENTION_BACKENDS,
        default="auto",
        help="scaled-dot-product-attention kernel of the cross-frame attention (auto: PyTorch's choice)",
    )
    g.add_argument(
        "--align-threads",
        type=int_at_least(1),
        default=None,
        help="CPU threads of the co-alignment solve on the host (default: torch's; 1 avoids oversubscription on "
        "a busy machine)",
    )
    g.add_argument(
        "--align-on",
        choices=["host", "device"],
        default="host",
        help="where the fast and robust co-alignment solvers run: the host's CPU, or the GPU the model runs on "
        "(the same as host on a CPU run)",
    )
    g.add_argument(
        "--device-snippet-budget",
        type=device_budget_value,
        default=4.0,
        help="GiB of snippet depth kept on the GPU before host memory ('auto': half the free device memory)",
    )
    g.add_argument(
        "--write-threads",
        type=int_at_least(1),
        default=1,
        help="threads that write outputs: offline, each file on its own thread once the depth is done, and "
        "with several videos a video's outputs while the model runs the next; with --stream, the colorized "
        "videos and the per-frame outputs on background threads beside the model (the same files whatever N)",
    )


def fast_paths(args: argparse.Namespace):
    """The `FastPaths` of parsed `add_fast_arguments` options."""
    from rd_engine.backends.fast import FastPaths

    return FastPaths.from_args(args)


def device_budget_value(text: str):
    """`--device-snippet-budget`: "auto" or GiB >= 0."""
    if text == "auto":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of GiB or 'auto': {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return v


def device_snippet_bytes(value) -> int | str:
    """The `Budgets.device_snippets` of a parsed `--device-snippet-budget`."""
    from rd_engine.pipeline.offline import Budgets

    return Budgets.device_value(value)


def shot_list(text: str) -> list[tuple[int, int]]:
    """An argparse type: ``A:B,C:D`` frame ranges (of the processed frames, stop exclusive)."""
    out = []
    for part in text.split(","):
        try:
            a, b = (int(v) for v in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of START:STOP frame ranges: {text!r}") from None
        if a < 0 or b <= a:
            raise argparse.ArgumentTypeError(f"a frame range needs 0 <= START < STOP, got {part!r}")
        out.append((a, b))
    return out


# spelled out (rd_engine.io.sequence.TRANSFORMS, rd_engine.outputs.stereo.LAYOUTS/CODECS/StereoOptions):
# `--help` starts without importing torch; a test checks they agree
TRANSFORMS = ("srgb", "rec709", "gamma2.2", "none")
LAYOUTS = ("sbs", "half-sbs", "tb", "half-tb", "anaglyph", "lr")
CODECS = ("h264", "h265")
STEREO_DEFAULTS = {"layouts": ["half-sbs"], "divergence": 2.0, "convergence": 0.5, "edge_px": 2, "codec": "h264",
                   "crf": 18}  # fmt: skip


def add_sequence_arguments(p: argparse.ArgumentParser) -> None:
    """The options of image-sequence inputs (docs/films-vfx.md)."""
    g = p.add_argument_group("image sequences (a folder of frames, frame.%%04d.exr, 'frames/*.png')")
    g.add_argument(
        "--linear-transform",
        choices=list(TRANSFORMS),
        default="srgb",
        help="how scene-linear float frames (EXR, float TIFF) are encoded for the model",
    )
    g.add_argument("--allow-gaps", action="store_true", help="accept missing frame numbers instead of failing")


def add_stereo_arguments(g, layouts_flag: bool = True) -> None:
    """The stereo controls, shared by `run --stereo` and `stereo`."""
    d = argparse.Namespace(**STEREO_DEFAULTS)
    if layouts_flag:
        g.add_argument(
            "--stereo",
            nargs="+",
            choices=list(LAYOUTS),
            default=None,
            metavar="LAYOUT",
            help=f"stereo 3D videos rendered from the depth, in these layouts: {', '.join(LAYOUTS)}",
        )
    else:
        g.add_argument(
            "--layout", nargs="+", choices=list(LAYOUTS), default=list(d.layouts), dest="stereo", metavar="LAYOUT",
            help=f"layouts: {', '.join(LAYOUTS)}",
        )  # fmt: skip
    g.add_argument(
        "--divergence", type=float, default=d.divergence, help="parallax between nearest and farthest, in %% of width"
    )
    g.add_argument(
        "--convergence",
        type=float,
        default=d.convergence,
        help="nearness at zero parallax: 0 = the farthest depth on the screen, 1 = the nearest",
    )
    g.add_argument("--swap-eyes", action="store_true", help="exchange the left and right views")
    g.add_argument(
        "--stereo-edge", type=int_at_least(0), default=d.edge_px, help="depth-edge snapping half-width in pixels"
    )
    g.add_argument("--stereo-codec", choices=list(CODECS), default=d.codec, help="codec of the stereo videos")
    g.add_argument("--stereo-10bit", action="store_true", help="10-bit stereo videos (yuv420p10le)")
    g.add_argument("--stereo-crf", type=int_at_least(0), default=d.crf, help="quality (lower = better, larger)")
    if not layouts_flag:  # `rd-engine stereo`; a run takes its shots from its own cut detection (--shots)
        g.add_argument(
            "--shots",
            type=shot_list,
            default=None,
            help="frame ranges START:STOP,... (of the processed frames) that each get their own depth range "
            "(default: the run's shot table, else one range for the whole clip)",
        )


def stereo_options(args: argparse.Namespace):
    from rd_engine.outputs.stereo import StereoOptions

    return StereoOptions(
        layouts=list(dict.fromkeys(args.stereo)),
        divergence=args.divergence,
        convergence=args.convergence,
        swap_eyes=args.swap_eyes,
        edge_px=args.stereo_edge,
        codec=args.stereo_codec,
        ten_bit=args.stereo_10bit,
        crf=args.stereo_crf,
    ).validate()


def sequence_options(args: argparse.Namespace):
    from rd_engine.io.sequence import DEFAULT_SEQUENCE_FPS, SequenceOptions

    return SequenceOptions(
        fps=args.fps or DEFAULT_SEQUENCE_FPS, transform=args.linear_transform, allow_gaps=args.allow_gaps
    )


def shot_options(args):
    """The run's `ShotOptions` from --shots, --shot-threshold and --min-shot-len (a bad cut list fails here)."""
    from rd_engine.pipeline.shots import ShotOptions

    kw = {}
    if getattr(args, "shot_threshold", None) is not None:
        if not args.shot_threshold > 0:
            raise UserError(f"--shot-threshold must be > 0, got {args.shot_threshold:g}")
        kw["threshold"] = args.shot_threshold
    if getattr(args, "min_shot_len", None) is not None:
        kw["min_shot_len"] = args.min_shot_len
    return ShotOptions.parse(getattr(args, "shots", "off"), **kw)
