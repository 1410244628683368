"""The engine folder and its manifest: what was built, from what, for which machine.

An engine folder holds `manifest.json` (written last: a folder without it is an
unfinished build), the empty-prompt embedding, ONNX graphs and, where TensorRT
and a GPU existed at build time, TensorRT plans. `open_engine` refuses a folder
that this version cannot read, whose files were edited (every file is listed
with its SHA-256), that was built from other weights, or whose shape profile
does not cover the run; every refusal says how to rebuild.

This module is imported at run time: it needs torch and safetensors only (no
onnx, no diffusers).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rd_engine.model.ddim import DDIM
from rd_engine.errors import UserError
from rd_engine.engine_format.contracts import Contract, contract_from_json

FORMAT_VERSION = 1
SUPPORTED_FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"
EMPTY_PROMPT_FILE = "empty_prompt.safetensors"
ONNX_DIR = "onnx"
TRT_DIR = "tensorrt"


# ----------------------------------------------------------------------------
# Shape profile
# ----------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Profile:
    """Batch and resolution ranges an engine serves.

    Resolutions are in processed pixels: every side of a frame, after padding
    to a multiple of 8, must lie in [min_res, max_res] (rounded up to multiples
    of 8). `opt_res` is the longer edge TensorRT tunes its kernels for (a 16:9
    frame of that size); batches are per call (snippets for the UNet, frames
    for the VAE), from 1 to the max.
    """

    min_res: int = 64
    opt_res: int = 768
    max_res: int = 768
    max_batch: int = 8
    opt_batch: int = 8
    max_vae_batch: int = 8
    opt_vae_batch: int = 4

    def validated(self) -> "Profile":
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise UserError(msg)

        need(self.min_res >= 8, f"--min-res must be >= 8 pixels, got {self.min_res}")
        need(self.max_res >= self.min_res, f"--max-res ({self.max_res}) must be >= --min-res ({self.min_res})")
        need(self.min_res <= self.opt_res <= self.max_res,
             f"--res ({self.opt_res}) must lie within --min-res..--max-res ({self.min_res}..{self.max_res})")
        need(self.max_batch >= 1, f"--max-batch must be >= 1, got {self.max_batch}")
        need(self.max_vae_batch >= 1, f"--max-vae-batch must be >= 1, got {self.max_vae_batch}")
        need(1 <= self.opt_batch <= self.max_batch, "opt batch must lie within 1..max batch")
        need(1 <= self.opt_vae_batch <= self.max_vae_batch, "opt VAE batch must lie within 1..max VAE batch")
        return self

    def latent_range(self) -> tuple[int, int]:
        """Smallest and largest latent side (pixels / 8, padded)."""
        return _ceil_div(self.min_res, 8), _ceil_div(self.max_res, 8)

    def opt_latent(self) -> tuple[int, int]:
        """Latent (h, w) of the optimum: a 16:9 landscape frame with longer edge opt_res."""
        lo, hi = self.latent_range()
        w = _ceil_div(self.opt_res, 8)
        h = _ceil_div(int(self.opt_res * 9 / 16), 8)
        return min(max(h, lo), hi), min(max(w, lo), hi)

    def covers(self, size: tuple[int, int]) -> bool:
        lo, hi = self.latent_range()
        return all(lo <= _ceil_div(s, 8) <= hi for s in size)

    def to_json(self) -> dict:
        lo, hi = self.latent_range()
        return {**asdict(self), "latent_min": lo, "latent_max": hi, "latent_opt_hw": list(self.opt_latent())}

    @classmethod
    def from_json(cls, data: dict) -> "Profile":
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


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

    out: dict[str, str | None] = {"rd_engine": __version__, "python": platform.python_version(),
                                  "torch": torch.__version__}
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
    for key, flag in (("backend", "--backend"), ("precision", "--precision"), ("res", "--res"),
                      ("min_res", "--min-res"), ("max_res", "--max-res"), ("max_batch", "--max-batch"),
                      ("max_vae_batch", "--max-vae-batch")):
        if a.get(key) is not None:
            parts += [flag, str(a[key])]
    if a.get("snippet_lens"):
        parts += ["--snippet-lens", *(str(n) for n in a["snippet_lens"])]
    parts += ["-o", str(output), "--force"]
    return " ".join(shlex.quote(p) for p in parts)


# ----------------------------------------------------------------------------
# Engine
# ----------------------------------------------------------------------------


class Engine:
    """A read engine folder; every check raises UserError with a rebuild hint."""

    def __init__(self, path: Path, manifest: dict):
        self.path = path
        self.manifest = manifest
        self.profile = Profile.from_json(manifest["profile"])
        self.contracts: dict[str, Contract] = {
            name: contract_from_json(name, c) for name, c in manifest["components"].items()}
        self._verified: set[str] = set()

    # -- facts ---------------------------------------------------------------
    @property
    def snippet_lens(self) -> list[int]:
        return sorted(c.snippet_len for c in self.contracts.values() if c.kind == "unet_step")

    @property
    def backends(self) -> list[str]:
        return list(self.manifest.get("backends", []))

    @property
    def tensorrt(self) -> dict | None:
        return self.manifest.get("tensorrt")

    @property
    def weights_hash(self) -> str:
        return self.manifest["source"]["weights_hash"]

    def component(self, kind: str, snippet_len: int | None = None) -> Contract:
        for c in self.contracts.values():
            if c.kind == kind and (snippet_len is None or c.snippet_len == snippet_len):
                return c
        if kind == "unet_step":
            raise UserError(
                f"engine {self.path} has no UNet graph for snippet length {snippet_len} (it has "
                f"{', '.join(map(str, self.snippet_lens))}); use --snippet-len/--refine-snippet-len from those, "
                f"or rebuild: {self.rebuild_command(snippet_lens=sorted({*self.snippet_lens, snippet_len}))}")
        raise UserError(f"engine {self.path}: no {kind} component in the manifest; rebuild: {self.rebuild_command()}")

    @property
    def onnx_precisions(self) -> list[str]:
        """Precisions in which every component has an ONNX graph."""
        sets = [set(c.get("onnx", {})) for c in self.manifest["components"].values()]
        return sorted(set.intersection(*sets)) if sets else []

    def onnx_graph(self, name: str, precision: str = "fp32", flavour: str = "portable") -> Path:
        """Path of a component's ONNX graph in `precision`: the `portable` one (standard ops: the
        TensorRT source) or the `ort` one (attention as ONNX Runtime's MultiHeadAttention)."""
        graphs = self.manifest["components"][name].get("onnx", {})
        if precision not in graphs:
            raise UserError(f"engine {self.path} holds no {precision} ONNX graph of {name}; "
                            f"rebuild: {self.rebuild_command()}")
        rec = graphs[precision]
        if flavour == "ort":
            return self.path / rec.get("ort_file", rec["file"])
        return self.path / rec["file"]

    def onnx_files(self, precision: str = "fp32", names: list[str] | None = None) -> list[str]:
        """Relative paths of the graphs (and their external data) in `precision`."""
        out = []
        for name, comp in self.manifest["components"].items():
            if names is None or name in names:
                out += comp.get("onnx", {}).get(precision, {}).get("files", [])
        return out

    def plan_file(self, name: str) -> Path:
        plan = self.manifest["components"][name].get("tensorrt")
        if plan is None:
            raise UserError(f"engine {self.path} holds no TensorRT plan of {name}; build one on this machine: "
                            f"{self.rebuild_command(backend='tensorrt', precision=None)}")
        return self.path / plan["file"]

    def plan_files(self) -> list[str]:
        return [c["tensorrt"]["file"] for c in self.manifest["components"].values() if c.get("tensorrt")]

    def rebuild_command(self, **changes: Any) -> str:
        return build_command(self.manifest.get("build", {}).get("args", {}), self.path, **changes)

    def ddim(self) -> DDIM:
        """The DDIM schedule rebuilt from the stored config, checked against the stored coefficients."""
        d = self.manifest["ddim"]
        ddim = DDIM(d["config"])
        stored = torch.tensor(d["alphas_cumprod"], dtype=torch.float32)
        if stored.shape != ddim.alphas_cumprod.shape or not torch.equal(stored, ddim.alphas_cumprod):
            raise UserError(
                f"engine {self.path}: the DDIM coefficients computed here differ from the ones stored at build "
                f"time (library change?); rebuild: {self.rebuild_command()}")
        return ddim

    def empty_embed(self) -> torch.Tensor:
        from safetensors.torch import load_file

        self.verify_files([EMPTY_PROMPT_FILE])
        return load_file(str(self.path / EMPTY_PROMPT_FILE))["embedding"]

    # -- checks ---------------------------------------------------------------
    def verify_files(self, rel_paths: list[str] | None = None) -> None:
        """Check presence, size and SHA-256 of the listed files (all files of the manifest if None)."""
        files = self.manifest["files"]
        todo = list(files) if rel_paths is None else rel_paths
        for rel in todo:
            if rel in self._verified:
                continue
            meta = files.get(rel)
            if meta is None:
                raise UserError(f"engine {self.path}: {rel} is not listed in the manifest; "
                                f"rebuild: {self.rebuild_command()}")
            p = self.path / rel
            if not p.is_file():
                raise UserError(f"engine {self.path}: {rel} is missing; rebuild: {self.rebuild_command()}")
            if p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
                raise UserError(f"engine {self.path}: {rel} was modified after the build (checksum mismatch); "
                                f"rebuild: {self.rebuild_command()}")
            self._verified.add(rel)

    def check_checkpoint(self, checkpoint) -> None:
        """Refuse an engine built from other weights than `checkpoint` (a Models or a folder)."""
        from rd_engine.model.checkpoint import weights_hash

        source = getattr(checkpoint, "source", checkpoint)
        if source is None:
            return  # in-memory weights (e.g. random full-size): nothing on disk to compare
        got = weights_hash(Path(source))
        if got != self.weights_hash:
            raise UserError(
                f"engine {self.path} was built from other weights than checkpoint {source} "
                f"(weights hash {self.weights_hash[:12]} vs {got[:12]}); rebuild: "
                f"{self.rebuild_command(checkpoint=str(source))}")

    def check_size(self, processed_size: tuple[int, int]) -> None:
        """Refuse a processed frame size (width, height) outside the resolution profile."""
        w, h = processed_size
        if self.profile.covers((w, h)):
            return
        p = self.profile
        pw, ph = 8 * _ceil_div(w, 8), 8 * _ceil_div(h, 8)
        new_min = min(p.min_res, pw, ph)
        new_max = max(p.max_res, pw, ph)
        lo, hi = p.latent_range()
        raise UserError(
            f"engine {self.path} serves frames whose sides are {8 * lo}..{8 * hi} px (after padding to a multiple "
            f"of 8); this run's frames are {w}x{h} (padded {pw}x{ph}). Change --res, or rebuild with a wider "
            f"range: {self.rebuild_command(min_res=new_min, max_res=new_max)}")

    def check_snippet_lens(self, lens) -> None:
        for n in sorted(set(lens)):
            self.component("unet_step", n)

    def check_tensorrt_machine(self, device: torch.device | str) -> None:
        """Refuse TensorRT plans built for another GPU or TensorRT version."""
        info = self.tensorrt
        if not info:
            raise UserError(f"engine {self.path} holds no TensorRT plans; build them on this machine: "
                            f"{self.rebuild_command(backend='tensorrt', precision=None)}")
        here = cuda_device_info(device)
        version = tensorrt_version()
        problems = []
        if version != info["version"]:
            problems.append(f"TensorRT {info['version']} at build time, {version} here")
        if here["compute_capability"] != info["gpu"]["compute_capability"]:
            problems.append(f"compute capability {info['gpu']['compute_capability']} at build time, "
                            f"{here['compute_capability']} here")
        if here["name"] != info["gpu"]["name"]:
            problems.append(f"GPU {info['gpu']['name']!r} at build time, {here['name']!r} here")
        if problems:
            raise UserError(f"engine {self.path}: its TensorRT plans do not fit this machine ({'; '.join(problems)}); "
                            f"rebuild here: {self.rebuild_command(backend='tensorrt')} "
                            "(or run its ONNX graphs with --backend onnxruntime)")


def open_engine(path: str | os.PathLike, checkpoint=None, processed_size: tuple[int, int] | None = None) -> Engine:
    """Read and check an engine folder (files are hashed later, by the backend that loads them).

    Args:
        path: The engine folder.
        checkpoint: Optional Models or checkpoint folder that the run also names: its weights
            hash must match the engine's.
        processed_size: Optional processed frame size (width, height) of the run.

    Raises:
        UserError: Not an engine, an unfinished build, an unknown format version, other weights,
            or a size outside the profile.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"engine folder {folder} does not exist (build one with: rd-engine build --checkpoint "
                        f"CHECKPOINT -o {folder})")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise UserError(f"{folder} is not an engine folder, or its build did not finish (no {MANIFEST}); "
                        f"build it with: rd-engine build --checkpoint CHECKPOINT -o {folder} --force")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"engine {folder}: unreadable {MANIFEST} ({e}); rebuild it with rd-engine build") from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version not in SUPPORTED_FORMAT_VERSIONS:
        args = manifest.get("build", {}).get("args", {}) if isinstance(manifest, dict) else {}
        raise UserError(
            f"engine {folder} has format version {version!r}; this rd-engine reads version "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}. Rebuild it: {build_command(args, folder)}")
    try:
        engine = Engine(folder, manifest)
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"engine {folder}: incomplete manifest ({type(e).__name__}: {e}); "
                        f"rebuild: {build_command(manifest.get('build', {}).get('args', {}), folder)}") from None
    if checkpoint is not None:
        engine.check_checkpoint(checkpoint)
    if processed_size is not None:
        engine.check_size(processed_size)
    return engine


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write manifest.json (the last file of a build) with every other file's size and SHA-256."""
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    manifest = {**manifest, "files": files}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
    os.replace(tmp, folder / MANIFEST)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
