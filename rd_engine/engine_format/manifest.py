"""The engine manifest: what was built, from what, for which machine (one typed schema).

`Manifest` is what `manifest.json` holds, as dataclasses: `rd-engine build`
fills one in and writes it (`write_manifest`), the run reads it back
(`Manifest.from_json`, through `rd_engine.engine_format.folder`). The JSON keys
and values are those of format version 1.

This module is imported at run time: it needs torch only (no onnx, no diffusers).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from rd_engine.engine_format.contracts import Contract, contract_from_json
from rd_engine.engine_format.profile import Profile

if TYPE_CHECKING:
    from rd_engine.model.ddim import DDIM

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
EMPTY_PROMPT_FILE = "empty_prompt.safetensors"
ONNX_DIR = "onnx"
TRT_DIR = "tensorrt"
AOTI_DIR = "aoti"


# ----------------------------------------------------------------------------
# The schema
# ----------------------------------------------------------------------------


@dataclass
class Source:
    """The checkpoint an engine was built from."""

    checkpoint: str  # resolved folder
    name: str  # as given to the build (folder or hub id)
    weights_hash: str  # SHA-256 over the UNet and VAE weights

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Source:
        return cls(data["checkpoint"], data["name"], data["weights_hash"])


@dataclass
class EmptyPrompt:
    """The stored empty-prompt embedding."""

    file: str
    shape: list[int]
    dtype: str = "float32"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> EmptyPrompt:
        return cls(data["file"], list(data["shape"]), data["dtype"])


@dataclass
class DdimRecord:
    """The scheduler config, its constants and the coefficients computed at build time."""

    config: dict[str, Any]
    prediction_type: str
    clip_sample_range: float | None  # None: no clipping
    alphas_cumprod: list[float]
    final_alpha_cumprod: float

    @classmethod
    def of(cls, ddim: DDIM) -> DdimRecord:
        return cls(
            ddim.config,
            ddim.prediction_type,
            ddim.clip_sample_range if ddim.clip_sample else None,
            [float(a) for a in ddim.alphas_cumprod],
            float(ddim.final_alpha_cumprod),
        )

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> DdimRecord:
        return cls(
            dict(data["config"]),
            data["prediction_type"],
            data["clip_sample_range"],
            list(data["alphas_cumprod"]),
            data["final_alpha_cumprod"],
        )


@dataclass
class OnnxInfo:
    """How the ONNX graphs were exported."""

    opset: int
    exporter: str
    precisions: list[str]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> OnnxInfo:
        return cls(data["opset"], data["exporter"], list(data["precisions"]))


@dataclass
class TensorRTInfo:
    """What the TensorRT plans are tied to (None in the manifest: no plans)."""

    version: str | None
    gpu: dict[str, str]  # name, compute_capability
    precision: str
    strongly_typed: bool
    timing_cache: str
    profile_shapes: dict[str, dict[str, list[list[int]]]]  # component -> input -> [min, opt, max]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TensorRTInfo:
        return cls(
            data["version"],
            dict(data["gpu"]),
            data["precision"],
            data["strongly_typed"],
            data["timing_cache"],
            data["profile_shapes"],
        )


@dataclass
class AotiInfo:
    """What the AOTInductor packages are tied to (None in the manifest: no packages).

    A package is compiled code for one torch version, one device type and (on CUDA) one GPU
    architecture; its dynamic dimensions cover the engine's profile.
    """

    torch_version: str
    device: str  # "cpu" or "cuda"
    precision: str  # fp32 | fp16 | bf16
    gpu: dict[str, str] | None  # name, compute_capability (CUDA packages)
    dynamic: dict[str, list[int]]  # dimension -> [min, max]: "B" (frames), "S" (snippets), "h"/"w" (latent)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> AotiInfo:
        gpu = data.get("gpu")
        return cls(
            data["torch_version"],
            data["device"],
            data["precision"],
            dict(gpu) if gpu else None,
            {k: list(v) for k, v in data["dynamic"].items()},
        )


@dataclass
class AotiPackage:
    """One component's AOTInductor package."""

    file: str
    seconds: float  # export + compile
    parity_max_abs_vs_pytorch: float | None = None  # the build's self-check at two shapes

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> AotiPackage:
        return cls(data["file"], data["seconds"], data.get("parity_max_abs_vs_pytorch"))


