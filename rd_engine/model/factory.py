"""Random-weight checkpoints with the real architecture: a tiny one for tests and the demo, and the
full-size one for speed work (speed does not depend on the weights).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from rd_engine.model.checkpoint import Models, prepare_models, reference_config
from rd_engine.model.ddim import DDIM

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
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True})
    )
    return len(vocab)


def _save_text_encoder(text, folder: Path) -> None:
    # Write the key layout that published SD2 checkpoints use ("text_model." prefix): newer
    # transformers save without it, which older ones (and the reference pipeline) cannot load.
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    text.config.save_pretrained(folder)
    state = {
        k if k.startswith("text_model.") else f"text_model.{k}": v.contiguous() for k, v in text.state_dict().items()
    }
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _write_checkpoint(folder: str | os.PathLike, unet_cfg: dict, vae_cfg: dict, text_cfg: dict, seed: int) -> Path:
    """A seeded random-weight checkpoint of these configs in diffusers layout (tiny tokenizer, the real
    scheduler config and model index).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        vocab_size = _write_tiny_tokenizer(folder / "tokenizer")
        text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, **text_cfg))
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    _save_text_encoder(text, folder / "text_encoder")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(reference_config("scheduler_config.json"), indent=2)
    )
    (folder / "model_index.json").write_text(json.dumps(reference_config("model_index.json"), indent=2))
    return folder


def _sd2_configs() -> tuple[dict, dict]:
    """The full-size UNet and VAE configs (RollingDepth's: SD2 with an 8-channel UNet input)."""
    unet_cfg = {k: v for k, v in reference_config("unet_config.json").items() if not k.startswith("_")}
    vae_cfg = {k: v for k, v in reference_config("vae_config.json").items() if not k.startswith("_")}
    return unet_cfg, vae_cfg


