"""Backend selection for a run: `open_backend` (auto: TensorRT, then AOTInductor, then ONNX Runtime, then
PyTorch).

Used by `rd-engine run` and `rd-engine info` (what runs here); nothing here needs the build
tools (onnx, the exporter).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from rd_engine.backends.base import Backend
from rd_engine.backends.onnx_backend import onnxruntime_unavailable_reason
from rd_engine.backends.tensorrt_backend import tensorrt_unavailable_reason
from rd_engine.engine_format.folder import EngineFolder, open_engine_folder
from rd_engine.errors import SettingError, UserError

log = logging.getLogger("rd_engine")

BACKEND_CHOICES = ("auto", "pytorch", "onnxruntime", "tensorrt", "aoti")


def availability(engine: EngineFolder, device: torch.device | None) -> list[tuple[str, str | None]]:
    """(backend, why it cannot run here or None) for the engine's backends.

    Args:
        engine: The engine folder.
        device: The device to check for (None: TensorRT on CUDA; ONNX Runtime on CUDA if there is one).

    Returns:
        TensorRT (if the engine holds plans), AOTInductor (if it holds packages), then ONNX Runtime.
    """
    out = []
    if engine.tensorrt:
        why = tensorrt_unavailable_reason()
        if why is None:
            try:
                engine.check_tensorrt_machine(device or torch.device("cuda"))
            except UserError as e:
                why = str(e)
        out.append(("tensorrt", why))
    dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if engine.aoti:
        try:
            engine.check_aoti_machine(device or torch.device(engine.aoti.device))
            why = None
        except UserError as e:
            why = str(e)
        out.append(("aoti", why))
    out.append(("onnxruntime", onnxruntime_unavailable_reason(dev)))
    return out


def open_backend(
    engine_dir: Path | None,
    models=None,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    processed_size: tuple[int, int] | None = None,
    *,
    snippet_lens: Sequence[int] | None = None,
    fast=None,
) -> Backend:
    """Pick and open the backend of a run.

    `auto` takes TensorRT, then ONNX Runtime, then PyTorch: the first one that can run here.
    The choice, and why the better ones were passed over, is logged.

    Args:
        engine_dir: An engine folder, or None.
        models: A loaded checkpoint (rd_engine.model.checkpoint.Models), or None. With an engine, its
            weights must be the ones the engine was built from.
        backend: "auto", "pytorch", "onnxruntime" or "tensorrt".
        device: The run's device.
        dtype: The run's precision (TensorRT runs its plans' precision; ONNX Runtime fp32 on the
            CPU, see OrtBackend).
        processed_size: (width, height) of the processed frames, to check against the engine's profile.
        snippet_lens: Snippet lengths the run needs (snippet_len, refine_snippet_len).
        fast: `rd_engine.backends.fast.FastPaths` of the PyTorch backend (the compiled backends ignore them).

    Returns:
        The opened backend.

    Raises:
        UserError: Nothing can run, the forced backend cannot, or the engine is stale or foreign.
    """
    if backend not in BACKEND_CHOICES:
        raise SettingError("backend", f"must be one of {', '.join(BACKEND_CHOICES)}, got {backend}")
    device = torch.device(device)
    if backend == "pytorch" or (engine_dir is None and backend == "auto"):
        if models is None:
            raise UserError("the pytorch backend needs a checkpoint; an engine folder holds no PyTorch weights")
        from rd_engine.backends.torch_backend import TorchBackend

        if engine_dir is not None:
            log.info("backend pytorch: the engine folder %s is not used", engine_dir)
        elif backend == "auto":
            log.info(
                "backend auto -> pytorch (no engine folder given; build one with rd-engine build for "
                "ONNX Runtime or TensorRT)"
            )
        return TorchBackend(models, device, dtype, fast)
    if engine_dir is None:
        raise SettingError(
            "backend",
            f"{backend} needs an engine folder; build one with: rd-engine build "
            f"--checkpoint CHECKPOINT --backend {backend} -o engines/NAME",
        )

    engine = open_engine_folder(engine_dir, checkpoint=models, processed_size=processed_size)
    if snippet_lens:
        engine.check_snippet_lens(snippet_lens)
    order = ["tensorrt", "aoti", "onnxruntime", "pytorch"] if backend == "auto" else [backend]
    skipped = []
    for name in order:
        why = _why_not(name, engine, models, device)
        if why is None:
            be = _construct(name, engine, models, device, dtype, fast)
            if backend == "auto":
                log.info("backend auto -> %s%s", name, f" ({'; '.join(skipped)})" if skipped else "")
            return be
        if backend != "auto":
            raise SettingError("backend", f"{name}: {why}")
        skipped.append(f"{name}: {why}")
    raise UserError("no backend can run this engine here: " + "; ".join(skipped))


def _why_not(name: str, engine: EngineFolder, models, device: torch.device) -> str | None:
    if name == "tensorrt":
        if not engine.tensorrt:
            return (
                f"engine holds no TensorRT plans (build them on a GPU machine: "
                f"{engine.rebuild_command(backend='tensorrt', precision=None, device=None)})"
            )
        if device.type != "cuda":
            return f"TensorRT needs a CUDA device (the run is on {device})"
        why = tensorrt_unavailable_reason()
        if why:
            return why
        engine.check_tensorrt_machine(device)  # a foreign plan is refused, not skipped: rebuild it
        return None
    if name == "aoti":
        if not engine.aoti:
            return f"engine holds no AOTInductor packages (build them: {engine.rebuild_command(backend='aoti')})"
        try:  # auto moves on to the ONNX graphs; a forced aoti backend refuses, saying how to rebuild
            engine.check_aoti_machine(device)
        except UserError as e:
            return str(e)
        return None
    if name == "onnxruntime":
        if "fp32" not in engine.onnx_precisions:
            return "engine holds no ONNX graphs"
        return onnxruntime_unavailable_reason(device)
    if models is None:
        return "no checkpoint given"
    return None


def _construct(name: str, engine: EngineFolder, models, device: torch.device, dtype: torch.dtype, fast=None):
    if name in ("tensorrt", "aoti"):  # compiled in one precision: run in it, and say so if another was asked
        if name == "tensorrt":
            from rd_engine.backends.tensorrt_backend import TrtBackend

            be, what = TrtBackend(None, device, engine=engine), f"{engine.tensorrt.precision} plans"
        else:
            from rd_engine.backends.aoti_backend import AotiBackend

            be, what = AotiBackend(None, device, engine=engine), f"{engine.aoti.precision} packages"
        if dtype != be.dtype:
            log.info("%s runs the engine's %s (%s was asked for)", name, what, str(dtype).replace("torch.", ""))
        return be
    if name == "onnxruntime":
        from rd_engine.backends.onnx_backend import OrtBackend

        return OrtBackend(None, device, dtype, engine=engine)
    from rd_engine.backends.torch_backend import TorchBackend

    return TorchBackend(models, device, dtype, fast)
