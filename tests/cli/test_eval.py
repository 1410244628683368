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
        rows, cols = bench.crop_window(*gt.shape[1:])
        direct = score_video(pred[:, rows, cols], gt[:, rows, cols], max_depth=bench.max_depth)
        assert s["absrel"] == pytest.approx(direct.absrel) and s["delta1"] == pytest.approx(direct.delta1)
        assert 0.01 < s["absrel"] < 0.5
    assert f"{data['absrel']:.4f}" in capsys.readouterr().out


def test_a_perfect_cropped_size_scannet_prediction_scores_zero_and_one(tmp_path, capsys):
    """Video Depth Anything and DepthCrafter crop ScanNet's RGB [8:-8, 11:-11] before inference: their depth
    comes at the cropped size and lies inside the crop, where it is scored as it is (not stretched).
    """
    args, gts = _dataset(tmp_path, "scannet")
    pred_dir = tmp_path / "cropped"
    for k, seq in enumerate(load_split(benchmark("scannet"), tmp_path / "split")):
        cropped = gts[seq.id][:, 8:-8, 11:-11]  # 64x48 frames: 42x32 inside the crop
        write_prediction(pred_dir, seq, prediction_of(cropped, 1.5 + k, -0.2), "vda")
    assert cli.main([*args, "--pred-dir", str(pred_dir), "--name", "cropped"]) == 0
    data = json.loads((tmp_path / "out" / "scannet_cropped" / "table.json").read_text())
    for s in data["sequences"]:
        assert s["absrel"] < 1e-6 and s["delta1"] == 1.0
    assert data["absrel"] < 1e-6 and data["delta1"] == 1.0
    assert data["protocol"]["crop_top_bottom_left_right"] == [8, 8, 11, 11]
    # every scored pixel lies inside the crop: the full frame's valid pixels there, no more
    gt = gts[data["sequences"][0]["id"]]
    assert data["sequences"][0]["pixels"] == int((gt[:, 8:-8, 11:-11] > 1e-3).sum()) < int((gt > 1e-3).sum())


def test_a_dydtof_sample_with_far_plane_pixels_leaves_them_out(tmp_path):
    """DyDToF's renderer stores its far plane (50 m) where no surface is; it is no measurement."""
    args, gts = _dataset(tmp_path, "dydtof", sequences=1)
    bench = benchmark("dydtof")
    (seq,) = load_split(bench, tmp_path / "split")
    base = tmp_path / "root" / seq.folder
    far = 0
    for name in seq.depth:  # the far plane over the top rows; the prediction keeps the scene's real depth
        stored = np.load(base / name)
        stored[:6] = 50.0
        far += int((stored == 50.0).sum())
        np.save(base / name, stored)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "far"]) == 0
    data = json.loads((tmp_path / "out" / "dydtof_far" / "table.json").read_text())
    (s,) = data["sequences"]
    assert s["absrel"] < 1e-6 and s["delta1"] == 1.0
    assert s["pixels"] == int((gts[seq.id] > 1e-3).sum()) - int((gts[seq.id][:, :6] > 1e-3).sum())
    assert far > 0 and data["protocol"]["no_measurement_stored_values"] == [50.0]


def test_pointodyssey_saturated_depth_is_left_out_whatever_the_cap(tmp_path):
    """65535 is the end of the release's 16-bit range (1000 m or farther): no measurement, even under a larger cap."""
    from PIL import Image

    args, gts = _dataset(tmp_path, "pointodyssey", sequences=1)
    (seq,) = load_split(benchmark("pointodyssey"), tmp_path / "split")
    base = tmp_path / "root" / seq.folder
    for name in seq.depth:
        with Image.open(base / name) as im:
            stored = np.array(im)
        stored[-5:] = 65535
        Image.fromarray(stored).save(base / name)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "sat", "--max-depth", "2000"]) == 0
    (s,) = json.loads((tmp_path / "out" / "pointodyssey_sat" / "table.json").read_text())["sequences"]
    assert s["absrel"] < 1e-6 and s["delta1"] == 1.0
    assert s["pixels"] == int((gts[seq.id][:, :-5] > 1e-3).sum())


