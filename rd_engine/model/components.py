"""The three engine components as modules: the one definition of what an engine computes.

- `VaeEncode`: frames [B,3,H,W] in [-1,1] -> scaled latents [B,4,H/8,W/8]
- `VaeDecode`: scaled latents [B,4,h,w] -> depth [B,1,8h,8w] (mean over the RGB channels)
- `UnetStep`: one snippet denoising step: the UNet with cross-frame attention over each
  snippet's L frames, then one DDIM update

The PyTorch backend runs these modules eagerly; the exporter traces them into the engine's
ONNX graphs (`rd_engine.engine_format.contracts`). The submodule attribute names (`encoder`,
`quant_conv`, `unet`, ...) name the nodes of the exported graphs: keep them.
"""

from __future__ import annotations

import torch
from torch import nn

from rd_engine.model.checkpoint import LATENT_SCALE, Models
from rd_engine.model.ddim import ddim_update


class VaeEncode(nn.Module):
    """frames [B,3,H,W] in [-1,1] -> scaled latents [B,4,H/8,W/8]: encoder, quant_conv, mean half.

    Args:
        vae: The checkpoint's `AutoencoderKL` (its submodules are shared, not copied).
    """

    def __init__(self, vae):
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        h = self.encoder(frames)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, _logvar = torch.chunk(h, 2, dim=1)
        return mean * LATENT_SCALE


class VaeDecode(nn.Module):
    """scaled latents [B,4,h,w] -> depth [B,1,8h,8w]: post_quant_conv, decoder, mean over RGB.

    Args:
        vae: The checkpoint's `AutoencoderKL` (its submodules are shared, not copied).
    """

    def __init__(self, vae):
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents / LATENT_SCALE
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).mean(dim=1, keepdim=True)


class UnetStep(nn.Module):
    """One snippet denoising step: UNet with cross-frame attention over L frames, then DDIM.

    The empty-prompt embedding is a buffer (an initializer in an exported graph); the
    prediction type and clipping are Python constants from the checkpoint's scheduler
    config; the timestep and the two alpha_bar values are inputs, so one module (and one
    graph) serves every step of every schedule.

    Half precision: with `fp32_update` the DDIM update of a half-precision module runs in
    fp32 and is rounded once at the end. Exported graphs need that: ONNX has no op that
    multiplies a half tensor by an fp32 coefficient (the exporter would round the
    coefficients to half first, and fails outright for bf16). Without it (the PyTorch
    backend) the update runs op by op in the sample's dtype, as the reference pipeline
    computes it. fp32 modules compute the same either way.

    Args:
        unet: The checkpoint's UNet, with the cross-frame attention processor installed.
        empty_embed: The empty-prompt embedding [1, tokens, dim] (copied into a buffer).
        snippet_len: Frames per snippet (L): the cross-frame attention's group size.
        prediction_type: "epsilon", "sample" or "v_prediction".
        clip_range: Clamp of the predicted sample (None: no clipping).
        fp32_update: Compute the DDIM update of a half-precision module in fp32.
    """

    def __init__(
        self,
        unet,
        empty_embed: torch.Tensor,
        snippet_len: int,
        prediction_type: str,
        clip_range: float | None,
        fp32_update: bool = True,
    ):
        super().__init__()
        self.unet = unet
        self.register_buffer("embed", empty_embed.detach().clone())
        self.snippet_len = int(snippet_len)
        self.prediction_type = prediction_type
        self.clip_range = clip_range
        self.fp32_update = fp32_update

    @classmethod
    def from_models(
        cls, models: Models, snippet_len: int, empty_embed: torch.Tensor | None = None, fp32_update: bool = True
    ) -> UnetStep:
        """The step of a loaded checkpoint (its UNet shared, its scheduler config's constants).

        Args:
            models: The loaded checkpoint.
            snippet_len: Frames per snippet.
            empty_embed: The embedding to hold (default: the checkpoint's fp32 one).
            fp32_update: See the class.

        Returns:
            The module (in the UNet's current mode, device and dtype; the buffer as given).
        """
        ddim = models.ddim
        embed = models.empty_embed if empty_embed is None else empty_embed
        return cls(
            models.unet,
            embed,
            snippet_len,
            ddim.prediction_type,
            ddim.clip_sample_range if ddim.clip_sample else None,
            fp32_update,
        )

    def forward(
        self,
        rgb_latent: torch.Tensor,
        depth_latent: torch.Tensor,
        timestep: torch.Tensor,
        alpha_t: torch.Tensor,
        alpha_prev: torch.Tensor,
    ) -> torch.Tensor:
        """Denoise one step.

        Args:
            rgb_latent: [S, L, 4, h, w] latents of the frames.
            depth_latent: [S, L, 4, h, w] current depth latents.
            timestep: int64 [1] (or [S*L]) timestep.
            alpha_t: fp32 alpha_bar at the timestep ([1] or 0-dim).
            alpha_prev: fp32 alpha_bar at the previous timestep ([1] or 0-dim).

        Returns:
            [S, L, 4, h, w] depth latents after the step, in the module's dtype.
        """
        s, l, c, h, w = depth_latent.shape
        x = torch.cat([rgb_latent, depth_latent], dim=2).reshape(s * l, 2 * c, h, w)
        n = x.shape[0]
        out = self.unet(
            x,
            timestep.expand(n),
            encoder_hidden_states=self.embed.expand(n, -1, -1),
            cross_attention_kwargs={"num_frames": self.snippet_len},
        ).sample.reshape(s, l, c, h, w)
        a, ap = alpha_t.reshape(()), alpha_prev.reshape(())  # 0-dim, as DDIMStep holds them
        if out.dtype == torch.float32 or not self.fp32_update:
            return ddim_update(out, depth_latent, a, ap, self.prediction_type, self.clip_range)
        return ddim_update(out.float(), depth_latent.float(), a, ap, self.prediction_type, self.clip_range).to(
            out.dtype
        )
