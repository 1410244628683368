"""Presets are data; explicit values override them and every override is reported."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from rd_engine.coalign.solve import SOLVERS as ALIGN_SOLVERS
from rd_engine.errors import SettingError, UserError
from rd_engine.snippets.plan import check_dilations

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Settings:
    """Everything that decides what a run computes (docs/method.md, "Presets")."""

    res: int = 768
    dilations: list[int] = field(default_factory=lambda: [1, 25])
    cap_dilation: bool = True
    dtype: str = "fp16"
    refine_step: int = 0
    snippet_len: int = 3
    refine_snippet_len: int = 3
    refine_start_dilation: int = 6
    init_steps: int = 1
    align: str = "fast"
    align_iters: int = 2000
    seed: int | None = None
    start_frame: int = 0
    frame_count: int = 0
    snippet_batch: int = 8
    vae_batch: int = 4

    def validate(self) -> Settings:
        """Check every value; raises SettingError naming the first bad one."""

        def need(cond: bool, name: str, problem: str) -> None:
            if not cond:
                raise SettingError(name, problem)

        need(self.res >= 0, "res", f"must be >= 0 (0 keeps the input size), got {self.res}")
        try:
            check_dilations(self.dilations)
        except UserError as e:
            raise SettingError("dilations", str(e).removeprefix("dilations ")) from None
        need(self.dtype in DTYPES, "dtype", f"must be fp16, bf16 or fp32, got {self.dtype}")
        need(0 <= self.refine_step <= 500, "refine_step", f"must be in 0..500, got {self.refine_step}")
        need(2 <= self.snippet_len <= 8, "snippet_len", f"must be in 2..8, got {self.snippet_len}")
        need(2 <= self.refine_snippet_len <= 8, "refine_snippet_len", f"must be in 2..8, got {self.refine_snippet_len}")
        need(
            self.refine_start_dilation >= 1, "refine_start_dilation", f"must be >= 1, got {self.refine_start_dilation}"
        )
        need(1 <= self.init_steps <= 1000, "init_steps", f"must be in 1..1000, got {self.init_steps}")
        need(self.align in ALIGN_SOLVERS, "align", f"must be one of {', '.join(ALIGN_SOLVERS)}, got {self.align}")
        need(self.align_iters >= 1, "align_iters", f"must be >= 1, got {self.align_iters}")
        need(self.start_frame >= 0, "start_frame", f"must be >= 0, got {self.start_frame}")
        need(self.frame_count >= 0, "frame_count", f"must be >= 0 (0 = to the end), got {self.frame_count}")
        need(self.snippet_batch >= 1, "snippet_batch", f"must be >= 1, got {self.snippet_batch}")
        need(self.vae_batch >= 1, "vae_batch", f"must be >= 1, got {self.vae_batch}")
        need(self.seed is None or 0 <= self.seed < 2**63, "seed", f"must be a non-negative integer, got {self.seed}")
        return self

    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    # `paper` reproduces the published pipeline exactly, so it keeps the reference Adam solver;
    # the others minimize the same objective to convergence with the fast solver.
    "fast": dict(res=768, dilations=[1, 25], cap_dilation=True, dtype="fp16", refine_step=0, align="fast"),
    "fast1024": dict(res=1024, dilations=[1, 25], cap_dilation=True, dtype="fp16", refine_step=0, align="fast"),
    "full": dict(res=1024, dilations=[1, 10, 25], cap_dilation=True, dtype="fp16", refine_step=10, align="fast"),
    "paper": dict(res=768, dilations=[1, 10, 25], cap_dilation=False, dtype="fp32", refine_step=10, align="reference"),
}


def resolve(preset: str, overrides: dict, device: torch.device | None = None) -> tuple[Settings, list[str]]:
    """Settings of `preset` with `overrides` (keys of Settings; None = not given).

    Returns the settings and one human-readable line per value that differs
    from the preset. On a CPU device a half-precision preset runs in fp32
    unless --dtype was given: CPU half-precision convolutions are many times
    slower, and the reference's fp16 exists for GPU memory and speed.
    """
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    s = Settings(**PRESETS[preset])
    notes = []
    for key, value in overrides.items():
        if value is None:
            continue
        if not hasattr(s, key):
            raise UserError(f"unknown setting {key!r}")
        old = getattr(s, key)
        if value != old:
            if key in PRESETS[preset]:
                notes.append(f"override: {key} = {value} (preset {preset}: {old})")
            setattr(s, key, value)
    if device is not None and device.type == "cpu" and overrides.get("dtype") is None and s.dtype != "fp32":
        notes.append(f"dtype: fp32 on CPU (preset {preset}: {s.dtype}; set the dtype to force it)")
        s.dtype = "fp32"
    return s.validate(), notes


def pick_device(spec: str) -> torch.device:
    """`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`, checked against this machine."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise SettingError("device", f"{spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", f"{spec!r} requested but no CUDA device is available")
    if dev.type not in ("cpu", "cuda"):
        raise SettingError("device", f"{spec!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return dev
