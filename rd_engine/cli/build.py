"""CLI pieces of the engine: `rd-engine build`, `rd-engine info`, and backend selection for `run`.

`rd_engine.cli.main` wires these in:
    add_build_parser(sub); add_info_parser(sub)
    "build" -> cmd_build(args); "info" -> cmd_info(args)
    run: backend = open_backend(engine_dir, models_or_None, args.backend, device, dtype, processed_size)
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from rd_engine.cli.args import int_at_least
from rd_engine.errors import UserError
from rd_engine.engine_format.manifest import Engine, Profile, open_engine

log = logging.getLogger("rd_engine")

BACKEND_CHOICES = ("auto", "pytorch", "onnxruntime", "tensorrt")


def add_build_parser(subparsers) -> argparse.ArgumentParser:
    """`rd-engine build`: checkpoint -> engine folder."""
    p = subparsers.add_parser(
        "build", help="export a checkpoint to an engine folder (ONNX graphs; TensorRT plans where possible)",
        description="Export a RollingDepth checkpoint to an engine folder: ONNX graphs of the VAE encoder, the VAE "
                    "decoder and one snippet UNet step per snippet length, and TensorRT plans where TensorRT and a "
                    "CUDA GPU exist. The folder appears only when the build is complete.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-c", "--checkpoint", default=None,
                   help="diffusers-layout checkpoint folder or hub id (default: prs-eth/rollingdepth-v1-0)")
    p.add_argument("-o", "--output", type=Path, required=True, help="engine folder to create")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="auto",
                   help="what to build: ONNX graphs only (onnxruntime), or TensorRT plans too (tensorrt); auto adds "
                        "plans where TensorRT and a GPU exist")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default=None,
                   help="engine precision (TensorRT plans; ONNX graphs in it beside the fp32 ones). "
                        "Default: fp16 with TensorRT, fp32 without")
    g = p.add_argument_group("shape profile (processed pixels; sides are padded to multiples of 8)")
    g.add_argument("--res", type=int_at_least(8), default=768,
                   help="longer frame edge the plans are tuned for (the run's --res)")
    g.add_argument("--min-res", type=int_at_least(8), default=None,
                   help="smallest frame side served (default: min(64, --res))")
    g.add_argument("--max-res", type=int_at_least(8), default=None, help="largest frame side served (default: --res)")
    g.add_argument("--max-batch", type=int_at_least(1), default=8,
                   help="most snippets per UNet call (the run's --snippet-batch; larger calls are split)")
    g.add_argument("--max-vae-batch", type=int_at_least(1), default=8,
                   help="most frames per VAE call (the run's --vae-batch; larger calls are split)")
    g.add_argument("--snippet-lens", type=int_at_least(2), nargs="+", default=[3],
                   help="snippet lengths to build UNet steps for (the run's --snippet-len and --refine-snippet-len)")
    x = p.add_argument_group("export and TensorRT")
    x.add_argument("--opset", type=int_at_least(17), default=17, help="ONNX opset")
    x.add_argument("--external-data", choices=["auto", "always", "never"], default="auto",
                   help="weights in a separate <graph>.data file (auto: for graphs over 1 GiB)")
    x.add_argument("--device", default="cuda", help="CUDA device to build TensorRT plans on")
    x.add_argument("--timing-cache", type=Path, default=None,
                   help="TensorRT timing cache file, kept across builds "
                        "(default: ~/.cache/rd-engine/tensorrt/timing-<gpu>-<trt>.cache)")
    x.add_argument("--workspace-gb", type=float, default=None, help="TensorRT builder workspace limit in GiB")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="skip the ONNX Runtime vs PyTorch self-check of each graph")
    p.add_argument("--force", action="store_true", help="replace an existing engine folder")
    p.add_argument("-q", "--quiet", action="store_true", help="errors only")
    p.add_argument("-v", "--verbose", action="store_true", help="debug messages")
    return p


def build_options(args) -> "BuildOptions":  # noqa: F821
    from rd_engine.model.checkpoint import DEFAULT_CHECKPOINT
    from rd_engine.export.build import BuildOptions

    res = args.res
    profile = Profile(
        min_res=args.min_res if args.min_res is not None else min(64, res), opt_res=res,
        max_res=args.max_res if args.max_res is not None else res,
        max_batch=args.max_batch, opt_batch=args.max_batch,
        max_vae_batch=args.max_vae_batch, opt_vae_batch=min(4, args.max_vae_batch),
    )
    return BuildOptions(
        checkpoint=args.checkpoint or DEFAULT_CHECKPOINT, output=args.output, backend=args.backend,
        precision=args.precision, profile=profile, snippet_lens=tuple(args.snippet_lens), opset=args.opset,
        external_data=args.external_data, timing_cache=args.timing_cache, workspace_gb=args.workspace_gb,
        device=args.device, force=args.force, check=args.check,
    )


def cmd_build(args) -> int:
    """Run `rd-engine build`; returns the exit code (UserError propagates to the caller)."""
    from rd_engine.export.build import build_engine

    echo = (lambda msg: None) if getattr(args, "quiet", False) else (lambda msg: print(msg, flush=True))
    build_engine(build_options(args), echo=echo)
    return 0


def add_info_parser(subparsers) -> argparse.ArgumentParser:
    """`rd-engine info ENGINE`: what an engine folder holds and whether it runs here."""
    p = subparsers.add_parser("info", help="show what an engine folder holds and whether it runs here",
                              description="Show an engine folder's manifest: source weights, precision, shape "
                                          "profile, components and files, library versions, and which backends "
                                          "can run it on this machine.")
    p.add_argument("engine", type=Path, help="engine folder")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the file checksums")
    p.add_argument("-q", "--quiet", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    return p


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_info(args) -> int:
    """Run `rd-engine info`; returns 0, or 1 when the files fail their checksums."""
    engine = open_engine(args.engine)
    m = engine.manifest
    if args.json:
        print(json.dumps(m, indent=2))
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
        print(f"checksums: ok ({len(m['files'])} files)")
    return 0


def describe(engine: Engine) -> list[str]:
    """Human-readable summary of an engine folder."""
    m = engine.manifest
    p = engine.profile
    lo, hi = p.latent_range()
    oh, ow = p.opt_latent()
    d = m["ddim"]["config"]
    trt = m.get("tensorrt")
    lines = [
        f"engine: {engine.path} (format {m['format_version']}, built {m.get('created', '?')})",
        f"source: {m['source']['name']} ({m['source']['checkpoint']})",
        f"weights hash: {m['source']['weights_hash']}",
        f"precision: {m['precision']}; ONNX graphs: {', '.join(engine.onnx_precisions)} "
        f"(opset {m['onnx']['opset']})",
        f"backends: {', '.join(engine.backends)}",
        f"snippet lengths: {', '.join(map(str, engine.snippet_lens))}",
        f"profile: frame sides {8 * lo}..{8 * hi} px (latent {lo}..{hi}), tuned for {8 * ow}x{8 * oh}; "
        f"<= {p.max_batch} snippets per UNet call, <= {p.max_vae_batch} frames per VAE call",
        f"DDIM: {d['prediction_type']}, {d['beta_schedule']} betas {d['beta_start']}..{d['beta_end']}, "
        f"{d['timestep_spacing']} spacing, zero-SNR {d['rescale_betas_zero_snr']}, "
        f"set_alpha_to_one {d['set_alpha_to_one']}; latent scale {m['latent_scale']}",
    ]
    if trt:
        lines.append(f"tensorrt: {trt['version']} on {trt['gpu']['name']} (compute capability "
                     f"{trt['gpu']['compute_capability']}), {trt['precision']} plans")
    lines.append("components:")
    for name, comp in m["components"].items():
        parts = []
        for prec, g in comp.get("onnx", {}).items():
            size = sum(m["files"][f]["bytes"] for f in g["files"] if f in m["files"])
            parts.append(f"onnx {prec} {_mb(size)}")
        if comp.get("tensorrt"):
            f = comp["tensorrt"]["file"]
            parts.append(f"plan {comp['tensorrt']['precision']} {_mb(m['files'].get(f, {}).get('bytes', 0))}")
        ins = ", ".join(f"{t['name']}{t['shape']}" for t in comp["inputs"])
        lines.append(f"  {name}: {'; '.join(parts)} | in: {ins}")
    libs = m.get("libraries", {})
    lines.append("built with: " + ", ".join(f"{k} {v}" for k, v in libs.items() if v))
    lines.append("runs here: " + "; ".join(f"{b}: {why or 'yes'}" for b, why in _availability(engine, None)))
    return lines


def _availability(engine: Engine, device: torch.device | None) -> list[tuple[str, str | None]]:
    """(backend, why it cannot run here or None) for the engine's backends."""
    from rd_engine.backends.onnx_backend import onnxruntime_unavailable_reason
    from rd_engine.export.tensorrt_build import tensorrt_unavailable_reason

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
    out.append(("onnxruntime", onnxruntime_unavailable_reason(dev)))
    return out


