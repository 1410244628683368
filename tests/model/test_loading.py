"""Model loading: its stages, the empty-prompt embedding cache, the full-size random model's device."""

from __future__ import annotations

import os

import torch

from rd_engine.model.checkpoint import empty_prompt_embedding, load_checkpoint


def test_load_records_its_stages_and_caches_the_embedding(tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = tmp_path / "cache" / "rd-engine" / "embeddings"
    first = load_checkpoint(tiny_ckpt)
    stages = list(first.info["load_seconds"])
    assert stages == ["imports", "config", "unet weights", "vae weights", "text encoder", "prepare"]
    assert all(s >= 0 for s in first.info["load_seconds"].values())
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 1
    second = load_checkpoint(tiny_ckpt)  # read from the cache: the very same values as the text encoder's
    direct = empty_prompt_embedding(tiny_ckpt)
    assert second.empty_embed.dtype == torch.float32 and second.empty_embed.shape == direct.shape
    assert torch.equal(second.empty_embed, direct) and torch.equal(first.empty_embed, direct)
    # a changed text encoder is another cache entry (its file's size and time name the entry)
    weights = tiny_ckpt / "text_encoder" / "model.safetensors"
    st = weights.stat()
    try:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        load_checkpoint(tiny_ckpt)
        assert len(sorted(cache.glob("*.npy"))) == 2
    finally:
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_full_size_random_makes_its_weights_on_the_given_device():
    """On the meta device nothing is drawn, so this checks the plumbing at full size in a second."""
    from rd_engine.model.factory import full_size_random

    models = full_size_random(device="meta")
    params = list(models.unet.parameters()) + list(models.vae.parameters())
    assert {p.device.type for p in params} == {"meta"}
    # the SD2 UNet (865,910,724) with 4 more input channels on its first 3x3 conv (4 * 320 * 9)
    assert sum(p.numel() for p in models.unet.parameters()) == 865_910_724 + 4 * 320 * 9
    assert models.empty_embed.device.type == "meta" and models.empty_embed.shape == (1, 2, 1024)
    assert {"unet init", "vae init"} <= set(models.info["load_seconds"])
