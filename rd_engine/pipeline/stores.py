"""Where the offline pipeline keeps its data, each under a memory budget.

- `LatentStore`: the per-frame RGB latents (small: 4 x H/8 x W/8 per frame), on the device.
- `SnippetStore`: full-resolution snippet depth, on the device while it fits a
  budget, then in host memory, then in a spill file.
- `OutputBuffer`: the float32 output video, in memory or memory-mapped from a
  temporary file when large.

Both temporary files are unlinked right after they are created and used
through their open descriptor, so they never outlive the process: not on
errors, Ctrl-C or SIGTERM, and not on SIGKILL either (the kernel frees an
unlinked file's blocks when its last descriptor or mapping goes away).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from rd_engine.errors import UserError

GiB = 1 << 30


_LIBC = None


def trim_host_memory() -> None:
    """Return freed heap memory to the OS (glibc; a no-op elsewhere).

    glibc raises its mmap threshold to the size of every large block freed, so
    the per-batch temporaries of a long run (decoded depth, spill copies) end
    up in the heap, where freed space is reused badly and never returned: the
    resident set grew by ~8 MB per frame at 768x432 although the live tensors
    stayed within the budgets. Called after every snippet batch and merge chunk.
    """
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


class LatentStore:
    """Per-frame latents `[N, 4, h, w]` in one growing device buffer (amortized appends)."""

    def __init__(self):
        self._buf: torch.Tensor | None = None
        self.n = 0

    def append(self, x: torch.Tensor) -> None:
        if self._buf is None:
            self._buf = torch.empty((max(64, 2 * x.shape[0]), *x.shape[1:]), dtype=x.dtype, device=x.device)
        if self.n + x.shape[0] > self._buf.shape[0]:
            grown = torch.empty((2 * (self.n + x.shape[0]), *x.shape[1:]), dtype=x.dtype, device=x.device)
            grown[: self.n] = self._buf[: self.n]
            self._buf = grown
        self._buf[self.n : self.n + x.shape[0]] = x
        self.n += x.shape[0]

    def view(self) -> torch.Tensor:
        return self._buf[: self.n]


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

    def __init__(
        self,
        shape: tuple[int, int, int],
        dtype: torch.dtype,
        device: torch.device,
        device_budget: int,
        host_budget: int,
        spill_dir: str | os.PathLike | None = None,
    ):
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
        self._spill_file = None  # the spill file's open descriptor (the file itself is already unlinked)
        self._spill: np.memmap | None = None
        self._spill_used = 0
        self._spill_cap = 0
        self._np_dtype = {torch.float16: np.float16, torch.float32: np.float32, torch.bfloat16: np.float32}[dtype]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def spill_bytes(self) -> int:
        """Size of the (unlinked) spill file; 0 when nothing spilled."""
        return os.fstat(self._spill_file.fileno()).st_size if self._spill_file is not None else 0

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
        folder = self._spill_dir or tempfile.gettempdir()
        if self._spill_file is None:
            self._spill_file = unlinked_temp_file(folder, "rd-engine-spill-", ".bin")
        if self._spill is not None:
            self._spill.flush()
            del self._spill
            self._spill = None
        try:
            os.ftruncate(
                self._spill_file.fileno(), new_cap * int(np.prod(self.shape)) * np.dtype(self._np_dtype).itemsize
            )
            self._spill = np.memmap(self._spill_file, dtype=self._np_dtype, mode="r+", shape=(new_cap, *self.shape))
        except OSError as e:
            self.close()
            raise UserError(
                f"cannot grow the snippet spill file in {folder} ({e}); "
                "lower the host snippet budget or free disk space"
            ) from None
        self._spill_cap = new_cap

    def close(self) -> None:
        """Free everything; the spill file's space goes back to the file system."""
        self._items.clear()
        self.device_bytes = self.host_bytes = 0
        if self._spill is not None:
            del self._spill
            self._spill = None
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None


def unlinked_temp_file(folder: str | os.PathLike, prefix: str, suffix: str):
    """A new read-write binary file in `folder` whose name is already removed.

    Only the returned file object (and memory maps made from it) reach the data, so the file's
    space is freed when the process lets go of it, however the process ends.
    """
    try:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    except OSError as e:
        raise UserError(f"cannot create a temporary file in {folder} ({e.strerror or e})") from None
    os.unlink(name)
    return os.fdopen(fd, "r+b")


class OutputBuffer:
    """A float32 `[N, H, W]` array in memory, or memory-mapped from an unlinked temp file when large.

    `temp_files` is kept for callers that track files to delete; nothing is added to it any more.
    """

    def __init__(self, shape, budget: int, spill_dir: str | None, temp_files: list[Path]):
        nbytes = int(np.prod(shape)) * 4
        if nbytes <= budget:
            self.array = np.empty(shape, np.float32)
        else:
            folder = spill_dir or tempfile.gettempdir()
            f = unlinked_temp_file(folder, "rd-engine-depth-", ".f32")
            try:
                with f:
                    os.ftruncate(f.fileno(), nbytes)
                    # the map holds its own reference to the file: closing the descriptor keeps the data
                    self.array = np.memmap(f, dtype=np.float32, mode="r+", shape=shape)
            except OSError as e:
                raise UserError(f"cannot create a {nbytes / GiB:.1f} GiB depth file in {folder} ({e})") from None
