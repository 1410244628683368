"""The offline method for one frame range of a long video, so that several workers share one video.

Every snippet depends only on its own frames and the shared initial noise, the co-alignment only on
the aligner's small solver copies, and the merge only on the snippets that cover a frame. So a video
of `n` frames splits into frame ranges `[a, b)` (`split_ranges`), each run by a `FrameRange`:

1. `infer`: decode (from the file, on the worker, from the keyframe before the range: `io.video.seek_frames`)
   and encode the frames the range's snippets need,
   and run every snippet that covers a frame of the range. It returns the solver copies of the
   snippets it owns (those that start in the range: each snippet is owned by exactly one range), the
   minimum of its snippet depth and the range's timestamps; the full-resolution depth stays in the
   range's `SnippetStore`.
2. The caller gathers the copies of all ranges and solves once (`offline.coalign`).
3. `merge` with the parameters: the range's merged frames and their min and max.
4. `finish` with the whole video's min and max: the range's re-normalized output.

The result is the whole run's result, number for number on a deterministic backend: the snippet
batches are the ones `Pipeline.predict` forms (`snippet_batches` replays its scheduler), the VAE
batches and the merge chunks start at the same frames (range bounds are multiples of
`range_alignment`), and the rest is value by value. Refinement mixes latents across the whole video
at every step, so runs with refinement are not split (`splittable`).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from pathlib import Path

import numpy as np
import torch

from rd_engine.backends.base import Backend
from rd_engine.coalign.problem import check_finite, solver_copy
from rd_engine.errors import UserError
from rd_engine.io.video import SeekMismatch, iter_frames, probe, processed_size, seek_frames
from rd_engine.pipeline.inference import (
    decode_depth,
    denoise_snippets,
    encode_frames,
    initial_noise,
    padded_size,
)
from rd_engine.pipeline.offline import MERGE_CHUNK, Budgets, merge_into, renormalize_inplace
from rd_engine.pipeline.stores import OutputBuffer, SnippetStore, trim_host_memory
from rd_engine.settings import Settings
from rd_engine.snippets.plan import SnippetGroup, snippet_indices
from rd_engine.snippets.scheduler import RollingScheduler, Snippet, batches


class RangeMismatch(UserError):
    """The video did not have the frames its container announced (the caller runs it whole instead)."""


def snippet_batches(n: int, s: Settings) -> tuple[list[list[Snippet]], list[SnippetGroup], list[int]]:
    """The snippet batches `Pipeline.predict` forms for an `n`-frame video, in its order, its plan and
    the effective dilations (settings order).
    """
    sched = RollingScheduler(s.dilations, s.snippet_len, s.cap_dilation)
    pending: deque[Snippet] = deque()
    out: list[list[Snippet]] = []
    full, rest = divmod(n, s.vae_batch)
    for _ in range(full):
        pending.extend(sched.push(s.vae_batch))
        out.extend(batches(pending, s.snippet_batch, False))
    if rest:
        pending.extend(sched.push(rest))
    pending.extend(sched.finish())
    out.extend(batches(pending, s.snippet_batch, True))
    plan = [SnippetGroup(d, w, snippet_indices(n, s.snippet_len, d)) for d, w in sched.weights.items()]
    return out, plan, list(sched.effective)


def splittable(s: Settings) -> str | None:
    """Why a run with these settings cannot be split into frame ranges, or None when it can."""
    if s.refine_step > 0:
        return "refinement mixes latents across the whole video"
    return None


def range_alignment(s: Settings) -> int:
    """Range bounds are multiples of this: VAE batches and merge chunks then start where a whole run's do."""
    return math.lcm(s.vae_batch, MERGE_CHUNK)


