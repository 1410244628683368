"""Run the interpreted (CPU) Triton tests in a child process when this one cannot.

See conftest.py: once triton has been imported in compiled mode (CUDA runs,
or something imported it first), the interpreter cannot be switched on in the
same process, so the whole folder is rerun with ``TRITON_INTERPRET=1`` set
before Python starts and no GPU visible.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def test_interpreted_suite_in_subprocess(kernel_test_mode):
    if not kernel_test_mode["need_subprocess"]:
        pytest.skip("the interpreted Triton tests already run in this process")
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    env.pop("RD_ENGINE_KERNELS", None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-o",
        "addopts=",
        "-q",
        "-rs",
        "-p",
        "no:cacheprovider",
        "-k",
        "not interpreted_suite_in_subprocess",
        str(HERE),
    ]
    res = subprocess.run(cmd, env=env, cwd=HERE.parents[1], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"interpreted kernel tests failed:\n{res.stdout[-8000:]}\n{res.stderr[-4000:]}"
    # The child must really have run the interpreted tests, not skipped them.
    assert " passed" in res.stdout, res.stdout[-4000:]
    assert "no Triton device in this process" not in res.stdout, res.stdout[-4000:]
