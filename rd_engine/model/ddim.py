"""DDIM math driven by a checkpoint's `scheduler_config.json`.

We do not keep a diffusers scheduler object at run time: a denoising step is
a pure function of (sample, model output, step coefficients), which fuses into
the UNet call and exports to ONNX/TensorRT as plain arithmetic. The numbers
follow diffusers' `DDIMScheduler` (eta = 0) operation for operation, so the
PyTorch backend reproduces the reference pipeline bit for bit in fp32
(tests/test_ddim.py compares against `DDIMScheduler.step` for several configs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rd_engine.errors import UserError

_DEFAULTS: dict[str, Any] = {
    # diffusers' DDIMScheduler defaults, for keys a config leaves out
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "thresholding": False,
    "clip_sample_range": 1.0,
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


@dataclass(frozen=True)
class DDIMStep:
    """Coefficients of one DDIM update from timestep `t` to `t_prev` (eta = 0).

    The fp32 0-dim tensors are what diffusers multiplies with, so the update is
    computed in the sample's dtype exactly as the reference computes it.
    """

    t: int
    t_prev: int
    alpha_t: torch.Tensor
    alpha_prev: torch.Tensor

    def as_floats(self) -> tuple[float, float]:
        return float(self.alpha_t), float(self.alpha_prev)


def _betas_for_alpha_bar(n: int, max_beta: float = 0.999) -> torch.Tensor:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


def _rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    # Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are
    # Flawed", Algorithm 1: shift sqrt(alpha_bar) so the last step is pure noise.
    abar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = abar_sqrt[0].clone(), abar_sqrt[-1].clone()
    abar_sqrt -= last
    abar_sqrt *= first / (first - last)
    abar = abar_sqrt**2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


class DDIM:
    """The noise schedule and DDIM update of one scheduler config."""

    def __init__(self, config: dict[str, Any]):
        cfg = dict(_DEFAULTS)
        cfg.update({k: v for k, v in config.items() if not k.startswith("_")})
        self.config = cfg
        if cfg["thresholding"]:
            raise UserError("scheduler config: dynamic thresholding is not supported by rd-engine")
        if cfg["prediction_type"] not in ("epsilon", "sample", "v_prediction"):
            raise UserError(f"scheduler config: unknown prediction_type {cfg['prediction_type']!r}")
        n = int(cfg["num_train_timesteps"])
        if cfg["trained_betas"] is not None:
            betas = torch.tensor(cfg["trained_betas"], dtype=torch.float32)
        elif cfg["beta_schedule"] == "linear":
            betas = torch.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=torch.float32)
        elif cfg["beta_schedule"] == "scaled_linear":
            betas = torch.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=torch.float32) ** 2
        elif cfg["beta_schedule"] == "squaredcos_cap_v2":
            betas = _betas_for_alpha_bar(n)
        else:
            raise UserError(f"scheduler config: unknown beta_schedule {cfg['beta_schedule']!r}")
        if cfg["rescale_betas_zero_snr"]:
            betas = _rescale_zero_terminal_snr(betas)
        self.num_train_timesteps = n
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.final_alpha_cumprod = torch.tensor(1.0) if cfg["set_alpha_to_one"] else self.alphas_cumprod[0]
        self.prediction_type: str = cfg["prediction_type"]
        self.clip_sample = bool(cfg["clip_sample"])
        self.clip_sample_range = float(cfg["clip_sample_range"])

    @classmethod
    def from_file(cls, path: Path) -> DDIM:
        try:
            return cls(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: unreadable scheduler config ({e})") from None

    def timesteps(self, num_inference_steps: int) -> list[int]:
        """The discrete timesteps of an `num_inference_steps` schedule, high to low."""
        n, k = self.num_train_timesteps, num_inference_steps
        if not 0 < k <= n:
            raise UserError(f"number of denoising steps must be in 1..{n}, got {k}")
        spacing = self.config["timestep_spacing"]
        if spacing == "linspace":
            ts = np.linspace(0, n - 1, k).round()[::-1].astype(np.int64)
        elif spacing == "leading":
            ts = (np.arange(0, k) * (n // k)).round()[::-1].astype(np.int64) + int(self.config["steps_offset"])
        elif spacing == "trailing":
            ts = np.round(np.arange(n, 0, -n / k)).astype(np.int64) - 1
        else:
            raise UserError(f"scheduler config: unknown timestep_spacing {spacing!r}")
        return [int(t) for t in ts]

    def step_at(self, t: int, num_inference_steps: int) -> DDIMStep:
        """Coefficients of the update at timestep `t` within an `num_inference_steps` schedule."""
        t_prev = t - self.num_train_timesteps // num_inference_steps
        alpha_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha_cumprod
        return DDIMStep(t=t, t_prev=t_prev, alpha_t=self.alphas_cumprod[t], alpha_prev=alpha_prev)

    def schedule(self, num_inference_steps: int) -> list[DDIMStep]:
        return [self.step_at(t, num_inference_steps) for t in self.timesteps(num_inference_steps)]

    def update(self, model_output: torch.Tensor, sample: torch.Tensor, step: DDIMStep) -> torch.Tensor:
        """One DDIM update (eta = 0): the previous sample, in the sample's dtype."""
        return ddim_update(
            model_output,
            sample,
            step.alpha_t,
            step.alpha_prev,
            self.prediction_type,
            self.clip_sample_range if self.clip_sample else None,
        )

    def add_noise(self, x: torch.Tensor, noise: torch.Tensor, t: int) -> torch.Tensor:
        """Forward diffusion to timestep `t` (as diffusers' `add_noise`)."""
        a = self.alphas_cumprod.to(device=x.device, dtype=x.dtype)[t]
        return a**0.5 * x + (1 - a) ** 0.5 * noise


def ddim_update(
    model_output: torch.Tensor,
    sample: torch.Tensor,
    alpha_t: torch.Tensor | float,
    alpha_prev: torch.Tensor | float,
    prediction_type: str,
    clip_range: float | None = None,
) -> torch.Tensor:
    """The DDIM update with explicit coefficients (traceable, used by the exported UNet step)."""
    beta_t = 1 - alpha_t
    if prediction_type == "epsilon":
        x0 = (sample - beta_t**0.5 * model_output) / alpha_t**0.5
        eps = model_output
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha_t**0.5 * x0) / beta_t**0.5
    else:  # v_prediction
        x0 = alpha_t**0.5 * sample - beta_t**0.5 * model_output
        eps = alpha_t**0.5 * model_output + beta_t**0.5 * sample
    if clip_range is not None:
        x0 = x0.clamp(-clip_range, clip_range)
    return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps
