"""PyTorch backend: eager diffusers modules (the reference and the CPU fallback).

It runs the engine components of `rd_engine.model.components`, the same modules the
exporter traces into the engine graphs.
"""

from __future__ import annotations

import torch

from rd_engine.backends.fast import FastPaths, attention_context, compile_module, to_channels_last
from rd_engine.model.checkpoint import Models
from rd_engine.model.components import UnetStep, VaeDecode, VaeEncode
from rd_engine.model.ddim import DDIMStep


class TorchBackend:
    """Runs the stock diffusers UNet (with the cross-frame attention processor) and VAE.

    Args:
        models: The loaded checkpoint (moved to `device` and cast to `dtype` in place).
        device: The run's device.
        dtype: The run's precision.
        fast: Execution options (`rd_engine.backends.fast`; default: all off, plain eager).
    """

    name = "pytorch"

    def __init__(self, models: Models, device: torch.device | str, dtype: torch.dtype, fast: FastPaths | None = None):
        self.device = torch.device(device)
        self.dtype = dtype
        self.fast = (fast or FastPaths()).validate()
        self.models = models.to(self.device, dtype)
        self.unet = models.unet
        self.vae = models.vae
        self.ddim = models.ddim
        self._layout_format = torch.channels_last if self.fast.channels_last else torch.contiguous_format
        # the reference casts the fp32 embedding to the run dtype once
        self.embed = models.empty_embed.to(self.device, dtype)
        self.encoder = compile_module(VaeEncode(self.vae), self.fast.compile)
        self.decoder = compile_module(VaeDecode(self.vae), self.fast.compile)
        self.steps: dict[int, UnetStep] = {}  # per snippet length; they share the UNet

    def check_size(self, size: tuple[int, int]) -> None:
        """Any processed frame size (width, height) runs: nothing to refuse."""

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        self._prepare()
        return self.encoder(self._layout(frames.to(self.device, self.dtype))).contiguous()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self._prepare()
        return self.decoder(self._layout(latents.to(self.device, self.dtype))).contiguous()

    def _prepare(self) -> None:
        """Before each call: this backend's memory layout on the modules (backends of one process may
        share them: the benchmark's eager baseline, say) and its cuDNN autotuning switch (process-wide).
        """
        if getattr(self.unet, "_rd_layout", None) != self._layout_format:
            self.unet.to(memory_format=self._layout_format)
            self.vae.to(memory_format=self._layout_format)
            self.unet._rd_layout = self.vae._rd_layout = self._layout_format
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.fast.cudnn_benchmark

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return to_channels_last(x) if self.fast.channels_last else x

    @torch.no_grad()
    def denoise(self, rgb: torch.Tensor, depth: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        self._prepare()
        s, l = depth.shape[:2]
        module = self.steps.get(l)
        if module is None:
            # the update in the sample's dtype, op by op, as the reference computes it
            module = UnetStep.from_models(self.models, l, self.embed, fp32_update=False)
            module = self.steps[l] = compile_module(module, self.fast.compile)
        t = torch.full((s * l,), step.t, device=self.device, dtype=torch.long)
        with attention_context(self.fast.attention):
            return module(rgb, depth, t, step.alpha_t, step.alpha_prev).contiguous()
