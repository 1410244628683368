"""TensorRT plans from the exported ONNX graphs.

Every plan is a strongly typed network parsed from the graph of the engine's
precision (`<name>.onnx` for fp32, `<name>.fp16.onnx` / `<name>.bf16.onnx`
traced from the module cast to that dtype). Strong typing makes the plan
compute in the types PyTorch computes in at that dtype, and it is the only mode
TensorRT 11 keeps (its weak-typing builder flags FP16/BF16 are gone); TensorRT
10 accepts it through `NetworkDefinitionCreationFlag.STRONGLY_TYPED`. The one
deliberate difference: GroupNorms compute in fp32, as PyTorch's CUDA kernels do
internally, because fp16 statistics of the UNet's activations can overflow.
That is done by casts in the half-precision graphs themselves
(`rd_engine.export.onnx_export.norms_in_fp32`): a strongly typed network
follows the graph's types and rejects per-layer precision requests.

One optimization profile per plan: batch 1..max (snippets for the UNet, frames
for the VAE) and latent sides min..max, tuned at the profile's optimum. The
timing cache persists across builds (by default in the user cache, one file per
GPU model and TensorRT version), so a rebuild reuses earlier kernel timings.

Nothing here imports tensorrt at module import time (whether TensorRT can run here:
`rd_engine.backends.tensorrt_backend.tensorrt_unavailable_reason`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import torch

from rd_engine.backends.tensorrt_backend import trt_logger
from rd_engine.engine_format.contracts import Contract
from rd_engine.engine_format.manifest import cuda_device_info, tensorrt_version
from rd_engine.engine_format.profile import Profile
from rd_engine.export.onnx_export import BF16_OPSET

log = logging.getLogger("rd_engine")


def default_timing_cache(device: torch.device | str | None = None) -> Path:
    """~/.cache/rd-engine/tensorrt/timing-<gpu>-sm<cc>-trt<version>.cache"""
    info = cuda_device_info(device)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", info["name"]).strip("-").lower()
    cc = info["compute_capability"].replace(".", "")
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rd-engine" / "tensorrt"
    return base / f"timing-{gpu}-sm{cc}-trt{tensorrt_version()}.cache"


def build_plan(
    onnx_path: Path,
    plan_path: Path,
    contract: Contract,
    profile: Profile,
    precision: str,
    timing_cache: Path,
    workspace_bytes: int | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Build and serialize one plan.

    Args:
        onnx_path: The component's graph in `precision` (external data next to it is found by path).
        plan_path: Where the plan goes.
        contract: The component (names and the profile's shapes).
        profile: Batch and resolution ranges.
        precision: "fp32", "fp16" or "bf16" (must be the graph's precision).
        timing_cache: Read if present, updated after the build.
        workspace_bytes: Builder workspace limit (None: TensorRT's default, the whole GPU).
        device: The CUDA device to build on (plans are tied to its compute capability).

    Returns:
        {"file", "seconds", "bytes", "timing_cache"}.
    """
    import tensorrt as trt

    dev = torch.device(device if device is not None else "cuda")
    if dev.index is not None:
        torch.cuda.set_device(dev)
    logger = trt_logger()
    t0 = time.perf_counter()
    builder = trt.Builder(logger)
    strong = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if strong is None else 1 << int(strong))  # None: always strong
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        if precision == "bf16":
            # bf16 graphs are opset 22 (bf16 convolutions and normalizations exist only from there), which
            # the ONNX parsers of early TensorRT 10 releases do not read
            from rd_engine.errors import UserError

            raise UserError(
                f"TensorRT {trt.__version__} could not parse the bf16 graph {onnx_path.name} (ONNX opset "
                f"{BF16_OPSET}): its ONNX parser may predate that opset; use a newer TensorRT, or build fp16 "
                f"(--precision fp16). Parser errors: {errors}"
            )
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")

    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        # fp32 plans are the exact reference: no TF32 tensor-core rounding in matmuls and convs
        config.clear_flag(trt.BuilderFlag.TF32)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_inputs(contract, profile).items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)

    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    try:
        cache = config.create_timing_cache(cache_bytes)
        usable = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    except (TypeError, RuntimeError, ValueError) as e:  # a cache another TensorRT version wrote
        log.warning("tensorrt: the timing cache %s cannot be read (%s); starting a fresh one", timing_cache, e)
        usable = False
    if not usable:
        # a cache from another device or TensorRT version: start afresh rather than fail
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=True)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build {plan_path.name} (see the TensorRT messages above)")
    memory = _plan_device_memory(trt, serialized)
    check_plan_memory(plan_path.name, memory, torch.cuda.get_device_properties(dev).total_memory)
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    with open(plan_path, "wb") as fh:
        fh.write(serialized)
    _save_timing_cache(config.get_timing_cache(), timing_cache)
    return {
        "file": plan_path.name,
        "seconds": time.perf_counter() - t0,
        "bytes": plan_path.stat().st_size,
        "timing_cache": str(timing_cache),
        "device_memory_bytes": memory,
    }


def profile_inputs(contract: Contract, profile: Profile) -> dict[str, tuple[tuple[int, ...], ...]]:
    """The (min, opt, max) shapes of every input with a dynamic dimension: those need a profile entry,
    even when the profile fixes their range (a one-size profile); inputs without one (the timestep,
    the alphas) get none.
    """
    dynamic = {t.name for t in contract.inputs if any(isinstance(d, str) for d in t.shape)}
    return {name: shapes for name, shapes in contract.profile_shapes(profile).items() if name in dynamic}


# activation memory of one plan above this share of the GPU is refused; above WARN_SHARE, warned about
REFUSE_SHARE, WARN_SHARE = 0.8, 0.25


def check_plan_memory(name: str, memory: int, total: int) -> None:
    """Refuse a plan whose activation memory does not fit the GPU, warn about one that takes much of it.

    An unfused attention (the score matrices materialized) at the largest profile needs on the order of
    100 GB in the real UNet; the figure says so before a run fails.

    Raises:
        UserError: The plan needs more than `REFUSE_SHARE` of the GPU's memory.
    """
    from rd_engine.errors import UserError
    from rd_engine.progress import human_bytes

    if memory > REFUSE_SHARE * total:
        raise UserError(
            f"TensorRT plan {name} needs {human_bytes(memory)} of activation memory at the largest profile shape "
            f"(the GPU has {human_bytes(total)}): attention was probably not fused; lower --max-res or --max-batch"
        )
    if memory > WARN_SHARE * total:
        log.warning(
            "tensorrt: plan %s needs %s of activation memory at its largest shapes (%.0f%% of the GPU)",
            name,
            human_bytes(memory),
            100 * memory / total,
        )


def _plan_device_memory(trt, serialized) -> int:
    engine = trt.Runtime(trt_logger()).deserialize_cuda_engine(serialized)
    if engine is None:
        return 0
    return int(engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size)


def _save_timing_cache(cache, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(cache.serialize())
    os.replace(tmp, path)