@dataclass
class OnnxGraph:
    """One component's ONNX graph in one precision (paths relative to the engine folder)."""

    file: str  # the portable graph (the TensorRT source)
    files: list[str]  # the graph, its external data, its ONNX Runtime flavour
    opset: int
    attention: dict[str, int]
    seconds: float
    ort_file: str | None = None  # the ONNX Runtime flavour (fp32 and fp16 graphs)
    ort_fused_attention: int | None = None
    parity_max_abs_vs_pytorch: float | None = None  # the build's self-check (fp32 graphs)
    fp32_normalizations: int | None = None  # half graphs: GroupNorms computed in fp32 between casts

    def to_json(self) -> dict:
        out = asdict(self)
        for key in ("ort_file", "ort_fused_attention", "parity_max_abs_vs_pytorch", "fp32_normalizations"):
            if out[key] is None:
                del out[key]  # absent, not null
        return out

    @classmethod
    def from_json(cls, data: dict) -> OnnxGraph:
        return cls(
            data["file"],
            list(data.get("files", [])),
            data["opset"],
            data["attention"],
            data["seconds"],
            data.get("ort_file"),
            data.get("ort_fused_attention"),
            data.get("parity_max_abs_vs_pytorch"),
            data.get("fp32_normalizations"),
        )


@dataclass
class PlanRecord:
    """One component's TensorRT plan."""

    file: str
    precision: str
    seconds: float
    fp32_normalization_layers: int  # GroupNorms the plan computes in fp32 (the graph's casts)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> PlanRecord:
        return cls(data["file"], data["precision"], data["seconds"], data["fp32_normalization_layers"])


@dataclass
class Component:
    """One component: its contract, its ONNX graphs by precision, its TensorRT plan, its AOTInductor package."""

    contract: Contract
    onnx: dict[str, OnnxGraph] = field(default_factory=dict)
    tensorrt: PlanRecord | None = None
    aoti: AotiPackage | None = None

    def to_json(self) -> dict:
        out = {**self.contract.to_json(), "onnx": {p: g.to_json() for p, g in self.onnx.items()}}
        if self.tensorrt is not None:
            out["tensorrt"] = self.tensorrt.to_json()  # absent, not null, without a plan
        if self.aoti is not None:
            out["aoti"] = self.aoti.to_json()
        return out

    @classmethod
    def from_json(cls, name: str, data: dict) -> Component:
        plan = data.get("tensorrt")
        package = data.get("aoti")
        return cls(
            contract_from_json(name, data),
            {p: OnnxGraph.from_json(g) for p, g in data.get("onnx", {}).items()},
            PlanRecord.from_json(plan) if plan else None,
            AotiPackage.from_json(package) if package else None,
        )


@dataclass
class BuildRecord:
    """How the engine was built: the options (`build_command` reproduces them), the command, the times."""

    args: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> BuildRecord:
        return cls(dict(data.get("args", {})), data.get("command"), dict(data.get("seconds", {})))


@dataclass
class FileRecord:
    """Size and SHA-256 of one file of the engine folder."""

    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> FileRecord:
        return cls(data["bytes"], data["sha256"])


