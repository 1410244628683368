"""The engine folder: reading it, and every refusal of a stale or foreign one.

An engine folder holds `manifest.json` (written last: a folder without it is an
unfinished build), the empty-prompt embedding, ONNX graphs and, where TensorRT
and a GPU existed at build time, TensorRT plans. `open_engine_folder` refuses a
folder that this version cannot read, whose files were edited (every file is
listed with its SHA-256), that was built from other weights, or whose shape
profile does not cover the run; every refusal says how to rebuild.

This module is imported at run time: it needs torch and safetensors only (no
onnx, no diffusers).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from rd_engine.engine_format.contracts import Contract
from rd_engine.engine_format.manifest import (
    EMPTY_PROMPT_FILE,
    MANIFEST,
    SUPPORTED_FORMAT_VERSIONS,
    AotiInfo,
    Manifest,
    TensorRTInfo,
    build_command,
    cuda_device_info,
    sha256_file,
    tensorrt_version,
)
from rd_engine.engine_format.profile import ceil_div
from rd_engine.errors import UserError
from rd_engine.model.ddim import DDIM


class EngineFolder:
    """A read engine folder; every check raises UserError with a rebuild hint.

    Args:
        path: The folder.
        manifest: Its parsed manifest.
    """

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest
        self.profile = manifest.profile
        self.contracts: dict[str, Contract] = {name: c.contract for name, c in manifest.components.items()}
        self._verified: set[str] = set()

    # -- facts ---------------------------------------------------------------
    @property
    def snippet_lens(self) -> list[int]:
        return sorted(c.snippet_len for c in self.contracts.values() if c.kind == "unet_step")

    @property
    def backends(self) -> list[str]:
        return list(self.manifest.backends)

    @property
    def tensorrt(self) -> TensorRTInfo | None:
        return self.manifest.tensorrt

    @property
    def aoti(self) -> AotiInfo | None:
        return self.manifest.aoti

    @property
    def weights_hash(self) -> str:
        return self.manifest.source.weights_hash

    def component(self, kind: str, snippet_len: int | None = None) -> Contract:
        for c in self.contracts.values():
            if c.kind == kind and (snippet_len is None or c.snippet_len == snippet_len):
                return c
        if kind == "unet_step":
            raise UserError(
                f"engine {self.path} has no UNet graph for snippet length {snippet_len} (it has "
                f"{', '.join(map(str, self.snippet_lens))}); use snippet lengths from those, "
                f"or rebuild: {self.rebuild_command(snippet_lens=sorted({*self.snippet_lens, snippet_len}))}"
            )
        raise UserError(f"engine {self.path}: no {kind} component in the manifest; rebuild: {self.rebuild_command()}")

    @property
    def onnx_precisions(self) -> list[str]:
        """Precisions in which every component has an ONNX graph."""
        sets = [set(c.onnx) for c in self.manifest.components.values()]
        return sorted(set.intersection(*sets)) if sets else []

    def onnx_graph(self, name: str, precision: str = "fp32", flavour: str = "portable") -> Path:
        """Path of a component's ONNX graph in `precision`: the `portable` one (standard ops: the
        TensorRT source) or the `ort` one (attention as ONNX Runtime's MultiHeadAttention).
        """
        graphs = self.manifest.components[name].onnx
        if precision not in graphs:
            raise UserError(
                f"engine {self.path} holds no {precision} ONNX graph of {name}; rebuild: {self.rebuild_command()}"
            )
        rec = graphs[precision]
        if flavour == "ort" and rec.ort_file is not None:
            return self.path / rec.ort_file
        return self.path / rec.file

    def onnx_files(self, precision: str = "fp32", names: list[str] | None = None) -> list[str]:
        """Relative paths of the graphs (and their external data) in `precision`."""
        out = []
        for name, comp in self.manifest.components.items():
            if (names is None or name in names) and precision in comp.onnx:
                out += comp.onnx[precision].files
        return out

    def plan_file(self, name: str) -> Path:
        plan = self.manifest.components[name].tensorrt
        if plan is None:
            raise UserError(
                f"engine {self.path} holds no TensorRT plan of {name}; build one on this machine: "
                f"{self.rebuild_command(backend='tensorrt', precision=None, device=None)}"
            )
        return self.path / plan.file

    def plan_files(self) -> list[str]:
        return [c.tensorrt.file for c in self.manifest.components.values() if c.tensorrt is not None]

    def aoti_package(self, name: str) -> Path:
        """Path of a component's AOTInductor package (its checksum verified)."""
        package = self.manifest.components[name].aoti
        if package is None:
            raise UserError(
                f"engine {self.path} holds no AOTInductor package of {name}; build one: "
                f"{self.rebuild_command(backend='aoti')}"
            )
        self.verify_files([package.file])
        return self.path / package.file

    def rebuild_command(self, **changes: Any) -> str:
        return build_command(self.manifest.build.args, self.path, **changes)

    def ddim(self) -> DDIM:
        """The DDIM schedule rebuilt from the stored config, checked against the stored coefficients."""
        d = self.manifest.ddim
        ddim = DDIM(d.config)
        stored = torch.tensor(d.alphas_cumprod, dtype=torch.float32)
        if stored.shape != ddim.alphas_cumprod.shape or not torch.equal(stored, ddim.alphas_cumprod):
            raise UserError(
                f"engine {self.path}: the DDIM coefficients computed here differ from the ones stored at build "
                f"time (library change?); rebuild: {self.rebuild_command()}"
            )
        return ddim

    def empty_embed(self) -> torch.Tensor:
        from safetensors.torch import load_file

        self.verify_files([EMPTY_PROMPT_FILE])
        return load_file(str(self.path / EMPTY_PROMPT_FILE))["embedding"]

    # -- checks ---------------------------------------------------------------
    def verify_files(self, rel_paths: list[str] | None = None) -> None:
        """Check presence, size and SHA-256 of the listed files (all files of the manifest if None)."""
        files = self.manifest.files
        todo = list(files) if rel_paths is None else rel_paths
        for rel in todo:
            if rel in self._verified:
                continue
            meta = files.get(rel)
            if meta is None:
                raise UserError(
                    f"engine {self.path}: {rel} is not listed in the manifest; rebuild: {self.rebuild_command()}"
                )
            p = self.path / rel
            if not p.is_file():
                raise UserError(f"engine {self.path}: {rel} is missing; rebuild: {self.rebuild_command()}")
            if p.stat().st_size != meta.bytes or sha256_file(p) != meta.sha256:
                raise UserError(
                    f"engine {self.path}: {rel} was modified after the build (checksum mismatch); "
                    f"rebuild: {self.rebuild_command()}"
                )
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
                f"{self.rebuild_command(checkpoint=str(source))}"
            )

    def check_size(self, processed_size: tuple[int, int]) -> None:
        """Refuse a processed frame size (width, height) outside the resolution profile."""
        w, h = processed_size
        if self.profile.covers((w, h)):
            return
        p = self.profile
        pw, ph = 8 * ceil_div(w, 8), 8 * ceil_div(h, 8)
        new_min = min(p.min_res, pw, ph)
        new_max = max(p.max_res, pw, ph)
        lo, hi = p.latent_range()
        raise UserError(
            f"engine {self.path} serves frames whose sides are {8 * lo}..{8 * hi} px (after padding to a multiple "
            f"of 8); this run's frames are {w}x{h} (padded {pw}x{ph}). Change --res, or rebuild with a wider "
            f"range: {self.rebuild_command(min_res=new_min, max_res=new_max)}"
        )

    def check_snippet_lens(self, lens) -> None:
        for n in sorted(set(lens)):
            self.component("unet_step", n)

    def check_tensorrt_machine(self, device: torch.device | str) -> None:
        """Refuse TensorRT plans built for another GPU or TensorRT version."""
        info = self.tensorrt
        if not info:
            raise UserError(
                f"engine {self.path} holds no TensorRT plans; build them on this machine: "
                f"{self.rebuild_command(backend='tensorrt', precision=None, device=None)}"
            )
        here = cuda_device_info(device)
        version = tensorrt_version()
        problems = []
        if version != info.version:
            problems.append(f"TensorRT {info.version} at build time, {version} here")
        if here["compute_capability"] != info.gpu["compute_capability"]:
            problems.append(
                f"compute capability {info.gpu['compute_capability']} at build time, {here['compute_capability']} here"
            )
        if here["name"] != info.gpu["name"]:
            problems.append(f"GPU {info.gpu['name']!r} at build time, {here['name']!r} here")
        if problems:
            raise UserError(
                f"engine {self.path}: its TensorRT plans do not fit this machine ({'; '.join(problems)}); "
                f"rebuild here: {self.rebuild_command(backend='tensorrt', device=None)} "
                "(or run its ONNX graphs with the onnxruntime backend)"
            )

    def check_aoti_machine(self, device: torch.device | str) -> None:
        """Refuse AOTInductor packages compiled by another torch version, for another device type or GPU
        architecture: compiled code runs only where it was compiled for.
        """
        info = self.aoti
        if not info:
            raise UserError(
                f"engine {self.path} holds no AOTInductor packages; build them: {self.rebuild_command(backend='aoti')}"
            )
        dev = torch.device(device)
        problems = []
        if info.torch_version != torch.__version__:
            problems.append(f"torch {info.torch_version} at build time, {torch.__version__} here")
        if info.device != dev.type:
            problems.append(f"compiled for {info.device}, the run is on {dev.type}")
        elif dev.type == "cuda" and not torch.cuda.is_available():
            problems.append("compiled for cuda, and this machine has no CUDA device")
        elif dev.type == "cuda" and info.gpu:
            here = cuda_device_info(dev)
            if here["compute_capability"] != info.gpu["compute_capability"]:
                problems.append(
                    f"compute capability {info.gpu['compute_capability']} at build time, "
                    f"{here['compute_capability']} here"
                )
        if problems:
            raise UserError(
                f"engine {self.path}: its AOTInductor packages do not fit this run ({'; '.join(problems)}); "
                f"rebuild here: {self.rebuild_command(backend='aoti', device=dev.type)} "
                "(or run its ONNX graphs with the onnxruntime backend)"
            )


