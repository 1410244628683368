"""A multi-shot video on the cluster: split at its cuts across the workers (or run shot by shot on one),
the single-process files exactly.
"""

from __future__ import annotations

import json

import numpy as np

from rd_engine import cli
from rd_engine.testing.media import multishot_cuts, multishot_frames, write_frames_video

from .conftest import CLI_SETTINGS

LENGTHS = [9, 11, 8]
NAMES = ("edited_pred.npy", "edited.npz", "edited_shots.csv", "edited_Spectral_r.mp4", "edited_rgbd.mp4")


def test_cluster_splits_an_edited_video_at_its_cuts_as_one_process_runs_it(tmp_path, ray_cluster, tiny_ckpt, capsys):
    clip = tmp_path / "in" / "edited.mp4"
    clip.parent.mkdir()
    write_frames_video(clip, multishot_frames(LENGTHS, 64, 48), fps=10)
    single = tmp_path / "single"
    assert cli.main(["run", str(clip), "-c", str(tiny_ckpt), "-o", str(single), *CLI_SETTINGS]) == 0
    cuts = multishot_cuts(LENGTHS)
    for split, spread in (("always", True), ("never", False)):
        out = tmp_path / split
        args = ["run", str(clip), "-c", str(tiny_ckpt), "-o", str(out), *CLI_SETTINGS, "--cluster", "ray"]
        assert cli.main([*args, "--split", split]) == 0, capsys.readouterr().err
        meta = json.loads(str(np.load(out / "edited.npz")["metadata"]))
        assert [s["first"] for s in meta["shots"]] == [0, *cuts]
        for name in NAMES:
            assert (single / name).read_bytes() == (out / name).read_bytes(), (split, name)
        (summary,) = out.glob("rd-engine-run-*.json")
        (video,) = json.loads(summary.read_text())["videos"]
        if spread:  # one unit of work per shot, on both workers (each takes one of the two longest first)
            assert video["ranges"] == [[a, b] for a, b in zip([0, *cuts], [*cuts, sum(LENGTHS)])]
            assert len(video["worker"].split(",")) == 2
        else:
            assert video["ranges"] == [] and "," not in video["worker"]
        assert not [p for p in out.rglob("*") if ".rd-engine-parts" in str(p) or ".partial" in p.name]


def test_a_long_shot_is_split_into_frame_ranges_as_one_process_runs_it(tmp_path, ray_cluster, tiny_ckpt, capsys):
    """Shots of 9, 40 and 8 frames with `--split-min-frames 30`: the 40-frame shot runs as two frame ranges
    (bounds at multiples of 32 frames within the shot) on both workers, its co-alignment on the driver;
    the others whole; the files those of a single-process run byte for byte.
    """
    lengths = [9, 40, 8]
    clip = tmp_path / "in" / "edited.mp4"
    clip.parent.mkdir()
    write_frames_video(clip, multishot_frames(lengths, 64, 48), fps=10)
    single = tmp_path / "single"
    assert cli.main(["run", str(clip), "-c", str(tiny_ckpt), "-o", str(single), *CLI_SETTINGS]) == 0
    out = tmp_path / "cluster"
    args = ["run", str(clip), "-c", str(tiny_ckpt), "-o", str(out), *CLI_SETTINGS, "--cluster", "ray"]
    assert cli.main([*args, "--split-min-frames", "30"]) == 0, capsys.readouterr().err
    meta = json.loads(str(np.load(out / "edited.npz")["metadata"]))
    assert [(s["first"], s["last"]) for s in meta["shots"]] == [(0, 8), (9, 48), (49, 56)]
    for name in NAMES:
        assert (single / name).read_bytes() == (out / name).read_bytes(), name
    (summary,) = out.glob("rd-engine-run-*.json")
    (video,) = json.loads(summary.read_text())["videos"]
    assert video["ranges"] == [[0, 9], [9, 41], [41, 49], [49, 57]]
    assert len(video["worker"].split(",")) == 2
    assert not [p for p in out.rglob("*") if ".rd-engine-parts" in str(p) or ".partial" in p.name]
