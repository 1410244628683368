"""ONNX Runtime's CUDA execution provider with I/O bound to torch CUDA tensors (needs onnxruntime-gpu and a GPU)."""

from __future__ import annotations

import pytest
import torch


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and _ort_cuda()),
    reason="a CUDA GPU and onnxruntime-gpu (CUDAExecutionProvider) are required",
)
CUDA = torch.device("cuda")


def test_onnxruntime_cuda_provider_binds_torch_tensors(engine_dir, cuda_reference):
    from rd_engine.backends.onnx_backend import OrtBackend

    be = OrtBackend(engine_dir, CUDA, torch.float32)
    g = torch.Generator(device="cuda").manual_seed(2)
    frames = torch.rand(3, 3, 48, 64, device=CUDA, generator=g) * 2 - 1
    rgb = torch.randn(3, 3, 4, 6, 8, device=CUDA, generator=g)
    step = be.ddim.schedule(1)[0]
    for ref, got in (
        (cuda_reference.encode(frames), be.encode(frames)),
        (cuda_reference.denoise(rgb, rgb, step), be.denoise(rgb, rgb, step)),
    ):
        assert got.device.type == "cuda"
        assert (got - ref).abs().max().item() < 1e-3


def test_onnxruntime_cuda_end_to_end(engine_dir, cuda_reference, clip):
    from rd_engine.backends.onnx_backend import OrtBackend
    from rd_engine.pipeline.offline import Pipeline
    from rd_engine.settings import resolve

    settings, _ = resolve(
        "fast", dict(res=64, dilations=[1, 3], seed=1, align="reference", align_iters=30, dtype="fp32"), CUDA
    )
    got = Pipeline(OrtBackend(engine_dir, CUDA, torch.float32), progress=False).predict(clip, settings)
    ref = Pipeline(cuda_reference, progress=False).predict(clip, settings)
    assert (torch.as_tensor(got.depth) - torch.as_tensor(ref.depth)).abs().max().item() < 1e-3
