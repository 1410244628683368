"""PyTorch backend: eager diffusers modules (the reference and the CPU fallback).

It runs the engine components of `rd_engine.model.components`, the same modules the
exporter traces into the engine graphs.
"""

from __future__ import annotations

import torch

from rd_engine.model.checkpoint import Models
from rd_engine.model.components import UnetStep, VaeDecode, VaeEncode
from rd_engine.model.ddim import DDIMStep


class TorchBackend:
    """Runs the stock diffusers UNet (with the cross-frame attention processor) and VAE.

    Args:
        models: The loaded checkpoint (moved to `device` and cast to `dtype` in place).
        device: The run's device.
        dtype: The run's precision.
    """

    name = "pytorch"

    def __init__(self, models: Models, device: torch.device | str, dtype: torch.dtype):
        self.device = torch.device(device)
        self.dtype = dtype
        self.models = models.to(self.device, dtype)
        self.unet = models.unet
        self.vae = models.vae
        self.ddim = models.ddim
        # the reference casts the fp32 embedding to the run dtype once
        self.embed = models.empty_embed.to(self.device, dtype)
        self.encoder = VaeEncode(self.vae)
        self.decoder = VaeDecode(self.vae)
        self.steps: dict[int, UnetStep] = {}  # per snippet length; they share the UNet

    def check_size(self, size: tuple[int, int]) -> None:
        """Any processed frame size (width, height) runs: nothing to refuse."""

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        return self.encoder(frames.to(self.device, self.dtype))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder(latents.to(self.device, self.dtype))

    @torch.no_grad()
    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        s, l = depth.shape[:2]
        module = self.steps.get(l)
        if module is None:
            # the update in the sample's dtype, op by op, as the reference computes it
            module = self.steps[l] = UnetStep.from_models(self.models, l, self.embed, fp32_update=False)
        t = torch.full((s * l,), step.t, device=self.device, dtype=torch.long)
        return module(rgb, depth, t, step.alpha_t, step.alpha_prev)
