"""Checkpoints: loading a diffusers-layout RollingDepth folder into `Models`.

Nothing here downloads weights unless a hub id is given and the hub is
reachable. Random-weight checkpoints are built by `rd_engine.model.factory`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rd_engine.errors import UserError

if TYPE_CHECKING:  # torch loads with the weights: the folder checks run before it (`check_checkpoint`)
    import torch

    from rd_engine.model.ddim import DDIM

log = logging.getLogger("rd_engine")

LATENT_SCALE = 0.18215  # SD VAE latent scale factor used by the reference for RGB and depth
SUBFOLDERS = ("unet", "vae", "scheduler")
DEFAULT_CHECKPOINT = "prs-eth/rollingdepth-v1-0"


@dataclass
class Models:
    """What a backend needs from a checkpoint. CLIP is gone once the embedding is computed."""

    unet: Any
    vae: Any
    ddim: DDIM
    empty_embed: torch.Tensor  # [1, tokens, dim] fp32
    name: str
    source: Path | None = None
    info: dict = field(default_factory=dict)

    def to(self, device, dtype) -> Models:
        t0 = time.perf_counter()
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        log.debug("load: device transfer (%s, %s) %.2f s", device, dtype, time.perf_counter() - t0)
        return self


def quiet_libraries() -> None:
    """Silence diffusers/transformers chatter (accelerate hints, weight-loading bars): our
    users get one line per problem from us instead.
    """
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass


def reference_config(name: str) -> dict:
    return json.loads(resources.files("rd_engine.configs").joinpath(name).read_text())


def _is_hub_id(spec: str | os.PathLike) -> bool:
    text = str(spec)
    return not Path(text).expanduser().exists() and text.count("/") == 1 and not text.startswith((".", "/", "~"))


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A local checkpoint folder, or a hub id downloaded (or found in the cache) by huggingface_hub."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"checkpoint {spec}: not a folder (expected a diffusers-layout checkpoint folder)")
        return path
    text = str(spec)
    if _is_hub_id(text):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
        except Exception as e:  # offline, unknown repo, auth, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"checkpoint {text!r} is not a local folder and could not be fetched from the Hugging Face Hub "
                f"({reason}); download it elsewhere and give its folder as the checkpoint"
            ) from None
    raise UserError(f"checkpoint folder {spec} does not exist")


def check_checkpoint_folder(path: Path) -> None:
    """Fail early, with one line, on a folder that is not a RollingDepth checkpoint."""
    index = path / "model_index.json"
    if not index.is_file():
        raise UserError(f"checkpoint {path}: no model_index.json (not a diffusers-layout checkpoint folder)")
    try:
        json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"checkpoint {path}: model_index.json is not valid JSON ({e})") from None
    for sub in SUBFOLDERS:
        if not (path / sub / ("scheduler_config.json" if sub == "scheduler" else "config.json")).is_file():
            raise UserError(f"checkpoint {path}: missing {sub}/ (or its config)")


def check_checkpoint(spec: str | os.PathLike) -> None:
    """What `load_checkpoint` checks first, without torch and without a download: a local folder exists
    and has the diffusers layout (a hub id is checked when it is fetched, at load time).

    Raises:
        UserError: One line naming the problem.
    """
    if not _is_hub_id(spec):
        check_checkpoint_folder(resolve_checkpoint(spec))


def weights_hash(path: Path) -> str:
    """SHA-256 over the UNet and VAE weight files (names, sizes and bytes)."""
    h = hashlib.sha256()
    for sub in ("unet", "vae"):
        for f in sorted((path / sub).glob("*.safetensors")) + sorted((path / sub).glob("*.bin")):
            h.update(f"{sub}/{f.name}:{f.stat().st_size}".encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    h.update(chunk)
    return h.hexdigest()


def empty_prompt_embedding(path: Path) -> torch.Tensor:
    """CLIP embedding of the empty prompt (BOS/EOS only, no padding), fp32 [1, tokens, dim]."""
    import torch
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(path / "tokenizer")
        enc = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=torch.float32)
    except Exception as e:
        raise UserError(f"checkpoint {path}: cannot load text_encoder/tokenizer ({_first_line(e)})") from None
    ids = tok("", padding="do_not_pad", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return enc(ids.input_ids)[0].float()


EMBEDDING_CACHE_FILES = 32  # cached empty-prompt embeddings kept (the newest), a few kB each


def _embedding_cache_file(path: Path) -> Path:
    """Where the empty-prompt embedding of a checkpoint is cached: named by its text encoder's and
    tokenizer's files (resolved path, size, modification time) and the library versions.
    """
    from importlib.metadata import version

    key = hashlib.sha256(f"{version('torch')} {version('transformers')}".encode())
    for sub in ("text_encoder", "tokenizer"):
        for f in sorted((path / sub).glob("*")):
            st = f.stat()
            key.update(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rd-engine" / "embeddings"
    return base / f"{key.hexdigest()[:32]}.npy"


def cached_empty_prompt_embedding(path: Path) -> torch.Tensor:
    """`empty_prompt_embedding`, computed once per checkpoint and then read from the user cache: it
    spares each later load the text encoder (1.4 GB for the full-size model) and transformers' CLIP.
    """
    import numpy as np
    import torch

    file = _embedding_cache_file(path)
    try:
        return torch.from_numpy(np.load(file, allow_pickle=False))
    except (OSError, ValueError):
        pass
    embed = empty_prompt_embedding(path)
    try:
        from rd_engine.io.files import save_npy_atomic

        file.parent.mkdir(parents=True, exist_ok=True)
        save_npy_atomic(file, embed.numpy())
        for old in sorted(file.parent.glob("*.npy"), key=lambda f: f.stat().st_mtime)[:-EMBEDDING_CACHE_FILES]:
            old.unlink(missing_ok=True)
    except OSError as e:  # a read-only home: the embedding is computed again next time
        log.debug("embedding cache %s not written (%s)", file, e)
    return embed


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class LoadClock:
    """Seconds per stage of loading a model, in order; `log.debug` shows them as one line."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now
        log.debug("load: %s %.2f s", stage, self.seconds[stage])


