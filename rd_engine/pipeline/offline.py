"""Offline RollingDepth: frames -> latents -> snippets -> co-alignment -> merge -> refinement.

Data flow (docs/architecture.md): frames stream from the decoder thread through
resize, normalization and the VAE encoder; only the small per-frame latents
are kept. The `RollingScheduler` emits every snippet (any dilation) as soon as
its last frame's latent exists and they are packed into backend batches, so
snippet inference runs while the video is still being decoded. Decoded
full-resolution snippet depth goes to a `SnippetStore` (device while it fits
a budget, then host memory, then a spill file) and the aligner's solver copy
(`rd_engine.coalign.problem.solver_copy`) is kept. The merge, re-normalization
and refinement then run over chunks of frames into a float32 output that is
memory-mapped when large.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rd_engine.backends.base import Backend
from rd_engine.coalign.merge import confidence_from_spread, entries_per_frame, merge_deltas, merge_frames
from rd_engine.coalign.problem import Params, back_to_back, check_finite, solver_copy
from rd_engine.coalign.solve import solve
from rd_engine.errors import SettingError, UserError
from rd_engine.io.anchors import Anchors
from rd_engine.io.video import VideoInfo, iter_frames, probe, processed_size
from rd_engine.pipeline.inference import (
    chunks,
    decode_depth,
    denoise_snippets,
    encode_frames,
    initial_noise,
    padded_size,
    pick_seed,
)
from rd_engine.pipeline.metric import MetricVideo, fit_video
from rd_engine.pipeline.refine import refine
from rd_engine.pipeline.stores import GiB, LatentStore, OutputBuffer, SnippetStore, trim_host_memory
from rd_engine.progress import StageClock
from rd_engine.settings import Settings
from rd_engine.snippets.plan import SnippetGroup, snippet_indices
from rd_engine.snippets.scheduler import RollingScheduler, Snippet, batches

ALIGN_ON = ("host", "device")  # where the fast and robust co-alignment solvers run (Pipeline(align_on=))

log = logging.getLogger("rd_engine")


AUTO_DEVICE_SHARE = 0.5  # of the free device memory, for Budgets(device_snippets="auto")


@dataclass
class Budgets:
    """Memory budgets of one run (bytes). Defaults suit a 24 GiB host and any GPU."""

    # full-resolution snippet depth kept on the GPU; "auto": a share of the device memory free when the run
    # starts (AUTO_DEVICE_SHARE of it: the rest stays for the models' activations and other processes)
    device_snippets: int | str = 4 * GiB
    host_snippets: int = 6 * GiB  # ... then in host memory, then spilled to disk
    host_output: int = 2 * GiB  # output depth larger than this is memory-mapped from disk
    spill_dir: str | None = None

    @staticmethod
    def device_value(value: float | str) -> int | str:
        """`device_snippets` of a number of GiB or "auto"."""
        return value if value == "auto" else int(float(value) * GiB)

    def device_budget(self, device: torch.device) -> int:
        """Bytes of snippet depth kept on `device` (0 on the CPU; "auto" sized from its free memory)."""
        if device.type == "cpu":
            return 0
        if self.device_snippets == "auto":
            if device.type != "cuda":
                return 4 * GiB
            free, _ = torch.cuda.mem_get_info(device)
            return int(free * AUTO_DEVICE_SHARE)
        if not isinstance(self.device_snippets, int) or self.device_snippets < 0:
            raise UserError(f"the device snippet budget must be bytes >= 0 or 'auto', got {self.device_snippets!r}")
        return self.device_snippets

    def snippet_store(self, backend: Backend, snippet_len: int, h: int, w: int) -> SnippetStore:
        """The store of a run's decoded snippets `[L, h, w]` under these budgets."""
        # on a CPU device the "device" tier would just be host memory under another name
        device_budget = self.device_budget(backend.device)
        return SnippetStore(
            (snippet_len, h, w), backend.dtype, backend.device, device_budget, self.host_snippets, self.spill_dir
        )


