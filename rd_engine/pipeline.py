"""Offline RollingDepth: frames -> latents -> snippets -> co-alignment -> merge -> refinement.

Frames stream from the decoder through resize, normalization and the VAE
encoder; only the small per-frame latents are kept. Snippets of every dilation
are packed together into backend batches. Full-resolution snippet depth lives
in host memory until the merge (the streaming scheduler adds spill files).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .align import AlignGroup, align_reference, check_finite, objective_value, solver_view
from .backends.base import Backend
from .errors import UserError
from .merge import merge_aligned, renormalize
from .progress import StageClock
from .settings import Settings
from .snippets import DilationGroup, cap_dilation, plan_snippets, refine_gap, snippet_indices
from .video import VideoInfo, iter_frames, preprocess, probe, processed_size

log = logging.getLogger("rd_engine")


@dataclass
class SnippetGroup:
    """Decoded snippets of one distinct dilation."""

    dilation: int
    weight: int
    indices: torch.Tensor  # [K, L]
    depth: torch.Tensor  # [K, L, H, W], run dtype, host memory


@dataclass
class Prediction:
    """Everything a run computed for one video (host tensors)."""

    depth: torch.Tensor  # [N, H, W] float32: the output depth
    coaligned: torch.Tensor  # [N, H, W] float32: re-normalized co-aligned depth
    snippets: list[SnippetGroup]
    params: list[tuple[torch.Tensor, torch.Tensor]]  # per group (scale [K], shift [K])
    dilations: list[int]  # effective dilations (after capping), settings order
    timestamps: list[float]
    info: VideoInfo
    size: tuple[int, int]  # processed (width, height)
    seed: int
    settings: Settings
    objective: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    peak_device_bytes: int = 0

    @property
    def num_frames(self) -> int:
        return int(self.depth.shape[0])


def _ceil8(x: int) -> int:
    return int(math.ceil(x / 8) * 8)


def _chunks(n: int, size: int):
    for a in range(0, n, size):
        yield a, min(n, a + size)


class Pipeline:
    """Runs the method on one backend; stateless between videos."""

    def __init__(self, backend: Backend, progress: bool = True):
        self.backend = backend
        self.progress = progress

    # -- stages ------------------------------------------------------------
    def _encode_frames(self, frames: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
        """uint8 frames `[B, H0, W0, 3]` -> RGB latents `[B, 4, h, w]` (resize, normalize, pad, encode)."""
        be = self.backend
        x = preprocess(frames, size, be.device, torch.float32).to(be.dtype)
        return be.encode(self._pad(x, size, padded))

    @staticmethod
    def _pad(x: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
        # Replicate-pad to a multiple of 8 (the reference lets the VAE floor the size instead,
        # which shrinks and shifts its depth); the decoded depth is cropped back.
        (w, h), (pw, ph) = size, padded
        if (pw, ph) == (w, h):
            return x
        return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")

    def _decode(self, latents: torch.Tensor, size: tuple[int, int], vae_batch: int) -> torch.Tensor:
        """latents `[B, 4, h, w]` -> depth `[B, H, W]` cropped to the processed size (run dtype)."""
        w, h = size
        out = [self.backend.decode(latents[a:b])[:, 0, :h, :w] for a, b in _chunks(latents.shape[0], vae_batch)]
        return torch.cat(out)

    # -- the method --------------------------------------------------------
    def predict(self, path, settings: Settings, keep_snippets: bool = True) -> Prediction:
        """Run RollingDepth on one video file."""
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

        # 1. decode + encode, streaming: only latents are kept
        latents, timestamps, pending = [], [], []
        total = s.frame_count or (max(0, info.num_frames - s.start_frame) if info.num_frames else None)
        with clock.stage("encode", total=total) as tick:
            for fr in iter_frames(path, s.start_frame, s.frame_count):
                pending.append(torch.from_numpy(fr.rgb))
                timestamps.append(fr.timestamp)
                if len(pending) == s.vae_batch:
                    latents.append(self._encode_frames(torch.stack(pending), size, padded))
                    tick(len(pending))
                    pending = []
            if pending:
                latents.append(self._encode_frames(torch.stack(pending), size, padded))
                tick(len(pending))
        rgb_latent = torch.cat(latents)
        del latents
        n = rgb_latent.shape[0]

        # 2. the shared initial noise: the generator's first use in the run
        seed = s.seed if s.seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())
        gen = torch.Generator(be.device).manual_seed(seed)
        noise = torch.randn((1, *rgb_latent.shape[1:]), device=be.device, dtype=be.dtype, generator=gen)

        # 3. snippets of all dilations, packed into batches
        effective, plan = plan_snippets(n, s.snippet_len, s.dilations, s.cap_dilation)
        if effective != list(s.dilations):
            log.info("%s: %d frames: dilations %s capped to %s", info.path.name, n, s.dilations, effective)
        groups = self._infer_snippets(rgb_latent, noise, plan, size, s, clock)

        # 4. co-alignment on the cropped, subsampled copy; merge at full resolution
        with clock.stage("align", total=s.align_iters if s.align == "reference" else None, unit="it") as tick:
            for g in groups:
                check_finite(g.depth, "snippet inference")
            global_min = torch.stack([g.depth.min() for g in groups]).min()
            solve_groups = [AlignGroup(solver_view(g.depth, global_min), g.indices, g.weight) for g in groups]
            params = self._solve(solve_groups, n, s, tick)
            objective = objective_value(solve_groups, params, n)
        with clock.stage("merge", total=None):
            merged = merge_aligned([(g.depth, g.indices, g.weight) for g in groups], params, global_min, n)
            coaligned = renormalize(merged)

        # 5. optional refinement with latent averaging
        if s.refine_step > 0:
            depth = self._refine(rgb_latent, noise, coaligned, n, size, padded, s, clock)
        else:
            depth = coaligned
        peak = torch.cuda.max_memory_allocated(be.device) if be.device.type == "cuda" else 0
        return Prediction(
            depth=depth.float().cpu(), coaligned=coaligned.float().cpu(),
            snippets=groups if keep_snippets else [], params=params, dilations=effective,
            timestamps=timestamps, info=info, size=size, seed=seed, settings=s, objective=objective,
            stage_seconds=dict(clock.seconds), peak_device_bytes=peak,
        )

    def _infer_snippets(self, rgb_latent, noise, plan: list[DilationGroup], size, s: Settings,
                        clock: StageClock) -> list[SnippetGroup]:
        be = self.backend
        w, h = size
        schedule = be.ddim.schedule(s.init_steps) if hasattr(be, "ddim") else None
        groups = [
            SnippetGroup(g.dilation, g.weight, g.indices,
                         torch.empty(g.indices.shape[0], s.snippet_len, h, w, dtype=be.dtype))
            for g in plan
        ]
        work = [(gi, k) for gi, g in enumerate(groups) for k in range(g.indices.shape[0])]
        with clock.stage("snippets", total=len(work), unit="snippet") as tick:
            for a, b in _chunks(len(work), s.snippet_batch):
                batch = work[a:b]
                idx = torch.stack([groups[gi].indices[k] for gi, k in batch]).to(be.device)
                rgb = rgb_latent[idx]  # [S, L, 4, h, w]
                x = noise.expand(rgb.shape[0], rgb.shape[1], *noise.shape[1:]).clone()
                for step in schedule:
                    x = be.denoise(rgb, x, step)
                depth = self._decode(x.reshape(-1, *x.shape[2:]), size, s.vae_batch)
                depth = depth.reshape(len(batch), s.snippet_len, h, w).cpu()
                for j, (gi, k) in enumerate(batch):
                    groups[gi].depth[k] = depth[j]
                tick(len(batch))
        return groups

    def _solve(self, groups: list[AlignGroup], n: int, s: Settings, tick) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if sum(g.depth.shape[0] for g in groups) == 1:
            # a single snippet (1-3 frames) needs no alignment
            return [(torch.ones(1), torch.zeros(1))]
        if s.align == "reference":
            return align_reference(groups, n, iters=s.align_iters, progress=tick)
        from .solvers import solve  # fast / robust solvers

        return solve(groups, n, s.align, progress=tick)

    def _refine(self, rgb_latent, noise, coaligned, n, size, padded, s: Settings, clock: StageClock):
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
                d = coaligned[a:b].to(be.device, be.dtype)[:, None].expand(-1, 3, -1, -1)
                lat.append(be.encode(self._pad(d, size, padded)))
            x = ddim.add_noise(torch.cat(lat), noise.expand(n, *noise.shape[1:]), timesteps[0])
            for i, t in enumerate(timesteps):
                idx_all = snippet_indices(n, s.refine_snippet_len, refine_gap(i, len(timesteps), start) + 1)
                step = ddim.step_at(t, total)
                acc = torch.zeros(x.shape, dtype=torch.float32, device=be.device)
                count = torch.zeros(n, dtype=torch.float32, device=be.device)
                for a, b in _chunks(idx_all.shape[0], s.snippet_batch):
                    idx = idx_all[a:b].to(be.device)
                    out = be.denoise(rgb_latent[idx], x[idx], step)  # from the previous step's latents
                    acc.index_add_(0, idx.reshape(-1), out.reshape(-1, *out.shape[2:]).float())
                    count.index_add_(0, idx.reshape(-1), torch.ones(idx.numel(), device=be.device))
                x = (acc / count[:, None, None, None]).to(be.dtype)
                tick(1)
        with clock.stage("decode", total=n):
            return self._decode(x, size, s.vae_batch).float()