def load_checkpoint(spec: str | os.PathLike, empty_embed: torch.Tensor | None = None) -> Models:
    """Load UNet, VAE, DDIM config and the empty-prompt embedding from a checkpoint (fp32, CPU).

    The seconds of each stage (imports, config, unet and vae weights, text encoder) are in
    ``info["load_seconds"]``, and in the debug log (`--verbose`).
    """
    clock = LoadClock()
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from rd_engine.model.ddim import DDIM

    quiet_libraries()
    clock.lap("imports")
    path = resolve_checkpoint(spec)
    check_checkpoint_folder(path)
    clock.lap("config")
    try:
        unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=torch.float32)
        clock.lap("unet weights")
        vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=torch.float32)
        clock.lap("vae weights")
    except Exception as e:
        raise UserError(f"checkpoint {path}: cannot load weights ({_first_line(e)})") from None
    if unet.config.in_channels != 8 or unet.config.out_channels != 4:
        raise UserError(
            f"checkpoint {path}: UNet has {unet.config.in_channels} input channels, RollingDepth needs 8 "
            "(RGB latent + depth latent)"
        )
    ddim = DDIM.from_file(path / "scheduler" / "scheduler_config.json")
    if empty_embed is None:
        empty_embed = cached_empty_prompt_embedding(path)
        clock.lap("text encoder")
    models = Models(unet=unet, vae=vae, ddim=ddim, empty_embed=empty_embed, name=str(spec), source=path)
    prepare_models(models)
    clock.lap("prepare")
    models.info["load_seconds"] = clock.seconds
    return models


def prepare_models(models: Models) -> None:
    from rd_engine.model.attention import install_cross_frame_attention

    models.unet.eval().requires_grad_(False)
    models.vae.eval().requires_grad_(False)
    install_cross_frame_attention(models.unet)