@dataclass
class Shot:
    """One shot of a run cut into shots: frames `first..last` (inclusive, the video's frame numbers)."""

    first: int
    last: int
    depth_min: float  # the shot's merged depth range, mapped onto [-1, 1] (its own normalization)
    depth_max: float
    dilations: list[int]  # its effective dilations (capped for its own length)

    @property
    def frames(self) -> int:
        return self.last - self.first + 1


@dataclass
class Prediction:
    """What a run computed for one video. `depth` may be memory-mapped: call `close()`."""

    depth: np.ndarray  # [N, H, W] float32: the output depth
    coaligned: np.ndarray | None  # [N, H, W] re-normalized co-aligned depth (kept on request)
    snippets: list[SnippetGroup]  # kept on request: decoded snippets [K, L, H, W] (run dtype, host)
    params: Params  # per group (scale [K], shift [K])
    dilations: list[int]  # effective dilations (after capping), settings order
    groups: list[tuple[int, int]]  # (dilation, weight) per distinct dilation
    timestamps: list[float]
    info: VideoInfo
    size: tuple[int, int]  # processed (width, height)
    seed: int
    settings: Settings
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_device_bytes: int = 0
    store_tiers: dict[str, int] = field(default_factory=dict)
    # [N, H, W] float32 per-pixel confidence in [0, 1] (coalign.merge.CONFIDENCE_SPREAD), on request
    confidence: np.ndarray | None = None
    metric: MetricVideo | None = None  # the metric fit to anchors (pipeline.metric), on request
    norm: tuple[float, float] | None = None  # min and max of the merged depth, mapped onto [-1, 1]
    shots: list[Shot] | None = None  # the shot table of a run cut into shots (`pipeline.shots`)
    _temp_files: list[Path] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    def close(self) -> None:
        """Release memory-mapped arrays and delete their temporary files."""
        self.depth = np.empty((0, *self.depth.shape[1:]), np.float32)
        self.coaligned = None
        self.confidence = None
        _unlink(self._temp_files)


@dataclass
class Inferred:
    """What `Pipeline.infer_frames` computed for `Pipeline.finish_frames`: the snippets (in `store`), the
    aligner's copies of them, the latents and the noise (for refinement), the frames' timestamps.
    """

    info: VideoInfo
    size: tuple[int, int]
    settings: Settings
    seed: int
    clock: StageClock
    store: SnippetStore
    copies: dict[tuple[int, int], torch.Tensor]
    gmin: torch.Tensor
    rgb_latent: torch.Tensor
    noise: torch.Tensor | None
    timestamps: list[float]
    sched: RollingScheduler
    temp_files: list[Path]

    @property
    def num_frames(self) -> int:
        return int(self.rgb_latent.shape[0])

    def close(self) -> None:
        """Free the snippets (after a failure: `finish_frames` frees them itself)."""
        self.store.close()
        _unlink(self.temp_files)


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Set the torch CPU thread count to `n` inside the block (unchanged for None)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _unlink(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)
    paths.clear()


