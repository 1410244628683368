"""CLI pieces of the engine: `rd-engine build` and `rd-engine info`.

`rd_engine.cli.main` wires these in:
    add_build_parser(sub); add_info_parser(sub)
    "build" -> cmd_build(args); "info" -> cmd_info(args)
(the backend of `run` comes from `rd_engine.backends.select.open_backend`).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from rd_engine.cli.args import check_output_dir, int_at_least
from rd_engine.engine_format.profile import Profile
from rd_engine.errors import UserError

if TYPE_CHECKING:
    from rd_engine.engine_format.folder import EngineFolder
    from rd_engine.export.build import BuildOptions

# Profile fields -> the `rd-engine build` flags that set them (for the profile's error messages)
PROFILE_FLAGS = {
    "min_res": "--min-res",
    "opt_res": "--res",
    "max_res": "--max-res",
    "max_batch": "--max-batch",
    "max_vae_batch": "--max-vae-batch",
}


def add_build_parser(subparsers) -> argparse.ArgumentParser:
    """`rd-engine build`: checkpoint -> engine folder."""
    p = subparsers.add_parser(
        "build",
        help="export a checkpoint to an engine folder (ONNX graphs; TensorRT plans where possible)",
        description="Export a RollingDepth checkpoint to an engine folder: ONNX graphs of the VAE encoder, the VAE "
        "decoder and one snippet UNet step per snippet length, and TensorRT plans where TensorRT and a "
        "CUDA GPU exist. The folder appears only when the build is complete.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "-c",
        "--checkpoint",
        default=None,
        help="diffusers-layout checkpoint folder or hub id (default: prs-eth/rollingdepth-v1-0)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="engine folder to create")
    p.add_argument(
        "--backend",
        choices=["auto", "onnxruntime", "tensorrt", "aoti"],
        default="auto",
        help="what to build: ONNX graphs only (onnxruntime), or TensorRT plans too (tensorrt), or "
        "AOTInductor packages too (aoti: compiled for --device, cpu or cuda); auto adds plans where TensorRT "
        "and a GPU exist",
    )
    p.add_argument(
        "--precision",
        "--dtype",
        choices=["fp32", "fp16", "bf16"],
        default=None,
        help="engine precision (TensorRT plans, AOTInductor packages; ONNX graphs in it beside the fp32 ones "
        "where ONNX Runtime has kernels). Default: fp16 with TensorRT or AOTInductor on CUDA, fp32 otherwise",
    )
    g = p.add_argument_group("shape profile (processed pixels; sides are padded to multiples of 8)")
    g.add_argument(
        "--res", type=int_at_least(8), default=768, help="longer frame edge the plans are tuned for (the run's --res)"
    )
    g.add_argument(
        "--min-res",
        type=int_at_least(8),
        default=None,
        help="smallest frame side served (default: min(64, --res); with --backend aoti the smallest side the "
        "checkpoint's UNet packages serve, 72 px for the real UNet's three downsamplings)",
    )
    g.add_argument("--max-res", type=int_at_least(8), default=None, help="largest frame side served (default: --res)")
    g.add_argument(
        "--max-batch",
        type=int_at_least(1),
        default=8,
        help="most snippets per UNet call (the run's --snippet-batch; larger calls are split)",
    )
    g.add_argument(
        "--max-vae-batch",
        type=int_at_least(1),
        default=8,
        help="most frames per VAE call (the run's --vae-batch; larger calls are split)",
    )
    g.add_argument(
        "--snippet-lens",
        type=int_at_least(2),
        nargs="+",
        default=[3],
        help="snippet lengths to build UNet steps for (the run's --snippet-len and --refine-snippet-len)",
    )
    x = p.add_argument_group("export, TensorRT and AOTInductor")
    x.add_argument("--opset", type=int_at_least(17), default=17, help="ONNX opset")
    x.add_argument(
        "--external-data",
        choices=["auto", "always", "never"],
        default="auto",
        help="weights in a separate <graph>.data file (auto: for graphs over 1 GiB)",
    )
    x.add_argument(
        "--device",
        default="auto",
        help="device to build for: TensorRT plans on a CUDA device; AOTInductor packages for cpu or cuda[:N] "
        "(auto: cuda where there is one, else cpu)",
    )
    x.add_argument(
        "--timing-cache",
        type=Path,
        default=None,
        help="TensorRT timing cache file, kept across builds "
        "(default: ~/.cache/rd-engine/tensorrt/timing-<gpu>-<trt>.cache)",
    )
    x.add_argument("--workspace-gb", type=float, default=None, help="TensorRT builder workspace limit in GiB")
    p.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip the ONNX Runtime vs PyTorch self-check of each graph",
    )
    p.add_argument("--force", action="store_true", help="replace an existing engine folder")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    return p


def build_options(args) -> BuildOptions:
    """The build options of parsed `rd-engine build` arguments.

    Raises:
        UserError: The shape profile is invalid (worded with the flags).
    """
    from rd_engine.export.build import BuildOptions
    from rd_engine.model.checkpoint import DEFAULT_CHECKPOINT

    res = args.res
    profile = Profile(
        min_res=args.min_res if args.min_res is not None else min(64, res),
        opt_res=res,
        max_res=args.max_res if args.max_res is not None else res,
        max_batch=args.max_batch,
        opt_batch=args.max_batch,
        max_vae_batch=args.max_vae_batch,
        opt_vae_batch=min(4, args.max_vae_batch),
    )
    try:
        profile.validated()
    except UserError as e:
        raise UserError(flag_wording(str(e))) from None
    return BuildOptions(
        checkpoint=args.checkpoint or DEFAULT_CHECKPOINT,
        output=args.output,
        backend=args.backend,
        precision=args.precision,
        profile=profile,
        snippet_lens=tuple(args.snippet_lens),
        opset=args.opset,
        external_data=args.external_data,
        timing_cache=args.timing_cache,
        workspace_gb=args.workspace_gb,
        device=args.device,
        force=args.force,
        check=args.check,
        auto_min_res=args.min_res is None,
    )


def flag_wording(message: str) -> str:
    """A profile error in the flags' terms: "min_res must be >= 8" -> "--min-res must be >= 8"."""
    return re.sub(r"\b(" + "|".join(PROFILE_FLAGS) + r")\b", lambda m: PROFILE_FLAGS[m.group(1)], message)


