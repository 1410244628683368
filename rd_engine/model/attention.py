"""Cross-frame self-attention as a diffusers attention processor.

RollingDepth's one change to Stable Diffusion's UNet: in every transformer
block's self-attention the tokens of the L frames of a snippet attend jointly,
`(b*L, hw, c) -> (b, L*hw, c)` before attention and back after. Installing
this processor on the stock `UNet2DConditionModel` is all it takes; the number
of frames arrives through `cross_attention_kwargs={"num_frames": L}`.
Cross-attention (to the text embedding) stays per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class CrossFrameAttnProcessor:
    """Scaled-dot-product attention whose self-attention spans all frames of a snippet."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise NotImplementedError("attention masks are not used by RollingDepth")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b0, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(b0, channel, height * width).transpose(1, 2)

        self_attn = encoder_hidden_states is None
        frames_batch, tokens, dim = hidden_states.shape
        if self_attn and num_frames > 1:
            # joint attention over the snippet's frames: (b*L, hw, c) -> (b, L*hw, c)
            hidden_states = hidden_states.reshape(frames_batch // num_frames, num_frames * tokens, dim)
        elif not self_attn and encoder_hidden_states.shape[0] != frames_batch:
            encoder_hidden_states = encoder_hidden_states.expand(frames_batch, -1, -1)
        batch = hidden_states.shape[0]

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        hidden_states = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)

        if self_attn and num_frames > 1:
            hidden_states = hidden_states.reshape(frames_batch, tokens, -1)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b0, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def install_cross_frame_attention(unet) -> None:
    """Route every attention layer of a diffusers UNet through `CrossFrameAttnProcessor`."""
    unet.set_attn_processor(CrossFrameAttnProcessor())
