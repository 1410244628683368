import os
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
