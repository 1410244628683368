"""One export contract per engine component.

A contract says everything the exporter, the TensorRT builder and the runtime
backends must agree on: input and output names, dtypes and shapes (with named
dynamic axes), the min/opt/max shapes of a resolution/batch profile, a sample
input for tracing, and the traced module itself. The modules reproduce
`rd_engine.backends.torch_backend.TorchBackend` operation for operation (the
DDIM update is literally `rd_engine.model.ddim.ddim_update`), so the graphs match the
PyTorch reference to float rounding.

Symbolic dimensions: `B` frames per VAE call, `S` snippets per UNet call,
`h`/`w` latent height/width, `H`/`W` = 8h/8w pixels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import torch
from torch import nn

from rd_engine.model.ddim import ddim_update
from rd_engine.model.checkpoint import LATENT_SCALE

if TYPE_CHECKING:
    from rd_engine.model.checkpoint import Models
    from rd_engine.engine_format.manifest import Profile

Dim = Union[int, str]
VAE_FACTOR = 8  # pixels per latent cell of the SD VAE

# The sample used for tracing. Latent sizes that are not multiples of the UNet's
# overall down/up factor make diffusers forward explicit upsample sizes (taken from
# the skip tensors' shapes), which is the code path that is correct at EVERY size;
# a trace at, say, 8x8 would bake `scale_factor=2` and break at 54x96.
SAMPLE_DIMS = {"B": 2, "S": 2, "h": 5, "w": 7}


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output."""

    name: str
    dtype: str  # "float": the graph's precision (images, latents); "float32" or "int64": always that
    shape: tuple[Dim, ...]

    def torch_dtype(self, precision: torch.dtype = torch.float32) -> torch.dtype:
        return {"float": precision, "float32": torch.float32, "int64": torch.int64}[self.dtype]

    def concrete(self, dims: dict[str, int]) -> tuple[int, ...]:
        return tuple(_resolve(d, dims) for d in self.shape)

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _resolve(d: Dim, dims: dict[str, int]) -> int:
    if isinstance(d, int):
        return d
    if d in ("H", "W"):
        return VAE_FACTOR * dims[d.lower()]
    return dims[d]


@dataclass(frozen=True)
class Contract:
    """The interface of one exported component."""

    name: str  # file stem: vae_encoder, vae_decoder, unet_step_L3
    kind: str  # vae_encoder | vae_decoder | unet_step
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    snippet_len: int | None = None

    @property
    def batch_dim(self) -> str:
        return "S" if self.kind == "unet_step" else "B"

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """`torch.onnx.export` dynamic axes: every symbolic dimension, by name."""
        return {
            t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            for t in (*self.inputs, *self.outputs)
            if any(isinstance(d, str) for d in t.shape)
        }

    def input_shapes(self, dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {t.name: t.concrete(dims) for t in self.inputs}

    def output_shapes(self, dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
        return {t.name: t.concrete(dims) for t in self.outputs}

    def profile_shapes(self, profile: Profile) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """(min, opt, max) shape of every input for a TensorRT optimization profile."""
        lo, hi = profile.latent_range()
        oh, ow = profile.opt_latent()
        batch = (1, profile.opt_batch, profile.max_batch) if self.kind == "unet_step" else \
            (1, profile.opt_vae_batch, profile.max_vae_batch)
        corners = [dict(B=batch[i], S=batch[i], h=hw[0], w=hw[1])
                   for i, hw in enumerate(((lo, lo), (oh, ow), (hi, hi)))]
        return {t.name: tuple(t.concrete(c) for c in corners) for t in self.inputs}

    def sample_inputs(self, dims: dict[str, int] | None = None, generator: torch.Generator | None = None,
                      precision: torch.dtype = torch.float32, t: int = 999,
                      alphas: tuple[float, float] = (0.05, 0.9)) -> tuple[torch.Tensor, ...]:
        """Random CPU inputs of the contract's shapes; the UNet step gets (t, alpha_t, alpha_prev)."""
        dims = dims or SAMPLE_DIMS
        out = []
        for spec in self.inputs:
            shape = spec.concrete(dims)
            if spec.name == "timestep":
                x = torch.full(shape, t, dtype=torch.int64)
            elif spec.name == "alpha_t":
                x = torch.full(shape, alphas[0], dtype=torch.float32)
            elif spec.name == "alpha_prev":
                x = torch.full(shape, alphas[1], dtype=torch.float32)
            elif spec.name == "frames":
                x = torch.rand(shape, generator=generator) * 2 - 1
            else:
                x = torch.randn(shape, generator=generator)
            out.append(x.to(spec.torch_dtype(precision)))
        return tuple(out)

    def module(self, models: Models, precision: torch.dtype = torch.float32) -> nn.Module:
        """The traced module (eval, CPU, weights in `precision`) built from a loaded checkpoint.

        A reduced-precision module computes what the PyTorch backend computes at that dtype (the
        module is cast as a whole, as `Models.to` does), so its graph has the same op-level types.
        It is a copy: the checkpoint's fp32 weights are never rounded in place.
        """
        if self.kind == "vae_encoder":
            mod = VaeEncoderGraph(models.vae)
        elif self.kind == "vae_decoder":
            mod = VaeDecoderGraph(models.vae)
        else:
            ddim = models.ddim
            mod = UnetStepGraph(
                models.unet, models.empty_embed.to(precision), self.snippet_len, ddim.prediction_type,
                ddim.clip_sample_range if ddim.clip_sample else None,
            )
        if precision != torch.float32:
            mod = copy.deepcopy(mod)
        return mod.to(precision).eval()

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "snippet_len": self.snippet_len,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
        }


def vae_encoder_contract() -> Contract:
    return Contract(
        "vae_encoder", "vae_encoder",
        inputs=(TensorSpec("frames", "float", ("B", 3, "H", "W")),),
        outputs=(TensorSpec("latents", "float", ("B", 4, "h", "w")),),
    )


def vae_decoder_contract() -> Contract:
    return Contract(
        "vae_decoder", "vae_decoder",
        inputs=(TensorSpec("latents", "float", ("B", 4, "h", "w")),),
        outputs=(TensorSpec("depth", "float", ("B", 1, "H", "W")),),
    )


def unet_step_name(snippet_len: int) -> str:
    return f"unet_step_L{snippet_len}"


def unet_step_contract(snippet_len: int) -> Contract:
    lat = ("S", snippet_len, 4, "h", "w")
    return Contract(
        unet_step_name(snippet_len), "unet_step",
        inputs=(
            TensorSpec("rgb_latent", "float", lat),
            TensorSpec("depth_latent", "float", lat),
            TensorSpec("timestep", "int64", (1,)),
            TensorSpec("alpha_t", "float32", (1,)),
            TensorSpec("alpha_prev", "float32", (1,)),
        ),
        outputs=(TensorSpec("depth_latent_next", "float", lat),),
        snippet_len=snippet_len,
    )


def all_contracts(snippet_lens) -> list[Contract]:
    """The components of an engine: both VAE halves and one UNet step per snippet length."""
    return [vae_encoder_contract(), vae_decoder_contract(),
            *(unet_step_contract(n) for n in sorted(set(snippet_lens)))]


def contract_from_json(name: str, data: dict) -> Contract:
    def specs(items):
        return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in items)

    return Contract(name, data["kind"], specs(data["inputs"]), specs(data["outputs"]), data.get("snippet_len"))


