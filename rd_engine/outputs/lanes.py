"""Writing beside the model: per-frame writes queued to background threads, so a stream's model runs the
next frames while the last ones are colorized and encoded.

A lane is a sequence of writes that must stay in order (one video's frames, the frame sinks' frames); lanes
are independent of each other. Each thread takes its lanes' writes in the order they came; a bounded queue
per thread holds the model back when writing falls behind, so memory stays bounded whatever the length.
The first failure stops every thread and is raised in the caller, at its next `submit` or at `close`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

_STOP = object()


def writer_pool(workers: int, name: str) -> ThreadPoolExecutor:
    """A pool for writers: its threads use the caller's torch thread count (the writers resize with torch,
    and a new thread starts with OpenMP's default count, with which some resizes round differently).
    """
    return ThreadPoolExecutor(
        workers, thread_name_prefix=name, initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),)
    )


class WriteLanes:
    """`lanes` ordered lanes on `min(threads, lanes)` threads; with `threads <= 1` every write runs inline."""

    def __init__(self, lanes: int, threads: int, depth: int = 8):
        self.n = min(threads, lanes) if threads > 1 else 0
        self.error: BaseException | None = None
        self._queues = [queue.Queue(maxsize=depth) for _ in range(self.n)]
        torch_threads = torch.get_num_threads()  # a new thread would start with OpenMP's default count
        self._threads = [
            threading.Thread(target=self._work, args=(q, torch_threads), name=f"rd-write-{i}", daemon=True)
            for i, q in enumerate(self._queues)
        ]
        for t in self._threads:
            t.start()

    @property
    def background(self) -> bool:
        return self.n > 0

    def _work(self, q: queue.Queue, torch_threads: int) -> None:
        torch.set_num_threads(torch_threads)  # the writers resize with torch: as a serial write does
        while (item := q.get()) is not _STOP:
            if self.error is None:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as e:  # noqa: BLE001 - handed to the caller, which raises it
                    self.error = e

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def submit(self, lane: int, fn: Callable, *args) -> None:
        """Run `fn(*args)` after the lane's earlier writes (inline when there are no threads)."""
        if not self.n:
            fn(*args)
            return
        self._raise()
        q = self._queues[lane % self.n]
        while True:  # a full queue waits, but never past a failure on the thread that would empty it
            try:
                q.put((fn, args), timeout=0.1)
                return
            except queue.Full:
                self._raise()

    def close(self) -> None:
        """Wait for every queued write; raise the first failure."""
        self._join()
        self._raise()

    def abort(self) -> None:
        """Drop what is queued and stop the threads (the caller is failing already)."""
        if self.error is None:
            self.error = _Aborted()
        self._join()

    def _join(self) -> None:
        for q, t in zip(self._queues, self._threads):
            while t.is_alive():
                try:
                    q.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    continue
            t.join()
        self._threads = []
        self._queues = []

    def __enter__(self) -> WriteLanes:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class _Aborted(Exception):
    """Marks the writes dropped because the caller failed (never raised to a user)."""
