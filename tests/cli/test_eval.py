"""`rd-engine eval` end to end through the CLI: saved predictions of every format, engine runs, bad inputs."""

import json

import numpy as np
import pytest

from rd_engine import cli
from rd_engine.eval.datasets import benchmark, load_split
from rd_engine.eval.metrics import score_video
from rd_engine.eval.synthetic import prediction_of, shortened, write_prediction, write_sequences, write_split


def _dataset(tmp_path, name, sequences=2, frames=6, size=(64, 48), fmt="rd-npy", noise=0.0):
    """A shortened split of ``name`` in its layout and encoding, with predictions; returns (args, gts)."""
    bench = benchmark(name)
    seqs = shortened(load_split(bench), sequences, frames)
    write_split(tmp_path / "split", seqs)
    gts = write_sequences(tmp_path / "root", bench, seqs, size)
    for k, seq in enumerate(seqs):
        write_prediction(tmp_path / "pred", seq, prediction_of(gts[seq.id], 1.5 + k, -0.2, noise, seed=k), fmt)
    args = ["eval", "--benchmark", name, "--root", str(tmp_path / "root"), "--split", str(tmp_path / "split")]
    return args + ["-o", str(tmp_path / "out"), "-q"], gts


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("scannet", "rd-npy"),
        ("bonn", "rd-npz"),
        ("pointodyssey", "vda"),
        ("dydtof", "depthcrafter"),
        ("bonn", "per-frame"),
    ],
)
def test_exact_affine_predictions_score_zero_and_one(tmp_path, capsys, leftovers, name, fmt):
    args, _ = _dataset(tmp_path, name, fmt=fmt)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "exact"]) == 0
    out = capsys.readouterr().out
    assert f"### {name} (split): exact" in out and "| **mean of 2** |" in out
    data = json.loads((tmp_path / "out" / f"{name}_exact" / "table.json").read_text())
    assert len(data["sequences"]) == 2
    for s in data["sequences"]:
        assert s["absrel"] < 1e-6 and s["delta1"] == 1.0 and s["frames"] == 6
    assert data["absrel"] < 1e-6 and data["delta1"] == 1.0
    assert sorted(p.name for p in (tmp_path / "out" / f"{name}_exact" / "plots").iterdir()) == [
        f"{s['id']}.png" for s in data["sequences"]
    ]
    if fmt == "rd-npz":
        assert data["model"] == "synthetic" and data["backend"] == "none"
    assert leftovers(tmp_path / "out") == []


def test_noisy_predictions_score_as_the_metrics_do_directly(tmp_path, capsys):
    args, gts = _dataset(tmp_path, "scannet", noise=0.1)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred")]) == 0
    data = json.loads((tmp_path / "out" / "scannet_pred" / "table.json").read_text())
    bench = benchmark("scannet")
    for s in data["sequences"]:
        gt = gts[s["id"]]
        pred = np.load(tmp_path / "pred" / f"{s['id']}_pred.npy")
        direct = score_video(pred, gt, bench.region(*gt.shape[1:]), max_depth=bench.max_depth)
        assert s["absrel"] == pytest.approx(direct.absrel) and s["delta1"] == pytest.approx(direct.delta1)
        assert 0.01 < s["absrel"] < 0.5
    assert f"{data['absrel']:.4f}" in capsys.readouterr().out


def _error(capsys, args):
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rd-engine: error: "), err
    return lines[0]


