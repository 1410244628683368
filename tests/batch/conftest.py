"""One local Ray cluster (2 CPUs) for the session's cluster tests, and the clips they share."""

from __future__ import annotations

import pytest

from rd_engine.testing.media import write_test_video

# small and fast on CPU: 32 px frames, dilations 1 and 3, one colormap (plus side by side)
SETTINGS = {"res": 32, "dilations": [1, 3], "seed": 5, "dtype": "fp32"}
CLI_SETTINGS = ["--res", "32", "-d", "1", "3", "--seed", "5", "--dtype", "fp32", "--cmap", "Spectral_r", "-q"]


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with 2 CPUs, started once and shut down at the end of the session."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """A folder of three good videos of different lengths and one that is not a video."""
    d = tmp_path_factory.mktemp("cluster-videos")
    for name, n in (("short", 8), ("medium", 14), ("long", 20)):
        write_test_video(d / f"{name}.mp4", n_frames=n, width=64, height=48, fps=10)
    (d / "broken.mp4").write_text("not a video")
    return d


@pytest.fixture(scope="session")
def single_outputs(tmp_path_factory, videos, tiny_ckpt):
    """The single-process outputs of `videos` (the reference every cluster run must equal)."""
    from rd_engine import cli

    out = tmp_path_factory.mktemp("single-out")
    assert cli.main(["run", str(videos), "-c", str(tiny_ckpt), "-o", str(out), *CLI_SETTINGS]) == 1  # broken.mp4
    return out
