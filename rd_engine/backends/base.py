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

from ..ddim import DDIMStep


class Backend(Protocol):
    name: str
    device: torch.device
    dtype: torch.dtype

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step: DDIMStep) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...
