"""One export contract per engine component.

A contract says everything the exporter, the TensorRT builder and the runtime
backends must agree on: input and output names, dtypes and shapes (with named
dynamic axes), the min/opt/max shapes of a resolution/batch profile, a sample
input for tracing, and the traced module itself. The modules are the ones the
PyTorch backend runs (`rd_engine.model.components`; the DDIM update is literally
`rd_engine.model.ddim.ddim_update`), so the graphs match the PyTorch reference to
float rounding.

Symbolic dimensions: `B` frames per VAE call, `S` snippets per UNet call,
`h`/`w` latent height/width, `H`/`W` = 8h/8w pixels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from rd_engine.model.components import UnetStep, VaeDecode, VaeEncode

if TYPE_CHECKING:
    from rd_engine.engine_format.profile import Profile
    from rd_engine.model.checkpoint import Models

Dim = int | str
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

    def batched_inputs(self) -> list[str]:
        """Names of the inputs split along the batch dimension (the others, e.g. the timestep, are shared)."""
        return [t.name for t in self.inputs if t.shape and t.shape[0] == self.batch_dim]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """`torch.onnx.export` dynamic axes: every symbolic dimension, by name."""
        return {
            t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            for t in (*self.inputs, *self.outputs)
            if any(isinstance(d, str) for d in t.shape)
        }

    def profile_shapes(self, profile: Profile) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
        """(min, opt, max) shape of every input for a TensorRT optimization profile."""
        lo, hi = profile.latent_range()
        oh, ow = profile.opt_latent()
        batch = (
            (1, profile.opt_batch, profile.max_batch)
            if self.kind == "unet_step"
            else (1, profile.opt_vae_batch, profile.max_vae_batch)
        )
        corners = [
            {"B": batch[i], "S": batch[i], "h": hw[0], "w": hw[1]}
            for i, hw in enumerate(((lo, lo), (oh, ow), (hi, hi)))
        ]
        return {t.name: tuple(t.concrete(c) for c in corners) for t in self.inputs}

    def sample_inputs(
        self,
        dims: dict[str, int] | None = None,
        generator: torch.Generator | None = None,
        precision: torch.dtype = torch.float32,
        t: int = 999,
        alphas: tuple[float, float] = (0.05, 0.9),
    ) -> tuple[torch.Tensor, ...]:
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

    def module(self, models: Models, precision: torch.dtype = torch.float32, fp32_update: bool = True) -> nn.Module:
        """The traced module (eval, CPU, weights in `precision`) built from a loaded checkpoint.

        A reduced-precision module computes what the PyTorch backend computes at that dtype (the
        module is cast as a whole, as `Models.to` does), so its graph has the same op-level types.
        It is a copy: the checkpoint's fp32 weights are never rounded in place.

        Args:
            models: The loaded checkpoint (fp32, CPU).
            precision: The module's dtype.
            fp32_update: The UNet step's DDIM update of a half-precision module in fp32 (ONNX graphs
                need it; see `UnetStep`); False computes it as the PyTorch backend does.
        """
        if self.kind == "vae_encoder":
            mod = VaeEncode(models.vae)
        elif self.kind == "vae_decoder":
            mod = VaeDecode(models.vae)
        else:
            mod = UnetStep.from_models(
                models, self.snippet_len, models.empty_embed.to(precision), fp32_update=fp32_update
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
        "vae_encoder",
        "vae_encoder",
        inputs=(TensorSpec("frames", "float", ("B", 3, "H", "W")),),
        outputs=(TensorSpec("latents", "float", ("B", 4, "h", "w")),),
    )


def vae_decoder_contract() -> Contract:
    return Contract(
        "vae_decoder",
        "vae_decoder",
        inputs=(TensorSpec("latents", "float", ("B", 4, "h", "w")),),
        outputs=(TensorSpec("depth", "float", ("B", 1, "H", "W")),),
    )


def unet_step_name(snippet_len: int) -> str:
    return f"unet_step_L{snippet_len}"


def unet_step_contract(snippet_len: int) -> Contract:
    lat = ("S", snippet_len, 4, "h", "w")
    return Contract(
        unet_step_name(snippet_len),
        "unet_step",
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
    return [vae_encoder_contract(), vae_decoder_contract(), *(unet_step_contract(n) for n in sorted(set(snippet_lens)))]


def contract_from_json(name: str, data: dict) -> Contract:
    def specs(items):
        return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in items)

    return Contract(name, data["kind"], specs(data["inputs"]), specs(data["outputs"]), data.get("snippet_len"))
