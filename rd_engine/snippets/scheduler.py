"""Rolling snippet scheduling: every snippet as soon as its frames exist.

`RollingScheduler` turns a stream of frame latents into snippets of every
dilation, each emitted as soon as the latent of its last frame exists. In
offline mode it emits exactly the reference snippet set (docs/method.md, "Snippets"): the
dilation cap depends on the video length, so while a video is still shorter
than the cap threshold `L * (max d + 1)` the scheduler holds back the dilated
snippets; once it is longer, no cap can apply and everything flows. Snippets
are packed across dilations into batches for the backend.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from rd_engine.errors import UserError
from rd_engine.snippets.plan import cap_dilation, check_dilations, window_span


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
        check_dilations(dilations)
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
                    f"{n}; turn dilation capping on or use smaller dilations"
                )
        return out


def batches(snippets: deque, size: int, final: bool) -> list[list[Snippet]]:
    """Pop full batches of `size` (all that remain when `final`) from a queue of pending snippets."""
    out = []
    while len(snippets) >= size or (final and snippets):
        out.append([snippets.popleft() for _ in range(min(size, len(snippets)))])
    return out
