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
        npy=args.npy,
        npz=args.npz,
        cmaps=cmaps,
        sbs=args.sbs and bool(cmaps),
        png16=args.png16,
        snippets=args.save_snippets,
        restore_res=args.restore_res,
        fps=args.fps,
    )
