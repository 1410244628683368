"""Per-stage progress bars and timings."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm


class StageClock:
    """Times named stages, shows a progress bar per stage (frames/s, snippets/s, ...)."""

    def __init__(self, enabled: bool = True, device: torch.device | None = None):
        self.enabled = enabled
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, total: int | None = None, unit: str = "frame"):
        # bars only on a terminal: in logs and CI they would be thousands of carriage returns
        show = self.enabled and sys.stderr.isatty()
        bar = tqdm(
            total=total,
            desc=f"{name:>8}",
            unit=unit,
            leave=False,
            disable=not show,
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.25,
        )
        t0 = time.perf_counter()
        try:
            yield bar.update
        finally:
            if self.device is not None and self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            bar.close()


def peak_host_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
