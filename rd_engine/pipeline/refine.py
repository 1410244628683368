"""Refinement by latent averaging (docs/method.md, "Refinement"), in place on the co-aligned video."""

from __future__ import annotations

import numpy as np
import torch

from rd_engine.backends.base import Backend
from rd_engine.kernels.average import accumulate_frames
from rd_engine.pipeline.inference import chunks, decode_depth, pad8
from rd_engine.progress import StageClock
from rd_engine.settings import Settings
from rd_engine.snippets.plan import cap_dilation, refine_gap, snippet_indices


def refine(
    backend: Backend,
    rgb_latent: torch.Tensor,
    noise: torch.Tensor,
    depth: np.ndarray,
    size: tuple[int, int],
    padded: tuple[int, int],
    s: Settings,
    clock: StageClock,
) -> None:
    """Refine `depth` (`[N, H, W]`, the re-normalized co-aligned video) in place.

    Args:
        backend: Runs the model.
        rgb_latent: `[N, 4, h, w]` RGB latents of the video.
        noise: The shared initial noise `[1, 4, h, w]`.
        depth: Co-aligned depth in, refined depth out.
        size: Processed `(width, height)`.
        padded: `size` rounded up to multiples of 8 (what the VAE is given).
        s: The run's settings (refine_step, refine_snippet_len, refine_start_dilation, batches).
        clock: Stage timing and progress.
    """
    be = backend
    ddim = be.ddim
    n = depth.shape[0]
    start = (
        cap_dilation(n, s.refine_snippet_len, s.refine_start_dilation) if s.cap_dilation else s.refine_start_dilation
    )
    total = int(s.refine_step / 0.5)
    timesteps = ddim.timesteps(total)
    timesteps = timesteps[int(len(timesteps) * 0.5) :]
    with clock.stage("refine", total=len(timesteps), unit="step") as tick:
        # encode the co-aligned depth through the RGB encoder path
        lat = []
        for a, b in chunks(n, s.vae_batch):
            d = torch.from_numpy(np.ascontiguousarray(depth[a:b])).to(be.device, be.dtype)
            lat.append(be.encode(pad8(d[:, None].expand(-1, 3, -1, -1), size, padded)))
        x = ddim.add_noise(torch.cat(lat), noise.expand(n, *noise.shape[1:]), timesteps[0])
        for i, t in enumerate(timesteps):
            idx_all = snippet_indices(n, s.refine_snippet_len, refine_gap(i, len(timesteps), start) + 1)
            step = ddim.step_at(t, total)
            acc = torch.zeros(x.shape, dtype=torch.float32, device=be.device)
            count = torch.zeros(n, dtype=torch.float32, device=be.device)
            for a, b in chunks(idx_all.shape[0], s.snippet_batch):
                idx = idx_all[a:b].to(be.device)
                out = be.denoise(rgb_latent[idx], x[idx], step)  # from the previous step's latents
                accumulate_frames(acc, count, out, idx)  # latent averaging
            x = (acc / count[:, None, None, None]).to(be.dtype)
            tick(1)
    with clock.stage("decode", total=n):
        for a, b in chunks(n, s.vae_batch):
            depth[a:b] = decode_depth(be, x[a:b], size, s.vae_batch).float().cpu().numpy()
