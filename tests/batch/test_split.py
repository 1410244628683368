"""One long video split into frame ranges over 2 workers: the single-process result."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from rd_engine import cli
from rd_engine.batch import run_cluster
from rd_engine.outputs.offline import OutputOptions
from rd_engine.testing.media import write_test_video

from .conftest import CLI_SETTINGS, SETTINGS


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    p = tmp_path_factory.mktemp("split") / "walk.mp4"
    write_test_video(p, n_frames=72, width=64, height=48, fps=10, gop=16)  # keyframes to seek to
    return p


@pytest.fixture(scope="module")
def single(tmp_path_factory, long_video, tiny_ckpt):
    out = tmp_path_factory.mktemp("split-single")
    assert cli.main(["run", str(long_video), "-c", str(tiny_ckpt), "-o", str(out), *CLI_SETTINGS]) == 0
    return out


def test_a_split_video_equals_the_single_process_run(tmp_path, ray_cluster, long_video, single, tiny_ckpt):
    out = tmp_path / "cluster"
    res = run_cluster(
        [long_video],
        out,
        checkpoint=str(tiny_ckpt),
        overrides=SETTINGS,
        options=OutputOptions(cmaps=["Spectral_r"]),
        split="always",
        progress=False,
    )
    (job,) = res.jobs
    assert job.status == "done", job.error
    assert job.ranges == [(0, 64), (64, 72)] and len(set(job.worker.split(","))) == 2
    a, b = np.load(single / "walk_pred.npy"), np.load(out / "walk_pred.npy")
    assert a.shape == b.shape == (72, 24, 32)
    assert np.abs(a - b).max() < 1e-6
    for name in ("walk_pred.npy", "walk.npz", "walk_Spectral_r.mp4", "walk_rgbd.mp4"):
        assert (single / name).read_bytes() == (out / name).read_bytes(), name
    # the driver got the solver copies and timestamps only: far less than the frames' depth
    assert 0 < job.driver_bytes < a.nbytes / 10
    assert not any(p.name.startswith(".") for p in out.iterdir())  # the ranges' parts are gone


def test_auto_split_only_from_the_threshold(tmp_path, ray_cluster, videos, tiny_ckpt):
    res = run_cluster(
        [videos / "medium.mp4"],
        tmp_path / "o",
        checkpoint=str(tiny_ckpt),
        overrides=SETTINGS,
        options=OutputOptions(cmaps=[]),
        split_min_frames=15,
        progress=False,
    )
    assert res.jobs[0].status == "done" and res.jobs[0].ranges == [] and res.jobs[0].frames == 14


def test_a_worker_killed_during_a_split_video(tmp_path, ray_cluster, long_video, single, tiny_ckpt):
    killed = []

    def kill_one(kind, job, worker):
        if not killed:
            killed.append(worker["pid"])
            os.kill(worker["pid"], signal.SIGKILL)

    out = tmp_path / "cluster"
    res = run_cluster(
        [long_video],
        out,
        checkpoint=str(tiny_ckpt),
        overrides=SETTINGS,
        options=OutputOptions(cmaps=["Spectral_r"]),
        split="always",
        progress=False,
        on_event=kill_one,
    )
    (job,) = res.jobs
    assert killed and job.status == "done" and job.attempts == 2, job.error
    for name in ("walk_pred.npy", "walk.npz", "walk_Spectral_r.mp4", "walk_rgbd.mp4"):
        assert (single / name).read_bytes() == (out / name).read_bytes(), name
    assert not any(p.name.startswith(".") for p in out.iterdir())
