"""Our DDIM update equals diffusers' DDIMScheduler.step (eta = 0) for several configs."""

import json
from importlib import resources

import pytest
import torch
from diffusers import DDIMScheduler

from rd_engine.model.ddim import DDIM

REAL = json.loads(resources.files("rd_engine.configs").joinpath("scheduler_config.json").read_text())

CONFIGS = [
    REAL,
    {**REAL, "prediction_type": "epsilon", "rescale_betas_zero_snr": False, "timestep_spacing": "leading"},
    {**REAL, "prediction_type": "sample", "timestep_spacing": "linspace", "set_alpha_to_one": True},
    {
        **REAL,
        "beta_schedule": "linear",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "clip_sample": True,
        "prediction_type": "epsilon",
        "rescale_betas_zero_snr": False,
    },
    {
        **REAL,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
        "steps_offset": 0,
        "timestep_spacing": "leading",
        "rescale_betas_zero_snr": False,
    },
]


@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: f"{c['prediction_type']}-{c['timestep_spacing']}-{c['beta_schedule']}"
)
@pytest.mark.parametrize("steps", [1, 4, 20])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_step_matches_diffusers(cfg, steps, dtype):
    ours = DDIM(cfg)
    ref = DDIMScheduler.from_config({k: v for k, v in cfg.items() if not k.startswith("_")})
    ref.set_timesteps(steps)
    assert ours.timesteps(steps) == [int(t) for t in ref.timesteps]
    g = torch.Generator().manual_seed(steps)
    sample = torch.randn(2, 3, 4, 4, 5, generator=g).to(dtype)
    for t in ours.timesteps(steps):
        out = torch.randn(sample.shape, generator=g).to(dtype)
        expect = ref.step(out, t, sample).prev_sample
        got = ours.update(out, sample, ours.step_at(t, steps))
        assert got.dtype == expect.dtype
        # same operations in the same order: bitwise equal
        torch.testing.assert_close(got, expect, rtol=0, atol=0)
        sample = got


def test_real_config_one_step_keeps_a_little_noise():
    ddim = DDIM(REAL)
    step = ddim.step_at(999, 1)
    assert float(step.alpha_t) == 0.0  # zero terminal SNR
    assert abs(float(step.alpha_prev) - 0.99915) < 1e-5  # alphas_cumprod[0], set_alpha_to_one = false
    v, x = torch.randn(4), torch.randn(4)
    expect = step.alpha_prev**0.5 * (-v) + (1 - step.alpha_prev) ** 0.5 * x
    torch.testing.assert_close(ddim.update(v, x, step), expect)


def test_refinement_schedule_is_second_half_of_trailing_20():
    ddim = DDIM(REAL)
    ts = ddim.timesteps(20)
    assert ts[10:] == [499, 449, 399, 349, 299, 249, 199, 149, 99, 49]


def test_add_noise_matches_diffusers():
    ref = DDIMScheduler.from_config(REAL)
    x, n = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    torch.testing.assert_close(DDIM(REAL).add_noise(x, n, 499), ref.add_noise(x, n, torch.tensor(499)))


def test_thresholding_is_refused():
    from rd_engine.errors import UserError

    with pytest.raises(UserError, match="thresholding"):
        DDIM({**REAL, "thresholding": True})
