"""`rd-engine run` on edited video: --shots auto|off|FILE, the shot table, --split-shots."""

import json

import numpy as np
import pytest

from rd_engine import cli
from rd_engine.testing.media import multishot_cuts, multishot_frames, write_frames_video

FAST = ["--res", "0", "--seed", "3", "-q", "--cmap", "Spectral_r"]
LENGTHS = [10, 12, 9]


def run(args, capsys):
    code = cli.main(["run", *args])
    return code, capsys.readouterr()


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    path = tmp_path_factory.mktemp("edited") / "edited.mp4"
    write_frames_video(path, multishot_frames(LENGTHS, 64, 48), fps=12)
    return path


def _alone(tmp_path, edited, tiny_ckpt, capsys, first, n):
    out = tmp_path / f"alone{first}"
    args = [str(edited), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--shots", "off"]
    code, cap = run([*args, "--start-frame", str(first), "--frame-count", str(n)], capsys)
    assert code == 0, cap.err
    return np.load(out / "edited_pred.npy")


def test_auto_runs_each_shot_alone_and_writes_the_shot_table(tmp_path, edited, tiny_ckpt, capsys):
    out = tmp_path / "out"
    code, cap = run([str(edited), "-c", str(tiny_ckpt), "-o", str(out), *FAST], capsys)
    assert code == 0, cap.err
    assert "in 3 shots" in cap.out
    depth = np.load(out / "edited_pred.npy")
    meta = json.loads(str(np.load(out / "edited.npz")["metadata"]))
    cuts = multishot_cuts(LENGTHS)
    bounds = list(zip([0, *cuts], [*cuts, sum(LENGTHS)]))
    assert [(s["first"], s["last"]) for s in meta["shots"]] == [(a, b - 1) for a, b in bounds]
    rows = (out / "edited_shots.csv").read_text().splitlines()
    assert rows[0].startswith("shot,first_frame,last_frame,frames") and len(rows) == 4
    assert rows[2].split(",")[1:4] == [str(cuts[0]), str(cuts[1] - 1), str(LENGTHS[1])]
    for a, b in bounds:
        np.testing.assert_allclose(depth[a:b], _alone(tmp_path, edited, tiny_ckpt, capsys, a, b - a), rtol=0, atol=1e-6)
        assert depth[a:b].min() == -1 and depth[a:b].max() == 1  # each shot normalized on its own


def test_off_is_one_shot_as_before(tmp_path, edited, tiny_ckpt, capsys):
    out = tmp_path / "off"
    code, cap = run([str(edited), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--shots", "off"], capsys)
    assert code == 0, cap.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["edited_pred.npy", "edited.npz", "edited_Spectral_r.mp4", "edited_rgbd.mp4"]
    )
    meta = json.loads(str(np.load(out / "edited.npz")["metadata"]))
    assert "shots" not in meta
    depth = np.load(out / "edited_pred.npy")
    assert depth.min() == -1 and depth.max() == 1 and depth.shape[0] == sum(LENGTHS)


def test_split_shots_writes_each_shot_as_its_own_outputs(tmp_path, edited, tiny_ckpt, capsys):
    out = tmp_path / "split"
    cuts = tmp_path / "cuts.txt"
    cuts.write_text("10\n22\n")
    args = [str(edited), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--shots", str(cuts), "--split-shots"]
    code, cap = run(args, capsys)
    assert code == 0, cap.err
    names = sorted(p.name for p in out.iterdir())
    assert "edited_shots.csv" in names and "edited_pred.npy" not in names
    for i, (a, b) in enumerate([(0, 10), (10, 22), (22, 31)]):
        depth = np.load(out / f"edited_shot{i:03d}_pred.npy")
        meta = json.loads(str(np.load(out / f"edited_shot{i:03d}.npz")["metadata"]))
        assert meta["settings"]["start_frame"] == a and meta["frames"] == b - a
        assert (out / f"edited_shot{i:03d}_rgbd.mp4").exists()
        np.testing.assert_allclose(depth, _alone(tmp_path, edited, tiny_ckpt, capsys, a, b - a), rtol=0, atol=1e-6)


def test_a_bad_cut_list_is_a_one_line_error_before_any_work(tmp_path, edited, tiny_ckpt, capsys):
    bad = tmp_path / "cuts.txt"
    bad.write_text("10\n2x\n")
    out = tmp_path / "bad"
    code, cap = run([str(edited), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--shots", str(bad)], capsys)
    assert code == 1
    assert cap.err.strip().count("\n") == 0 and "line 2" in cap.err and "Traceback" not in cap.err
    assert [p.name for p in out.iterdir()] == []


def test_an_image_sequence_is_cut_into_shots_too(tmp_path, tiny_ckpt, capsys):
    """Detection is on for image sequences as for video files: a PNG sequence of three shots gets the
    shot table, and each shot's depth is that of a run on the same frames alone (`--shots off` with
    that window of the sequence).
    """
    from PIL import Image

    seq = tmp_path / "plates"
    seq.mkdir()
    for i, rgb in enumerate(multishot_frames(LENGTHS, 64, 48)):
        Image.fromarray(rgb).save(seq / f"plate.{1001 + i:04d}.png")
    out = tmp_path / "out"
    code, cap = run([str(seq), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--cmap", "none", "--no-sbs"], capsys)
    assert code == 0, cap.err
    assert "in 3 shots" in cap.out
    (npz,) = out.glob("*.npz")
    meta = json.loads(str(np.load(npz)["metadata"]))
    cuts = multishot_cuts(LENGTHS)
    bounds = list(zip([0, *cuts], [*cuts, sum(LENGTHS)]))
    assert [(s["first"], s["last"]) for s in meta["shots"]] == [(a, b - 1) for a, b in bounds]
    depth = np.load(npz.with_name(npz.stem + "_pred.npy"))
    a, b = bounds[1]
    alone = tmp_path / "alone"
    args = [str(seq), "-c", str(tiny_ckpt), "-o", str(alone), *FAST, "--cmap", "none", "--no-sbs", "--shots", "off"]
    code, cap = run([*args, "--start-frame", str(a), "--frame-count", str(b - a)], capsys)
    assert code == 0, cap.err
    (one,) = alone.glob("*_pred.npy")
    np.testing.assert_allclose(depth[a:b], np.load(one), rtol=0, atol=1e-6)
