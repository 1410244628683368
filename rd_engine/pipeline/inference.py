"""The model stage shared by the offline pipeline and the online session.

Frames in (resize, normalize, pad), latents, snippet denoising from the shared
initial noise, and decoding back to depth cropped to the processed size. Each
function takes the `rd_engine.backends.base.Backend` that runs the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rd_engine.backends.base import Backend
from rd_engine.io.video import preprocess
from rd_engine.model.ddim import DDIMStep

VAE_FACTOR = 8  # the VAE downsamples by 8: frames are padded to a multiple of it


def padded_size(size: tuple[int, int]) -> tuple[int, int]:
    """`(width, height)` rounded up to multiples of 8 (what the VAE is given)."""
    return tuple(int(math.ceil(s / VAE_FACTOR) * VAE_FACTOR) for s in size)


def pad8(x: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
    """Replicate-pad `[B, C, H, W]` from `size` to `padded` (both `(width, height)`).

    The reference lets the VAE floor the size instead, which shrinks and
    shifts its depth; we pad and crop the decoded depth back.
    """
    (w, h), (pw, ph) = size, padded
    if (pw, ph) == (w, h):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")


def pick_seed(seed: int | None) -> int:
    """`seed`, or a fresh random one (recorded in the outputs so that a run can be repeated)."""
    return seed if seed is not None else int(torch.randint(0, 2**31 - 1, (1,)).item())


def initial_noise(backend: Backend, seed: int, latent: torch.Tensor) -> torch.Tensor:
    """The one Gaussian `[1, 4, h, w]` shared by every frame, drawn as the reference draws it.

    Must be the generator's first use in the run (docs/method.md, "Latents").
    """
    gen = torch.Generator(backend.device).manual_seed(seed)
    return torch.randn((1, *latent.shape[1:]), device=backend.device, dtype=backend.dtype, generator=gen)


def encode_frames(
    backend: Backend, frames: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]
) -> torch.Tensor:
    """uint8 frames `[B, H0, W0, 3]` -> RGB latents `[B, 4, h, w]` (resize, normalize, pad, encode)."""
    x = preprocess(frames, size, backend.device, torch.float32).to(backend.dtype)
    return backend.encode(pad8(x, size, padded))


def chunks(n: int, size: int):
    """`(start, stop)` of consecutive ranges of at most `size` covering `range(n)`."""
    for a in range(0, n, size):
        yield a, min(n, a + size)


def decode_depth(backend: Backend, latents: torch.Tensor, size: tuple[int, int], vae_batch: int) -> torch.Tensor:
    """Latents `[B, 4, h, w]` -> depth `[B, H, W]` cropped to the processed size (run dtype)."""
    w, h = size
    out = [backend.decode(latents[a:b])[:, 0, :h, :w] for a, b in chunks(latents.shape[0], vae_batch)]
    return torch.cat(out)


def denoise_snippets(
    backend: Backend, rgb_latent: torch.Tensor, noise: torch.Tensor, idx: torch.Tensor, steps: list[DDIMStep]
) -> torch.Tensor:
    """Initial inference of snippets `idx [S, L]` (rows of `rgb_latent`) from the shared noise: `[S, L, 4, h, w]`."""
    rgb = rgb_latent[idx]
    x = noise.expand(idx.shape[0], idx.shape[1], *noise.shape[1:]).clone()
    for step in steps:
        x = backend.denoise(rgb, x, step)
    return x
