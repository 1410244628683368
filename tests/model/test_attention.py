"""Cross-frame attention equals an explicit joint-attention computation."""

import torch
from diffusers.models.attention_processor import Attention

from rd_engine.model.attention import CrossFrameAttnProcessor


def _explicit_joint(attn: Attention, x: torch.Tensor, frames: int) -> torch.Tensor:
    # concatenate the frames' tokens, attend with explicit softmax(QK^T/sqrt(d))V, split back
    bl, n, c = x.shape
    h = attn.heads
    joint = x.reshape(bl // frames, frames * n, c)
    q, k, v = attn.to_q(joint), attn.to_k(joint), attn.to_v(joint)
    d = q.shape[-1] // h

    def split(t):
        return t.reshape(t.shape[0], t.shape[1], h, d).permute(0, 2, 1, 3)

    q, k, v = split(q), split(k), split(v)
    w = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    o = (w @ v).permute(0, 2, 1, 3).reshape(joint.shape[0], frames * n, h * d)
    return attn.to_out[0](o).reshape(bl, n, -1)


def test_self_attention_is_joint_over_frames():
    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    attn.set_processor(CrossFrameAttnProcessor())
    x = torch.randn(2 * 3, 10, 16)  # 2 snippets of 3 frames, 10 tokens each
    got = attn(x, num_frames=3)
    torch.testing.assert_close(got, _explicit_joint(attn, x, 3), rtol=1e-5, atol=1e-5)
    # and it is NOT per-frame attention
    per_frame = attn(x, num_frames=1)
    assert (got - per_frame).abs().max() > 1e-3


def test_cross_attention_is_per_frame_with_broadcast_embedding():
    torch.manual_seed(1)
    attn = Attention(query_dim=16, cross_attention_dim=12, heads=2, dim_head=8)
    attn.set_processor(CrossFrameAttnProcessor())
    x, emb = torch.randn(6, 10, 16), torch.randn(1, 2, 12)
    got = attn(x, encoder_hidden_states=emb, num_frames=3)
    single = torch.cat([attn(x[i : i + 1], encoder_hidden_states=emb, num_frames=1) for i in range(6)])
    torch.testing.assert_close(got, single, rtol=1e-5, atol=1e-5)


def test_unet_snippets_are_independent(tiny_models):
    """Frames attend within their snippet only: a batch of 2 snippets equals 2 separate calls."""
    unet = tiny_models.unet
    torch.manual_seed(2)
    x = torch.randn(6, 8, 4, 6)
    t = torch.full((6,), 999)
    emb = tiny_models.empty_embed
    with torch.no_grad():
        both = unet(x, t, encoder_hidden_states=emb.expand(6, -1, -1), cross_attention_kwargs={"num_frames": 3}).sample
        one = [
            unet(
                x[i : i + 3],
                t[:3],
                encoder_hidden_states=emb.expand(3, -1, -1),
                cross_attention_kwargs={"num_frames": 3},
            ).sample
            for i in (0, 3)
        ]
    torch.testing.assert_close(both, torch.cat(one), rtol=1e-5, atol=1e-5)
