"""`rd-engine build`: checkpoint -> engine folder.

The folder is assembled under a temporary name next to the target
(`.<name>.partial-<hex>`) and renamed into place at the end; `manifest.json`
is its last file. A build that fails or is interrupted removes its temporary
folder; one that is killed outright leaves a `.partial-` folder without a
manifest, which `open_engine_folder` refuses. An existing engine at the target stays
untouched until the new one is complete.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from rd_engine.backends.tensorrt_backend import tensorrt_unavailable_reason
from rd_engine.engine_format.contracts import all_contracts
from rd_engine.engine_format.manifest import (
    AOTI_DIR,
    EMPTY_PROMPT_FILE,
    FORMAT_VERSION,
    MANIFEST,
    ONNX_DIR,
    TRT_DIR,
    AotiInfo,
    AotiPackage,
    BuildRecord,
    Component,
    DdimRecord,
    EmptyPrompt,
    Manifest,
    OnnxGraph,
    OnnxInfo,
    PlanRecord,
    Source,
    TensorRTInfo,
    cuda_device_info,
    library_versions,
    tensorrt_version,
    write_manifest,
)
from rd_engine.engine_format.profile import Profile
from rd_engine.errors import SettingError, UserError
from rd_engine.export.onnx_export import DEFAULT_OPSET, export_onnx, onnx_parity
from rd_engine.model.checkpoint import LATENT_SCALE
from rd_engine.progress import human_bytes

BACKENDS = ("auto", "onnxruntime", "tensorrt", "aoti")
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass
class BuildOptions:
    """Everything a build depends on (the CLI maps its flags onto this)."""

    checkpoint: str
    output: Path
    backend: str = "auto"  # auto: TensorRT plans too where TensorRT and a GPU exist; aoti: AOTInductor packages
    precision: str | None = None  # None: fp16 with TensorRT or AOTInductor on CUDA, fp32 otherwise
    profile: Profile = field(default_factory=Profile)
    snippet_lens: tuple[int, ...] = (3,)
    opset: int = DEFAULT_OPSET
    external_data: str = "auto"
    timing_cache: Path | None = None
    workspace_gb: float | None = None
    device: str = "auto"  # auto: TensorRT on cuda; AOTInductor on cuda where there is one, else cpu
    force: bool = False
    check: bool = True  # ORT-vs-PyTorch self-check of every fp32 graph on a small random input
    # the profile's min_res was not chosen: with AOTInductor packages it is raised, once the checkpoint is
    # loaded, to the smallest side the packages of its UNet serve (72 px for the real UNet)
    auto_min_res: bool = False


def _echo(msg: str) -> None:
    print(msg, flush=True)


def _check_target(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if not force:
        raise UserError(f"{out} already exists; build with the force option to replace it")
    if (out / MANIFEST).is_file() or not any(out.iterdir()):
        return
    raise UserError(
        f"{out} exists and is not an engine folder (no {MANIFEST}); refusing to replace it, choose another -o"
    )


def resolve_backends(backend: str, device: str) -> tuple[bool, str | None]:
    """(build TensorRT plans?, why not) for a backend choice."""
    if backend not in BACKENDS:
        raise SettingError("backend", f"must be one of {', '.join(BACKENDS)}, got {backend}")
    if backend in ("onnxruntime", "aoti"):
        return False, f"backend {backend}"
    device = "cuda" if device == "auto" else device
    try:
        torch.device(device)
    except (RuntimeError, ValueError):
        raise SettingError("device", f"{device!r} is not a device (use cuda or cuda:N)") from None
    why = tensorrt_unavailable_reason()
    if why is None and torch.device(device).type != "cuda":
        why = f"device {device} is not a CUDA device"
    if backend == "tensorrt" and why:
        raise SettingError("backend", f"tensorrt: {why}")
    return why is None, why


def aoti_build_device(spec: str) -> torch.device:
    """The device AOTInductor packages are compiled for: `auto` is CUDA where there is one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise SettingError("device", f"{spec!r} is not a device (use cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise SettingError("device", f"{spec!r} is not supported for AOTInductor packages (use cpu or cuda)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", f"{spec} requested but no CUDA device is available to compile for")
    return dev


def build_engine(opts: BuildOptions, echo: Callable[[str], None] = _echo) -> Path:
    """Build an engine folder; returns its path.

    Raises:
        UserError: Bad options, an unusable checkpoint, an existing target without --force.
    """
    from rd_engine.io.files import atomic_output
    from rd_engine.model.checkpoint import load_checkpoint, resolve_checkpoint, weights_hash

    out = Path(opts.output)
    _check_target(out, opts.force)
    profile = opts.profile.validated()
    lens = sorted(set(opts.snippet_lens))
    if not lens or any(not 2 <= n <= 8 for n in lens):
        raise SettingError("snippet_lens", f"must be in 2..8, got {list(opts.snippet_lens)}")
    with_trt, trt_why = resolve_backends(opts.backend, opts.device)
    with_aoti = opts.backend == "aoti"
    aoti_device = aoti_build_device(opts.device) if with_aoti else None
    precision = opts.precision or ("fp16" if with_trt or (aoti_device and aoti_device.type == "cuda") else "fp32")
    if precision not in PRECISIONS:
        raise SettingError("precision", f"must be one of {', '.join(PRECISIONS)}, got {precision}")
    if precision == "bf16" and not (with_trt or with_aoti):
        raise UserError(
            "precision bf16 is a TensorRT plan and AOTInductor package precision (ONNX Runtime has no bf16 "
            "kernels for these graphs); build it with the tensorrt or aoti backend, or use fp16/fp32"
        )
    # ONNX graphs in fp32, and in the engine precision where ONNX Runtime has kernels for it
    graph_precisions = ["fp32"] + ([precision] if precision == "fp16" else [])
    contracts = all_contracts(lens)
    steps = 2 + len(contracts) * (len(graph_precisions) + int(with_trt) + int(with_aoti)) + 1
    steps += int(with_trt and opts.check)
    step = 0
    timings: dict[str, float] = {}

    def stage(text: str) -> None:
        nonlocal step
        step += 1
        echo(f"[{step}/{steps}] {text}")

    t_start = time.perf_counter()
    backends = "onnxruntime" + (f" + tensorrt ({precision})" if with_trt else "")
    backends += f" + aoti ({precision} on {aoti_device})" if with_aoti else ""
    # with AOTInductor and no --min-res, the smallest side is known once the checkpoint is loaded
    raised = (
        " (the smallest raised to what the UNet's packages serve, if more)" if with_aoti and opts.auto_min_res else ""
    )
    echo(
        f"rd-engine build: {opts.checkpoint} -> {out} ({backends}; snippet lengths {lens}; frame sides "
        f"{profile.min_res}..{profile.max_res} px{raised}, tuned for {profile.opt_res}; batch <= {profile.max_batch} "
        f"snippets, <= {profile.max_vae_batch} frames)"
    )
    if not with_trt and opts.backend == "auto":
        echo(f"  no TensorRT plans: {trt_why}")

    with atomic_output(out, folder=True) as tmp:
        stage("loading the checkpoint")
        t0 = time.perf_counter()
        source = resolve_checkpoint(opts.checkpoint)
        models = load_checkpoint(source)
        models.to("cpu", torch.float32)
        timings["load"] = time.perf_counter() - t0
        echo(f"      loaded in {timings['load']:.1f} s")
        if with_aoti:
            from rd_engine.export.aoti import check_profile, smallest_min_res

            need = smallest_min_res(models)
            if opts.auto_min_res and profile.min_res < need <= profile.opt_res:
                profile = replace(profile, min_res=need).validated()
                echo(
                    f"      smallest frame side {need} px: the least the AOTInductor packages of this UNet serve "
                    f"({len(models.unet.config.down_block_types) - 1} downsamplings must leave 2 latent cells); "
                    "--min-res sets it"
                )
            check_profile(models, profile)

        stage("hashing the weights, saving the empty-prompt embedding")
        t0 = time.perf_counter()
        whash = weights_hash(source)
        from safetensors.torch import save_file

        save_file({"embedding": models.empty_embed.float().contiguous()}, str(tmp / EMPTY_PROMPT_FILE))
        timings["hash"] = time.perf_counter() - t0
        echo(f"      weights {whash[:16]}..., embedding {list(models.empty_embed.shape)} in {timings['hash']:.1f} s")

        components = {c.name: Component(c) for c in contracts}
        onnx_dir = tmp / ONNX_DIR
        for c in contracts:
            for prec in graph_precisions:
                stage(f"{c.name}: ONNX export ({prec}, opset {opts.opset})")
                info = export_onnx(
                    c, models, onnx_dir, opset=opts.opset, external_data=opts.external_data, precision=prec
                )
                rec = OnnxGraph(
                    file=f"{ONNX_DIR}/{info['onnx']}",
                    files=[f"{ONNX_DIR}/{f}" for f in info["files"]],
                    opset=info["opset"],
                    attention=info["attention"],
                    seconds=round(info["seconds"], 3),
                    fp32_normalizations=info["fp32_normalizations"] or None,
                )
                data = [f for f in rec.files if f.endswith(".data")]
                line = (
                    f"      {rec.file} ({human_bytes(info['weights_bytes'])} of weights"
                    f"{' in ' + data[0] if data else ''}) in {info['seconds']:.1f} s; attention: "
                    f"{info['attention']['matmul_softmax_matmul']} x MatMul-Softmax-MatMul"
                )
                if "ort_onnx" in info:
                    rec.ort_file = f"{ONNX_DIR}/{info['ort_onnx']}"
                    rec.ort_fused_attention = info["ort_fused_attention"]
                    line += f"; ONNX Runtime flavour with {info['ort_fused_attention']} x MultiHeadAttention"
                if opts.check and prec == "fp32":
                    t0 = time.perf_counter()
                    diff = onnx_parity(c, models, tmp / (rec.ort_file or rec.file))
                    rec.parity_max_abs_vs_pytorch = diff
                    line += f"; ONNX Runtime vs PyTorch max |diff| {diff:.1e} ({time.perf_counter() - t0:.1f} s)"
                    if not diff < 1e-3:
                        raise RuntimeError(f"{c.name}: the exported graph disagrees with PyTorch (max |diff| {diff})")
                components[c.name].onnx[prec] = rec
                timings[f"{c.name}.onnx.{prec}"] = info["seconds"]
                echo(line)

        trt_info = None
        if with_trt:
            from rd_engine.export.tensorrt_build import build_plan, default_timing_cache

            device = torch.device("cuda" if opts.device == "auto" else opts.device)
            cache = Path(opts.timing_cache) if opts.timing_cache else default_timing_cache(device)
            for c in contracts:
                stage(f"{c.name}: TensorRT plan ({precision}; this takes minutes for the real UNet)")
                graph = tmp / components[c.name].onnx[precision].file
                info = build_plan(
                    graph,
                    tmp / TRT_DIR / f"{c.name}.{precision}.plan",
                    c,
                    profile,
                    precision,
                    cache,
                    int(opts.workspace_gb * (1 << 30)) if opts.workspace_gb else None,
                    device,
                )
                components[c.name].tensorrt = PlanRecord(
                    file=f"{TRT_DIR}/{info['file']}",
                    precision=precision,
                    seconds=round(info["seconds"], 3),
                    # what the plan really does: a strongly typed network follows the graph's fp32 casts
                    fp32_normalization_layers=components[c.name].onnx[precision].fp32_normalizations or 0,
                )
                timings[f"{c.name}.tensorrt"] = info["seconds"]
                echo(f"      {TRT_DIR}/{info['file']} ({human_bytes(info['bytes'])}) in {info['seconds']:.1f} s")
            trt_info = TensorRTInfo(
                version=tensorrt_version(),
                gpu=cuda_device_info(device),
                precision=precision,
                strongly_typed=True,
                timing_cache=str(cache),
                profile_shapes={
                    c.name: {k: [list(s) for s in v] for k, v in c.profile_shapes(profile).items()} for c in contracts
                },
            )

        aoti_info = None
        if with_aoti:
            from rd_engine.export.aoti import build_package, dynamic_ranges

            for c in contracts:
                stage(f"{c.name}: AOTInductor package ({precision} on {aoti_device}; torch.export + compile, minutes)")
                rel = f"{AOTI_DIR}/{c.name}.{precision}.{aoti_device.type}.pt2"
                info = build_package(c, models, tmp / rel, profile, precision, aoti_device, check=opts.check)
                components[c.name].aoti = AotiPackage(
                    file=rel, seconds=round(info["seconds"], 3), parity_max_abs_vs_pytorch=info["parity"]
                )
                timings[f"{c.name}.aoti"] = info["seconds"]
                line = (
                    f"      {rel} ({human_bytes(info['bytes'])}) in {info['seconds']:.1f} s "
                    f"(export {info['export_seconds']:.1f} s)"
                )
                if info["parity"] is not None:
                    line += f"; package vs PyTorch max |diff| {info['parity']:.1e} at two shapes"
                    if not info["parity"] < (1e-3 if precision == "fp32" else 5e-2):
                        raise RuntimeError(
                            f"{c.name}: the package disagrees with PyTorch (max |diff| {info['parity']})"
                        )
                echo(line)
            aoti_info = AotiInfo(
                torch_version=torch.__version__,
                device=aoti_device.type,
                precision=precision,
                gpu=cuda_device_info(aoti_device) if aoti_device.type == "cuda" else None,
                dynamic=dynamic_ranges(profile),
            )

        stage("writing the manifest (checksums of every file)")
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            source=Source(checkpoint=str(Path(source).resolve()), name=str(opts.checkpoint), weights_hash=whash),
            precision=precision,
            backends=["onnxruntime"] + (["tensorrt"] if with_trt else []) + (["aoti"] if with_aoti else []),
            snippet_lens=lens,
            profile=profile,
            latent_scale=LATENT_SCALE,
            vae_scale_factor=8,
            empty_prompt=EmptyPrompt(file=EMPTY_PROMPT_FILE, shape=list(models.empty_embed.shape), dtype="float32"),
            ddim=DdimRecord.of(models.ddim),
            onnx=OnnxInfo(
                opset=opts.opset,
                exporter=f"torch.onnx.export (TorchScript, dynamo=False), torch {torch.__version__}",
                precisions=graph_precisions,
            ),
            tensorrt=trt_info,
            aoti=aoti_info,
            components=components,
            libraries=library_versions(),
            build=BuildRecord(
                args={
                    "checkpoint": str(Path(source).resolve())
                    if Path(opts.checkpoint).expanduser().exists()
                    else str(opts.checkpoint),
                    "backend": opts.backend,
                    "precision": precision,
                    **({"device": aoti_device.type} if with_aoti else {}),
                    "res": profile.opt_res,
                    "min_res": profile.min_res,
                    "max_res": profile.max_res,
                    "max_batch": profile.max_batch,
                    "max_vae_batch": profile.max_vae_batch,
                    "snippet_lens": lens,
                },
                command=" ".join(sys.argv) if sys.argv and "rd-engine" in os.path.basename(sys.argv[0]) else None,
                seconds={k: round(v, 3) for k, v in timings.items()},
            ),
        )
        write_manifest(tmp, manifest)
        if with_trt and opts.check:
            stage("checking the TensorRT plans against PyTorch (fp32) on random inputs")
            _check_tensorrt(tmp, models, torch.device("cuda" if opts.device == "auto" else opts.device), echo)
    total = time.perf_counter() - t_start
    echo(
        f"engine written to {out} in {total:.1f} s (frame sides {profile.min_res}..{profile.max_res} px); "
        f"run it with: rd-engine run VIDEO --engine {out}"
    )
    return out


