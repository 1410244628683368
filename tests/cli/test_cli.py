"""`rd-engine run`: outputs, presets, and every bad input of the foundation issue."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rd_engine import cli
from rd_engine.testing.media import write_audio_only, write_test_video, write_truncated_video

FAST = ["--res", "48", "--align-iters", "10", "--seed", "3", "-q"]


def run(args, capsys=None):
    code = cli.main(["run", *args])
    out = capsys.readouterr() if capsys else None
    return code, out


def _files(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("demo_clip.mp4"))


@pytest.mark.parametrize("preset", ["fast", "fast1024", "full", "paper"])
def test_each_preset_writes_every_output(tmp_path, tiny_ckpt, preset, capsys):
    clip = tmp_path / "v.mp4"
    # paper: no capping, dilation 25 needs 51 frames; 52 frames at a small size
    write_test_video(clip, n_frames=52 if preset == "paper" else 12, width=64, height=48, fps=8)
    out = tmp_path / "out"
    args = [
        str(clip),
        "-c",
        str(tiny_ckpt),
        "-o",
        str(out),
        "-p",
        preset,
        *FAST,
        "--png16",
        "--save-snippets",
        "--refine-step",
        "1" if preset in ("full", "paper") else "0",
    ]
    code, cap = run(args, capsys)
    assert code == 0, cap.err
    n = 52 if preset == "paper" else 12
    assert _files(out) == sorted(
        ["v_pred.npy", "v.npz", "v_png16", "v_snippets.npz", "v_Spectral_r.mp4", "v_Greys_r.mp4", "v_rgbd.mp4"]
    )
    depth = np.load(out / "v_pred.npy")
    assert depth.shape == (n, 36, 48) and depth.dtype == np.float32
    z = np.load(out / "v.npz")
    np.testing.assert_array_equal(z["depth"], depth)
    assert z["timestamps"].shape == (n,) and np.all(np.diff(z["timestamps"]) > 0)
    meta = json.loads(str(z["metadata"]))
    assert meta["settings"]["dilations"] and meta["fps"] == pytest.approx(8)
    pngs = sorted((out / "v_png16").glob("*.png"))
    assert len(pngs) == n
    side = json.loads((out / "v_png16" / "v_png16.json").read_text())
    assert side["vmin"] == pytest.approx(float(depth.min()))
    snip = np.load(out / "v_snippets.npz")
    assert snip["dilation1"].shape == (n - 2, 3, 36, 48)
    assert "v.mp4" in cap.out  # the one-line summary


def test_restore_res_and_fps(tmp_path, tiny_ckpt, capsys):
    import av

    clip = tmp_path / "r.mp4"
    write_test_video(clip, n_frames=8, width=96, height=64, fps=10)
    out = tmp_path / "o"
    code, cap = run(
        [
            str(clip),
            "-c",
            str(tiny_ckpt),
            "-o",
            str(out),
            *FAST,
            "--restore-res",
            "--fps",
            "5",
            "--cmap",
            "viridis",
            "--no-sbs",
        ],
        capsys,
    )
    assert code == 0, cap.err
    assert np.load(out / "r_pred.npy").shape == (8, 64, 96)
    with av.open(str(out / "r_viridis.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(5)
    assert not (out / "r_rgbd.mp4").exists()


def test_bad_inputs_fail_clearly_and_the_rest_still_runs(tmp_path, tiny_ckpt, capsys):
    good = tmp_path / "good.mp4"
    write_test_video(good, n_frames=6, width=64, height=48)
    text = tmp_path / "notavideo.mp4"
    text.write_text("hello, I am not a video")
    audio = tmp_path / "audio.m4a"
    write_audio_only(audio)
    trunc = tmp_path / "trunc.mp4"
    write_truncated_video(trunc)
    one = tmp_path / "one.mp4"
    write_test_video(one, n_frames=1, width=64, height=48)
    missing = tmp_path / "missing.mp4"
    out = tmp_path / "out"
    code, cap = run(
        [
            str(missing),
            str(text),
            str(audio),
            str(trunc),
            str(good),
            str(one),
            "-c",
            str(tiny_ckpt),
            "-o",
            str(out),
            *FAST,
        ],
        capsys,
    )
    assert code == 1
    errors = [l for l in cap.err.splitlines() if "error:" in l]
    assert len(errors) == 4, cap.err
    for name in ("missing.mp4", "notavideo.mp4", "audio.m4a", "trunc.mp4"):
        assert any(name in e for e in errors), (name, errors)
    assert "Traceback" not in cap.err
    assert (out / "good_pred.npy").exists() and (out / "one_pred.npy").exists()
    assert not any(p.name.startswith(("missing", "notavideo", "audio", "trunc")) for p in out.iterdir())
    assert not any(".partial" in p.name for p in out.iterdir())


def test_start_beyond_end_is_a_clear_error(tmp_path, tiny_ckpt, capsys):
    v = tmp_path / "v.mp4"
    write_test_video(v, n_frames=5, width=64, height=48)
    code, cap = run([str(v), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), *FAST, "--start-frame", "50"], capsys)
    assert code == 1 and "v.mp4" in cap.err and "Traceback" not in cap.err


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--dilations", "2", "25"], "include 1"),
        (["--snippet-len", "1"], "snippet-len"),
        (["--refine-step", "9999"], "refine-step"),
        (["--cmap", "NoSuchMap"], "NoSuchMap"),
    ],
)
def test_invalid_settings(tmp_path, tiny_ckpt, capsys, args, needle):
    v = tmp_path / "v.mp4"
    write_test_video(v, n_frames=6, width=64, height=48)
    code, cap = run([str(v), "-c", str(tiny_ckpt), "-o", str(tmp_path / "o"), *FAST, *args], capsys)
    assert code == 1 and needle in cap.err and "Traceback" not in cap.err
    assert len([l for l in cap.err.splitlines() if l.strip()]) == 1


@pytest.mark.parametrize("bad", [["--res", "-5"], ["--res", "abc"], ["--fps", "-1"], ["--seed", "x"]])
def test_invalid_numbers_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run", "x.mp4", *bad])
    assert e.value.code == 2


def test_checkpoint_errors(tmp_path, capsys):
    v = tmp_path / "v.mp4"
    write_test_video(v, n_frames=4, width=64, height=48)
    empty = tmp_path / "empty_ckpt"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{ not json")
    cases = [
        (tmp_path / "nope", "does not exist"),
        (empty, "model_index.json"),
        (broken, "not valid JSON"),
        ("prs-eth/rollingdepth-v1-0", "could not be fetched"),
    ]
    for ckpt, needle in cases:
        code, cap = run([str(v), "-c", str(ckpt), "-o", str(tmp_path / "o"), "-q"], capsys)
        assert code == 1 and needle in cap.err and "Traceback" not in cap.err, (ckpt, cap.err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_folder_nonroot(tmp_path, tiny_ckpt, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, cap = run(["x.mp4", "-c", str(tiny_ckpt), "-o", str(ro / "sub")], capsys)
    assert code == 1 and "not writable" in cap.err


def test_output_path_that_is_a_file(tmp_path, tiny_ckpt, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    code, cap = run(["x.mp4", "-c", str(tiny_ckpt), "-o", str(f)], capsys)
    assert code == 1 and "not writable" in cap.err and "Traceback" not in cap.err


def test_folder_and_txt_inputs(tmp_path, tiny_ckpt, capsys):
    d = tmp_path / "vids"
    d.mkdir()
    for name in ("a", "b"):
        write_test_video(d / f"{name}.mp4", n_frames=4, width=64, height=48)
    lst = tmp_path / "list.txt"
    lst.write_text("# two videos\nvids/a.mp4\n\nvids/b.mp4\n")
    out = tmp_path / "o"
    code, cap = run([str(lst), "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--cmap", "none"], capsys)
    assert code == 0, cap.err
    assert sorted(p.name for p in out.glob("*_pred.npy")) == ["a_pred.npy", "b_pred.npy"]


def test_console_script_demo(tmp_path):
    """The installed entry point: `rd-engine run --demo` works with nothing downloaded."""
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run(
        [sys.executable, "-m", "rd_engine.cli", "run", "--demo", "-o", str(tmp_path / "demo"), "--align-iters", "20"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    assert "RANDOM" in r.stderr
    assert (tmp_path / "demo" / "demo_clip_pred.npy").exists()


def test_stream_mode_writes_outputs_and_latency(tmp_path, tiny_ckpt, capsys):
    v = tmp_path / "s.mp4"
    write_test_video(v, n_frames=9, width=64, height=48)
    out = tmp_path / "o"
    code, cap = run(
        [
            str(v),
            "-c",
            str(tiny_ckpt),
            "-o",
            str(out),
            "--stream",
            "--lag",
            "1",
            "--res",
            "32",
            "--frame-count",
            "7",
            "-q",
            "--cmap",
            "Spectral_r",
        ],
        capsys,
    )
    assert code == 0, cap.err
    depth = np.load(out / "s_pred.npy")
    assert depth.shape == (7, 24, 32)
    z = np.load(out / "s.npz")
    assert z["latency"].shape == (7,) and np.all(z["latency"] > 0)
    assert "p95" in cap.out and (out / "s_Spectral_r.mp4").exists()
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_choices_offered_by_the_cli_are_the_owners_lists():
    """The CLI spells its choices out (so that `--help` starts without torch); they must not drift."""
    from rd_engine.backends.select import BACKEND_CHOICES
    from rd_engine.cli.main import build_parser
    from rd_engine.coalign.solve import SOLVERS
    from rd_engine.export.build import BACKENDS, PRECISIONS
    from rd_engine.settings import DTYPES, PRESETS

    def choices(command, flag):
        sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
        return list(next(a for a in sub._actions if flag in a.option_strings).choices)

    for command in ("run", "bench"):
        assert choices(command, "--preset") == list(PRESETS)
        assert choices(command, "--align") == list(SOLVERS)
        assert sorted(choices(command, "--dtype")) == sorted(DTYPES)
    assert choices("run", "--backend") == list(BACKEND_CHOICES)
    assert choices("build", "--backend") == list(BACKENDS)
    assert sorted(choices("build", "--precision")) == sorted(PRECISIONS)