def split_ranges(n: int, parts: int, s: Settings) -> list[tuple[int, int]]:
    """At most `parts` consecutive frame ranges of near-equal length covering `range(n)`, bounds aligned."""
    unit = range_alignment(s)
    units = math.ceil(n / unit)
    parts = max(1, min(parts, units))
    bounds = [min(n, round(i * units / parts) * unit) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


class FrameRange:
    """Frames `[a, b)` of an `n`-frame video: its snippets, merge and output (see the module doc).

    Args:
        backend: Runs the model components.
        path: The video file (decoded here: frames never travel).
        settings: The run's settings (`splittable`).
        n: Frames in the processed window of the video.
        seed: The run's seed (the same in every range).
        a: First frame of the range (0-based within the window).
        b: End of the range (exclusive).
        budgets: Memory budgets.
    """

    def __init__(
        self,
        backend: Backend,
        path: str | Path,
        settings: Settings,
        n: int,
        seed: int,
        a: int,
        b: int,
        budgets: Budgets | None = None,
    ):
        why = splittable(settings)
        if why is not None:
            raise UserError(f"cannot split this run into frame ranges: {why}")
        self.be, self.path, self.s, self.n, self.seed, self.a, self.b = backend, Path(path), settings, n, seed, a, b
        self.budgets = budgets or Budgets()
        self.plan: list[SnippetGroup] = []
        self.store: SnippetStore | None = None
        self.out: OutputBuffer | None = None
        self.size: tuple[int, int] | None = None
        self.decoded = 0  # frames this range decoded (its own and the overlap its snippets need)
        self.sought = False  # decoded through seek_frames (from a keyframe near the range where the index allows)

    def infer(self) -> dict:
        """Snippet inference for the range.

        Returns:
            `copies` {(dilation, k): solver copy [L, P]} of the snippets starting in the range,
            `gmin` the minimum of the depth of every snippet it ran, `timestamps` of its frames,
            `size` (processed width, height) and `decoded` (frames decoded).
        """
        s, be, a, b, n = self.s, self.be, self.a, self.b, self.n
        info = probe(self.path)
        size = processed_size(info.width, info.height, s.res)
        if min(size) < 8:
            raise UserError(f"{self.path}: processed size {size[0]}x{size[1]} is too small (at least 8x8 pixels)")
        be.check_size(size)
        w, h = size
        self.size = size
        all_batches, self.plan, self.effective = snippet_batches(n, s)
        # the snippets the merge of [a, b) reads: every one that covers a frame of the range
        needed = set()
        for g in self.plan:
            covers = ((g.indices >= a) & (g.indices < b)).any(dim=1).nonzero().flatten().tolist()
            needed.update((g.dilation, k) for k in covers)
        mine = [bt for bt in all_batches if any((sn.dilation, sn.k) in needed for sn in bt)]
        first = min(f for bt in mine for sn in bt for f in sn.frames)
        last = max(f for bt in mine for sn in bt for f in sn.frames)
        vb = s.vae_batch
        lo, hi = (first // vb) * vb, min(n, -(-(last + 1) // vb) * vb)  # whole VAE batches of the whole run
        # where the window ends at the video's end, one frame more must not exist (the announced count was right)
        check_end = hi == n and (s.frame_count == 0 or n < s.frame_count)
        padded = padded_size(size)
        want = hi - lo

        def encode(frames) -> tuple[list[torch.Tensor], list[float], int, bool]:
            latents, timestamps, buf, count = [], [], [], 0
            for fr in frames:
                if count == want:
                    return latents, timestamps, count, True  # one frame more than announced
                if a <= lo + count < b:
                    timestamps.append(fr.timestamp)
                count += 1
                buf.append(torch.from_numpy(fr.rgb))
                if len(buf) == vb:
                    latents.append(encode_frames(be, torch.stack(buf), size, padded))
                    buf = []
            if buf:
                latents.append(encode_frames(be, torch.stack(buf), size, padded))
            return latents, timestamps, count, False

        # a seek to the keyframe before the range's first frame; decoding from the start if that misleads
        first_frame, frame_count = s.start_frame + lo, want + int(check_end)
        try:
            with contextlib.closing(seek_frames(self.path, first_frame, frame_count)) as frames:
                latents, timestamps, count, extra = encode(frames)
            self.sought = first_frame > 0
        except SeekMismatch:
            with contextlib.closing(iter_frames(self.path, first_frame, frame_count)) as frames:
                latents, timestamps, count, extra = encode(frames)
        if count < want or extra:
            raise RangeMismatch(
                f"{self.path}: frames {lo}..{hi} of the announced {n}: the video has "
                f"{'more' if extra else 'fewer'} frames than its container says"
            )
        self.decoded = hi - lo
        rgb_latent = torch.cat(latents)
        noise = initial_noise(be, self.seed, rgb_latent)
        steps = be.ddim.schedule(s.init_steps)
        self.store = self.budgets.snippet_store(be, s.snippet_len, h, w)
        gmin = torch.tensor(float("inf"))
        copies: dict[tuple[int, int], torch.Tensor] = {}
        for batch in mine:
            idx = torch.tensor([sn.frames for sn in batch], device=be.device) - lo
            x = denoise_snippets(be, rgb_latent, noise, idx, steps)
            depth = decode_depth(be, x.reshape(-1, *x.shape[2:]), size, s.vae_batch)
            depth = depth.reshape(len(batch), s.snippet_len, h, w)
            check_finite(depth, "snippet inference")
            gmin = torch.minimum(gmin, depth.min().float().cpu())
            sub = solver_copy(depth)
            for j, sn in enumerate(batch):
                if (sn.dilation, sn.k) in needed:
                    self.store.put((sn.dilation, sn.k), depth[j])
                if a <= sn.k < b:
                    copies[(sn.dilation, sn.k)] = sub[j].cpu().clone()
            trim_host_memory()
        return {"copies": copies, "gmin": float(gmin), "timestamps": timestamps, "size": size, "decoded": hi - lo}

    def merge(self, params, gmin: float, delta: torch.Tensor | None) -> tuple[float, float]:
        """Merge the range's frames with the solved parameters; returns their min and max."""
        w, h = self.size
        self.out = OutputBuffer((self.b - self.a, h, w), self.budgets.host_output, self.budgets.spill_dir, [])
        lo, hi = merge_into(
            self.out.array,
            self.store,
            self.plan,
            params,
            torch.tensor(gmin, dtype=torch.float32),
            self.be.device,
            delta,
            first=self.a,
        )
        self.store.close()
        self.store = None
        return lo, hi

    def finish(self, lo: float, hi: float) -> np.ndarray:
        """The range's output depth `[b - a, H, W]` float32, re-normalized by the whole video's min and max."""
        renormalize_inplace(self.out.array, lo, hi)
        return self.out.array

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
        self.out = None
