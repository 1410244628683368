"""PyTorch backend: eager diffusers modules (the reference and the CPU fallback)."""

from __future__ import annotations

import torch

from rd_engine.model.ddim import DDIMStep, ddim_update
from rd_engine.model.checkpoint import LATENT_SCALE, Models


class TorchBackend:
    """Runs the stock diffusers UNet (with the cross-frame attention processor) and VAE."""

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

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        h = self.vae.encoder(frames.to(self.device, self.dtype))
        if self.vae.quant_conv is not None:
            h = self.vae.quant_conv(h)
        mean, _logvar = torch.chunk(h, 2, dim=1)
        return mean * LATENT_SCALE

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.device, self.dtype) / LATENT_SCALE
        if self.vae.post_quant_conv is not None:
            z = self.vae.post_quant_conv(z)
        return self.vae.decoder(z).mean(dim=1, keepdim=True)

    @torch.no_grad()
    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        s, l, c, h, w = depth.shape
        x = torch.cat([rgb, depth], dim=2).reshape(s * l, 2 * c, h, w)
        t = torch.full((s * l,), step.t, device=self.device, dtype=torch.long)
        out = self.unet(
            x, t, encoder_hidden_states=self.embed.expand(s * l, -1, -1),
            cross_attention_kwargs={"num_frames": l},
        ).sample.reshape(s, l, c, h, w)
        return ddim_update(
            out, depth, step.alpha_t, step.alpha_prev, self.ddim.prediction_type,
            self.ddim.clip_sample_range if self.ddim.clip_sample else None,
        )
