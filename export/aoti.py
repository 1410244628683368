"""AOTInductor packages: each engine component compiled ahead of time for one device (CPU or CUDA).

`torch.export` traces the component's module (`rd_engine.model.components`, the
modules the PyTorch backend runs) with a dynamic batch and latent size that
cover the engine's profile; AOTInductor compiles the exported program into a
self-contained `.pt2` package. `rd_engine.backends.aoti_backend` loads it from
Python; libtorch's `AOTIModelPackageLoader` loads the same file from C++.

One package serves every shape inside the profile: the batch (frames for the
VAE, snippets for the UNet step) from 1 to the profile's maximum and every
latent side in the profile's range.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
from torch.export import Dim

from rd_engine.backends.aoti_backend import load_package
from rd_engine.engine_format.contracts import VAE_FACTOR, Contract
from rd_engine.engine_format.profile import Profile
from rd_engine.model.checkpoint import Models

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# an up factor no latent side is a multiple of (see `explicit_upsample_sizes`)
_NO_SIZE_IS_A_MULTIPLE = 62


def dynamic_ranges(profile: Profile) -> dict[str, list[int]]:
    """The [min, max] of every dynamic dimension a package serves: frames per VAE call `B`, snippets per
    UNet call `S`, latent height `h` and width `w`.
    """
    lo, hi = profile.latent_range()
    return {"B": [1, profile.max_vae_batch], "S": [1, profile.max_batch], "h": [lo, hi], "w": [lo, hi]}


def smallest_min_res(models: Models) -> int:
    """The smallest frame side (px) whose AOTInductor packages this checkpoint's UNet can serve: each of
    its downsamplings halves the latent side (rounding up), and the bottom must keep 2 or more cells (72 px
    for the real UNet's three downsamplings, 24 px for the tiny one's one).
    """
    downsamplings = len(models.unet.config.down_block_types) - 1
    return VAE_FACTOR * (2**downsamplings + 1)


def check_profile(models: Models, profile: Profile) -> None:
    """Refuse a profile whose smallest latent side the UNet's downsamplings bring to 1.

    Each of the UNet's downsamplings halves the latent side (rounding up); a side of 1 at the bottom
    is a size torch.export specializes, so one program cannot serve it together with larger ones. The
    real checkpoint's UNet downsamples three times: its latent sides must be at least 9 (72 px).

    Raises:
        SettingError: `min_res` is below what the packages can serve (the message says the minimum).
    """
    from rd_engine.errors import SettingError

    downsamplings = len(models.unet.config.down_block_types) - 1
    need = smallest_min_res(models) // VAE_FACTOR  # ceil(side / 2**n) >= 2
    lo, _ = profile.latent_range()
    if lo < need:
        raise SettingError(
            "min_res",
            f"must be at least {VAE_FACTOR * need} px for AOTInductor packages of this UNet (its {downsamplings} "
            f"downsamplings must leave 2 or more latent cells; {profile.min_res} px leaves 1)",
        )


@contextlib.contextmanager
def explicit_upsample_sizes(module: torch.nn.Module):
    """Make the UNet of `module` (if any) always take its explicit-size upsampling path while tracing.

    diffusers' UNet upsamples by `scale_factor=2` when both latent sides are multiples of
    `2 ** num_upsamplers` and to the skip connection's size otherwise: a branch on the latent size
    that a program with a dynamic size cannot keep. Nearest-neighbour upsampling by exactly 2 gives
    the same values either way, so the exported program takes the explicit-size path, which is
    right at every size: with an up factor of 2**62 no latent side is a multiple of it, the branch
    is decided while tracing. The upsamplers themselves run `_traceable_upsample` (their own size
    branches, see there). The checkpoint's UNet is restored on exit.
    """
    unet = getattr(module, "unet", None)
    if unet is None:
        yield
        return
    old = unet.num_upsamplers
    unet.num_upsamplers = _NO_SIZE_IS_A_MULTIPLE
    patched = [m for m in unet.modules() if _plain_upsampler(m)]
    for m in patched:
        m.forward = _traceable_upsample.__get__(m)  # the instance's, so the class stays untouched
    try:
        yield
    finally:
        unet.num_upsamplers = old
        for m in patched:
            del m.forward


def _plain_upsampler(m: torch.nn.Module) -> bool:
    """A diffusers `Upsample2D` as Stable Diffusion's UNet has them: nearest x2 (or to a size), then a conv."""
    from diffusers.models.upsampling import Upsample2D

    return (
        isinstance(m, Upsample2D)
        and m.interpolate
        and m.norm is None
        and not m.use_conv_transpose
        and (not m.use_conv or m.name == "conv")
    )


def _traceable_upsample(self, hidden_states: torch.Tensor, output_size=None, *args, **kwargs) -> torch.Tensor:
    """`Upsample2D.forward` for these upsamplers, without its branches on the size.

    diffusers decides whether to make the input contiguous (a workaround for NHWC kernels at 64+
    images or 2**31+ output elements) from the batch, the element count and `max` of the two sides'
    scale factors: tracing keeps each decision as a guard, and `max` of the two ratios compares
    height with width (a 22x13 latent failed the guard of a program traced at 11x13). The values are
    the same either way; here the input is always made contiguous (a no-op for the UNet's tensors).
    """
    import torch.nn.functional as F

    hidden_states = hidden_states.contiguous()
    if output_size is None:
        hidden_states = F.interpolate(hidden_states, scale_factor=2.0, mode="nearest")
    else:
        hidden_states = F.interpolate(hidden_states, size=output_size, mode="nearest")
    return self.conv(hidden_states) if self.use_conv else hidden_states


