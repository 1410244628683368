"""Cluster runs on a real local Ray cluster: the single-process files, bad inputs, resume, killed workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rd_engine import cli
from rd_engine.batch import run_cluster
from rd_engine.outputs.offline import OutputOptions

from .conftest import CLI_SETTINGS, SETTINGS

OPTIONS = OutputOptions(cmaps=["Spectral_r"])


def _same_files(a: Path, b: Path) -> list[str]:
    """The outputs of folder `a` (all of them) and that they are byte for byte those in `b`."""
    names = sorted(p.name for p in a.iterdir() if not p.name.startswith("rd-engine-run-"))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names


def _good_outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("rd-engine-run-"))


def test_cli_cluster_run_writes_the_single_process_files(
    tmp_path, ray_cluster, videos, single_outputs, tiny_ckpt, capsys
):
    out = tmp_path / "out"
    code = cli.main(["run", str(videos), "-c", str(tiny_ckpt), "-o", str(out), *CLI_SETTINGS, "--cluster", "ray"])
    cap = capsys.readouterr()
    assert code == 1  # broken.mp4
    errors = [line for line in cap.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "Traceback" not in cap.err
    names = _same_files(single_outputs, out)
    assert _good_outputs(out) == names and len(names) == 12  # 3 videos x (npy, npz, colormap, side by side)
    assert not any(".partial" in p.name for p in out.iterdir())
    (summary,) = out.glob("rd-engine-run-*.json")
    doc = json.loads(summary.read_text())
    by_stem = {v["stem"]: v for v in doc["videos"]}
    assert by_stem["long"]["status"] == "done" and by_stem["long"]["frames"] == 20 and by_stem["long"]["seconds"] > 0
    assert by_stem["long"]["worker"] in doc["workers"] and len(doc["workers"]) == 2
    assert by_stem["broken"]["status"] == "error" and "broken.mp4" in by_stem["broken"]["error"]


def test_longest_first_and_resume(tmp_path, ray_cluster, videos, single_outputs, tiny_ckpt):
    out = tmp_path / "out"
    started = []
    first = run_cluster(
        [videos],
        out,
        checkpoint=str(tiny_ckpt),
        overrides=SETTINGS,
        options=OPTIONS,
        progress=False,
        on_event=lambda kind, job, worker: started.append(job.stem),
    )
    assert started[:2] == ["long", "medium"] and started[2] == "short"  # longest first on 2 workers
    assert [j.status for j in first.jobs] == ["error", "done", "done", "done"]  # broken, long, medium, short
    _same_files(single_outputs, out)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # the same command again: complete videos with the same settings are skipped, the broken one retried
    again = run_cluster([videos], out, checkpoint=str(tiny_ckpt), overrides=SETTINGS, options=OPTIONS, progress=False)
    assert {j.stem: j.status for j in again.jobs} == {
        "broken": "error",
        "long": "skipped",
        "medium": "skipped",
        "short": "skipped",
    }
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in out.iterdir() if p.name in stamps)

    # an output gone, or other settings: those videos are redone
    (out / "medium_rgbd.mp4").unlink()
    redo = run_cluster(
        [videos / "medium.mp4", videos / "short.mp4"],
        out,
        checkpoint=str(tiny_ckpt),
        overrides=SETTINGS,
        options=OPTIONS,
        progress=False,
    )
    assert {j.stem: j.status for j in redo.jobs} == {"medium": "done", "short": "skipped"}
    _same_files(single_outputs, out)
    other = run_cluster(
        [videos / "short.mp4"],
        out,
        checkpoint=str(tiny_ckpt),
        overrides={**SETTINGS, "seed": 6},
        options=OPTIONS,
        progress=False,
    )
    assert other.jobs[0].status == "done"
    assert (out / "short_pred.npy").read_bytes() != (single_outputs / "short_pred.npy").read_bytes()


def test_a_killed_worker_has_its_video_run_again(tmp_path, ray_cluster, videos, single_outputs, tiny_ckpt):
    out = tmp_path / "out"
    killed = []

    def kill_first(kind, job, worker):
        if not killed:
            killed.append((job.stem, worker["pid"]))
            os.kill(worker["pid"], signal.SIGKILL)  # the worker process dies mid-run

    good = [videos / f"{n}.mp4" for n in ("short", "medium", "long")]
    res = run_cluster(
        good, out, checkpoint=str(tiny_ckpt), overrides=SETTINGS, options=OPTIONS, progress=False, on_event=kill_first
    )
    stem, pid = killed[0]
    job = next(j for j in res.jobs if j.stem == stem)
    assert job.status == "done" and job.attempts == 2 and job.worker != f"{os.uname().nodename}:{pid}"
    assert all(j.status == "done" for j in res.jobs)
    assert _same_files(single_outputs, out) == _good_outputs(out)
    assert not any(".partial" in p.name for p in out.iterdir())


def test_without_ray_the_flag_says_how_to_install_it(tmp_path, videos, tiny_ckpt):
    code = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "from rd_engine import cli\n"
        f"sys.exit(cli.main(['run', {str(videos / 'short.mp4')!r}, '-c', {str(tiny_ckpt)!r}, "
        f"'-o', {str(tmp_path / 'o')!r}, '--cluster', 'ray']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install "rd-engine[ray]"' in lines[0], r.stderr


@pytest.mark.parametrize("bad,needle", [({"split": "sometimes"}, "split"), ({"overrides": {"res": -1}}, "res")])
def test_bad_arguments_fail_before_any_cluster_starts(tmp_path, videos, bad, needle):
    from rd_engine.errors import UserError

    with pytest.raises(UserError, match=needle):
        run_cluster([videos / "short.mp4"], tmp_path / "o", **bad)


def test_sigterm_stops_a_cluster_run_and_leaves_no_partial_output(tmp_path, videos, tiny_ckpt):
    """A preempted driver (its own local cluster, in a subprocess) stops its workers and cleans up."""
    import time

    from rd_engine.testing.media import write_test_video

    long = tmp_path / "longer.mp4"
    write_test_video(long, n_frames=400, width=64, height=48)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rd_engine.cli", "run", str(long), str(videos / "short.mp4"), "-c", str(tiny_ckpt)]
    cmd += ["-o", str(out), *CLI_SETTINGS, "--cluster", "ray"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not (out / "short.npz").exists():
            time.sleep(0.5)
        assert (out / "short.npz").exists(), "the short video never finished"
        assert proc.poll() is None, "the run ended before the signal"
        proc.send_signal(signal.SIGTERM)  # the long video is still running on the other worker
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "interrupted; no partial outputs were left behind" in err and "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["short.npz", "short_pred.npy", "short_Spectral_r.mp4", "short_rgbd.mp4"]), names


def test_an_exr_sequence_with_exr_and_stereo_outputs_on_the_cluster(tmp_path, ray_cluster, tiny_ckpt, capsys):
    import av
    import numpy as np
    import OpenEXR

    from rd_engine.testing.media import synthetic_frame

    seq = tmp_path / "plate"
    seq.mkdir()
    for i in range(8):
        rgb = (synthetic_frame(i, 8, 64, 48) / 255.0).astype(np.float32)
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, {"RGB": rgb}) as f:
            f.write(str(seq / f"plate.{1001 + i}.exr"))
    args = [str(seq / "plate.%d.exr"), "-c", str(tiny_ckpt), *CLI_SETTINGS, "--exr", "--stereo", "sbs", "--fps", "12"]
    assert cli.main(["run", *args, "-o", str(tmp_path / "one")]) == 0
    assert cli.main(["run", *args, "-o", str(tmp_path / "ray"), "--cluster", "ray"]) == 0, capsys.readouterr().err
    exrs = sorted(p.name for p in (tmp_path / "ray" / "plate_exr").iterdir())
    assert exrs[0] == "plate_001001.exr" and exrs[-1] == "plate_exr.json" and len(exrs) == 9
    for name in exrs:
        assert (tmp_path / "ray" / "plate_exr" / name).read_bytes() == (
            tmp_path / "one" / "plate_exr" / name
        ).read_bytes()
    side = json.loads((tmp_path / "ray" / "plate_stereo.json").read_text())
    assert side["fps"] == 12.0 and side["num_frames"] == 8  # the sequence's options reached the workers

    def frames(p):
        with av.open(str(p)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    a, b = frames(tmp_path / "ray" / "plate_stereo_sbs.mp4"), frames(tmp_path / "one" / "plate_stereo_sbs.mp4")
    assert len(a) == len(b) == 8 and all(np.array_equal(x, y) for x, y in zip(a, b))
