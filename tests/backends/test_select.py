"""`open_backend`: the auto order TensorRT -> ONNX Runtime -> PyTorch, forced backends, refusals."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from rd_engine.backends.select import open_backend
from rd_engine.backends.tensorrt_backend import TRT_REQUIRED, tensorrt_unavailable_reason
from rd_engine.cli.args import worded
from rd_engine.errors import UserError

CPU = torch.device("cpu")
NO_TRT = tensorrt_unavailable_reason()


def test_auto_with_an_engine_on_cpu_picks_onnxruntime_and_says_why(engine_dir, caplog):
    caplog.set_level(logging.INFO, logger="rd_engine")
    be = open_backend(engine_dir, None, "auto", CPU, torch.float32, (64, 42))
    assert be.name == "onnxruntime" and be.device == CPU and be.dtype == torch.float32
    assert "backend auto -> onnxruntime (tensorrt: engine holds no TensorRT plans" in caplog.text


def test_auto_without_an_engine_is_pytorch(tiny_models, caplog):
    caplog.set_level(logging.INFO, logger="rd_engine")
    be = open_backend(None, tiny_models, "auto", CPU, torch.float32, (64, 42))
    assert be.name == "pytorch"
    assert "backend auto -> pytorch (no engine folder given" in caplog.text


def test_forced_backends(engine_dir, tiny_models):
    assert open_backend(engine_dir, tiny_models, "pytorch", CPU, torch.float32).name == "pytorch"
    assert open_backend(engine_dir, tiny_models, "onnxruntime", CPU, torch.float32).name == "onnxruntime"
    with pytest.raises(UserError, match="^backend tensorrt: engine holds no TensorRT plans") as e:
        open_backend(engine_dir, None, "tensorrt", CPU, torch.float32)
    assert worded(e.value).startswith("--backend tensorrt: ")  # the CLI names the flag
    with pytest.raises(UserError, match="needs an engine folder"):
        open_backend(None, tiny_models, "onnxruntime", CPU, torch.float32)
    with pytest.raises(UserError, match="pytorch backend needs a checkpoint"):
        open_backend(engine_dir, None, "pytorch", CPU, torch.float32)
    with pytest.raises(UserError, match="^backend must be one of"):
        open_backend(engine_dir, None, "tvm", CPU, torch.float32)


def test_engine_and_checkpoint_must_agree(engine_dir, tmp_path):
    from rd_engine.model.factory import make_tiny_checkpoint

    other = SimpleNamespace(source=make_tiny_checkpoint(tmp_path / "other", seed=2))
    with pytest.raises(UserError, match="other weights"):
        open_backend(engine_dir, other, "auto", CPU, torch.float32)


def test_checks_of_the_run(engine_dir):
    with pytest.raises(UserError, match="--max-res 256"):
        open_backend(engine_dir, None, "auto", CPU, torch.float32, (256, 144))
    with pytest.raises(UserError, match="no UNet graph for snippet length 4"):
        open_backend(engine_dir, None, "auto", CPU, torch.float32, (64, 42), snippet_lens=[3, 4])


@pytest.mark.skipif(NO_TRT is None, reason="TensorRT is installed here")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(engine_dir):
    from rd_engine.backends.tensorrt_backend import TrtBackend

    with pytest.raises(UserError, match="tensorrt backend: "):
        TrtBackend(engine_dir, "cuda")
    assert TRT_REQUIRED == "TensorRT and a CUDA GPU are required"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device exists here")
def test_onnxruntime_on_cuda_without_a_gpu(engine_dir, tiny_models):
    """No CUDA: auto falls back to the PyTorch backend only if it can run; here the device is absent."""
    from rd_engine.backends.onnx_backend import onnxruntime_unavailable_reason

    assert onnxruntime_unavailable_reason(CPU) is None
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "no CUDA execution provider" in onnxruntime_unavailable_reason("cuda")