def test_clip_pred_clips_the_prediction_before_the_fit_and_is_recorded(tmp_path):
    args, gts = _dataset(tmp_path, "bonn", sequences=1, noise=0.05)
    (seq,) = load_split(benchmark("bonn"), tmp_path / "split")
    pred = np.load(tmp_path / "pred" / f"{seq.id}_pred.npy")
    pred[:, :10] = -0.5  # negative: the clip changes these
    np.save(tmp_path / "pred" / f"{seq.id}_pred.npy", pred)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "clip", "--clip-pred"]) == 0
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "raw"]) == 0
    clip = json.loads((tmp_path / "out" / "bonn_clip" / "table.json").read_text())
    raw = json.loads((tmp_path / "out" / "bonn_raw" / "table.json").read_text())
    assert clip["protocol"]["prediction_clip"] == 1e-3 and raw["protocol"]["prediction_clip"] is None
    direct = score_video(np.maximum(pred, 1e-3), gts[seq.id], max_depth=10.0)
    assert clip["absrel"] == pytest.approx(direct.absrel) and clip["absrel"] != pytest.approx(raw["absrel"])


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
    # the paper's preset, shortened for 5 frames (its dilation 25 without capping needs 51)
    args, _ = _dataset(tmp_path, "bonn", sequences=1, frames=5, size=(40, 32))
    run = ["-c", str(tiny_ckpt), "--device", "cpu", "--res", "32", "--align-iters", "5"]
    run += ["--dilations", "1", "2", "--refine-step", "2", "--refine-start-dilation", "1"]
    run += ["--stream", "--lag", "2"] if online else []
    assert cli.main([*args, *run]) == 0
    out = capsys.readouterr().out
    name = "rd-engine-paper-reference-" + ("online-lag2" if online else "offline")
    assert f"### bonn (split): {name}" in out
    data = json.loads((tmp_path / "out" / f"bonn_{name}" / "table.json").read_text())
    assert data["backend"] == "pytorch" and data["model"]
    assert data["settings"]["res"] == 32 and data["settings"]["mode"] == ("online" if online else "offline")
    assert data["settings"].get("lag") == (2 if online else None)
    # the paper's preset by default, a fixed seed; the table names the settings and what differs from the preset
    settings = data["settings"]
    assert settings["preset"] == "paper" and settings["seed"] == 0 and not settings["cap_dilation"]
    label = (
        "preset paper with res, dilations, refine_step changed: res 32, dilations 1 2, cap_dilation off, "
        "refine_step 2, dtype fp32, align reference, align_iters 5, seed 0, "
    ) + ("online lag 2" if online else "offline")
    assert data["settings_label"] == label
    assert f"- settings (every row): {label}" in out
    (s,) = data["sequences"]
    assert s["prediction"] == "rd-engine run" and np.isfinite(s["absrel"]) and 0 <= s["delta1"] <= 1
    saved = np.load(tmp_path / "out" / "predictions" / f"{s['id']}_pred.npy")
    assert saved.shape == (5, 32, 40) and saved.dtype == np.float32  # at the RGB frames' size
    # the saved prediction scores the same through --pred-dir
    rescore = [*args, "--pred-dir", str(tmp_path / "out" / "predictions"), "--name", "again"]
    assert cli.main(rescore) == 0
    again = json.loads((tmp_path / "out" / "bonn_again" / "table.json").read_text())
    assert again["sequences"][0]["absrel"] == pytest.approx(s["absrel"])
    # side by side, every row names its settings (a bare .npy carries none)
    capsys.readouterr()
    assert (
        cli.main(["eval", "--compare", str(tmp_path / "out" / f"bonn_{name}"), str(tmp_path / "out" / "bonn_again")])
        == 0
    )
    rows = capsys.readouterr().out.splitlines()[2:]
    assert len(rows) == 2 and rows[0].startswith(f"| {name} | ") and f"| {data['settings_label']} |" in rows[0]
    assert rows[1].startswith("| again | - | - | not recorded |")


def test_eval_defaults_to_the_paper_preset_and_a_fixed_seed_while_run_keeps_its_own():
    from rd_engine.cli.main import build_parser

    parser = build_parser()
    ev = parser.parse_args(["eval", "--benchmark", "bonn", "--root", "r"])
    assert ev.preset == "paper" and ev.seed == 0
    run = parser.parse_args(["run", "clip.mp4"])
    assert run.preset == "fast" and run.seed is None


def test_engine_runs_take_the_presets_precision_on_cuda_too():
    """The engine's own default (fp16 on CUDA) must not override the paper preset's fp32 (no GPU needed)."""
    import torch

    from rd_engine.cli.eval import engine_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert engine_dtype("paper", None, cuda) == "fp32" and engine_dtype("fast", None, cuda) == "fp16"
    assert engine_dtype("paper", "bf16", cuda) == "bf16" and engine_dtype("fast", None, cpu) == "fp32"


