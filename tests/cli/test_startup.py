"""Fail fast, start fast: what the CLI answers before torch and the model load (the order, not the time).

The subprocess tests run `rd_engine.cli.main` in a fresh interpreter and report which heavy libraries
it imported; the in-process ones read the `--verbose` log, where every model load writes its stages
("load: imports ...", "load: unet weights ...").
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rd_engine import cli
from rd_engine.testing.media import write_test_video

HEAVY = ("torch", "diffusers", "transformers")

# Runs each argv (a JSON list of lists) through main() in one fresh interpreter; prints, per argv, its
# exit status and the heavy libraries imported so far.
_CHILD = """
import json, sys
from rd_engine.cli import main
HEAVY = json.loads(sys.argv[2])
for argv in json.loads(sys.argv[1]):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    print(json.dumps([code, sorted(m for m in HEAVY if m in sys.modules)]), flush=True)
"""


def _fresh(argvs: list[list[str]], cwd) -> tuple[list[tuple[int, list[str]]], str]:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(argvs), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return [tuple(json.loads(line)) for line in r.stdout.splitlines() if line.startswith("[")], r.stderr


def test_help_version_and_usage_errors_import_no_torch(tmp_path):
    argvs = [
        ["--help"],
        ["--version"],
        *([c, "--help"] for c in ("run", "build", "info", "bench", "eval")),
        ["run", "x.mp4", "--res", "abc"],  # a bad number
        ["run", "x.mp4", "--preset", "nosuch"],  # a bad choice
        ["bench", "--frames", "0"],
        ["nosuchcommand"],
    ]
    results, err = _fresh(argvs, tmp_path)
    assert len(results) == len(argvs), err
    for argv, (code, heavy) in zip(argvs, results):
        assert code == (0 if argv[-1] in ("--help", "--version") else 2), (argv, code)
        assert heavy == [], (argv, heavy)
    assert "Traceback" not in err


def test_unusable_inputs_answer_before_torch_loads(tmp_path, tiny_ckpt):
    """Every run input unusable, a malformed checkpoint, a missing bench input: one-line errors, exit 1, no torch."""
    short = tmp_path / "short.mp4"
    write_test_video(short, n_frames=4, width=64, height=48)
    text = tmp_path / "text.mp4"
    text.write_text("not a video")
    broken = tmp_path / "broken_ckpt"
    broken.mkdir()
    (broken / "model_index.json").write_text("{ not json")
    out = str(tmp_path / "out")
    argvs = [
        ["run", "missing.mp4", "-c", str(tiny_ckpt), "-o", out],
        ["run", "missing.mp4", str(text), str(short), "--start-frame", "10", "-c", str(tiny_ckpt), "-o", out],
        ["run", str(short), "-c", str(broken), "-o", out],
        ["bench", "--input", "missing.mp4", "-o", str(tmp_path / "b.json")],
        ["build", "-c", str(tmp_path / "nockpt"), "-o", str(tmp_path / "engine")],
    ]
    results, err = _fresh(argvs, tmp_path)
    assert [r[0] for r in results] == [1] * len(argvs), err
    assert all(heavy == [] for _, heavy in results), results
    lines = err.splitlines()
    assert lines == [
        "rd-engine: error: missing.mp4: file not found",
        "rd-engine: 1 of 1 videos failed (no model was loaded)",
        "rd-engine: error: missing.mp4: file not found",
        f"rd-engine: error: {text}: not a readable video file (Invalid data found when processing input)",
        f"rd-engine: error: {short}: start frame 10 is beyond the end of the video (4 frames)",
        "rd-engine: 3 of 3 videos failed (no model was loaded)",
        lines[6],
        "rd-engine: error: missing.mp4: file not found",
        f"rd-engine: error: checkpoint folder {tmp_path / 'nockpt'} does not exist",
    ], err
    assert lines[6].startswith(f"rd-engine: error: checkpoint {broken}: model_index.json is not valid JSON")
    assert not (tmp_path / "engine").exists() and not (tmp_path / "b.json").exists()


def test_missing_file_never_reaches_the_model_loader(tmp_path, tiny_ckpt, capsys):
    code = cli.main(["run", str(tmp_path / "missing.mp4"), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), "-v"])
    err = capsys.readouterr().err
    assert code == 1
    assert "missing.mp4: file not found" in err and "no model was loaded" in err
    assert "load:" not in err and "backend:" not in err, err  # what a model load logs
    assert "Traceback" not in err


def test_unusable_inputs_are_reported_before_the_load_and_the_rest_runs(tmp_path, tiny_ckpt, capsys):
    good = tmp_path / "good.mp4"
    write_test_video(good, n_frames=6, width=64, height=48)
    out = tmp_path / "o"
    args = [str(tmp_path / "missing.mp4"), str(good), "-c", str(tiny_ckpt), "-o", str(out), "-v"]
    code = cli.main(["run", *args, "--res", "64", "-d", "1", "--cmap", "none", "--no-npz"])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    first_error = next(i for i, line in enumerate(err) if "missing.mp4: file not found" in line)
    first_load = next(i for i, line in enumerate(err) if line.startswith("rd-engine: load: "))  # the loader ran
    assert first_error < first_load, err
    assert any("load: unet weights" in line for line in err) and err[-1] == "rd-engine: 1 of 2 videos failed"
    assert (out / "good_pred.npy").exists() and not any(p.name.startswith("missing") for p in out.iterdir())


@pytest.mark.parametrize("command", ["run", "eval"])
def test_unwritable_output_folder_is_refused_before_work(tmp_path, tiny_ckpt, command, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    v = tmp_path / "v.mp4"
    write_test_video(v, n_frames=4, width=64, height=48)
    if command == "run":
        argv = ["run", str(v), "-c", str(tiny_ckpt), "-o", str(f / "sub")]
    else:
        argv = ["eval", "--benchmark", "bonn", "--root", str(tmp_path), "-c", str(tiny_ckpt), "-o", str(f / "sub")]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "not writable" in err and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
