"""The one narrow interface every backend implements (docs/architecture.md, "Backends").

Three operations on tensors that stay on the backend's device:
- `encode(frames [B,3,H,W] in [-1,1]) -> latents [B,4,H/8,W/8]` (already scaled)
- `denoise(rgb [S,L,4,h,w], depth [S,L,4,h,w], step) -> depth' [S,L,4,h,w]`
  (UNet with cross-frame attention over each snippet's L frames + one DDIM update)
- `decode(latents [B,4,h,w]) -> depth [B,1,H,W]` (VAE decode + mean over RGB channels)
H and W must be multiples of 8; the pipeline pads and crops around the backend.
`check_size` refuses, before any work, a processed frame size the backend cannot serve.
"""

from __future__ import annotations

from typing import Protocol

import torch

from rd_engine.model.ddim import DDIM, DDIMStep


class Backend(Protocol):
    """What the pipeline needs from a backend."""

    name: str  # "pytorch", "onnxruntime", "tensorrt"
    device: torch.device
    dtype: torch.dtype  # the precision its tensors come back in
    ddim: DDIM  # the checkpoint's noise schedule (steps come from `ddim.schedule`)

    def check_size(self, size: tuple[int, int]) -> None:
        """Refuse a processed frame size (width, height) outside what the backend serves.

        Raises:
            UserError: The size is not served (the message says how to rebuild the engine).
        """
        ...

    def encode(self, frames: torch.Tensor) -> torch.Tensor: ...

    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step: DDIMStep) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...