def make_tiny_checkpoint(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write a seeded, few-hundred-kB random-weight checkpoint with the real layout and
    architecture family (8-channel SD UNet with cross-frame-capable transformer
    blocks, 8x-downsampling KL VAE, CLIP text encoder + tokenizer, the real DDIM
    config). Deterministic for a given seed and library version.
    """
    return _write_checkpoint(folder, TINY_UNET, TINY_VAE, TINY_TEXT, seed)


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


def full_size_random(
    seed: int = 0, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> Models:
    """The full-size RollingDepth architecture (SD2 UNet with 8 input channels, SD2 VAE)
    with random weights, for speed work: speed does not depend on the weights.

    The weights are made on `device` (default the CPU: its generator spends most of the build drawing
    the 948 M random weights, about 30 s on a 2-core CPU; a GPU's draws them at once and needs no copy),
    then cast to `dtype`. The values come from that device's generator: the same seed gives other
    weights on another device.
    """
    from rd_engine.model.checkpoint import LoadClock

    clock = LoadClock()
    from diffusers import AutoencoderKL, UNet2DConditionModel

    clock.lap("imports")
    device = torch.device(device) if device is not None else torch.device("cpu")
    unet_cfg, vae_cfg = _sd2_configs()
    clock.lap("config")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_cfg)
        clock.lap("unet init")
        vae = AutoencoderKL(**vae_cfg)
        clock.lap("vae init")
        embed = torch.randn(1, 2, unet_cfg["cross_attention_dim"])
    if dtype is not None:
        unet.to(dtype)
        vae.to(dtype)
    models = Models(
        unet=unet,
        vae=vae,
        ddim=DDIM(reference_config("scheduler_config.json")),
        empty_embed=embed,
        name="full-size-random",
    )
    prepare_models(models)
    models.info["load_seconds"] = clock.seconds
    return models


# The real UNet and VAE structure at a small width, for tests where the structure matters (export, AOTInductor
# profiles): the RollingDepth/SD2 UNet's four down blocks (three with transformers, three downsamplings), two
# layers per block, linear-projection transformers, the mirrored up blocks; the SD2 VAE's four blocks of two
# layers. Only widths, head counts, group-norm groups and the cross-attention width are reduced.
SMALL_UNET_OVERRIDES = dict(
    block_out_channels=[32, 64, 128, 128],
    attention_head_dim=[2, 4, 8, 8],
    norm_num_groups=8,
    cross_attention_dim=32,
)
SMALL_VAE_OVERRIDES = dict(block_out_channels=[16, 32, 64, 64], norm_num_groups=8)


def small_configs() -> tuple[dict, dict]:
    """The UNet and VAE configs of `make_small_checkpoint` (the reference configs with the overrides)."""
    unet_cfg, vae_cfg = _sd2_configs()
    unet_cfg.update(SMALL_UNET_OVERRIDES)
    vae_cfg.update(SMALL_VAE_OVERRIDES)
    return unet_cfg, vae_cfg


def make_small_checkpoint(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write a seeded random-weight checkpoint with the real UNet and VAE structure at a small width
    (a few MB): the tiny checkpoint downsamples once, this one three times, as the real UNet does, so
    what depends on the structure (AOTInductor's smallest size, the skip connections at odd latent sizes)
    is exercised as users meet it.
    """
    unet_cfg, vae_cfg = small_configs()
    text_cfg = dict(TINY_TEXT, hidden_size=32, projection_dim=32, intermediate_size=64, num_hidden_layers=1)
    return _write_checkpoint(folder, unet_cfg, vae_cfg, text_cfg, seed)


def make_random_checkpoint(folder: str | os.PathLike, size: str = "mid", seed: int = 0) -> Path:
    """Write a seeded random-weight checkpoint (diffusers layout) of the RollingDepth architecture
    at a reduced width, for CPU speed work between the tiny model and the full size.

    The UNet is the RollingDepth/SD2 UNet (`unet_config.json`: 8 input channels, four blocks, two
    layers each, linear-projection transformers, cross-attention width 1024) and the VAE the SD2 VAE
    (`vae_config.json`), each with its `block_out_channels` divided by the size's factor ("mid": 2,
    i.e. UNet 160/320/640/640 and VAE 64/128/256/256; "full": 1). The UNet keeps SD2's
    `attention_head_dim` [5, 10, 20, 20], which diffusers reads as the number of heads per block, so
    at "mid" every head is 32 channels wide instead of 64. The text encoder is a one-layer CLIP of
    the UNet's cross-attention width on the tiny tokenizer: it only makes the empty-prompt embedding.
    Scheduler config and model index are the real ones.

    Args:
        folder: Where to write the checkpoint (created; files in it are replaced).
        size: "mid" (half width) or "full" (full width).
        seed: Seed of the random weights.

    Returns:
        The checkpoint folder.

    Raises:
        ValueError: An unknown `size`, or a width that the heads or the group norms do not divide.
    """
    factors = {"mid": 2, "full": 1}
    if size not in factors:
        raise ValueError(f"size must be one of {sorted(factors)}, got {size!r}")
    factor = factors[size]
    unet_cfg, vae_cfg = _sd2_configs()
    unet_cfg["block_out_channels"] = [c // factor for c in unet_cfg["block_out_channels"]]
    vae_cfg["block_out_channels"] = [c // factor for c in vae_cfg["block_out_channels"]]
    groups = unet_cfg["norm_num_groups"]
    for c, heads in zip(unet_cfg["block_out_channels"], unet_cfg["attention_head_dim"]):
        if c % heads or c % groups:
            raise ValueError(f"UNet width {c} is not divisible by {heads} heads and {groups} groups")
    if any(c % vae_cfg["norm_num_groups"] for c in vae_cfg["block_out_channels"]):
        raise ValueError(f"VAE widths {vae_cfg['block_out_channels']} not divisible by {vae_cfg['norm_num_groups']}")
    width = unet_cfg["cross_attention_dim"]
    text_cfg = dict(
        hidden_size=width,
        intermediate_size=256,
        num_hidden_layers=1,
        num_attention_heads=8,
        max_position_embeddings=77,
        projection_dim=width,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return _write_checkpoint(folder, unet_cfg, vae_cfg, text_cfg, seed)
