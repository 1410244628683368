"""The TensorRT builder's logic that runs without TensorRT: profile inputs and the plan-memory check."""

import logging

import pytest

from rd_engine.engine_format.contracts import all_contracts, unet_step_contract
from rd_engine.engine_format.profile import Profile
from rd_engine.errors import UserError
from rd_engine.export.tensorrt_build import check_plan_memory, profile_inputs

GIB = 1 << 30


def test_a_one_size_profile_still_gives_every_dynamic_input_a_range():
    """A profile that fixes the size and the batch collapses every range (min == max): the dynamic inputs
    still need their entry, or the build fails; inputs without a dynamic dimension get none.
    """
    fixed = Profile(min_res=64, opt_res=64, max_res=64, max_batch=1, opt_batch=1, max_vae_batch=1, opt_vae_batch=1)
    unet = profile_inputs(unet_step_contract(3), fixed)
    assert set(unet) == {"rgb_latent", "depth_latent"}
    lo, opt, hi = unet["rgb_latent"]
    assert lo == opt == hi == (1, 3, 4, 8, 8)
    for c in all_contracts([3])[:2]:
        assert set(profile_inputs(c, fixed)) == {c.inputs[0].name}


def test_plan_memory_is_refused_over_the_gpu_and_warned_about_when_large(caplog):
    check_plan_memory("unet_step_L3.fp16.plan", 2 * GIB, 80 * GIB)  # fine: nothing said
    with caplog.at_level(logging.WARNING, logger="rd_engine"):
        check_plan_memory("unet_step_L3.fp16.plan", 30 * GIB, 80 * GIB)
    assert "30.0 GiB of activation memory" in caplog.text
    with pytest.raises(UserError, match=r"needs 100\.0 GiB .* attention was probably not fused"):
        check_plan_memory("unet_step_L3.fp32.plan", 100 * GIB, 80 * GIB)