# ----------------------------------------------------------------------------
# The traced modules (mirror TorchBackend.encode / decode / denoise)
# ----------------------------------------------------------------------------


class VaeEncoderGraph(nn.Module):
    """frames [B,3,H,W] in [-1,1] -> scaled latents [B,4,H/8,W/8]: encoder, quant_conv, mean half."""

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


class VaeDecoderGraph(nn.Module):
    """scaled latents [B,4,h,w] -> depth [B,1,8h,8w]: post_quant_conv, decoder, mean over RGB."""

    def __init__(self, vae):
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents / LATENT_SCALE
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z).mean(dim=1, keepdim=True)


class UnetStepGraph(nn.Module):
    """One snippet denoising step: UNet with cross-frame attention over L frames, then DDIM.

    The empty-prompt embedding is a buffer (an initializer in the graph); the
    prediction type and clipping are Python constants from the checkpoint's
    scheduler config; timestep and the two alpha_bar values are inputs, so one
    graph serves every step of every schedule.
    """

    def __init__(self, unet, empty_embed: torch.Tensor, snippet_len: int, prediction_type: str,
                 clip_range: float | None):
        super().__init__()
        self.unet = unet
        self.register_buffer("embed", empty_embed.detach().clone())
        self.snippet_len = int(snippet_len)
        self.prediction_type = prediction_type
        self.clip_range = clip_range

    def forward(self, rgb_latent: torch.Tensor, depth_latent: torch.Tensor, timestep: torch.Tensor,
                alpha_t: torch.Tensor, alpha_prev: torch.Tensor) -> torch.Tensor:
        s, l, c, h, w = depth_latent.shape
        x = torch.cat([rgb_latent, depth_latent], dim=2).reshape(s * l, 2 * c, h, w)
        n = x.shape[0]
        out = self.unet(
            x, timestep.expand(n), encoder_hidden_states=self.embed.expand(n, -1, -1),
            cross_attention_kwargs={"num_frames": self.snippet_len},
        ).sample.reshape(s, l, c, h, w)
        a, ap = alpha_t.reshape(()), alpha_prev.reshape(())  # 0-dim, as DDIMStep holds them
        if out.dtype == torch.float32:
            return ddim_update(out, depth_latent, a, ap, self.prediction_type, self.clip_range)
        # Half graphs: the update in fp32, rounded once at the end. PyTorch multiplies half tensors by
        # fp32 0-dim coefficients in fp32 arithmetic; ONNX has no such mixed op (the exporter would round
        # the coefficients to half first, and fails outright for bf16).
        return ddim_update(out.float(), depth_latent.float(), a, ap, self.prediction_type,
                           self.clip_range).to(out.dtype)
