"""Fast paths of the PyTorch backend: execution options that change how, never what, it computes.

Each is off by default and is an option of `rd-engine run`, `rd-engine bench` and the Python API
(`Engine(fast=FastPaths(...))`); the GPU check (`benchmarks/gpu/check.sh`) times each against the
eager path so that a measurement can decide the defaults (docs/performance.md).

* `channels_last`: UNet and VAE weights (and the frames and latents they are given) in NHWC, the layout
  cuDNN's and oneDNN's fastest convolutions use.
* `cudnn_benchmark`: let cuDNN time its convolution algorithms per shape (`torch.backends.cudnn.benchmark`);
  CUDA only, and a process-wide switch.
* `compile`: `torch.compile` of the VAE encoder, the VAE decoder and the UNet step in a mode:
  "default", "reduce-overhead" (CUDA graphs: replays the per-frame calls of the online mode at lag 0
  without their launch overhead), "max-autotune" or "max-autotune-no-cudagraphs".
* `attention`: the scaled-dot-product-attention kernel of the cross-frame attention (a snippet's frames
  attend jointly: 3 x h x w tokens), "auto" (PyTorch's choice), "flash", "cudnn", "efficient" or "math";
  where the chosen kernel cannot serve a call (the 2-token text cross-attention, say), the math kernel does.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from rd_engine.errors import SettingError

if TYPE_CHECKING:
    import torch

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")


@dataclass(frozen=True)
class FastPaths:
    """Execution options of the PyTorch backend (all off: plain eager PyTorch, as the reference runs)."""

    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: str = "off"
    attention: str = "auto"

    def validate(self) -> FastPaths:
        """This object, checked; raises `SettingError` (worded with the option) otherwise."""
        if self.compile not in COMPILE_MODES:
            raise SettingError("compile", f"must be one of {', '.join(COMPILE_MODES)}, got {self.compile}")
        if self.attention not in ATTENTION_BACKENDS:
            raise SettingError("attention", f"must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.attention}")
        return self

    @classmethod
    def from_args(cls, args) -> FastPaths:
        """The fast paths of parsed `--channels-last`, `--cudnn-benchmark`, `--compile`, `--attention` options."""
        return cls(
            channels_last=args.channels_last,
            cudnn_benchmark=args.cudnn_benchmark,
            compile=args.compile,
            attention=args.attention,
        ).validate()

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def any(self) -> bool:
        return self != FastPaths()


def attention_context(choice: str):
    """A context in which SDPA uses the `choice` kernel (math where that cannot serve a call)."""
    if choice == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernel = {
        "flash": SDPBackend.FLASH_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }[choice]
    return sdpa_kernel([kernel] if kernel == SDPBackend.MATH else [kernel, SDPBackend.MATH])


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-d tensor in NHWC memory (others unchanged)."""
    import torch

    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def compile_module(module: torch.nn.Module, mode: str) -> torch.nn.Module:
    """`module` compiled in `mode` (unchanged for "off")."""
    import torch

    if mode == "off":
        return module
    return torch.compile(module, mode=mode)
