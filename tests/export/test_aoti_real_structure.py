"""`rd-engine build --backend aoti` on a checkpoint with the real UNet structure, with no size options.

The small checkpoint (`make_small_checkpoint`) has the real UNet's four down blocks and three
downsamplings, two layers per block, and the SD2 VAE's block layout, at a small width. The tiny
checkpoint downsamples once, so its smallest package size (24 px) is not the real one (72 px).
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from rd_engine.errors import SettingError
from rd_engine.export.aoti import check_profile, smallest_min_res


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    from rd_engine.model.factory import make_small_checkpoint

    return make_small_checkpoint(tmp_path_factory.mktemp("ckpt") / "small", seed=0)


@pytest.fixture(scope="module")
def small_models(small_ckpt):
    from rd_engine.model.checkpoint import load_checkpoint

    return load_checkpoint(small_ckpt)


def test_the_small_checkpoint_has_the_real_block_structure(small_models):
    from rd_engine.model.checkpoint import reference_config

    real = reference_config("unet_config.json")
    cfg = small_models.unet.config
    for key in ("down_block_types", "up_block_types", "layers_per_block", "use_linear_projection", "in_channels"):
        assert list(np.atleast_1d(cfg[key])) == list(np.atleast_1d(real[key])), key
    vae_real = reference_config("vae_config.json")
    for key in ("down_block_types", "up_block_types", "layers_per_block", "latent_channels"):
        assert list(np.atleast_1d(small_models.vae.config[key])) == list(np.atleast_1d(vae_real[key])), key


def test_the_smallest_package_side_of_the_real_unet_is_72_px(small_models):
    from rd_engine.engine_format.profile import Profile

    assert smallest_min_res(small_models) == 72
    check_profile(small_models, Profile(min_res=72, opt_res=768, max_res=768))
    with pytest.raises(SettingError, match="at least 72 px"):
        check_profile(small_models, Profile(min_res=64, opt_res=768, max_res=768))


def test_build_with_no_size_options_builds_and_runs(small_ckpt, clip, tmp_path):
    """The documented command as users run it: `rd-engine build -c CKPT --backend aoti --device cpu -o DIR`.
    Its default profile (768 px, batches 8) gets the smallest side the packages serve, 72 px; the engine
    then runs a clip (processed at 144x96: latent 18x12, which the three downsamplings take to 9x6, 5x3 and
    3x2, so the odd sizes take the explicit-size upsampling; both sides stay above the 72 px minimum) and
    matches the PyTorch backend on the same checkpoint.
    """
    engine = tmp_path / "engine"
    r = subprocess.run(
        [sys.executable, "-m", "rd_engine.cli", "build", "-c", str(small_ckpt), "--backend", "aoti"]
        + ["--device", "cpu", "-o", str(engine)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "smallest frame side 72 px" in r.stdout
    assert "(frame sides 72..768 px)" in r.stdout  # the last line says the profile that was built
    m = json.loads((engine / "manifest.json").read_text())
    assert m["profile"]["min_res"] == 72 and m["profile"]["max_res"] == 768
    assert m["aoti"]["dynamic"]["h"] == [9, 96]
    outs = {}
    runs = (
        ("aoti", ["--engine", str(engine), "--backend", "aoti"]),
        ("torch", ["-c", str(small_ckpt), "--backend", "pytorch"]),
    )
    for name, extra in runs:
        r = subprocess.run(
            [sys.executable, "-m", "rd_engine.cli", "run", str(clip), "-o", str(tmp_path / name), "--device", "cpu"]
            + ["--res", "144", "--dtype", "fp32", "--refine-step", "0", "--seed", "3", "--no-npz", "--cmap"]
            + ["--no-sbs", "-q", *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        (npy,) = (tmp_path / name).rglob("*.npy")
        outs[name] = np.load(npy)
    assert outs["aoti"].shape == outs["torch"].shape and np.isfinite(outs["aoti"]).all()
    # fp32 packages against eager fp32 on the same weights and noise: compiled kernels reorder sums only
    assert np.abs(outs["aoti"] - outs["torch"]).max() < 1e-3


def test_the_exported_unet_step_serves_every_latent_of_its_profile(small_models):
    import torch

    from rd_engine.engine_format.contracts import unet_step_contract
    from rd_engine.engine_format.profile import Profile
    from rd_engine.export.aoti import export_component

    contract = unet_step_contract(3)
    profile = Profile(min_res=72, opt_res=768, max_res=768)
    program = export_component(contract, small_models, profile, "fp32", torch.device("cpu"))
    module = contract.module(small_models, torch.float32, fp32_update=False)
    # both orientations, the smallest side, sides that round at every downsampling, the 768x432 frame's
    # latent, and the largest snippet batch (diffusers' upsampler branched on the batch too)
    for s, h, w in ((2, 13, 22), (2, 22, 13), (1, 9, 9), (1, 54, 96), (1, 96, 9), (profile.max_batch, 11, 14)):
        args = contract.sample_inputs({"S": s, "h": h, "w": w}, torch.Generator().manual_seed(0), torch.float32)
        with torch.no_grad():
            want = module(*args)
            got = program.module()(*args)
        assert float((got - want).abs().max()) < 1e-4, (s, h, w)
