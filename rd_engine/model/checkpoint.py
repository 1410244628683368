"""Checkpoints: loading a diffusers-layout RollingDepth folder, and building
random-weight ones (a tiny one for tests and the demo, the full-size
architecture for speed work). Nothing here downloads weights unless a hub id
is given and the hub is reachable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from rd_engine.model.attention import install_cross_frame_attention
from rd_engine.model.ddim import DDIM
from rd_engine.errors import UserError

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

    def to(self, device, dtype) -> "Models":
        self.unet.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        return self


def quiet_libraries() -> None:
    """Silence diffusers/transformers chatter (accelerate hints, weight-loading bars): our
    users get one line per problem from us instead."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass


def _reference_config(name: str) -> dict:
    return json.loads(resources.files("rd_engine.configs").joinpath(name).read_text())


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A local checkpoint folder, or a hub id downloaded (or found in the cache) by huggingface_hub."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UserError(f"checkpoint {spec}: not a folder (expected a diffusers-layout checkpoint folder)")
        return path
    text = str(spec)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, allow_patterns=["*.json", "*.txt", "*.safetensors"]))
        except Exception as e:  # offline, unknown repo, auth, ...
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"checkpoint {text!r} is not a local folder and could not be fetched from the Hugging Face Hub "
                f"({reason}); download it elsewhere and pass its folder with --checkpoint"
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
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tok = CLIPTokenizer.from_pretrained(path / "tokenizer")
        enc = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=torch.float32)
    except Exception as e:
        raise UserError(f"checkpoint {path}: cannot load text_encoder/tokenizer ({_first_line(e)})") from None
    ids = tok("", padding="do_not_pad", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return enc(ids.input_ids)[0].float()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def load_checkpoint(spec: str | os.PathLike, empty_embed: torch.Tensor | None = None) -> Models:
    """Load UNet, VAE, DDIM config and the empty-prompt embedding from a checkpoint (fp32, CPU)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    quiet_libraries()
    path = resolve_checkpoint(spec)
    check_checkpoint_folder(path)
    try:
        unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=torch.float32)
        vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=torch.float32)
    except Exception as e:
        raise UserError(f"checkpoint {path}: cannot load weights ({_first_line(e)})") from None
    if unet.config.in_channels != 8 or unet.config.out_channels != 4:
        raise UserError(
            f"checkpoint {path}: UNet has {unet.config.in_channels} input channels, RollingDepth needs 8 "
            "(RGB latent + depth latent)"
        )
    ddim = DDIM.from_file(path / "scheduler" / "scheduler_config.json")
    if empty_embed is None:
        empty_embed = empty_prompt_embedding(path)
    models = Models(unet=unet, vae=vae, ddim=ddim, empty_embed=empty_embed, name=str(spec), source=path)
    _prepare(models)
    return models


def _prepare(models: Models) -> None:
    models.unet.eval().requires_grad_(False)
    models.vae.eval().requires_grad_(False)
    install_cross_frame_attention(models.unet)


# ----------------------------------------------------------------------------
# Random-weight checkpoints
# ----------------------------------------------------------------------------

TINY_UNET = dict(
    sample_size=32,
    in_channels=8,
    out_channels=4,
    layers_per_block=1,
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=16,
    attention_head_dim=(2, 4),
    norm_num_groups=8,
    use_linear_projection=True,
)
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(8, 16, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=64,
)
TINY_TEXT = dict(
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    max_position_embeddings=77,
    projection_dim=16,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)


def _bytes_to_unicode() -> dict[int, str]:
    # The printable-byte alphabet that byte-level BPE tokenizers (GPT-2, CLIP) use.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _write_tiny_tokenizer(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in _bytes_to_unicode().values():
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True}))
    return len(vocab)


def _save_text_encoder(text, folder: Path) -> None:
    # Write the key layout that published SD2 checkpoints use ("text_model." prefix): newer
    # transformers save without it, which older ones (and the reference pipeline) cannot load.
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    text.config.save_pretrained(folder)
    state = {k if k.startswith("text_model.") else f"text_model.{k}": v.contiguous()
             for k, v in text.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def make_tiny_checkpoint(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write a seeded, few-hundred-kB random-weight checkpoint with the real layout and
    architecture family (8-channel SD UNet with cross-frame-capable transformer
    blocks, 8x-downsampling KL VAE, CLIP text encoder + tokenizer, the real DDIM
    config). Deterministic for a given seed and library version.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**TINY_UNET)
        vae = AutoencoderKL(**TINY_VAE)
        vocab_size = _write_tiny_tokenizer(folder / "tokenizer")
        text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, **TINY_TEXT))
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    _save_text_encoder(text, folder / "text_encoder")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(_reference_config("scheduler_config.json"), indent=2))
    (folder / "model_index.json").write_text(json.dumps(_reference_config("model_index.json"), indent=2))
    return folder


def tiny_checkpoint_cached(seed: int = 0) -> Path:
    """The tiny checkpoint in the user cache (built once), e.g. for `rd-engine run --demo`."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rd-engine"
    folder = base / f"tiny-seed{seed}"
    if not (folder / "model_index.json").is_file():
        from rd_engine.io.files import atomic_output

        base.mkdir(parents=True, exist_ok=True)
        with atomic_output(folder, folder=True) as tmp:
            make_tiny_checkpoint(tmp, seed=seed)
    return folder


def full_size_random(seed: int = 0) -> Models:
    """The full-size RollingDepth architecture (SD2 UNet with 8 input channels, SD2 VAE)
    with random weights, for speed work: speed does not depend on the weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet_cfg = {k: v for k, v in _reference_config("unet_config.json").items() if not k.startswith("_")}
    vae_cfg = {k: v for k, v in _reference_config("vae_config.json").items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        embed = torch.randn(1, 2, unet_cfg["cross_attention_dim"])
    models = Models(unet=unet, vae=vae, ddim=DDIM(_reference_config("scheduler_config.json")),
                    empty_embed=embed, name="full-size-random")
    _prepare(models)
    return models
