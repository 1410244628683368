"""`rd-engine run a b c --write-threads N`: a video's outputs written on a thread while the model runs the
next video. The same files as one after the other, every video's line in input order, the model busy on
video 1 while video 0 is written, and a failed write reported in one line while the others are written.
"""

import importlib
import threading

import numpy as np

from rd_engine import cli
from rd_engine.backends.torch_backend import TorchBackend
from rd_engine.testing.media import write_test_video

FAST = ["--res", "48", "--align-iters", "10", "--seed", "3", "-q", "--shots", "off"]
FRAMES = (10, 12, 11)


def _clips(tmp_path):
    clips = []
    for i, n in enumerate(FRAMES):
        p = tmp_path / f"v{i}.mp4"
        write_test_video(p, n_frames=n, width=64, height=48, fps=8, seed=i)
        clips.append(str(p))
    return clips


def _run(args, capsys):
    code = cli.main(["run", *args])
    return code, capsys.readouterr()


def test_written_beside_the_next_video_gives_the_same_files(tmp_path, tiny_ckpt, capsys):
    clips = _clips(tmp_path)
    files = {}
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        code, cap = _run([*clips, "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--write-threads", str(n)], capsys)
        assert code == 0, cap.err
        lines = [line.split(":")[0] for line in cap.out.splitlines() if " frames " in line]
        assert lines == ["v0.mp4", "v1.mp4", "v2.mp4"]  # one line per video, in input order
        files[n] = {p.name: p for p in sorted(out.iterdir())}
    assert list(files[1]) == list(files[2]) and len(files[1]) == 3 * 5
    for name, p in files[1].items():
        if name.endswith(".npz"):
            a, b = np.load(p), np.load(files[2][name])
            assert all(np.array_equal(a[k], b[k]) for k in a.files)
        else:
            assert p.read_bytes() == files[2][name].read_bytes(), name


def test_the_model_runs_the_next_video_while_one_is_written(tmp_path, tiny_ckpt, capsys, monkeypatch):
    """Video 0's writing waits until the model has encoded frames of video 1: written one after the other
    it would wait in vain.
    """
    cli_main = importlib.import_module("rd_engine.cli.main")  # the module (rd_engine.cli.main is its function)
    clips = _clips(tmp_path)[:2]
    encoded, next_video_encoding, seen = [0], threading.Event(), []
    encode, finish = TorchBackend.encode, cli_main._finish_video

    def watched_encode(self, frames):
        encoded[0] += frames.shape[0]
        if encoded[0] > FRAMES[0]:
            next_video_encoding.set()
        return encode(self, frames)

    def held_finish(pred, path, *args):
        if str(path).endswith("v0.mp4"):
            seen.append(next_video_encoding.wait(timeout=120))  # a timeout only stops a hang: no timing
        seen.append(threading.current_thread().name)
        return finish(pred, path, *args)

    monkeypatch.setattr(TorchBackend, "encode", watched_encode)
    monkeypatch.setattr(cli_main, "_finish_video", held_finish)
    out = tmp_path / "out"
    code, cap = _run([*clips, "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--write-threads", "2"], capsys)
    assert code == 0, cap.err
    assert seen[0] is True and all(name.startswith("rd-write-video") for name in seen[1:])
    assert len(list(out.glob("v1*"))) == 5


def test_a_failed_write_is_one_line_and_the_others_are_written(tmp_path, tiny_ckpt, capsys):
    """Video 1's .npy cannot be written (a folder holds its name): one error line for it, exit 1, and
    videos 0 and 2 written in full; the same as one after the other.
    """
    clips = _clips(tmp_path)
    for n in (1, 2):
        out = tmp_path / f"out{n}"
        (out / "v1_pred.npy").mkdir(parents=True)
        code, cap = _run([*clips, "-c", str(tiny_ckpt), "-o", str(out), *FAST, "--write-threads", str(n)], capsys)
        assert code == 1
        errors = [line for line in cap.err.splitlines() if line.startswith("rd-engine: error:")]
        assert len(errors) == 1 and "v1" in errors[0], cap.err
        assert "1 of 3 videos failed" in cap.err and "Traceback" not in cap.err
        for v in ("v0", "v2"):
            assert len(list(out.glob(f"{v}*"))) == 5, sorted(p.name for p in out.iterdir())