def test_bad_inputs_get_one_line_errors_and_write_nothing(tmp_path, capsys):
    args, _ = _dataset(tmp_path, "bonn")
    root, pred, split = tmp_path / "root", tmp_path / "pred", str(tmp_path / "split")
    base = ["eval", "--benchmark", "bonn", "--split", split, "-o", str(tmp_path / "out"), "-q"]

    assert "nope is not a folder" in _error(capsys, [*base, "--root", str(tmp_path / "nope"), "--pred-dir", str(pred)])
    assert "holds none of the 2 sequences" in _error(capsys, [*base, "--root", str(pred), "--pred-dir", str(pred)])
    msg = _error(capsys, ["eval", "--benchmark", "bonn", "--root", str(root), "--pred-dir", str(pred), "-q"])
    assert "5 of 5 bonn sequences are missing or incomplete" in msg  # the paper's split: 2 partial, 3 absent
    assert "neither a split of bonn" in _error(capsys, [*args[:-3], "--split", "7_seq", "--pred-dir", str(pred)])

    seq = load_split(benchmark("bonn"), split)[1]
    victim = root / seq.folder / seq.depth[3]
    victim.rename(victim.with_suffix(".bak"))
    msg = _error(capsys, [*args, "--pred-dir", str(pred)])
    assert "1 of 2 bonn sequences are missing or incomplete" in msg and str(victim) in msg
    victim.with_suffix(".bak").rename(victim)

    (pred / f"{seq.id}_pred.npy").unlink()
    assert f"no prediction for 1 of 2 sequences (first: {seq.id}" in _error(capsys, [*args, "--pred-dir", str(pred)])
    np.save(pred / f"{seq.id}_pred.npy", np.zeros((5, 48, 64), np.float32))
    assert "5 frames, but sequence" in _error(capsys, [*args, "--pred-dir", str(pred)])
    np.save(pred / f"{seq.id}_pred.npy", np.zeros((6, 48, 48), np.float32))
    assert "frames are 48x48, the ground truth is 64x48" in _error(capsys, [*args, "--pred-dir", str(pred)])
    assert "--max-depth must be > 0" in _error(capsys, [*args, "--pred-dir", str(pred), "--max-depth", "0"])
    # an engine run checks the dataset before it loads a model (this checkpoint does not exist)
    no_model = ["-c", str(tmp_path / "no-model"), "--device", "cpu"]
    assert "holds none" in _error(capsys, [*base, "--root", str(pred), *no_model])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("online", [False, True])
def test_engine_runs_on_each_sequence_and_records_its_settings(tmp_path, capsys, tiny_ckpt, online):
    args, _ = _dataset(tmp_path, "bonn", sequences=1, frames=5, size=(40, 32))
    run = ["-c", str(tiny_ckpt), "--device", "cpu", "--res", "32", "--align-iters", "5", "--seed", "1"]
    run += ["--stream", "--lag", "2"] if online else []
    assert cli.main([*args, *run]) == 0
    out = capsys.readouterr().out
    name = "rd-engine-fast-fast-" + ("online-lag2" if online else "offline")
    assert f"### bonn (split): {name}" in out
    data = json.loads((tmp_path / "out" / f"bonn_{name}" / "table.json").read_text())
    assert data["backend"] == "pytorch" and data["model"]
    assert data["settings"]["res"] == 32 and data["settings"]["mode"] == ("online" if online else "offline")
    assert data["settings"].get("lag") == (2 if online else None)
    (s,) = data["sequences"]
    assert s["prediction"] == "rd-engine run" and np.isfinite(s["absrel"]) and 0 <= s["delta1"] <= 1
    saved = np.load(tmp_path / "out" / "predictions" / f"{s['id']}_pred.npy")
    assert saved.shape[0] == 5 and saved.dtype == np.float32
    # the saved prediction scores the same through --pred-dir
    rescore = [*args, "--pred-dir", str(tmp_path / "out" / "predictions"), "--name", "again"]
    assert cli.main(rescore) == 0
    again = json.loads((tmp_path / "out" / "bonn_again" / "table.json").read_text())
    assert again["sequences"][0]["absrel"] == pytest.approx(s["absrel"])


def test_compare_puts_methods_side_by_side(tmp_path, capsys):
    args, _ = _dataset(tmp_path, "bonn", noise=0.05)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "noisy"]) == 0
    # the same predictions scored with another cap: another protocol
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "capped", "--max-depth", "5"]) == 0
    noisy = json.loads((tmp_path / "out" / "bonn_noisy" / "table.json").read_text())
    capsys.readouterr()
    assert cli.main(["eval", "--compare", str(tmp_path / "out" / "bonn_noisy")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| method | model | backend | bonn (split) AbsRel | bonn (split) delta1 |"
    assert out[2] == f"| noisy | - | - | {noisy['absrel']:.4f} | {noisy['delta1']:.4f} |"
    both = [str(tmp_path / "out" / "bonn_noisy"), str(tmp_path / "out" / "bonn_capped" / "table.json")]
    assert "scored with another protocol" in _error(capsys, ["eval", "--compare", *both])
    assert "not a readable table.json" in _error(capsys, ["eval", "--compare", str(tmp_path / "none.json")])
    assert "--benchmark and --root are required" in _error(capsys, ["eval", "--pred-dir", str(tmp_path)])
