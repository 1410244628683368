"""Rolling snippet scheduling and snippet storage with a memory budget.

`RollingScheduler` turns a stream of frame latents into snippets of every
dilation, each emitted as soon as the latent of its last frame exists. In
offline mode it emits exactly the reference snippet set (SPEC section 3): the
dilation cap depends on the video length, so while a video is still shorter
than the cap threshold `L * (max d + 1)` the scheduler holds back the dilated
snippets; once it is longer, no cap can apply and everything flows. Snippets
are packed across dilations into batches for the backend.

`SnippetStore` keeps full-resolution snippet depth on the device while it fits
a budget, then in host memory, then in a spill file that is removed when the
store is closed (also on errors and Ctrl-C).
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rd_engine.errors import UserError
from rd_engine.snippets.plan import cap_dilation, window_span


@dataclass(frozen=True)
class Snippet:
    """One snippet: its dilation, its index within that dilation, and its frames."""

    dilation: int
    k: int
    frames: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.frames[-1]


class RollingScheduler:
    """Emits snippets as frames arrive; `finish()` emits the rest once the length is known.

    Args:
        dilations: requested dilations (duplicates allowed; they are emitted once).
        snippet_len: L.
        cap: apply the reference's dilation cap (needs the final length, see module doc).
        num_frames: the length when known in advance (then nothing is held back).
    """

    def __init__(self, dilations: list[int], snippet_len: int, cap: bool, num_frames: int | None = None):
        if 1 not in dilations:
            raise UserError(f"dilations must include 1 (got {dilations})")
        self.requested = list(dilations)
        self.L = snippet_len
        self.cap = cap
        self.frames_seen = 0
        self.finished = False
        # beyond this length no dilation is capped (int(N / L) - 1 >= max d)
        self.free_length = snippet_len * (max(dilations) + 1) if cap else 0
        self._next_start: dict[int, int] = {}
        self.effective: list[int] | None = None
        if num_frames is not None or not cap:
            self._fix(num_frames)

    def _fix(self, n: int | None) -> None:
        eff = [cap_dilation(n, self.L, d) if (self.cap and n is not None) else d for d in self.requested]
        self.effective = eff
        self.weights = {d: eff.count(d) for d in dict.fromkeys(eff)}
        for d in self.weights:
            self._next_start.setdefault(d, 0)

    def _ready(self, limit: int) -> list[Snippet]:
        out = []
        for d in self.weights:
            span = window_span(self.L, d)
            k = self._next_start[d]
            while k + span <= limit:
                out.append(Snippet(d, k, tuple(range(k, k + span, d))))
                k += 1
            self._next_start[d] = k
        out.sort(key=lambda s: (s.end, s.dilation))
        return out

    def push(self, count: int = 1) -> list[Snippet]:
        """`count` more frame latents exist; returns the snippets that became computable."""
        if self.finished:
            raise RuntimeError("scheduler already finished")
        self.frames_seen += count
        if self.effective is None and self.frames_seen >= self.free_length:
            self._fix(None)  # long enough: no dilation can be capped any more
        if self.effective is None:
            return []
        return self._ready(self.frames_seen)

    def finish(self) -> list[Snippet]:
        """The stream ended: fix the length (capping if needed) and emit what is left."""
        n = self.frames_seen
        if n == 0:
            raise UserError("no frames")
        if self.effective is None:
            self._fix(n)
        self.finished = True
        out = self._ready(n)
        if n < self.L:  # 1- or 2-frame video: one snippet that repeats the last frame
            if not any(self._next_start.values()):
                out = [Snippet(1, 0, tuple(min(j, n - 1) for j in range(self.L)))]
                self._next_start[1] = 1
        for d in self.weights:
            if self._next_start[d] == 0:
                raise UserError(
                    f"dilation {d} needs at least {window_span(self.L, d)} frames per snippet but the video has "
                    f"{n}; turn dilation capping on or lower --dilations"
                )
        return out


def batches(snippets: deque, size: int, final: bool) -> list[list[Snippet]]:
    """Pop full batches of `size` (all that remain when `final`) from a queue of pending snippets."""
    out = []
    while len(snippets) >= size or (final and snippets):
        out.append([snippets.popleft() for _ in range(min(size, len(snippets)))])
    return out


class SnippetStore:
    """Full-resolution snippet depth `[L, H, W]` per (dilation, k), under memory budgets.

    Args:
        shape: (L, H, W) of one snippet.
        dtype: storage dtype (the run dtype; fp16 halves the footprint).
        device: the compute device (first tier when it is a GPU).
        device_budget: bytes allowed on the device (0 = none).
        host_budget: bytes allowed in host memory before spilling to disk.
        spill_dir: folder of the spill file (default: the system temp folder).
    """

    def __init__(self, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device,
                 device_budget: int, host_budget: int, spill_dir: str | os.PathLike | None = None):
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.item_bytes = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
        self.device_budget = device_budget
        self.host_budget = host_budget
        self.device_bytes = 0
        self.host_bytes = 0
        self.peak_device_bytes = 0
        self._items: dict[tuple[int, int], tuple[str, object]] = {}
        self._spill_dir = spill_dir
        self._spill_path: Path | None = None
        self._spill: np.memmap | None = None
        self._spill_fd = None
        self._spill_used = 0
        self._spill_cap = 0
        self._np_dtype = {torch.float16: np.float16, torch.float32: np.float32, torch.bfloat16: np.float32}[dtype]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def spill_path(self) -> Path | None:
        return self._spill_path

    def put(self, key: tuple[int, int], depth: torch.Tensor) -> None:
        """Store one snippet (any device); the tier is chosen by the budgets."""
        if key in self._items:
            raise KeyError(f"snippet {key} stored twice")
        if self.device_bytes + self.item_bytes <= self.device_budget:
            self._items[key] = ("device", depth.to(self.device, self.dtype).clone())
            self.device_bytes += self.item_bytes
            self.peak_device_bytes = max(self.peak_device_bytes, self.device_bytes)
        elif self.host_bytes + self.item_bytes <= self.host_budget:
            self._items[key] = ("host", depth.to("cpu", self.dtype).clone())
            self.host_bytes += self.item_bytes
        else:
            slot = self._spill_slot()
            self._spill[slot] = depth.to("cpu", torch.float32).numpy().astype(self._np_dtype, copy=False)
            self._items[key] = ("disk", slot)

    def get(self, key: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
        tier, val = self._items[key]
        if tier == "disk":
            t = torch.from_numpy(np.array(self._spill[val])).to(self.dtype)
        else:
            t = val
        return t.to(device) if device is not None else t

    def get_many(self, keys: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
        return torch.stack([self.get(k, device) for k in keys])

    def drop(self, key: tuple[int, int]) -> None:
        tier, _ = self._items.pop(key)
        if tier == "device":
            self.device_bytes -= self.item_bytes
        elif tier == "host":
            self.host_bytes -= self.item_bytes

    def tiers(self) -> dict[str, int]:
        out = {"device": 0, "host": 0, "disk": 0}
        for tier, _ in self._items.values():
            out[tier] += 1
        return out

    def _spill_slot(self) -> int:
        if self._spill is None or self._spill_used >= self._spill_cap:
            self._grow_spill()
        slot = self._spill_used
        self._spill_used += 1
        return slot

    def _grow_spill(self) -> None:
        new_cap = max(64, self._spill_cap * 2)
        if self._spill_path is None:
            fd, name = tempfile.mkstemp(prefix="rd-engine-spill-", suffix=".bin", dir=self._spill_dir)
            os.close(fd)
            self._spill_path = Path(name)
        if self._spill is not None:
            self._spill.flush()
            del self._spill
        try:
            os.truncate(self._spill_path, new_cap * int(np.prod(self.shape)) * np.dtype(self._np_dtype).itemsize)
            self._spill = np.memmap(self._spill_path, dtype=self._np_dtype, mode="r+", shape=(new_cap, *self.shape))
        except OSError as e:
            self.close()
            raise UserError(f"cannot grow the snippet spill file in {self._spill_path.parent} ({e}); "
                            "raise --max-memory or free disk space") from None
        self._spill_cap = new_cap

    def close(self) -> None:
        """Free everything and delete the spill file."""
        self._items.clear()
        self.device_bytes = self.host_bytes = 0
        if self._spill is not None:
            del self._spill
            self._spill = None
        if self._spill_path is not None:
            try:
                self._spill_path.unlink()
            except FileNotFoundError:
                pass
            self._spill_path = None