def test_engine_runs_default_to_the_papers_settings_with_a_fixed_seed(tiny_ckpt):
    """Table 1's main rows: dilations 1 10 25 without capping, fp32, 10 refinement steps (the `paper` preset)."""
    from rd_engine.api import Engine
    from rd_engine.eval.report import settings_label
    from rd_engine.eval.sources import EngineRun

    run = EngineRun(Engine(tiny_ckpt, device="cpu", progress=False))
    s = run.settings
    assert (s["preset"], s["dilations"], s["cap_dilation"], s["dtype"], s["refine_step"]) == (
        "paper",
        [1, 10, 25],
        False,
        "fp32",
        10,
    )
    assert s["seed"] == 0 and s["align"] == "reference" and run.method == "rd-engine-paper-reference-offline"
    assert settings_label(s) == (
        "preset paper: res 768, dilations 1 10 25, cap_dilation off, refine_step 10, dtype fp32, align reference, "
        "align_iters 2000, seed 0, offline"
    )
    # rd-engine's saved .npz metadata has no preset name: the preset it matches is found
    assert settings_label({k: v for k, v in s.items() if k not in ("preset", "mode")}).startswith("preset paper: ")


def test_engine_runs_on_scannet_see_the_cropped_frames(tmp_path, capsys, tiny_ckpt):
    """The engine gets the RGB inside the crop and its depth comes at that size (42x32 of 64x48 here)."""
    args, _ = _dataset(tmp_path, "scannet", sequences=1, frames=3)
    run = ["-c", str(tiny_ckpt), "--device", "cpu", "--preset", "fast", "--res", "32", "--align-iters", "5"]
    assert cli.main([*args, *run, "--name", "engine"]) == 0
    (s,) = json.loads((tmp_path / "out" / "scannet_engine" / "table.json").read_text())["sequences"]
    assert np.load(tmp_path / "out" / "predictions" / f"{s['id']}_pred.npy").shape == (3, 32, 42)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "out" / "predictions"), "--name", "again"]) == 0
    (again,) = json.loads((tmp_path / "out" / "scannet_again" / "table.json").read_text())["sequences"]
    assert again["absrel"] == pytest.approx(s["absrel"]) and again["pixels"] == s["pixels"]


def test_engine_runs_refuse_scannet_colour_at_another_size_before_the_model_loads(tmp_path, capsys):
    from PIL import Image

    args, _ = _dataset(tmp_path, "scannet", sequences=1, frames=2)
    (seq,) = load_split(benchmark("scannet"), tmp_path / "split")
    Image.fromarray(np.zeros((97, 130, 3), np.uint8)).save(tmp_path / "root" / seq.folder / seq.rgb[0], "JPEG")
    msg = _error(capsys, [*args, "-c", str(tmp_path / "no-model"), "--device", "cpu"])
    assert "colour is 130x97 but its depth is 64x48" in msg
    # saved predictions do not need the colour
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred")]) == 0


def test_compare_puts_methods_side_by_side(tmp_path, capsys):
    args, _ = _dataset(tmp_path, "bonn", noise=0.05)
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "noisy"]) == 0
    # the same predictions scored with another cap: another protocol
    assert cli.main([*args, "--pred-dir", str(tmp_path / "pred"), "--name", "capped", "--max-depth", "5"]) == 0
    noisy = json.loads((tmp_path / "out" / "bonn_noisy" / "table.json").read_text())
    capsys.readouterr()
    assert cli.main(["eval", "--compare", str(tmp_path / "out" / "bonn_noisy")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| method | model | backend | settings | bonn (split) AbsRel | bonn (split) delta1 |"
    assert out[2] == f"| noisy | - | - | not recorded | {noisy['absrel']:.4f} | {noisy['delta1']:.4f} |"
    both = [str(tmp_path / "out" / "bonn_noisy"), str(tmp_path / "out" / "bonn_capped" / "table.json")]
    assert "scored with another protocol" in _error(capsys, ["eval", "--compare", *both])
    assert "not a readable table.json" in _error(capsys, ["eval", "--compare", str(tmp_path / "none.json")])
    assert "--benchmark and --root are required" in _error(capsys, ["eval", "--pred-dir", str(tmp_path)])