class Pipeline:
    """Runs the method on one backend; keeps no state between videos.

    Args:
        backend: Runs the model components.
        progress: Show a progress bar per stage.
        budgets: Memory budgets (defaults: `Budgets()`).
        on_phase: Called with "refine" when refinement starts and "main" when it ends (the
            benchmark tags backend calls with it).
        align_threads: torch CPU threads of the co-alignment solve when it runs on the host (None:
            torch's setting; a solver of many small ops slows down when its threads outnumber free cores).
        align_on: Where the `fast` and `robust` solvers run: "host" (the CPU), or "device" (the backend's
            GPU, with the solver copies moved there; on a CPU backend the same as "host"). The reference
            solver runs on the device on a GPU, as the public implementation runs it.
    """

    def __init__(
        self,
        backend: Backend,
        progress: bool = True,
        budgets: Budgets | None = None,
        on_phase: Callable[[str], None] | None = None,
        align_threads: int | None = None,
        align_on: str = "host",
    ):
        if align_on not in ALIGN_ON:
            raise SettingError("align_on", f"must be one of {', '.join(ALIGN_ON)}, not {align_on!r}")
        self.backend = backend
        self.progress = progress
        self.budgets = budgets or Budgets()
        self.on_phase = on_phase
        self.align_threads = align_threads
        self.align_on = align_on

    def _initial_noise(self, seed: int, latent: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
        if given is None:
            return initial_noise(self.backend, seed, latent)
        want = (1, *latent.shape[1:])
        if tuple(given.shape) != want:
            raise UserError(f"the supplied initial noise is {list(given.shape)}, the run's latents need {list(want)}")
        return given.to(self.backend.device, self.backend.dtype)

    # -- the method ----------------------------------------------------------
    def predict(
        self,
        path,
        settings: Settings,
        keep_snippets: bool = False,
        keep_coaligned: bool = False,
        confidence: bool = False,
        anchors: Anchors | None = None,
        anchor_window: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> Prediction:
        """Run RollingDepth on one video file (offline: all snippets, global co-alignment).

        Args:
            path: The video.
            settings: The method's settings.
            keep_snippets: Keep the decoded snippets in the prediction.
            keep_coaligned: Keep the co-aligned depth before refinement.
            confidence: Compute the per-pixel confidence (`Prediction.confidence`).
            anchors: Sparse metric depth (`io.anchors.Anchors`): fit metric depth (`Prediction.metric`).
                The relative depth is the same with or without them.
            anchor_window: Frames of the optional slowly varying metric correction (0 = one fit).
            noise: `[1, 4, h, w]` (any device and dtype) in place of the initial noise the seed draws on
                the backend's device, as the reference draws it: devices' generators differ, so a
                comparison across devices supplies the same noise to both.
        """
        s = settings
        info, size = self.check_video(path, s)
        total = s.frame_count or (max(0, info.num_frames - s.start_frame) if info.num_frames else None)
        frames = iter_frames(path, s.start_frame, s.frame_count)
        return self.predict_frames(
            frames,
            info,
            size,
            s,
            pick_seed(s.seed),
            total,
            keep_snippets,
            keep_coaligned,
            self.progress,
            confidence=confidence,
            anchors=anchors,
            anchor_window=anchor_window,
            noise=noise,
        )

    def check_video(self, path, s: Settings) -> tuple[VideoInfo, tuple[int, int]]:
        """The video's info and processed size, checked against the backend."""
        info = probe(path)
        size = processed_size(info.width, info.height, s.res)
        if min(size) < 8:
            raise UserError(f"{path}: processed size {size[0]}x{size[1]} is too small (at least 8x8 pixels)")
        self.backend.check_size(size)  # engines built for a resolution range refuse others, saying how to rebuild
        return info, size

    def predict_frames(
        self,
        frames: Iterable,
        info: VideoInfo,
        size: tuple[int, int],
        s: Settings,
        seed: int,
        total: int | None,
        keep_snippets: bool = False,
        keep_coaligned: bool = False,
        progress: bool = True,
        confidence: bool = False,
        anchors: Anchors | None = None,
        anchor_window: float = 0.0,
        noise: torch.Tensor | None = None,
    ) -> Prediction:
        """The method on decoded frames (`DecodedFrame`s of `info`'s video, in order), as `predict` runs it
        on the frames of `s`'s window; `seed` draws the initial noise; `confidence`, `anchors` and
        `anchor_window` and `noise` as in `predict`.
        """
        done = self.infer_frames(frames, info, size, s, seed, total, progress, noise)
        return self.finish_frames(done, keep_snippets, keep_coaligned, confidence, anchors, anchor_window)

    def infer_frames(
        self,
        frames: Iterable,
        info: VideoInfo,
        size: tuple[int, int],
        s: Settings,
        seed: int,
        total: int | None,
        progress: bool = True,
        noise: torch.Tensor | None = None,
    ) -> Inferred:
        """The model's part of `predict_frames` (decode, encode, snippet inference): the snippets of the
        frames, for `finish_frames`. Only `finish_frames`' refinement calls the model again, so the next
        video's (or shot's) `infer_frames` may run while this one finishes without refinement.
        """
        be = self.backend
        clock = StageClock(progress, be.device)
        if be.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(be.device)
        padded = padded_size(size)
        w, h = size
        temp_files: list[Path] = []
        sched = RollingScheduler(s.dilations, s.snippet_len, s.cap_dilation)
        steps = be.ddim.schedule(s.init_steps)
        store = self.budgets.snippet_store(be, s.snippet_len, h, w)
        try:
            latents = LatentStore()
            timestamps: list[float] = []
            copies: dict[tuple[int, int], torch.Tensor] = {}  # the aligner's solver copy of each snippet
            gmin = torch.tensor(float("inf"))
            pending: deque[Snippet] = deque()
            given, noise = noise, None

            def run_batches(final: bool) -> None:
                nonlocal gmin
                t_start = time.perf_counter()
                for batch in batches(pending, s.snippet_batch, final):
                    idx = torch.tensor([sn.frames for sn in batch], device=be.device)
                    x = denoise_snippets(be, latents.view(), noise, idx, steps)
                    depth = decode_depth(be, x.reshape(-1, *x.shape[2:]), size, s.vae_batch)
                    depth = depth.reshape(len(batch), s.snippet_len, h, w)
                    check_finite(depth, "snippet inference")
                    gmin = torch.minimum(gmin, depth.min().float().cpu())
                    sub = solver_copy(depth)
                    for j, sn in enumerate(batch):
                        store.put((sn.dilation, sn.k), depth[j])
                        copies[(sn.dilation, sn.k)] = sub[j].cpu()
                    trim_host_memory()
                if be.device.type == "cuda":
                    torch.cuda.synchronize(be.device)
                snippet_seconds[0] += time.perf_counter() - t_start

            # 1+2. decode, encode, and snippet inference as soon as each snippet's frames exist
            buf: list[torch.Tensor] = []
            snippet_seconds = [0.0]
            # one bar for the interleaved decode/encode/snippet work; the seconds are split afterwards
            with clock.stage("encode", total=total) as tick_enc:
                for fr in frames:
                    buf.append(torch.from_numpy(fr.rgb))
                    timestamps.append(fr.timestamp)
                    if len(buf) < s.vae_batch:
                        continue
                    latents.append(encode_frames(be, torch.stack(buf), size, padded))
                    tick_enc(len(buf))
                    if noise is None:  # the generator's first use in the run, as in the reference
                        noise = self._initial_noise(seed, latents.view(), given)
                    pending.extend(sched.push(len(buf)))
                    buf = []
                    run_batches(final=False)
                if buf:
                    latents.append(encode_frames(be, torch.stack(buf), size, padded))
                    tick_enc(len(buf))
                    if noise is None:
                        noise = self._initial_noise(seed, latents.view(), given)
                    pending.extend(sched.push(len(buf)))
                pending.extend(sched.finish())
                run_batches(final=True)
            clock.seconds["encode"] -= snippet_seconds[0]
            clock.seconds["snippets"] = snippet_seconds[0]
            return Inferred(
                info, size, s, seed, clock, store, copies, gmin, latents.view(), noise, timestamps, sched, temp_files
            )
        except BaseException:
            store.close()
            _unlink(temp_files)
            raise

    def finish_frames(
        self,
        done: Inferred,
        keep_snippets: bool = False,
        keep_coaligned: bool = False,
        confidence: bool = False,
        anchors: Anchors | None = None,
        anchor_window: float = 0.0,
        progress: bool | None = None,
    ) -> Prediction:
        """`predict_frames` after `infer_frames`: co-alignment, merge, re-normalization, refinement (the
        model again, `s.refine_step` > 0) and the metric fit; the arguments as in `predict`; `progress`
        False hides the stage bars (None: as `infer_frames` showed them).
        """
        be = self.backend
        info, size, s, seed, clock, store = done.info, done.size, done.settings, done.seed, done.clock, done.store
        copies, gmin, noise, timestamps, sched, temp_files = (
            done.copies,
            done.gmin,
            done.noise,
            done.timestamps,
            done.sched,
            done.temp_files,
        )
        if progress is not None:
            clock.enabled = progress
        padded = padded_size(size)
        w, h = size
        try:
            rgb_latent = done.rgb_latent
            n = rgb_latent.shape[0]
            effective = sched.effective
            if effective != list(s.dilations):
                log.info("%s: %d frames: dilations %s capped to %s", info.path.name, n, s.dilations, effective)
            plan = [SnippetGroup(d, wgt, snippet_indices(n, s.snippet_len, d)) for d, wgt in sched.weights.items()]

            # 3. co-alignment on the small copies; the global minimum is subtracted in the run dtype
            with clock.stage("align", total=s.align_iters if s.align == "reference" else None, unit="it") as tick:
                with cpu_threads(self.align_threads):
                    params, delta = coalign(plan, copies, gmin, s, be.device, tick, n, self.align_on)

            # 4. merge at full resolution over chunks of frames, then re-normalize
            out = OutputBuffer((n, h, w), self.budgets.host_output, self.budgets.spill_dir, temp_files)
            conf = None
            if confidence:
                conf = OutputBuffer((n, h, w), self.budgets.host_output, self.budgets.spill_dir, temp_files).array
            with clock.stage("merge", total=n):
                lo, hi = merge_into(out.array, store, plan, params, gmin, be.device, delta, spread_out=conf)
                renormalize_inplace(out.array, lo, hi)
                if conf is not None:
                    spread_to_confidence(conf, [g.indices for g in plan], lo, hi)
            snippets_kept = []
            if keep_snippets:
                for g in plan:
                    dep = torch.stack([store.get((g.dilation, k), torch.device("cpu")) for k in range(g.size)])
                    snippets_kept.append(g.with_depth(dep))
            tiers = store.tiers()
            peak_store = store.peak_device_bytes
            store.close()

            # 5. optional refinement with latent averaging
            coaligned = None
            if s.refine_step > 0:
                if keep_coaligned:
                    coaligned = np.array(out.array)
                if self.on_phase is not None:
                    self.on_phase("refine")
                try:
                    refine(be, rgb_latent, noise, out.array, size, padded, s, clock)
                finally:
                    if self.on_phase is not None:
                        self.on_phase("main")
            elif keep_coaligned:
                coaligned = out.array
            peak = torch.cuda.max_memory_allocated(be.device) if be.device.type == "cuda" else peak_store
            metric = None
            if anchors is not None:
                anchors.check(info.width, info.height, n, source="anchors")
                with clock.stage("metric", total=None):
                    metric = fit_video(out.array, anchors, (info.width, info.height), size, window=anchor_window)
            return Prediction(
                depth=out.array,
                coaligned=coaligned,
                snippets=snippets_kept,
                params=params,
                dilations=effective,
                groups=[(g.dilation, g.weight) for g in plan],
                timestamps=timestamps,
                info=info,
                size=size,
                seed=seed,
                settings=s,
                stage_seconds=dict(clock.seconds),
                peak_device_bytes=peak,
                store_tiers=tiers,
                confidence=conf,
                metric=metric,
                norm=(lo, hi),
                _temp_files=temp_files,
            )
        except BaseException:
            done.close()
            raise


MERGE_CHUNK = 32  # frames merged at a time; frame ranges split at its multiples merge exactly as a whole run


def coalign(
    plan: list[SnippetGroup],
    copies: dict[tuple[int, int], torch.Tensor],
    gmin: torch.Tensor,
    s: Settings,
    device: torch.device,
    tick,
    n: int,
    align_on: str = "host",
) -> tuple[Params, torch.Tensor | None]:
    """Scale and shift per snippet from the aligner's copies (consumed), minus the global minimum.

    Returns the parameters per group (on the CPU) and, for the robust solver, the per-frame Cauchy
    scales of its merge (else None).
    """
    # one buffer for all groups: the fast solver uses it as one array, without a copy
    views = back_to_back([(g.size, *copies[(g.dilation, 0)].shape) for g in plan])
    for g, v in zip(plan, views):
        for k in range(g.size):
            c = copies.pop((g.dilation, k))
            v[k] = c - gmin.to(c.dtype)
    host_groups = [g.with_depth(v) for g, v in zip(plan, views)]
    solve_groups = host_groups
    if device.type == "cuda" and (s.align == "reference" or align_on == "device"):
        # the reference's Adam runs where its snippets are: on the GPU (2000 small steps); the others on
        # the GPU when asked (`align_on`)
        solve_groups = [g.with_depth(g.depth.to(device)) for g in host_groups]
    params = solve(solve_groups, n, s.align, iters=s.align_iters, progress=tick)
    params = [(sc.cpu(), sh.cpu()) for sc, sh in params]
    delta = merge_deltas(host_groups, params, n) if s.align == "robust" else None  # on the host copies
    return params, delta


def merge_into(
    out: np.ndarray,
    store: SnippetStore,
    groups: list[SnippetGroup],
    params: Params,
    gmin: torch.Tensor,
    device: torch.device,
    delta: torch.Tensor | None = None,
    chunk: int = MERGE_CHUNK,
    first: int = 0,
    spread_out: np.ndarray | None = None,
) -> tuple[float, float]:
    """Per frame, the (robust) mean of aligned snippet frames (full resolution), chunk by chunk
    (`merge.merge_frames`; `delta`: per-frame Cauchy scales of the whole video for the robust mean).

    `out` holds frames `[first, first + len(out))` of the video; `store` must hold every snippet that
    covers one of them.

    `spread_out`: like `out`, receives each pixel's spread of the aligned entries (merge units).

    Returns the min and max of the merged frames (for re-normalization).
    """
    m, h, w = out.shape
    lo, hi = float("inf"), float("-inf")
    dils = [g.dilation for g in groups]

    def fetch(gi: int, a: int, b: int) -> torch.Tensor:
        return store.get_many([(dils[gi], k) for k in range(a, b)], device)

    for c0, c1 in chunks(m, chunk):
        f0, f1 = first + c0, first + c1
        merged = merge_frames(
            fetch,
            [g.indices for g in groups],
            [g.weight for g in groups],
            params,
            gmin,
            f0,
            f1,
            (h, w),
            device,
            None if delta is None else delta[f0:f1],
            spread=spread_out is not None,
        )
        if spread_out is not None:
            merged, spread = merged
            spread_out[c0:c1] = spread.cpu().numpy()
        lo, hi = min(lo, float(merged.min())), max(hi, float(merged.max()))
        out[c0:c1] = merged.cpu().numpy()
        trim_host_memory()
    return lo, hi


def spread_to_confidence(
    spread: np.ndarray, indices: list[torch.Tensor], lo: float, hi: float, first: int = 0, chunk: int = 64
) -> None:
    """Turn the merge's spread (in place) into confidence (`coalign.merge.confidence_from_spread`): the
    spread in the units of the re-normalized output (x 2 / (hi - lo)), frames `[first, first + len)`.
    """
    k = 2.0 / (hi - lo) if hi > lo else 1.0
    for a, b in chunks(spread.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(spread[a:b])) * k
        spread[a:b] = confidence_from_spread(x, entries_per_frame(indices, first + a, first + b)).numpy()


def renormalize_inplace(out: np.ndarray, lo: float, hi: float, chunk: int = 64) -> None:
    """Map the whole video to [-1, 1] by its min and max, as the reference does (chunked; value by value,
    so a frame range gives the same numbers as the whole video).
    """
    for a, b in chunks(out.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(out[a:b]))
        x = x - lo
        x = x / (hi - lo)
        out[a:b] = (x * 2.0 - 1.0).numpy()