@dataclass(kw_only=True)
class Manifest:
    """Everything `manifest.json` records (format version 1; fields in the file's key order)."""

    format_version: int = FORMAT_VERSION
    created: str | None  # ISO 8601, UTC
    source: Source
    precision: str  # the engine precision (plans; graphs in it beside the fp32 ones)
    backends: list[str]
    snippet_lens: list[int]
    profile: Profile
    latent_scale: float
    vae_scale_factor: int = 8
    empty_prompt: EmptyPrompt
    ddim: DdimRecord
    onnx: OnnxInfo
    tensorrt: TensorRTInfo | None = None
    aoti: AotiInfo | None = None  # written only when the engine holds packages (format 1 stays as it was)
    components: dict[str, Component]
    libraries: dict[str, str | None] = field(default_factory=dict)
    build: BuildRecord = field(default_factory=BuildRecord)
    files: dict[str, FileRecord] = field(default_factory=dict)  # every other file (filled in by write_manifest)

    def to_json(self) -> dict:
        out = {
            "format_version": self.format_version,
            "created": self.created,
            "source": self.source.to_json(),
            "precision": self.precision,
            "backends": list(self.backends),
            "snippet_lens": list(self.snippet_lens),
            "profile": self.profile.to_json(),
            "latent_scale": self.latent_scale,
            "vae_scale_factor": self.vae_scale_factor,
            "empty_prompt": self.empty_prompt.to_json(),
            "ddim": self.ddim.to_json(),
            "onnx": self.onnx.to_json(),
            "tensorrt": self.tensorrt.to_json() if self.tensorrt is not None else None,
            "aoti": self.aoti.to_json() if self.aoti is not None else None,
            "components": {name: c.to_json() for name, c in self.components.items()},
            "libraries": dict(self.libraries),
            "build": self.build.to_json(),
            "files": {rel: f.to_json() for rel, f in self.files.items()},
        }
        if self.aoti is None:
            del out["aoti"]
        return out

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        """Parse a manifest (KeyError, TypeError, ValueError, AttributeError: an incomplete one)."""
        trt = data.get("tensorrt")
        aoti = data.get("aoti")
        return cls(
            format_version=int(data["format_version"]),
            created=data.get("created"),
            source=Source.from_json(data["source"]),
            precision=data["precision"],
            backends=list(data.get("backends", [])),
            snippet_lens=[int(n) for n in data.get("snippet_lens", [])],
            profile=Profile.from_json(data["profile"]),
            latent_scale=data["latent_scale"],
            vae_scale_factor=data.get("vae_scale_factor", 8),
            empty_prompt=EmptyPrompt.from_json(data["empty_prompt"]),
            ddim=DdimRecord.from_json(data["ddim"]),
            onnx=OnnxInfo.from_json(data["onnx"]),
            tensorrt=TensorRTInfo.from_json(trt) if trt is not None else None,
            aoti=AotiInfo.from_json(aoti) if aoti is not None else None,
            components={name: Component.from_json(name, c) for name, c in data["components"].items()},
            libraries=dict(data.get("libraries", {})),
            build=BuildRecord.from_json(data.get("build", {})),
            files={rel: FileRecord.from_json(f) for rel, f in data["files"].items()},
        )


def write_manifest(folder: Path, manifest: Manifest) -> Manifest:
    """Write manifest.json (the last file of a build) with every other file's size and SHA-256.

    Args:
        folder: The engine folder, complete but for its manifest.
        manifest: The manifest; its `files` are replaced by what the folder holds.

    Returns:
        The manifest as written.
    """
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            files[rel] = FileRecord(p.stat().st_size, sha256_file(p))
    manifest = replace(manifest, files=files)
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, default=_json_default) + "\n")
    os.replace(tmp, folder / MANIFEST)
    return manifest


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# ----------------------------------------------------------------------------
# Helpers shared by build and run
# ----------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of everything that shapes a build (None: not installed)."""
    from importlib import metadata

    from rd_engine.version import __version__

    out: dict[str, str | None] = {
        "rd_engine": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for dist in ("onnx", "onnxruntime", "onnxruntime-gpu", "diffusers", "transformers", "tensorrt"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    try:  # the runtime module is what matters for plans (wheels are named tensorrt-cu12 etc.)
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except Exception:
        pass
    return out


def cuda_device_info(device: torch.device | str | None = None) -> dict[str, str]:
    """Name and compute capability of a CUDA device (what a TensorRT plan is tied to)."""
    dev = torch.device(device if device is not None else "cuda")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return {"name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def tensorrt_version() -> str | None:
    try:
        import tensorrt

        return tensorrt.__version__
    except Exception:
        return None


def build_command(args: dict[str, Any], output: Path | str, **changes: Any) -> str:
    """The `rd-engine build` command line that reproduces `args` (with `changes`)."""
    a = {**args, **changes}
    parts = ["rd-engine", "build", "--checkpoint", str(a.get("checkpoint", "CHECKPOINT"))]
    for key, flag in (
        ("backend", "--backend"),
        ("precision", "--precision"),
        ("device", "--device"),
        ("res", "--res"),
        ("min_res", "--min-res"),
        ("max_res", "--max-res"),
        ("max_batch", "--max-batch"),
        ("max_vae_batch", "--max-vae-batch"),
    ):
        if a.get(key) is not None:
            parts += [flag, str(a[key])]
    if a.get("snippet_lens"):
        parts += ["--snippet-lens", *(str(n) for n in a["snippet_lens"])]
    parts += ["-o", str(output), "--force"]
    return " ".join(shlex.quote(p) for p in parts)
