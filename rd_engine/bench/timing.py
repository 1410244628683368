"""Timing of device work: per-key stage timers, a timing backend proxy, synchronize and NVTX helpers."""

from __future__ import annotations

import contextlib
import time
from collections import Counter, defaultdict

import torch


class StageTimer:
    """Accumulates time per key: CUDA events on a GPU (read at `collect`), perf_counter on the CPU.

    Args:
        device: The device whose work is timed.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.reset()

    def reset(self) -> None:
        self._events: dict[str, list] = defaultdict(list)
        self._seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter = Counter()
        self.items: Counter = Counter()
        self.shapes: dict[str, Counter] = defaultdict(Counter)  # key -> {shape per item: items}

    @contextlib.contextmanager
    def region(self, key: str, items: int = 0, shape: tuple | None = None):
        """Time the enclosed device work under `key`; `items` frames or snippets of `shape` each."""
        if self.cuda:
            torch.cuda.nvtx.range_push(f"rd:{key}")
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                torch.cuda.nvtx.range_pop()
                self._events[key].append((start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._seconds[key] += time.perf_counter() - t0
        self.calls[key] += 1
        self.items[key] += items
        if shape is not None:
            self.shapes[key][shape] += items

    def collect(self) -> dict[str, float]:
        """Seconds per key so far (one device synchronize, then the events are read)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            for key, events in self._events.items():
                self._seconds[key] += sum(s.elapsed_time(e) for s, e in events) / 1000.0
            self._events.clear()
        return dict(self._seconds)


class TimedBackend:
    """A backend proxy that times `encode`, `denoise` and `decode` and forwards everything else.

    Calls are keyed `"<phase>.<op>"`; the phase is `"main"` (initial inference)
    or `"refine"` (set through the pipeline's `on_phase` callback).

    Args:
        backend: Any object with the `rd_engine.backends.base.Backend` interface.
        timer: Where the times go.
    """

    def __init__(self, backend, timer: StageTimer):
        self.inner = backend
        self.timer = timer
        self.phase = "main"

    def __getattr__(self, name):  # name, device, dtype, ddim, models, ...
        return getattr(self.inner, name)

    def set_phase(self, phase: str) -> None:
        """Tag the following backend calls with `phase` (the pipeline's `on_phase` callback)."""
        self.phase = phase

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        with self.timer.region(f"{self.phase}.encode", frames.shape[0], tuple(frames.shape[1:])):
            return self.inner.encode(frames)

    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step) -> torch.Tensor:
        with self.timer.region(f"{self.phase}.denoise", depth.shape[0], tuple(depth.shape[1:])):
            return self.inner.denoise(rgb, depth, step)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        with self.timer.region(f"{self.phase}.decode", latents.shape[0], tuple(latents.shape[1:])):
            return self.inner.decode(latents)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def nvtx(device: torch.device, name: str):
    """An NVTX range on a GPU (visible in Nsight Systems), nothing on the CPU."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.nvtx.range_push(name)
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()
