"""Offline RollingDepth: frames -> latents -> snippets -> co-alignment -> merge -> refinement.

Data flow (ARCHITECTURE.md): frames stream from the decoder thread through
resize, normalization and the VAE encoder; only the small per-frame latents
are kept. The `RollingScheduler` emits every snippet (any dilation) as soon as
its last frame's latent exists and they are packed into backend batches, so
snippet inference runs while the video is still being decoded. Decoded
full-resolution snippet depth goes to a `SnippetStore` (device while it fits
a budget, then host memory, then a spill file) and a cropped, subsampled copy
to the aligner. The merge, re-normalization and refinement then run over
chunks of frames into a float32 output that is memory-mapped when large.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from rd_engine.coalign.problem import BORDER, FACTOR, AlignGroup, align_reference, back_to_back, check_finite
from rd_engine.backends.base import Backend
from rd_engine.errors import UserError
from rd_engine.kernels.average import accumulate_frames
from rd_engine.coalign.merge import merge_deltas, merge_frames
from rd_engine.progress import StageClock
from rd_engine.snippets.scheduler import RollingScheduler, Snippet, SnippetStore, batches
from rd_engine.settings import Settings
from rd_engine.snippets.plan import cap_dilation, refine_gap, snippet_indices
from rd_engine.coalign.solvers import objective_value
from rd_engine.io.video import VideoInfo, iter_frames, preprocess, probe, processed_size

log = logging.getLogger("rd_engine")

GiB = 1 << 30


@dataclass
class Budgets:
    """Memory budgets of one run (bytes). Defaults suit a 24 GiB host and any GPU."""

    device_snippets: int = 4 * GiB  # full-resolution snippet depth kept on the GPU
    host_snippets: int = 6 * GiB  # ... then in host memory, then spilled to disk
    host_output: int = 2 * GiB  # output depth larger than this is memory-mapped from disk
    spill_dir: str | None = None


@dataclass
class SnippetGroup:
    """Decoded snippets of one distinct dilation (for `--save-snippets`, parity and tests)."""

    dilation: int
    weight: int
    indices: torch.Tensor  # [K, L]
    depth: torch.Tensor  # [K, L, H, W], run dtype, host memory


@dataclass
class Prediction:
    """What a run computed for one video. `depth` may be memory-mapped: call `close()`."""

    depth: np.ndarray  # [N, H, W] float32: the output depth
    coaligned: np.ndarray | None  # [N, H, W] re-normalized co-aligned depth (kept on request)
    snippets: list[SnippetGroup]  # kept on request
    params: list[tuple[torch.Tensor, torch.Tensor]]  # per group (scale [K], shift [K])
    dilations: list[int]  # effective dilations (after capping), settings order
    groups: list[tuple[int, int]]  # (dilation, weight) per distinct dilation
    timestamps: list[float]
    info: VideoInfo
    size: tuple[int, int]  # processed (width, height)
    seed: int
    settings: Settings
    objective: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_device_bytes: int = 0
    store_tiers: dict[str, int] = field(default_factory=dict)
    _temp_files: list[Path] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])

    def close(self) -> None:
        """Release memory-mapped arrays and delete their temporary files."""
        self.depth = np.empty((0, *self.depth.shape[1:]), np.float32)
        self.coaligned = None
        for p in self._temp_files:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        self._temp_files.clear()


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


def _ceil8(x: int) -> int:
    return int(math.ceil(x / 8) * 8)


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


class _Output:
    """A float32 `[N, H, W]` array in memory, or memory-mapped from a temp file when large."""

    def __init__(self, shape, budget: int, spill_dir: str | None, temp_files: list[Path]):
        nbytes = int(np.prod(shape)) * 4
        if nbytes <= budget:
            self.array = np.empty(shape, np.float32)
        else:
            fd, name = tempfile.mkstemp(prefix="rd-engine-depth-", suffix=".f32", dir=spill_dir)
            os.close(fd)
            temp_files.append(Path(name))
            try:
                self.array = np.memmap(name, dtype=np.float32, mode="w+", shape=shape)
            except OSError as e:
                raise UserError(f"cannot create a {nbytes / GiB:.1f} GiB depth file in {Path(name).parent} ({e})") \
                    from None


class Pipeline:
    """Runs the method on one backend; keeps no state between videos."""

    def __init__(self, backend: Backend, progress: bool = True, budgets: Budgets | None = None,
                 on_phase: Callable[[str], None] | None = None):
        """Args:
            backend: Runs the model components.
            progress: Show a progress bar per stage.
            budgets: Memory budgets (defaults: `Budgets()`).
            on_phase: Called with "refine" when refinement starts and "main" when it ends (the
                benchmark tags backend calls with it).
        """
        self.backend = backend
        self.progress = progress
        self.budgets = budgets or Budgets()
        self.on_phase = on_phase

    # -- helpers -------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
        """uint8 frames `[B, H0, W0, 3]` -> RGB latents `[B, 4, h, w]` (resize, normalize, pad, encode)."""
        be = self.backend
        x = preprocess(frames, size, be.device, torch.float32).to(be.dtype)
        return be.encode(pad8(x, size, padded))

    def decode_depth(self, latents: torch.Tensor, size: tuple[int, int], vae_batch: int) -> torch.Tensor:
        """latents `[B, 4, h, w]` -> depth `[B, H, W]` cropped to the processed size (run dtype)."""
        w, h = size
        out = [self.backend.decode(latents[a:b])[:, 0, :h, :w] for a, b in _chunks(latents.shape[0], vae_batch)]
        return torch.cat(out)

    def denoise_snippets(self, rgb_latent: torch.Tensor, noise: torch.Tensor, idx: torch.Tensor,
                         steps) -> torch.Tensor:
        """Initial inference of snippets `idx [S, L]` from the shared noise: latents `[S, L, 4, h, w]`."""
        rgb = rgb_latent[idx]
        x = noise.expand(idx.shape[0], idx.shape[1], *noise.shape[1:]).clone()
        for step in steps:
            x = self.backend.denoise(rgb, x, step)
        return x

    # -- the method ----------------------------------------------------------
    def predict(self, path, settings: Settings, keep_snippets: bool = False,
                keep_coaligned: bool = False) -> Prediction:
        """Run RollingDepth on one video file (offline: all snippets, global co-alignment)."""
        s = settings
        be = self.backend
        clock = StageClock(self.progress, be.device)
        if be.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(be.device)
        info = probe(path)
        size = processed_size(info.width, info.height, s.res)
        if min(size) < 8:
            raise UserError(f"{path}: processed size {size[0]}x{size[1]} is too small (at least 8x8 pixels)")
        padded = (_ceil8(size[0]), _ceil8(size[1]))
        # engines built for a resolution range refuse others, with the command that rebuilds them
        check = getattr(be, "check_size", None) or getattr(getattr(be, "engine", None), "check_size", None)
        if check is not None:
            check(size)
        w, h = size
        seed = s.seed if s.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
        temp_files: list[Path] = []
        sched = RollingScheduler(s.dilations, s.snippet_len, s.cap_dilation)
        steps = be.ddim.schedule(s.init_steps)
        # on a CPU device the "device" tier would just be host memory under another name
        device_budget = self.budgets.device_snippets if be.device.type != "cpu" else 0
        store = SnippetStore((s.snippet_len, h, w), be.dtype, be.device, device_budget,
                             self.budgets.host_snippets, self.budgets.spill_dir)
        try:
            latents = LatentStore()
            timestamps: list[float] = []
            stats: dict[tuple[int, int], torch.Tensor] = {}
            gmin = torch.tensor(float("inf"))
            pending: deque[Snippet] = deque()
            noise = None
            total = s.frame_count or (max(0, info.num_frames - s.start_frame) if info.num_frames else None)

            def run_batches(final: bool) -> None:
                nonlocal gmin
                t_start = time.perf_counter()
                for batch in batches(pending, s.snippet_batch, final):
                    idx = torch.tensor([sn.frames for sn in batch], device=be.device)
                    x = self.denoise_snippets(latents.view(), noise, idx, steps)
                    depth = self.decode_depth(x.reshape(-1, *x.shape[2:]), size, s.vae_batch)
                    depth = depth.reshape(len(batch), s.snippet_len, h, w)
                    check_finite(depth, "snippet inference")
                    gmin = torch.minimum(gmin, depth.min().float().cpu())
                    sub = depth[:, :, BORDER:-BORDER, BORDER:-BORDER][:, :, ::FACTOR, ::FACTOR]
                    for j, sn in enumerate(batch):
                        store.put((sn.dilation, sn.k), depth[j])
                        stats[(sn.dilation, sn.k)] = sub[j].reshape(s.snippet_len, -1).cpu()
                    n_snippets[0] += len(batch)
                    trim_host_memory()
                if be.device.type == "cuda":
                    torch.cuda.synchronize(be.device)
                snippet_seconds[0] += time.perf_counter() - t_start

            # 1+2. decode, encode, and snippet inference as soon as each snippet's frames exist
            buf: list[torch.Tensor] = []
            snippet_seconds, n_snippets = [0.0], [0]
            # one bar for the interleaved decode/encode/snippet work; the seconds are split afterwards
            with clock.stage("encode", total=total) as tick_enc:
                for fr in iter_frames(path, s.start_frame, s.frame_count):
                    buf.append(torch.from_numpy(fr.rgb))
                    timestamps.append(fr.timestamp)
                    if len(buf) < s.vae_batch:
                        continue
                    latents.append(self.encode_frames(torch.stack(buf), size, padded))
                    tick_enc(len(buf))
                    if noise is None:  # the generator's first use in the run, as in the reference
                        noise = _noise(seed, latents.view(), be)
                    pending.extend(sched.push(len(buf)))
                    buf = []
                    run_batches(final=False)
                if buf:
                    latents.append(self.encode_frames(torch.stack(buf), size, padded))
                    tick_enc(len(buf))
                    if noise is None:
                        noise = _noise(seed, latents.view(), be)
                    pending.extend(sched.push(len(buf)))
                pending.extend(sched.finish())
                run_batches(final=True)
            clock.seconds["encode"] -= snippet_seconds[0]
            clock.seconds["snippets"] = snippet_seconds[0]
            rgb_latent = latents.view()
            n = rgb_latent.shape[0]
            effective = sched.effective
            if effective != list(s.dilations):
                log.info("%s: %d frames: dilations %s capped to %s", info.path.name, n, s.dilations, effective)
            group_list = [(d, wgt, _group_indices(d, n, s.snippet_len)) for d, wgt in sched.weights.items()]

            # 3. co-alignment on the small copies; the global minimum is subtracted in the run dtype
            with clock.stage("align", total=s.align_iters if s.align == "reference" else None, unit="it") as tick:
                # one buffer for all groups: the fast solver uses it as one array, without a copy
                views = back_to_back([(idx.shape[0], *stats[(d, 0)].shape) for d, _, idx in group_list])
                solve_groups = []
                for (d, wgt, idx), v in zip(group_list, views):
                    for k in range(idx.shape[0]):
                        st = stats.pop((d, k))
                        v[k] = st - gmin.to(st.dtype)
                    solve_groups.append(AlignGroup(v, idx, wgt))
                params = self._solve(solve_groups, n, s, tick)
                objective = objective_value(solve_groups, params, n)
                delta = merge_deltas(solve_groups, params, n) if s.align == "robust" else None
                del solve_groups

            # 4. merge at full resolution over chunks of frames, then re-normalize
            out = _Output((n, h, w), self.budgets.host_output, self.budgets.spill_dir, temp_files)
            with clock.stage("merge", total=n):
                lo, hi = _merge_into(out.array, store, group_list, params, gmin, be.device, delta)
                _renormalize_inplace(out.array, lo, hi)
            snippets_kept = []
            if keep_snippets:
                for d, wgt, idx in group_list:
                    dep = torch.stack([store.get((d, k), torch.device("cpu")) for k in range(idx.shape[0])])
                    snippets_kept.append(SnippetGroup(d, wgt, idx, dep))
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
                    self._refine(rgb_latent, noise, out.array, n, size, padded, s, clock)
                finally:
                    if self.on_phase is not None:
                        self.on_phase("main")
            elif keep_coaligned:
                coaligned = out.array
            peak = torch.cuda.max_memory_allocated(be.device) if be.device.type == "cuda" else peak_store
            return Prediction(
                depth=out.array, coaligned=coaligned, snippets=snippets_kept, params=params,
                dilations=effective, groups=[(d, wgt) for d, wgt, _ in group_list], timestamps=timestamps,
                info=info, size=size, seed=seed, settings=s, objective=objective,
                stage_seconds=dict(clock.seconds), peak_device_bytes=peak, store_tiers=tiers,
                _temp_files=temp_files,
            )
        except BaseException:
            store.close()
            for p in temp_files:
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
            raise

    def _solve(self, groups: list[AlignGroup], n: int, s: Settings, tick) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if sum(g.depth.shape[0] for g in groups) == 1:
            # a single snippet (1-3 frames) needs no alignment
            return [(torch.ones(1), torch.zeros(1))]
        if s.align == "reference":
            return align_reference(groups, n, iters=s.align_iters, progress=tick)
        from rd_engine.coalign.solvers import solve

        return solve(groups, n, s.align, progress=tick)

    def _refine(self, rgb_latent, noise, depth: np.ndarray, n, size, padded, s: Settings, clock: StageClock):
        """Refinement (SPEC section 6) in place on `depth` (the re-normalized co-aligned video)."""
        be = self.backend
        ddim = be.ddim
        start = cap_dilation(n, s.refine_snippet_len, s.refine_start_dilation) if s.cap_dilation \
            else s.refine_start_dilation
        total = int(s.refine_step / 0.5)
        timesteps = ddim.timesteps(total)
        timesteps = timesteps[int(len(timesteps) * 0.5):]
        with clock.stage("refine", total=len(timesteps), unit="step") as tick:
            # encode the co-aligned depth through the RGB encoder path
            lat = []
            for a, b in _chunks(n, s.vae_batch):
                d = torch.from_numpy(np.ascontiguousarray(depth[a:b])).to(be.device, be.dtype)
                lat.append(be.encode(pad8(d[:, None].expand(-1, 3, -1, -1), size, padded)))
            x = ddim.add_noise(torch.cat(lat), noise.expand(n, *noise.shape[1:]), timesteps[0])
            for i, t in enumerate(timesteps):
                idx_all = snippet_indices(n, s.refine_snippet_len, refine_gap(i, len(timesteps), start) + 1)
                step = ddim.step_at(t, total)
                acc = torch.zeros(x.shape, dtype=torch.float32, device=be.device)
                count = torch.zeros(n, dtype=torch.float32, device=be.device)
                for a, b in _chunks(idx_all.shape[0], s.snippet_batch):
                    idx = idx_all[a:b].to(be.device)
                    out = be.denoise(rgb_latent[idx], x[idx], step)  # from the previous step's latents
                    accumulate_frames(acc, count, out, idx)  # latent averaging
                x = (acc / count[:, None, None, None]).to(be.dtype)
                tick(1)
        with clock.stage("decode", total=n):
            for a, b in _chunks(n, s.vae_batch):
                depth[a:b] = self.decode_depth(x[a:b], size, s.vae_batch).float().cpu().numpy()


def pad8(x: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """Replicate-pad `[B, C, H, W]` to a multiple of 8.

    The reference lets the VAE floor the size instead, which shrinks and
    shifts its depth; we pad and crop the decoded depth back.
    """
    (w, h), (pw, ph) = size, padded
    if (pw, ph) == (w, h):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")


def _noise(seed: int, latent: torch.Tensor, be) -> torch.Tensor:
    gen = torch.Generator(be.device).manual_seed(seed)
    return torch.randn((1, *latent.shape[1:]), device=be.device, dtype=be.dtype, generator=gen)


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
        self._buf[self.n: self.n + x.shape[0]] = x
        self.n += x.shape[0]

    def view(self) -> torch.Tensor:
        return self._buf[: self.n]


def _group_indices(d: int, n: int, L: int) -> torch.Tensor:
    if n < L:
        return torch.tensor([[min(j, n - 1) for j in range(L)]])
    return snippet_indices(n, L, d)


def _merge_into(out: np.ndarray, store: SnippetStore, groups, params, gmin: torch.Tensor,
                device: torch.device, delta: torch.Tensor | None = None, chunk: int = 32) -> tuple[float, float]:
    """Per frame, the (robust) mean of aligned snippet frames (full resolution), chunk by chunk
    (`merge.merge_frames`; `delta`: per-frame Cauchy scales for the robust mean).

    Returns the min and max of the merged video (for re-normalization).
    """
    n, h, w = out.shape
    lo, hi = float("inf"), float("-inf")
    dils = [d for d, _, _ in groups]

    def fetch(gi: int, a: int, b: int) -> torch.Tensor:
        return store.get_many([(dils[gi], k) for k in range(a, b)], device)

    for f0, f1 in _chunks(n, chunk):
        merged = merge_frames(fetch, [idx for _, _, idx in groups], [wgt for _, wgt, _ in groups], params, gmin,
                              f0, f1, (h, w), device, None if delta is None else delta[f0:f1])
        lo, hi = min(lo, float(merged.min())), max(hi, float(merged.max()))
        out[f0:f1] = merged.cpu().numpy()
        trim_host_memory()
    return lo, hi


def _renormalize_inplace(out: np.ndarray, lo: float, hi: float, chunk: int = 64) -> None:
    """Map the whole video to [-1, 1] by its min and max, as the reference does (chunked)."""
    for a, b in _chunks(out.shape[0], chunk):
        x = torch.from_numpy(np.ascontiguousarray(out[a:b]))
        x = x - lo
        x = x / (hi - lo)
        out[a:b] = (x * 2.0 - 1.0).numpy()
