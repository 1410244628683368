"""The `rd-engine` command line: `run`, `build`, `info` and `bench`."""

from rd_engine.cli.main import main

__all__ = ["main"]
