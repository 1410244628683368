"""A multi-shot video on the cluster: run shot by shot on a worker, the single-process files exactly."""

from __future__ import annotations

import json

import numpy as np

from rd_engine import cli
from rd_engine.testing.media import multishot_cuts, multishot_frames, write_frames_video

from .conftest import CLI_SETTINGS

LENGTHS = [9, 11, 8]


def test_cluster_runs_an_edited_video_shot_by_shot_as_one_process_does(tmp_path, ray_cluster, tiny_ckpt, capsys):
    clip = tmp_path / "in" / "edited.mp4"
    clip.parent.mkdir()
    write_frames_video(clip, multishot_frames(LENGTHS, 64, 48), fps=10)
    single, cluster = tmp_path / "single", tmp_path / "cluster"
    assert cli.main(["run", str(clip), "-c", str(tiny_ckpt), "-o", str(single), *CLI_SETTINGS]) == 0
    args = ["run", str(clip), "-c", str(tiny_ckpt), "-o", str(cluster), *CLI_SETTINGS, "--cluster", "ray"]
    assert cli.main([*args, "--split", "always"]) == 0, capsys.readouterr().err
    meta = json.loads(str(np.load(cluster / "edited.npz")["metadata"]))
    cuts = multishot_cuts(LENGTHS)
    assert [s["first"] for s in meta["shots"]] == [0, *cuts]  # detected on the worker, not split across cuts
    for name in ("edited_pred.npy", "edited_shots.csv", "edited_Spectral_r.mp4"):
        assert (single / name).read_bytes() == (cluster / name).read_bytes(), name
