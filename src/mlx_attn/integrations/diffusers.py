"""A diffusers attention processor for FLUX that computes attention with mlx_attn.

    from mlx_attn.integrations.diffusers import FluxAttnProcessor, use_mlx_attn
    use_mlx_attn(pipe.transformer)       # = transformer.set_attn_processor(FluxAttnProcessor())

It does what diffusers' own FluxAttnProcessor does around the attention call — projections,
per-head RMSNorm of q/k, text tokens placed before image tokens (joint attention), RoPE on the
joint sequence — using only the attention module's public layers and diffusers' public
`apply_rotary_emb`, then calls `mlx_attn.flash_attention` on [B, L, H, D] tensors
(layout="blhd", FLUX's own layout), so nothing is transposed or copied for the call.
"""
from __future__ import annotations

from .. import api


class FluxAttnProcessor:
    """Attention processor for diffusers' FluxAttention (joint and single blocks)."""

    def __init__(self, backend: str = "auto"):
        self.backend = backend

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb

        query, key, value = _projections(attn, hidden_states, fused="to_qkv")
        query, key, value = (_heads(x, attn.head_dim) for x in (query, key, value))
        query, key = attn.norm_q(query), attn.norm_k(key)

        joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
        if joint:
            eq, ek, ev = _projections(attn, encoder_hidden_states, fused="to_added_qkv")
            eq, ek, ev = (_heads(x, attn.head_dim) for x in (eq, ek, ev))
            eq, ek = attn.norm_added_q(eq), attn.norm_added_k(ek)
            import torch
            query, key, value = (torch.cat(pair, dim=1)
                                 for pair in ((eq, query), (ek, key), (ev, value)))

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        out = api.flash_attention(query, key, value, mask=attention_mask, layout="blhd",
                                  backend=self.backend)
        out = out.flatten(2, 3).to(query.dtype)

        if encoder_hidden_states is None:
            return out
        text_len = encoder_hidden_states.shape[1]
        encoder_out, out = out[:, :text_len], out[:, text_len:]
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        encoder_out = attn.to_add_out(encoder_out.contiguous())
        return out, encoder_out


def _projections(attn, x, fused: str):
    """q, k, v from the separate projections, or from the fused one after fuse_qkv_projections."""
    if getattr(attn, "fused_projections", False) and hasattr(attn, fused):
        return getattr(attn, fused)(x).chunk(3, dim=-1)
    if fused == "to_added_qkv":
        return attn.add_q_proj(x), attn.add_k_proj(x), attn.add_v_proj(x)
    return attn.to_q(x), attn.to_k(x), attn.to_v(x)


def _heads(x, head_dim: int):
    return x.unflatten(-1, (-1, head_dim))       # [B, L, H * D] -> [B, L, H, D]


def use_mlx_attn(transformer, backend: str = "auto"):
    """Install FluxAttnProcessor on every attention layer of a diffusers FLUX transformer."""
    transformer.set_attn_processor(FluxAttnProcessor(backend))
    return transformer