def open_engine_folder(
    path: str | os.PathLike, checkpoint=None, processed_size: tuple[int, int] | None = None
) -> EngineFolder:
    """Read and check an engine folder (files are hashed later, by the backend that loads them).

    Args:
        path: The engine folder.
        checkpoint: Optional Models or checkpoint folder that the run also names: its weights
            hash must match the engine's.
        processed_size: Optional processed frame size (width, height) of the run.

    Returns:
        The folder, its manifest parsed.

    Raises:
        UserError: Not an engine, an unfinished build, an unknown format version, an incomplete
            manifest, other weights, or a size outside the profile.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(
            f"engine folder {folder} does not exist (build one with: rd-engine build --checkpoint "
            f"CHECKPOINT -o {folder})"
        )
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise UserError(
            f"{folder} is not an engine folder, or its build did not finish (no {MANIFEST}); "
            f"build it with: rd-engine build --checkpoint CHECKPOINT -o {folder} --force"
        )
    try:
        data = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"engine {folder}: unreadable {MANIFEST} ({e}); rebuild it with rd-engine build") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version not in SUPPORTED_FORMAT_VERSIONS:
        args = data.get("build", {}).get("args", {}) if isinstance(data, dict) else {}
        raise UserError(
            f"engine {folder} has format version {version!r}; this rd-engine reads version "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}. Rebuild it: {build_command(args, folder)}"
        )
    try:
        engine = EngineFolder(folder, Manifest.from_json(data))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(
            f"engine {folder}: incomplete manifest ({type(e).__name__}: {e}); "
            f"rebuild: {build_command(data.get('build', {}).get('args', {}), folder)}"
        ) from None
    if checkpoint is not None:
        engine.check_checkpoint(checkpoint)
    if processed_size is not None:
        engine.check_size(processed_size)
    return engine