def open_backend(engine_dir: Path | None, models=None, backend: str = "auto", device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, processed_size: tuple[int, int] | None = None, *,
                 snippet_lens: Sequence[int] | None = None):
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

    Raises:
        UserError: Nothing can run, the forced backend cannot, or the engine is stale or foreign.
    """
    if backend not in BACKEND_CHOICES:
        raise UserError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend}")
    device = torch.device(device)
    if backend == "pytorch" or (engine_dir is None and backend == "auto"):
        if models is None:
            raise UserError("the pytorch backend needs a checkpoint (--checkpoint); an engine folder holds no "
                            "PyTorch weights")
        from rd_engine.backends.torch_backend import TorchBackend

        if engine_dir is not None:
            log.info("backend pytorch: the engine folder %s is not used", engine_dir)
        elif backend == "auto":
            log.info("backend auto -> pytorch (no engine folder given; build one with rd-engine build for "
                     "ONNX Runtime or TensorRT)")
        return TorchBackend(models, device, dtype)
    if engine_dir is None:
        raise UserError(f"--backend {backend} needs an engine folder (--engine); build one with: rd-engine build "
                        f"--checkpoint CHECKPOINT --backend {backend} -o engines/NAME")

    engine = open_engine(engine_dir, checkpoint=models, processed_size=processed_size)
    if snippet_lens:
        engine.check_snippet_lens(snippet_lens)
    order = ["tensorrt", "onnxruntime", "pytorch"] if backend == "auto" else [backend]
    skipped = []
    for name in order:
        why = _why_not(name, engine, models, device)
        if why is None:
            be = _construct(name, engine, models, device, dtype)
            if backend == "auto":
                log.info("backend auto -> %s%s", name, f" ({'; '.join(skipped)})" if skipped else "")
            return be
        if backend != "auto":
            raise UserError(f"--backend {name}: {why}")
        skipped.append(f"{name}: {why}")
    raise UserError("no backend can run this engine here: " + "; ".join(skipped))


def _why_not(name: str, engine: Engine, models, device: torch.device) -> str | None:
    if name == "tensorrt":
        from rd_engine.export.tensorrt_build import tensorrt_unavailable_reason

        if not engine.tensorrt:
            return (f"engine holds no TensorRT plans (build them on a GPU machine: "
                    f"{engine.rebuild_command(backend='tensorrt', precision=None)})")
        if device.type != "cuda":
            return f"TensorRT needs a CUDA device (the run is on {device})"
        why = tensorrt_unavailable_reason()
        if why:
            return why
        engine.check_tensorrt_machine(device)  # a foreign plan is refused, not skipped: rebuild it
        return None
    if name == "onnxruntime":
        from rd_engine.backends.onnx_backend import onnxruntime_unavailable_reason

        if "fp32" not in engine.onnx_precisions:
            return "engine holds no ONNX graphs"
        return onnxruntime_unavailable_reason(device)
    if models is None:
        return "no checkpoint given (--checkpoint)"
    return None


def _construct(name: str, engine: Engine, models, device: torch.device, dtype: torch.dtype):
    if name == "tensorrt":
        from rd_engine.backends.tensorrt_backend import TrtBackend

        be = TrtBackend(None, device, engine=engine)
        if dtype != be.dtype:
            log.info("tensorrt runs the engine's %s plans (%s was asked for)", engine.tensorrt["precision"],
                     str(dtype).replace("torch.", ""))
        return be
    if name == "onnxruntime":
        from rd_engine.backends.onnx_backend import OrtBackend

        return OrtBackend(None, device, dtype, engine=engine)
    from rd_engine.backends.torch_backend import TorchBackend

    return TorchBackend(models, device, dtype)
