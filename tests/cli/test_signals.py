"""Preemption and kills: SIGTERM stops a run like Ctrl-C, and no signal leaves a spill file or a partial output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rd_engine.testing.media import write_test_video

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/<pid>/fd")


def _open_spill_files(pid: int) -> list[str]:
    """The spill files the process holds open (unlinked ones read '... (deleted)')."""
    found = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "rd-engine-spill-" in target:
            found.append(target)
    return found


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    p = tmp_path_factory.mktemp("signal-clips") / "long.mp4"
    write_test_video(p, n_frames=600, width=64, height=48, fps=10)
    return p


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_on_a_spilling_run_leaves_nothing_behind(tmp_path, tiny_ckpt, long_clip, sig):
    temp = tmp_path / "temp"
    out = tmp_path / "out"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), XDG_CACHE_HOME=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "rd_engine.cli", "run", str(long_clip), "-c", str(tiny_ckpt), "-o", str(out)]
    cmd += ["--res", "48", "--seed", "1", "--max-memory", "0.000001", "--cmap", "none", "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        spill = []
        while not spill and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            spill = _open_spill_files(proc.pid)
        assert spill, "the run never spilled snippets to disk"
        # the spill file is in the test's temp folder and already has no name there
        assert spill[0].startswith(str(temp)) and spill[0].endswith("(deleted)"), spill
        assert list(temp.iterdir()) == []
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err
        assert "interrupted; no partial outputs were left behind" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert list(temp.iterdir()) == []
    assert not out.exists() or list(out.iterdir()) == []
