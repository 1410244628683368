"""ONNX Runtime (CPU, fp32) against the PyTorch reference backend on the tiny checkpoint.

The backend runs the engine's `.ort.onnx` graphs (attention as MultiHeadAttention); the portable
graphs get their own check.
"""

from __future__ import annotations

import inspect
import zlib

import numpy as np
import pytest
import torch

from rd_engine.errors import UserError
from rd_engine.pipeline.offline import Pipeline
from rd_engine.settings import resolve

CPU = torch.device("cpu")
# (width, height) in pixels: two ordinary sizes and one whose latent (9x5) is odd, which exercises
# the UNet's explicit upsample sizes
SIZES = [(64, 48), (96, 64), (72, 40)]
BATCHES = [1, 3, 5]
TOL = 1e-4


def _gen(*key) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("batch", BATCHES)
def test_vae_encoder(torch_backend, ort_backend, size, batch):
    w, h = size
    frames = torch.rand(batch, 3, h, w, generator=_gen("enc", size, batch)) * 2 - 1
    ref, got = torch_backend.encode(frames), ort_backend.encode(frames)
    assert got.shape == (batch, 4, h // 8, w // 8) and got.dtype == torch.float32
    assert (got - ref).abs().max() < TOL


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("batch", BATCHES)
def test_vae_decoder(torch_backend, ort_backend, size, batch):
    w, h = size
    lat = torch.randn(batch, 4, h // 8, w // 8, generator=_gen("dec", size, batch))
    ref, got = torch_backend.decode(lat), ort_backend.decode(lat)
    assert got.shape == (batch, 1, h, w)
    assert (got - ref).abs().max() < TOL


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("batch", BATCHES)
def test_unet_step(torch_backend, ort_backend, size, batch):
    """One graph serves every step of every schedule: coefficients and timestep are inputs."""
    w, h = size
    g = _gen("unet", size, batch)
    rgb = torch.randn(batch, 3, 4, h // 8, w // 8, generator=g)
    depth = torch.randn(batch, 3, 4, h // 8, w // 8, generator=g)
    ddim = torch_backend.ddim
    steps = ddim.schedule(1) + ddim.schedule(20)[10:11]  # t = 999 (alpha_bar 0), then a refinement step
    for step in steps:
        ref, got = torch_backend.denoise(rgb, depth, step), ort_backend.denoise(rgb, depth, step)
        assert got.shape == depth.shape
        assert (got - ref).abs().max() < TOL, step.t


def test_pytorch_backend_runs_the_exported_modules(torch_backend, tiny_models):
    """The PyTorch backend computes through the very modules the contracts trace: bit for bit in fp32."""
    from rd_engine.engine_format.contracts import all_contracts

    enc, dec, unet = all_contracts([3])
    g = _gen("modules")
    frames = torch.rand(2, 3, 40, 72, generator=g) * 2 - 1
    lat = torch.randn(2, 4, 5, 9, generator=g)
    rgb, depth = torch.randn(2, 3, 4, 5, 9, generator=g), torch.randn(2, 3, 4, 5, 9, generator=g)
    step = torch_backend.ddim.schedule(20)[10]
    with torch.no_grad():
        assert torch.equal(enc.module(tiny_models)(frames), torch_backend.encode(frames))
        assert torch.equal(dec.module(tiny_models)(lat), torch_backend.decode(lat))
        t, a, ap = (torch.tensor([step.t]), step.alpha_t.reshape(1), step.alpha_prev.reshape(1))
        assert torch.equal(unet.module(tiny_models)(rgb, depth, t, a, ap), torch_backend.denoise(rgb, depth, step))


def test_every_backend_checks_sizes(torch_backend, ort_backend):
    torch_backend.check_size((4096, 2160))  # the PyTorch backend serves any size
    ort_backend.check_size((64, 42))
    with pytest.raises(UserError, match="rebuild with a wider range"):
        ort_backend.check_size((256, 144))


def test_portable_graphs_match_too(engine_dir, torch_backend):
    """The portable graphs (standard ops, the TensorRT source) run under ONNX Runtime as well."""
    from rd_engine.backends.onnx_backend import OrtBackend

    be = OrtBackend(engine_dir, CPU, torch.float32, fused_attention=False)
    g = _gen("portable")
    frames = torch.rand(3, 3, 40, 72, generator=g) * 2 - 1
    lat = torch.randn(3, 4, 5, 9, generator=g)
    rgb, depth = torch.randn(2, 3, 4, 5, 9, generator=g), torch.randn(2, 3, 4, 5, 9, generator=g)
    step = torch_backend.ddim.schedule(1)[0]
    assert (be.encode(frames) - torch_backend.encode(frames)).abs().max() < TOL
    assert (be.decode(lat) - torch_backend.decode(lat)).abs().max() < TOL
    assert (be.denoise(rgb, depth, step) - torch_backend.denoise(rgb, depth, step)).abs().max() < TOL


def test_snippet_frames_attend_jointly(ort_backend):
    """The cross-frame attention survived export: changing one frame of a snippet changes the
    others' output, and nothing leaks across snippets of a batch.
    """
    g = torch.Generator().manual_seed(3)
    rgb = torch.randn(2, 3, 4, 6, 8, generator=g)
    depth = torch.randn(2, 3, 4, 6, 8, generator=g)
    step = ort_backend.ddim.schedule(1)[0]
    base = ort_backend.denoise(rgb, depth, step)
    rgb2 = rgb.clone()
    rgb2[0, 2] += 1.0
    moved = ort_backend.denoise(rgb2, depth, step)
    assert (moved[0, 0] - base[0, 0]).abs().max() > 1e-4  # frame 0 sees frame 2 of its snippet
    assert torch.equal(moved[1], base[1]) or (moved[1] - base[1]).abs().max() < 1e-6  # other snippet untouched


def test_missing_snippet_length_is_a_user_error(ort_backend):
    rgb = torch.zeros(1, 4, 4, 6, 8)
    with pytest.raises(UserError, match=r"no UNet graph for snippet length 4.*rd-engine build.*--snippet-lens 3 4"):
        ort_backend.denoise(rgb, rgb, ort_backend.ddim.schedule(1)[0])


def test_ddim_rebuilt_from_the_manifest(torch_backend, ort_backend):
    assert torch.equal(ort_backend.ddim.alphas_cumprod, torch_backend.ddim.alphas_cumprod)
    assert ort_backend.ddim.prediction_type == torch_backend.ddim.prediction_type == "v_prediction"
    assert ort_backend.ddim.timesteps(20) == torch_backend.ddim.timesteps(20)


def test_fp32_backend_ignores_half_request(engine_dir):
    """An fp32-only engine runs fp32 whatever the run asks for (and says so in the log)."""
    from rd_engine.backends.onnx_backend import OrtBackend

    be = OrtBackend(engine_dir, CPU, torch.float16)
    assert be.dtype == torch.float32 and be.precision == "fp32"


def _predict(backend, clip, settings) -> dict[str, np.ndarray]:
    """Run the pipeline and return its arrays as numpy (the Prediction API keeps evolving)."""
    pipe = Pipeline(backend, progress=False)
    wanted = {"keep_snippets": True, "keep_coaligned": True}
    kwargs = {k: v for k, v in wanted.items() if k in inspect.signature(pipe.predict).parameters}
    pred = pipe.predict(clip, settings, **kwargs)
    out = {"depth": np.array(_np(pred.depth))}
    if getattr(pred, "coaligned", None) is not None:
        out["coaligned"] = np.array(_np(pred.coaligned))
    for i, g in enumerate(getattr(pred, "snippets", None) or []):
        out[f"snippets{i}"] = _np(g.depth).astype(np.float32)
    if hasattr(pred, "close"):
        pred.close()
    return out


def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def test_end_to_end_matches_pytorch(torch_backend, ort_backend, clip):
    """Pipeline(OrtBackend) vs Pipeline(TorchBackend) on a generated clip: same depth within 1e-3,
    both the co-aligned depth and the refined output (refine_step 1: add_noise + denoise + averaging).
    """
    # the `fast` solver: its closed-form steps carry the backends' snippet difference (about 1e-5) into the
    # co-aligned depth as about 3e-5. The reference solver's Adam amplified it 50-100x, to 4.6e-4..1.2e-3
    # depending on the torch thread count (measured at 1 and 2 threads), which measured the solver, not the
    # backend, and failed the bound in a full CI run
    settings, _ = resolve("fast", dict(res=64, dilations=[1, 3], seed=1, refine_step=1), CPU)
    ref = _predict(torch_backend, clip, settings)
    got = _predict(ort_backend, clip, settings)
    assert got.keys() == ref.keys()
    assert got["depth"].shape == (14, 42, 64)
    diffs = {k: float(np.abs(got[k] - ref[k]).max()) for k in ref}
    assert all(np.isfinite(got[k]).all() for k in got)
    assert max(diffs.values()) < 1e-3, diffs
