"""Where the Triton kernel tests run: the CPU interpreter and/or a CUDA device.

Triton chooses between interpreting and compiling when it *decorates* a
function, and it decorates its own standard library (``tl.zeros``, ...) at
``import triton``; so ``TRITON_INTERPRET=1`` has to be in the environment
before anything imports triton (diffusers does, for instance). This file
therefore decides the mode once, at collection time:

* No CUDA device and triton not imported yet: export ``TRITON_INTERPRET=1``
  for this process; the kernels run interpreted on CPU tensors (``device="cpu"``).
* A CUDA device and no interpreter: the kernels run compiled on CUDA
  (``device="cuda"``), and ``test_interpreted_subprocess.py`` reruns this folder
  in a child process with ``TRITON_INTERPRET=1`` and no visible GPU, so the
  interpreted CPU path is covered on every machine.
* Triton was already imported in compiled mode on a CPU-only machine (another
  conftest or test imported it first): the in-process interpreted tests are
  skipped and the same subprocess test covers them.

Tests that take a ``device`` argument are parametrised over the devices
available in this process. Every kernel test passes ``impl="triton"``
explicitly, so the production rule (Triton only for CUDA tensors under
``impl="auto"``) stays untouched.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

_CUDA = torch.cuda.is_available()
if not _CUDA and "triton" not in sys.modules:
    os.environ["TRITON_INTERPRET"] = "1"

from rd_engine.kernels import triton_available, triton_interpreting  # noqa: E402  (after the env var)

_HAS_TRITON = triton_available()
_INTERPRET = _HAS_TRITON and triton_interpreting()
DEVICES = []
if _INTERPRET:
    DEVICES.append("cpu")
if _CUDA and _HAS_TRITON and not _INTERPRET:
    DEVICES.append("cuda")
NEED_SUBPROCESS = _HAS_TRITON and not _INTERPRET


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        if DEVICES:
            metafunc.parametrize("device", DEVICES)
        else:
            reason = "no Triton device in this process" + (
                " (interpreted tests run in test_interpreted_subprocess.py)" if NEED_SUBPROCESS else ""
            )
            metafunc.parametrize("device", [pytest.param("cpu", marks=pytest.mark.skip(reason=reason))])


@pytest.fixture(scope="session")
def kernel_test_mode():
    """How this process runs the Triton tests (see module docstring)."""
    return {"devices": list(DEVICES), "interpret": _INTERPRET, "need_subprocess": NEED_SUBPROCESS}