def cmd_build(args) -> int:
    """Run `rd-engine build`; returns the exit code (UserError propagates to the caller)."""
    from rd_engine.model.checkpoint import DEFAULT_CHECKPOINT, check_checkpoint

    check_checkpoint(args.checkpoint or DEFAULT_CHECKPOINT)  # fail fast: before torch and the model load
    check_output_dir(args.output.parent)
    from rd_engine.export.build import build_engine

    echo = (lambda msg: None) if getattr(args, "quiet", False) else (lambda msg: print(msg, flush=True))
    build_engine(build_options(args), echo=echo)
    return 0


def add_info_parser(subparsers) -> argparse.ArgumentParser:
    """`rd-engine info ENGINE`: what an engine folder holds and whether it runs here."""
    p = subparsers.add_parser(
        "info",
        help="show what an engine folder holds and whether it runs here",
        description="Show an engine folder's manifest: source weights, precision, shape "
        "profile, components and files, library versions, and which backends "
        "can run it on this machine.",
    )
    p.add_argument("engine", type=Path, help="engine folder")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the file checksums")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return p


def cmd_info(args) -> int:
    """Run `rd-engine info`; returns 0, or 1 when the files fail their checksums."""
    from rd_engine.engine_format.folder import open_engine_folder

    engine = open_engine_folder(args.engine)
    m = engine.manifest
    if args.json:
        print(json.dumps(m.to_json(), indent=2))
    else:
        for line in describe(engine):
            print(line)
    if not args.verify:
        return 0
    try:
        engine.verify_files()
    except UserError as e:
        print(f"checksums: FAILED: {e}")
        return 1
    if not args.json:
        print(f"checksums: ok ({len(m.files)} files)")
    return 0


def describe(engine: EngineFolder) -> list[str]:
    """Human-readable summary of an engine folder."""
    from rd_engine.backends.select import availability
    from rd_engine.progress import human_bytes

    m = engine.manifest
    p = engine.profile
    lo, hi = p.latent_range()
    oh, ow = p.opt_latent()
    d = m.ddim.config
    trt = m.tensorrt
    lines = [
        f"engine: {engine.path} (format {m.format_version}, built {m.created or '?'})",
        f"source: {m.source.name} ({m.source.checkpoint})",
        f"weights hash: {m.source.weights_hash}",
        f"precision: {m.precision}; ONNX graphs: {', '.join(engine.onnx_precisions)} (opset {m.onnx.opset})",
        f"backends: {', '.join(engine.backends)}",
        f"snippet lengths: {', '.join(map(str, engine.snippet_lens))}",
        (
            f"profile: frame sides {8 * lo}..{8 * hi} px (latent {lo}..{hi}), tuned for {8 * ow}x{8 * oh}; "
            f"<= {p.max_batch} snippets per UNet call, <= {p.max_vae_batch} frames per VAE call"
        ),
        (
            f"DDIM: {d['prediction_type']}, {d['beta_schedule']} betas {d['beta_start']}..{d['beta_end']}, "
            f"{d['timestep_spacing']} spacing, zero-SNR {d['rescale_betas_zero_snr']}, "
            f"set_alpha_to_one {d['set_alpha_to_one']}; latent scale {m.latent_scale}"
        ),
    ]
    if trt:
        lines.append(
            f"tensorrt: {trt.version} on {trt.gpu['name']} (compute capability "
            f"{trt.gpu['compute_capability']}), {trt.precision} plans"
        )
    aoti = m.aoti
    if aoti:
        gpu = f" {aoti.gpu['name']} (compute capability {aoti.gpu['compute_capability']})" if aoti.gpu else ""
        ranges = ", ".join(f"{k} {lo}..{hi}" for k, (lo, hi) in aoti.dynamic.items())
        lines.append(
            f"aoti: torch {aoti.torch_version}, {aoti.device}{gpu}, {aoti.precision} packages; dynamic {ranges}"
        )
    lines.append("components:")
    for name, comp in m.components.items():
        parts = []
        for prec, g in comp.onnx.items():
            size = sum(m.files[f].bytes for f in g.files if f in m.files)
            parts.append(f"onnx {prec} {human_bytes(size)}")
        if comp.tensorrt is not None:
            plan = m.files.get(comp.tensorrt.file)
            parts.append(f"plan {comp.tensorrt.precision} {human_bytes(plan.bytes if plan else 0)}")
        if comp.aoti is not None:
            package = m.files.get(comp.aoti.file)
            parts.append(f"aoti {m.aoti.precision} {human_bytes(package.bytes if package else 0)}")
        ins = ", ".join(f"{t.name}{list(t.shape)}" for t in comp.contract.inputs)
        lines.append(f"  {name}: {'; '.join(parts)} | in: {ins}")
    lines.append("built with: " + ", ".join(f"{k} {v}" for k, v in m.libraries.items() if v))
    lines.append("runs here: " + "; ".join(f"{b}: {why or 'yes'}" for b, why in availability(engine, None)))
    return lines
