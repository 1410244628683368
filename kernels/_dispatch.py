"""Choosing between the Triton kernels and the plain PyTorch references.

Every public op in this package calls :func:`select_impl` exactly once, at its
top, and then runs either its Triton launcher or its ``*_ref`` function. The
rule is deliberately simple so that production never ends up in the (very
slow) Triton interpreter by accident:

* ``impl="torch"``: always the PyTorch reference.
* ``impl="auto"`` (default): Triton when Triton is importable and every tensor
  lives on a CUDA device and has a dtype the kernels read (fp16/bf16/fp32);
  the reference otherwise (CPU tensors, fp64, no Triton).
* ``impl="triton"``: Triton or an error. On CPU tensors this is only allowed
  while Triton's interpreter is active (``TRITON_INTERPRET=1`` exported before
  ``triton`` is first imported): that is how the kernels are tested without a
  GPU.

The environment variable ``RD_ENGINE_KERNELS`` (``auto``/``triton``/``torch``)
replaces ``impl="auto"`` process-wide, so that a whole pipeline can be pushed
through one path (e.g. the engine's own tests through the interpreted kernels)
without threading an argument everywhere. An explicit ``impl`` other than
``"auto"`` always wins over the variable.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable

import torch

IMPL_ENV = "RD_ENGINE_KERNELS"
IMPLS = ("auto", "triton", "torch")

# dtypes the Triton kernels load (and upcast to fp32 in registers).
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

_TRITON_FOUND: bool | None = None


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (checked without importing it)."""
    global _TRITON_FOUND
    if _TRITON_FOUND is None:
        _TRITON_FOUND = importlib.util.find_spec("triton") is not None
    return _TRITON_FOUND


def triton_interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter in this process.

    Triton decides this from ``TRITON_INTERPRET`` when it decorates functions,
    including its own standard library at import time, so the variable must be
    set before the first ``import triton``; setting it later gives a mix of
    interpreted and compiled functions that does not work.
    """
    if os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("1", "true", "on", "yes"):
        return False
    tl = sys.modules.get("triton.language")
    if tl is None:
        return True  # not imported yet: Triton will pick the variable up
    # Already imported: trust what Triton actually did. Its standard library
    # is decorated at import, so a compiled ``JITFunction`` there means the
    # variable came too late and the interpreter would not work.
    return type(getattr(tl, "zeros", None)).__name__ != "JITFunction"


def select_impl(impl: str, tensors: Iterable[torch.Tensor | None]) -> str:
    """Resolve ``impl`` to ``"triton"`` or ``"torch"`` for the given operands.

    Args:
        impl: ``"auto"``, ``"triton"`` or ``"torch"`` (see the module docstring).
        tensors: the op's tensor operands; ``None`` entries are ignored.

    Returns:
        ``"triton"`` or ``"torch"``.

    Raises:
        ValueError: unknown ``impl`` or ``RD_ENGINE_KERNELS`` value.
        RuntimeError: ``"triton"`` was requested but cannot run on these operands.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        env = os.environ.get(IMPL_ENV, "auto").strip().lower() or "auto"
        if env not in IMPLS:
            raise ValueError(f"{IMPL_ENV} must be one of {IMPLS}, got {env!r}")
        impl = env
    if impl == "torch":
        return "torch"

    ts = [t for t in tensors if t is not None]
    devices = {t.device.type for t in ts}
    dtypes_ok = all(t.dtype in TRITON_DTYPES for t in ts if t.is_floating_point())
    forced = impl == "triton"

    problem = None
    if not triton_available():
        problem = "the triton package is not installed"
    elif not dtypes_ok:
        problem = f"the Triton kernels read only {[str(d) for d in TRITON_DTYPES]}"
    elif devices == {"cuda"}:
        problem = None
    elif devices <= {"cpu"}:
        if not forced:
            # Never pick the interpreter implicitly: it is orders of magnitude slower.
            problem = "CPU tensors use the PyTorch reference unless impl='triton' is forced"
        elif not triton_interpreting():
            problem = (
                "Triton on CPU tensors needs the interpreter: export TRITON_INTERPRET=1 before triton is first imported"
            )
    else:
        problem = f"unsupported device mix {sorted(devices)}"

    if problem is None:
        return "triton"
    if forced:
        raise RuntimeError(f"impl='triton' cannot run: {problem}")
    return "torch"
