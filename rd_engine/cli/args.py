"""Argument types and error wording shared by the subcommands."""

from __future__ import annotations

import argparse

from rd_engine.errors import SettingError, UserError


def flag(name: str) -> str:
    """The command-line flag of a setting (every setting's flag is its name with dashes)."""
    return "--" + name.replace("_", "-")


def worded(error: UserError) -> str:
    """An error's one line for the command line: a setting is named by its flag."""
    if isinstance(error, SettingError):
        return f"{flag(error.name)} {error.problem}"
    return str(error)


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
        npy=args.npy,
        npz=args.npz,
        cmaps=cmaps,
        sbs=args.sbs and bool(cmaps),
        png16=args.png16,
        snippets=args.save_snippets,
        restore_res=args.restore_res,
        fps=args.fps,
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
        "--device-snippet-budget",
        type=device_budget_value,
        default=4.0,
        help="GiB of snippet depth kept on the GPU before host memory ('auto': half the free device memory)",
    )
    g.add_argument(
        "--write-threads",
        type=int_at_least(1),
        default=1,
        help="outputs written in parallel (each file colorized and encoded on its own thread)",
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
