"""Online co-alignment and merge: snippets in, finished frames out (model-free).

Online RollingDepth: depth while the video is still arriving, with a bounded lag.

A frame is *finished* once every snippet that covers it and ends no later
than `frame + lag` is done (the first `L - 1` frames wait for the first
snippet, which ends at frame `L - 1`). Each new snippet's scale and shift are
solved robustly (Cauchy IRLS on the batched moments kernel) against the
frames it covers: finished frames count with their frozen values, unfinished
ones with the running mean of the snippets already aligned to them. When
frames finish, the snippets covering them are re-solved against everything
known by then (see `OnlineAligner`). A finished frame is the robust mean of
its entries (`rd_engine.coalign.merge.robust_mean`, as the offline `robust` solver merges).

Normalization of a stream: the first snippet fixes the stream's affine frame
(its aligned values span exactly [-1, 1]); every later snippet is aligned to
that frame, so depth is never re-normalized per frame and its scale is
consistent across the whole stream. Values can leave [-1, 1] when the scene's
range grows. Like all RollingDepth output it is relative inverse depth
(near = large), not metric.

Memory is bounded by the largest window: latents and per-frame accumulators
live only for the last `(L - 1) * max(dilation) + 1 + lag` frames.

`OnlineAligner` is model-free (it takes decoded snippets), so the same code
runs on the synthetic ground-truth harness; `rd_engine.online.session.StreamSession`
adds the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from rd_engine.coalign.merge import cauchy_scales, confidence_from_spread, robust_mean
from rd_engine.coalign.metric import MetricFit
from rd_engine.coalign.problem import check_finite, solver_copy
from rd_engine.coalign.robust import solve_one, solve_robust
from rd_engine.errors import SettingError
from rd_engine.snippets.plan import SnippetGroup

FROZEN_WEIGHT = 1.0  # finished frames: final values
PROVISIONAL_WEIGHT = 0.5  # unfinished frames: running mean of the snippets aligned so far
WINDOW_ITERS = 20  # Procrustes iterations per window solve (warm-started)


@dataclass
class FinishedFrame:
    """One frame of depth out of a stream."""

    index: int
    timestamp: float | None
    depth: np.ndarray  # [H, W] float32, relative inverse depth in the stream's affine frame
    latency: float | None = None  # seconds from push to finished (None for offline replays)
    # [H, W] float32 in [0, 1]: agreement of the entries merged into each pixel (coalign.merge.CONFIDENCE_SPREAD)
    confidence: np.ndarray | None = None
    # [H, W] float32 metres (NaN where invalid) once the stream's anchors give a fit; None before that
    depth_m: np.ndarray | None = None
    metric_fit: MetricFit | None = None  # the fit depth_m came from (the current one when it finished)
    starts_shot: bool = False  # the first frame of the stream or of a shot after a cut


def _onto_unit_range(lo: float, hi: float) -> tuple[float, float]:
    """The affine `(a, b)` that maps `[lo, hi]` onto `[-1, 1]` (the stream's gauge)."""
    a = 2.0 / (hi - lo) if hi > lo else 1.0
    return a, -1.0 - a * lo


@dataclass(eq=False)
class _Snippet:
    dilation: int
    frames: tuple[int, ...]
    x: torch.Tensor | None  # [L, P] solver copy; dropped once all its frames are finished
    s: float
    t: float
    weight: float
    open: int = 0  # unfinished frames it still contributes to


class OnlineAligner:
    """Incremental co-alignment and merge of snippets arriving in end-frame order.

    Every unfinished frame keeps its entries (the snippet frames that cover it,
    full resolution, with a reference to their snippet's current scale and
    shift). A new snippet is fitted to the frozen frames and the consensus of
    the unfinished ones it covers. With `lag > 0`, whenever frames finish, the
    snippets that still have unfinished frames are re-solved together (see
    `_solve_window`). The first snippet fixes the gauge: it spans [-1, 1].

    Args:
        snippet_len: L.
        lag: K, frames of look-ahead before a frame is finished.
    """

    def __init__(self, snippet_len: int, lag: int, track: bool = False):
        if lag < 0:
            raise SettingError("lag", f"must be >= 0, got {lag}")
        self.L = snippet_len
        self.lag = lag
        self.entries: dict[int, list[tuple[_Snippet, int, torch.Tensor]]] = {}  # unfinished frame -> entries
        self.frozen: dict[int, torch.Tensor] = {}  # finished frames' solver copies [P]
        self.next_to_finish = 0
        self.first: _Snippet | None = None
        self._meta: dict[int, tuple[float | None, float | None]] = {}  # timestamp, push time per frame
        # (dilation, first frame) of the snippets merged into each finished frame, for tests
        self.contributions: dict[int, list[tuple[int, int]]] | None = {} if track else None

    def note_frame(self, index: int, timestamp: float | None = None, pushed_at: float | None = None) -> None:
        """A frame arrived (its timestamp and push time are kept for the output)."""
        self._meta[index] = (timestamp, pushed_at)

    def _consensus(self, f: int) -> torch.Tensor:
        """Current mean of the aligned solver copies covering unfinished frame `f`: `[P]`."""
        acc, wsum = None, 0.0
        for sn, j, _ in self.entries[f]:
            v = (sn.x[j] * sn.s + sn.t) * sn.weight
            acc = v if acc is None else acc + v
            wsum += sn.weight
        return acc / wsum

    def _solve(self, x: torch.Tensor, frames: tuple[int, ...]) -> tuple[float, float]:
        """Robust scale and shift of `x [L, P]` to frozen frames and the consensus of unfinished ones."""
        y = torch.zeros_like(x)
        w = torch.zeros_like(x)
        for j, f in enumerate(frames):
            if f in self.frozen:
                y[j], w[j] = self.frozen[f], FROZEN_WEIGHT
            elif self.entries.get(f):
                y[j], w[j] = self._consensus(f), PROVISIONAL_WEIGHT
        if float(w.sum()) == 0:
            raise RuntimeError("snippet shares no frame with the stream so far")
        return solve_one(x, y, w)

    def add(self, dilation: int, frames: tuple[int, ...], depth: torch.Tensor, weight: float = 1.0) -> None:
        """Align one decoded snippet (`depth [L, H, W]`) and add it to its unfinished frames."""
        check_finite(depth, "online snippet inference")
        x = solver_copy(depth).float()
        if self.first is None:
            s, t = _onto_unit_range(float(depth.min()), float(depth.max()))
        else:
            s, t = self._solve(x, frames)
        sn = _Snippet(dilation, tuple(frames), x, s, t, weight)
        if self.first is None:
            self.first = sn
        for j, f in enumerate(frames):
            if f < self.next_to_finish:
                continue  # finished frames are final
            self.entries.setdefault(f, []).append((sn, j, depth[j]))
            sn.open += 1
            if self.contributions is not None:
                self.contributions.setdefault(f, []).append((dilation, frames[0]))
        if sn.open == 0:
            sn.x = None

    def _solve_window(self) -> None:
        """Re-solve every snippet that still has an unfinished frame with the offline robust solver,
        then map that solution by one affine onto what is already fixed: the frozen frames the
        window overlaps (fit over all their solver pixels), or, before anything is frozen, the
        stream's gauge (the first snippet on [-1, 1]). Window by window this is the offline solve;
        a single affine per window, fit on many frames, adds next to no error along the stream,
        where chaining snippet by snippet does.
        """
        snips = list(dict.fromkeys(sn for ents in self.entries.values() for sn, _, _ in ents))
        if len(snips) < 2:
            return
        pos = {f: i for i, f in enumerate(sorted({f for sn in snips for f in sn.frames}))}
        by_dilation: dict[int, list[_Snippet]] = {}
        for sn in snips:
            by_dilation.setdefault(sn.dilation, []).append(sn)
        snips = [sn for members in by_dilation.values() for sn in members]
        groups = [
            SnippetGroup(
                d,
                int(round(members[0].weight)),
                torch.tensor([[pos[f] for f in sn.frames] for sn in members]),
                torch.stack([sn.x for sn in members]),
            )
            for d, members in by_dilation.items()
        ]
        # warm start: the window moved by a frame or so since the last solve (on the snippets' device)
        init = [
            (
                torch.tensor([sn.s for sn in members], device=members[0].x.device),
                torch.tensor([sn.t for sn in members], device=members[0].x.device),
            )
            for members in by_dilation.values()
        ]
        solved = solve_robust(groups, len(pos), iters=WINDOW_ITERS, fine_iters=2, init=init)
        params = [(float(sc), float(sh)) for scs, shs in solved for sc, sh in zip(scs, shs)]
        if self.frozen:
            # consensus of the new solution on the frozen frames it overlaps, against their frozen values
            acc: dict[int, torch.Tensor] = {}
            wsum: dict[int, float] = {}
            for sn, (sc, sh) in zip(snips, params):
                for j, f in enumerate(sn.frames):
                    if f in self.frozen:
                        acc[f] = acc.get(f, 0) + (sn.x[j] * sc + sh) * sn.weight
                        wsum[f] = wsum.get(f, 0.0) + sn.weight
            if not acc:
                return
            x = torch.cat([acc[f] / wsum[f] for f in acc])
            y = torch.cat([self.frozen[f] for f in acc])
            a, b = solve_one(x[None], y[None], torch.ones_like(x)[None])
        else:
            first = self.first
            sc, sh = params[snips.index(first)] if first in snips else (first.s, first.t)
            d = torch.stack([dep for f in first.frames for sn, _, dep in self.entries.get(f, []) if sn is first])
            a, b = _onto_unit_range(*sorted((float(d.min()) * sc + sh, float(d.max()) * sc + sh)))
        for sn, (sc, sh) in zip(snips, params):
            sn.s, sn.t = a * sc, a * sh + b

    @staticmethod
    def _confidence(ents, depth: torch.Tensor) -> torch.Tensor:
        """Per pixel, `merge.confidence_from_spread` of the entries' weighted spread around `depth`."""
        wsum = sum(sn.weight for sn, _, _ in ents)
        var = sum(((d.float() * sn.s + sn.t) - depth).square_() * sn.weight for sn, _, d in ents) / wsum
        return confidence_from_spread(var.sqrt_()[None], torch.tensor([len(ents)]))[0]

    @staticmethod
    def _merge(ents, consensus: torch.Tensor) -> torch.Tensor:
        """A finished frame: the robust mean of its entries (`merge.robust_mean`, as the offline
        `robust` merge), its Cauchy scale from the entries' solver copies around their consensus.
        """
        wsum = sum(sn.weight for sn, _, _ in ents)
        depth = sum((d.float() * sn.s + sn.t) * sn.weight for sn, _, d in ents) / wsum
        r = torch.cat([(sn.x[j] * sn.s + sn.t - consensus).abs().reshape(-1) for sn, j, _ in ents])
        delta = cauchy_scales(r.median()[None], torch.tensor([len(ents)], device=r.device))
        if not bool(torch.isfinite(delta).all()):
            return depth
        x = torch.stack([d for _, _, d in ents])[:, None, None]  # [E, 1, 1, H, W]: E one-frame snippets
        coef = [torch.tensor([getattr(sn, a) for sn, _, _ in ents], dtype=torch.float32) for a in ("s", "t", "weight")]

        def batches():
            yield x, torch.zeros(len(ents), 1, dtype=torch.long), *coef

        return robust_mean(batches, depth[None, None].contiguous(), delta)[0, 0]

    def finish(self, upto: int | None = None, max_window: int = 0) -> list[FinishedFrame]:
        """Finish frames whose lag has passed (all covered frames when `upto` is None, i.e. on flush)."""
        ready = []
        f = self.next_to_finish
        while self.entries.get(f) and (upto is None or max(f + self.lag, self.L - 1) <= upto):
            ready.append(f)
            f += 1
        if not ready:
            return []
        if self.lag > 0:
            self._solve_window()
        out = []
        now = time.perf_counter()
        for f in ready:
            consensus = self._consensus(f)
            self.frozen[f] = consensus
            ents = self.entries.pop(f)
            depth = self._merge(ents, consensus)
            conf = self._confidence(ents, depth)
            for sn, _, _ in ents:
                sn.open -= 1
                if sn.open == 0 and sn is not self.first:
                    sn.x = None
            ts, pushed = self._meta.pop(f, (None, None))
            latency = None if pushed is None else now - pushed
            out.append(FinishedFrame(f, ts, depth.cpu().numpy(), latency, conf.cpu().numpy()))
            self.next_to_finish = f + 1
        # frozen copies older than the largest window can never be a target again
        for f in [f for f in self.frozen if f < self.next_to_finish - max_window - 1]:
            del self.frozen[f]
        return out