def _dims(profile: Profile) -> tuple[dict[str, Dim | int], dict[str, int]]:
    """The torch.export dimension of every symbolic name, and a sample size for each (inside the ranges,
    neither 0 nor 1, which torch.export would specialize).

    The latent sides are traced at two different odd sizes: a square sample let tracing record that
    height and width upsample alike, a guard that latents of other shapes in the profile then failed
    (22x13 on a UNet that downsamples three times); odd sides take the rounding of every downsampling.
    """
    dims: dict[str, Dim | int] = {}
    sample: dict[str, int] = {}
    for name, (lo, hi) in dynamic_ranges(profile).items():
        if lo == hi:
            dims[name] = lo  # a fixed size: nothing dynamic
            sample[name] = lo
        else:
            dims[name] = Dim(name, min=lo, max=hi)
            sample[name] = max(2, min(hi, lo + 1))
    lo, hi = dynamic_ranges(profile)["h"]
    first_odd = lo + 1 if lo % 2 == 0 else lo + 2  # the smallest odd side above the minimum
    for name, side in (("h", first_odd), ("w", first_odd + 2)):
        if lo < hi and side <= hi:
            sample[name] = side
    return dims, sample


def export_component(
    contract: Contract, models: Models, profile: Profile, precision: str, device: torch.device
) -> torch.export.ExportedProgram:
    """The component as an exported program with dynamic batch and latent size (on `device`).

    Args:
        contract: The component.
        models: The checkpoint (fp32, CPU; not modified).
        profile: The shapes the program must serve.
        precision: fp32, fp16 or bf16.
        device: Where the program runs (its weights and sample inputs live there while tracing).

    Returns:
        The exported program.
    """
    dtype = DTYPES[precision]
    # the PyTorch backend's arithmetic (a half-precision DDIM update op by op): packages run torch's ops
    module = contract.module(models, dtype, fp32_update=False).to(device)
    dims, sample = _dims(profile)

    def spec_dims(shape) -> dict[int, object] | None:
        out = {}
        for i, d in enumerate(shape):
            if not isinstance(d, str):
                continue
            base = dims[d.lower()] if d in ("H", "W") else dims[d]
            if isinstance(base, int):
                continue
            out[i] = VAE_FACTOR * base if d in ("H", "W") else base
        return out or None

    args = tuple(x.to(device) for x in contract.sample_inputs(sample, torch.Generator().manual_seed(0), dtype))
    dynamic = tuple(spec_dims(spec.shape) for spec in contract.inputs)
    with torch.no_grad(), explicit_upsample_sizes(module):
        return torch.export.export(module, args, dynamic_shapes=dynamic, strict=False)


def compile_package(program: torch.export.ExportedProgram, path: Path) -> Path:
    """Compile an exported program into an AOTInductor package at `path` (`.pt2`)."""
    from torch._inductor import aoti_compile_and_package

    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(aoti_compile_and_package(program, package_path=str(path)))


def package_parity(
    contract: Contract, models: Models, path: Path, profile: Profile, precision: str, device: torch.device
) -> float:
    """Max |package - eager module| over two shapes of the profile (its smallest latent size at batch 1,
    and a larger one at the largest batch), from the one package.
    """
    dtype = DTYPES[precision]
    module = contract.module(models, dtype, fp32_update=False).to(device)
    runner = load_package(path, device)
    ranges = dynamic_ranges(profile)
    batch = ranges[contract.batch_dim]
    lo, hi = ranges["h"]
    worst = 0.0
    gen = torch.Generator().manual_seed(1)
    for b, h, w in ((batch[0], lo, lo), (batch[1], min(hi, lo + 3), min(hi, lo + 5))):
        dims = {contract.batch_dim: b, "h": h, "w": w}
        inputs = tuple(x.to(device) for x in contract.sample_inputs(dims, gen, dtype))
        with torch.no_grad():
            want = module(*inputs)
            got = runner(*inputs)
        got = got[0] if isinstance(got, (list, tuple)) else got
        worst = max(worst, float((got.float() - want.float()).abs().max()))
    return worst


def build_package(
    contract: Contract,
    models: Models,
    path: Path,
    profile: Profile,
    precision: str,
    device: torch.device,
    check: bool = True,
) -> dict:
    """Export, compile and (optionally) check one component's package.

    Returns:
        `seconds` (export + compile), `export_seconds`, `bytes`, and `parity` (max |diff| against the
        eager module at two shapes, None without `check`).
    """
    t0 = time.perf_counter()
    program = export_component(contract, models, profile, precision, device)
    t1 = time.perf_counter()
    compile_package(program, path)
    t2 = time.perf_counter()
    parity = package_parity(contract, models, path, profile, precision, device) if check else None
    return {
        "seconds": t2 - t0,
        "export_seconds": t1 - t0,
        "bytes": path.stat().st_size,
        "parity": parity,
    }
