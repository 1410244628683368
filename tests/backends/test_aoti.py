"""The AOTInductor backend against the PyTorch backend, and its refusals of packages that do not fit."""

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from rd_engine.backends.select import open_backend
from rd_engine.errors import UserError

CPU = torch.device("cpu")
SIZES = [(64, 40), (96, 56)]  # (width, height), both inside the session profile: one package serves both
BATCHES = [1, 3, 5]  # 5 > the profile's 4: split into two calls
TOL = 1e-4  # fp32 per component, as for the ONNX graphs


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("batch", BATCHES)
def test_components_match_pytorch(torch_backend, aoti_backend, size, batch):
    w, h = size
    g = torch.Generator().manual_seed(batch * 100 + w)
    frames = torch.rand(batch, 3, h, w, generator=g) * 2 - 1
    torch.testing.assert_close(aoti_backend.encode(frames), torch_backend.encode(frames), atol=TOL, rtol=0)
    lat = torch.randn(batch, 4, h // 8, w // 8, generator=g)
    torch.testing.assert_close(aoti_backend.decode(lat), torch_backend.decode(lat), atol=TOL, rtol=0)
    rgb, depth = (torch.randn(batch, 3, 4, h // 8, w // 8, generator=g) for _ in range(2))
    for step in torch_backend.ddim.schedule(1) + torch_backend.ddim.schedule(4)[1:2]:
        want = torch_backend.denoise(rgb, depth, step)
        torch.testing.assert_close(aoti_backend.denoise(rgb, depth, step), want, atol=TOL, rtol=0)


def test_end_to_end_matches_pytorch(torch_backend, aoti_backend, clip):
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.settings import resolve

    s, _ = resolve("fast", {"res": 96, "seed": 3, "dtype": "fp32", "refine_step": 1}, CPU)
    want = Pipeline(torch_backend, progress=False).predict(clip, s)
    got = Pipeline(aoti_backend, progress=False).predict(clip, s)
    assert got.depth.shape == want.depth.shape == (14, 64, 96)
    assert float(np.abs(got.depth - want.depth).max()) < 1e-3


def test_online_session_runs_on_the_packages(torch_backend, aoti_backend, clip):
    from rd_engine.io.video import iter_frames
    from rd_engine.online.session import StreamSession
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.settings import resolve

    s, _ = resolve("fast", {"res": 96, "seed": 5, "dtype": "fp32"}, CPU)
    out = []
    for be in (torch_backend, aoti_backend):
        session = StreamSession(Pipeline(be, progress=False), s, lag=1)
        done = [f for fr in iter_frames(clip) for f in session.push(fr.rgb, fr.timestamp)] + session.flush()
        out.append(np.stack([f.depth for f in done]))
    assert out[0].shape == out[1].shape and float(np.abs(out[0] - out[1]).max()) < 1e-3


def test_auto_picks_the_packages_and_the_api_too(aoti_engine_dir, tiny_models, caplog):
    from rd_engine import Engine

    with caplog.at_level(logging.INFO, logger="rd_engine"):
        assert open_backend(aoti_engine_dir, tiny_models, "auto", CPU).name == "aoti"
    assert "backend auto -> aoti" in caplog.text
    assert Engine(engine=aoti_engine_dir, device="cpu").backend.name == "aoti"


def _edited(src, dst, edit):
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_packages_of_another_torch_are_refused_with_the_rebuild_command(aoti_engine_dir, tiny_models, tmp_path, caplog):
    other = _edited(aoti_engine_dir, tmp_path / "e", lambda m: m["aoti"].update(torch_version="2.0.0"))
    with pytest.raises(UserError, match=r"torch 2\.0\.0 at build time.*rd-engine build .*--backend aoti"):
        open_backend(other, tiny_models, "aoti", CPU)
    with caplog.at_level(logging.INFO, logger="rd_engine"):  # auto moves on to the ONNX graphs, saying why
        assert open_backend(other, tiny_models, "auto", CPU).name == "onnxruntime"
    assert "torch 2.0.0 at build time" in caplog.text


def test_cuda_packages_on_a_cpu_run_are_refused(aoti_engine_dir, tiny_models, tmp_path):
    other = _edited(aoti_engine_dir, tmp_path / "e", lambda m: m["aoti"].update(device="cuda"))
    with pytest.raises(UserError, match="compiled for cuda.*--device cpu"):
        open_backend(other, tiny_models, "aoti", CPU)


def test_edited_package_and_sizes_outside_the_profile_are_refused(aoti_engine_dir, tmp_path):
    from rd_engine.backends.aoti_backend import AotiBackend

    other = tmp_path / "e"
    shutil.copytree(aoti_engine_dir, other)
    be = AotiBackend(other, CPU)
    with pytest.raises(UserError, match="outside|serves frames whose sides are 32..768"):
        be.check_size((1024, 576))
    pkg = other / "aoti" / "vae_decoder.fp32.cpu.pt2"
    data = bytearray(pkg.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, other checksum
    pkg.write_bytes(bytes(data))
    with pytest.raises(UserError, match="modified after the build"):
        be.decode(torch.randn(1, 4, 5, 8))
