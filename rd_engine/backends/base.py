"""The one narrow interface every backend implements (ARCHITECTURE.md).

Three operations on tensors that stay on the backend's device:
- `encode(frames [B,3,H,W] in [-1,1]) -> latents [B,4,H/8,W/8]` (already scaled)
- `denoise(rgb [S,L,4,h,w], depth [S,L,4,h,w], step) -> depth' [S,L,4,h,w]`
  (UNet with cross-frame attention over each snippet's L frames + one DDIM update)
- `decode(latents [B,4,h,w]) -> depth [B,1,H,W]` (VAE decode + mean over RGB channels)
H and W must be multiples of 8; the pipeline pads and crops around the backend.
"""

from __future__ import annotations

from typing import Protocol

import torch

from rd_engine.model.ddim import DDIMStep


class Backend(Protocol):
    name: str
    device: torch.device
    dtype: torch.dtype

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step: DDIMStep) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


def step_inputs(cache: dict, step: DDIMStep, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The exported UNet step's (timestep, alpha_t, alpha_prev) inputs for one DDIM step.

    Cached per step in `cache`, so a CUDA run makes no host-to-device copy per call.
    """
    a, ap = step.as_floats()
    key = (step.t, a, ap)
    got = cache.get(key)
    if got is None:
        got = (torch.tensor([step.t], dtype=torch.int64, device=device),
               step.alpha_t.reshape(1).to(device, torch.float32),
               step.alpha_prev.reshape(1).to(device, torch.float32))
        cache[key] = got
    return got