def _check_tensorrt(folder: Path, models, device: torch.device, echo: Callable[[str], None]) -> None:
    """Run every plan once at the profile's optimum (batch 1) next to the fp32 PyTorch modules and
    report the max |difference|; non-finite outputs (half-precision overflow) fail the build.
    """
    from rd_engine.backends.tensorrt_backend import TrtBackend
    from rd_engine.backends.torch_backend import TorchBackend
    from rd_engine.engine_format.folder import open_engine_folder

    engine = open_engine_folder(folder)
    trt_be = TrtBackend(None, device, engine=engine, cuda_graphs=False)
    ref = TorchBackend(models, device, torch.float32)
    h, w = engine.profile.opt_latent()
    g = torch.Generator(device).manual_seed(0)
    frames = torch.rand(1, 3, 8 * h, 8 * w, device=device, generator=g) * 2 - 1
    lat = torch.randn(1, 4, h, w, device=device, generator=g)
    results = {
        "vae_encoder": (ref.encode(frames), trt_be.encode(frames.to(trt_be.dtype))),
        "vae_decoder": (ref.decode(lat), trt_be.decode(lat.to(trt_be.dtype))),
    }
    step = ref.ddim.schedule(1)[0]
    for n in engine.snippet_lens:
        rgb = torch.randn(1, n, 4, h, w, device=device, generator=g)
        noise = torch.randn(1, n, 4, h, w, device=device, generator=g)
        results[f"unet_step_L{n}"] = (
            ref.denoise(rgb, noise, step),
            trt_be.denoise(rgb.to(trt_be.dtype), noise.to(trt_be.dtype), step),
        )
    parts = []
    for name, (a, b) in results.items():
        b = b.float()
        if not torch.isfinite(b).all():
            raise RuntimeError(
                f"the TensorRT plan of {name} produces non-finite values (half-precision overflow?); "
                "rebuild with --precision bf16 or fp32"
            )
        parts.append(f"{name} {(a - b).abs().max().item():.1e}")
    echo(f"      max |TensorRT - PyTorch| at {8 * w}x{8 * h}: " + ", ".join(parts))
