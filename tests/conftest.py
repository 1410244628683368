import argparse
import os
import shutil
import warnings

import pytest
import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A seeded tiny random-weight checkpoint in diffusers layout (built once per session)."""
    from rd_engine.model.factory import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny_models(tiny_ckpt):
    from rd_engine.model.checkpoint import load_checkpoint

    return load_checkpoint(tiny_ckpt)


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """A small generated clip: 14 frames, 96x64."""
    from rd_engine.testing.media import write_test_video

    p = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_test_video(p, n_frames=14, width=96, height=64, fps=10)
    return p


@pytest.fixture
def leftovers():
    """The names of unfinished (`.partial`) files in a folder: a failed write must leave none."""
    return lambda folder: sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# -- one tiny engine per session (tests of export/, engine_format/, backends/, cli build/info) --


CPU = torch.device("cpu")
# Profile of the session engine: frame sides 32..128 px, tuned for 96; the test sizes lie inside.
BUILD_ARGS = [
    "--res",
    "96",
    "--min-res",
    "32",
    "--max-res",
    "128",
    "--max-batch",
    "4",
    "--max-vae-batch",
    "4",
    "--snippet-lens",
    "3",
    "--backend",
    "onnxruntime",
]


def _parser() -> argparse.ArgumentParser:
    """A stand-in for rd_engine.cli.main's parser with the export subcommands wired in."""
    from rd_engine.cli.build import add_build_parser, add_info_parser

    p = argparse.ArgumentParser(prog="rd-engine")
    sub = p.add_subparsers(dest="command", required=True)
    add_build_parser(sub)
    add_info_parser(sub)
    return p


@pytest.fixture(scope="session")
def parser() -> argparse.ArgumentParser:
    return _parser()


@pytest.fixture(scope="session")
def build_args() -> list[str]:
    return list(BUILD_ARGS)


@pytest.fixture(scope="session")
def engine_dir(tiny_ckpt, tmp_path_factory):
    """fp32 ONNX graphs of the tiny checkpoint (snippet length 3)."""
    from rd_engine.cli.build import cmd_build

    out = tmp_path_factory.mktemp("engines") / "tiny"
    args = _parser().parse_args(["build", "-c", str(tiny_ckpt), "-o", str(out), "-q", *BUILD_ARGS])
    assert cmd_build(args) == 0
    return out


@pytest.fixture
def engine_copy(engine_dir, tmp_path):
    """A private copy of the session engine, for tests that damage it."""
    dst = tmp_path / "engine"
    shutil.copytree(engine_dir, dst)
    return dst


@pytest.fixture(scope="session")
def torch_backend(tiny_models):
    from rd_engine.backends.torch_backend import TorchBackend

    return TorchBackend(tiny_models, CPU, torch.float32)


@pytest.fixture(scope="session")
def ort_backend(engine_dir):
    from rd_engine.backends.onnx_backend import OrtBackend

    return OrtBackend(engine_dir, CPU, torch.float32)


@pytest.fixture(scope="module")
def cuda_reference(tiny_ckpt):
    """The PyTorch backend in fp32 on the GPU (its own copy of the weights: the session's
    `tiny_models` stay on the CPU).
    """
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.model.checkpoint import load_checkpoint

    # an fp32 reference, not cuDNN's and cuBLAS's TF32 (10-bit mantissas) that PyTorch allows by default
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return TorchBackend(load_checkpoint(tiny_ckpt), torch.device("cuda"), torch.float32)


# The AOTInductor session engine serves frame sides up to 768 px, so that the C++ session is compared with
# the Python one at the size users run (tests/native/test_native_parity_sizes.py) without a second build;
# the packages' kernels do not depend on the range, and the build takes as long as for 128 px.
AOTI_MAX_RES = 768


@pytest.fixture(scope="session")
def aoti_engine_dir(tiny_ckpt, tmp_path_factory):
    """The session engine's profile, frame sides up to `AOTI_MAX_RES`, with fp32 AOTInductor packages for the
    CPU (built once: ~2 min).
    """
    from rd_engine.cli.build import cmd_build

    out = tmp_path_factory.mktemp("engines") / "tiny-aoti"
    args = [a if a != "onnxruntime" else "aoti" for a in BUILD_ARGS] + ["--device", "cpu"]
    args[args.index("--max-res") + 1] = str(AOTI_MAX_RES)
    assert cmd_build(_parser().parse_args(["build", "-c", str(tiny_ckpt), "-o", str(out), "-q", *args])) == 0
    return out


@pytest.fixture(scope="session")
def aoti_backend(aoti_engine_dir):
    from rd_engine.backends.aoti_backend import AotiBackend

    return AotiBackend(aoti_engine_dir, CPU)
