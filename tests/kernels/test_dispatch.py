"""The single dispatch rule: Triton for CUDA tensors, the reference otherwise,
the interpreter only when forced.
"""

import pytest
import torch

from rd_engine.kernels import IMPL_ENV, average_frames, select_impl, triton_available, weighted_moments


def test_auto_on_cpu_is_reference(monkeypatch):
    monkeypatch.delenv(IMPL_ENV, raising=False)
    # Even with the interpreter active, "auto" never picks Triton for CPU tensors.
    assert select_impl("auto", [torch.zeros(3)]) == "torch"
    assert select_impl("torch", [torch.zeros(3)]) == "torch"


def test_fp64_never_triton(monkeypatch):
    monkeypatch.delenv(IMPL_ENV, raising=False)
    x = torch.zeros(3, dtype=torch.float64)
    assert select_impl("auto", [x]) == "torch"
    with pytest.raises(RuntimeError):
        select_impl("triton", [x])


def test_bad_impl(monkeypatch):
    with pytest.raises(ValueError):
        select_impl("cuda", [torch.zeros(1)])
    monkeypatch.setenv(IMPL_ENV, "fast")
    with pytest.raises(ValueError):
        select_impl("auto", [torch.zeros(1)])


def test_env_override(monkeypatch, kernel_test_mode):
    monkeypatch.setenv(IMPL_ENV, "torch")
    assert select_impl("auto", [torch.zeros(1)]) == "torch"
    # An explicit impl beats the variable.
    if kernel_test_mode["interpret"]:
        assert select_impl("triton", [torch.zeros(1)]) == "triton"
        monkeypatch.setenv(IMPL_ENV, "triton")
        assert select_impl("auto", [torch.zeros(1)]) == "triton"
        assert select_impl("torch", [torch.zeros(1)]) == "torch"
        # The variable routes the public ops through the (interpreted) kernel.
        x = torch.randn(2, 2, 1, 3, 5)
        idx = torch.tensor([[0, 1], [1, 2]])
        torch.testing.assert_close(average_frames(x, idx, 3), average_frames(x, idx, 3, impl="torch"))
        xm = torch.randn(2, 1, 10)
        torch.testing.assert_close(weighted_moments(xm, xm), weighted_moments(xm, xm, impl="torch"))


def test_forced_triton_on_cpu_without_interpreter(monkeypatch, kernel_test_mode):
    if not triton_available():
        with pytest.raises(RuntimeError):
            select_impl("triton", [torch.zeros(1)])
        return
    if kernel_test_mode["interpret"]:
        monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        select_impl("triton", [torch.zeros(1)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_is_triton(monkeypatch, kernel_test_mode):
    monkeypatch.delenv(IMPL_ENV, raising=False)
    expect = "triton" if triton_available() else "torch"
    assert select_impl("auto", [torch.zeros(1, device="cuda")]) == expect
