"""The FLUX.1 transformer in MLX, attention by mlx_attn, loading diffusers-format weights.

Joint ("double") blocks attend over text+image tokens with separate weights per stream; single
blocks run one stream over the concatenation. At full size: 19 joint + 38 single blocks,
24 heads x 128, hidden 3072; a 1024x1024 image is 4096 image tokens (+512 text tokens for dev /
256 for schnell). Parameter names are diffusers' FluxTransformer2DModel names, so the
`transformer/` folder of a FLUX.1 checkpoint (config.json + *.safetensors) loads as it is.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

import mlx_attn


def flash_attention(q, k, v):
    """[B, L, H, D] in and out: FLUX's layout is mlx_attn's "blhd"."""
    return mlx_attn.flash_attention(q, k, v, layout="blhd")


def native_attention(q, k, v):
    """MLX's own fused attention ([B, H, L, D]), for comparison."""
    t = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731
    return t(mx.fast.scaled_dot_product_attention(t(q), t(k), t(v), scale=q.shape[-1] ** -0.5))


def timestep_embedding(t, dim=256, max_period=10000.0):
    """Sinusoidal embedding, cos half first (diffusers' flip_sin_to_cos=True, shift 0).

    Computed on the host: the angles reach ~1e3 rad (t * 1000), where a float32 sin/cos with a
    short range reduction loses ~1e-4; the angles themselves are formed in float32 as diffusers
    forms them, and only sin/cos run in float64.
    """
    half = dim // 2
    exponent = (np.float32(-math.log(max_period)) * np.arange(half, dtype=np.float32)
                / np.float32(half)).astype(np.float32)
    # float32 frequencies, rounded from float64 exp: at t * 1000 one ulp here moves the angle by
    # ~1e-4, so they must be the float32 values diffusers uses, not a cruder float32 exp
    freqs = np.exp(exponent.astype(np.float64)).astype(np.float32)
    args = (np.asarray(t.astype(mx.float32))[:, None] * freqs[None]).astype(np.float64)
    return mx.array(np.concatenate([np.cos(args), np.sin(args)], axis=-1), dtype=mx.float32)


def rope_tables(ids: np.ndarray, axes_dim, theta=10000.0):
    """cos, sin [L, D] for 3-axis position ids, each frequency repeated for its (re, im) pair;
    computed in float64 on the host as diffusers does, used in float32."""
    cos, sin = [], []
    for axis, dim in enumerate(axes_dim):
        freqs = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
        angles = np.outer(ids[:, axis].astype(np.float64), freqs)
        cos.append(np.repeat(np.cos(angles), 2, axis=1))
        sin.append(np.repeat(np.sin(angles), 2, axis=1))
    return (mx.array(np.concatenate(cos, 1), dtype=mx.float32),
            mx.array(np.concatenate(sin, 1), dtype=mx.float32))


def apply_rope(x, rope):
    """x [B, L, H, D]; rotates each (even, odd) pair of the head dim."""
    cos, sin = (t[None, :, None, :] for t in rope)
    pairs = x.astype(mx.float32).reshape(*x.shape[:-1], -1, 2)
    rotated = mx.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)
    return (x.astype(mx.float32) * cos + rotated * sin).astype(x.dtype)


class MLPEmbedder(nn.Module):
    def __init__(self, dim_in, dim):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(dim_in, dim), nn.Linear(dim, dim)

    def __call__(self, x):
        return self.linear_2(nn.silu(self.linear_1(x)))


class TimeTextEmbed(nn.Module):
    def __init__(self, dim, pooled_dim, guidance):
        super().__init__()
        self.timestep_embedder = MLPEmbedder(256, dim)
        self.text_embedder = MLPEmbedder(pooled_dim, dim)
        if guidance:
            self.guidance_embedder = MLPEmbedder(256, dim)

    def __call__(self, timestep, pooled, guidance=None):
        emb = self.timestep_embedder(timestep_embedding(timestep).astype(pooled.dtype))
        if "guidance_embedder" in self:
            emb = emb + self.guidance_embedder(timestep_embedding(guidance).astype(pooled.dtype))
        return emb + self.text_embedder(pooled)


class AdaNorm(nn.Module):
    """LayerNorm without affine, modulated by chunks of linear(silu(temb))."""

    def __init__(self, dim, chunks):
        super().__init__()
        self.linear = nn.Linear(dim, chunks * dim)
        self.chunks = chunks

    def __call__(self, temb):
        return mx.split(self.linear(nn.silu(temb)), self.chunks, axis=-1)


def modulate(x, shift, scale, eps=1e-6):
    return mx.fast.layer_norm(x, None, None, eps) * (1 + scale[:, None]) + shift[:, None]


class FeedForward(nn.Module):
    class Proj(nn.Module):
        def __init__(self, dim, hidden):
            super().__init__()
            self.proj = nn.Linear(dim, hidden)

    def __init__(self, dim):
        super().__init__()
        self.net = [FeedForward.Proj(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim)]

    def __call__(self, x):
        return self.net[2](nn.gelu_approx(self.net[0].proj(x)))


class Attention(nn.Module):
    def __init__(self, dim, heads, head_dim, joint: bool, eps=1e-6):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, inner) for _ in range(3))
        self.norm_q, self.norm_k = nn.RMSNorm(head_dim, eps=eps), nn.RMSNorm(head_dim, eps=eps)
        if joint:
            self.to_out = [nn.Linear(inner, dim)]
            self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, inner)
                                                                 for _ in range(3))
            self.norm_added_q = nn.RMSNorm(head_dim, eps=eps)
            self.norm_added_k = nn.RMSNorm(head_dim, eps=eps)
            self.to_add_out = nn.Linear(inner, dim)

    def _qkv(self, x, q, k, v, nq, nk):
        split = lambda t: t.reshape(*x.shape[:2], self.heads, self.head_dim)  # noqa: E731
        return nq(split(q(x))), nk(split(k(x))), split(v(x))

    def __call__(self, x, rope, attention, context=None):
        q, k, v = self._qkv(x, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        if context is not None:   # text tokens go first in the joint sequence
            cq, ck, cv = self._qkv(context, self.add_q_proj, self.add_k_proj, self.add_v_proj,
                                   self.norm_added_q, self.norm_added_k)
            q, k, v = (mx.concatenate(p, axis=1) for p in ((cq, q), (ck, k), (cv, v)))
        out = attention(apply_rope(q, rope), apply_rope(k, rope), v)
        out = out.reshape(*out.shape[:2], -1)
        if context is None:
            return out
        T = context.shape[1]
        return self.to_out[0](out[:, T:]), self.to_add_out(out[:, :T])


class JointBlock(nn.Module):
    def __init__(self, dim, heads, head_dim):
        super().__init__()
        self.norm1, self.norm1_context = AdaNorm(dim, 6), AdaNorm(dim, 6)
        self.attn = Attention(dim, heads, head_dim, joint=True)
        self.ff, self.ff_context = FeedForward(dim), FeedForward(dim)

    def __call__(self, x, ctx, temb, rope, attention):
        sh, sc, g, sh2, sc2, g2 = self.norm1(temb)
        csh, csc, cg, csh2, csc2, cg2 = self.norm1_context(temb)
        a, ca = self.attn(modulate(x, sh, sc), rope, attention, modulate(ctx, csh, csc))
        x = x + g[:, None] * a
        x = x + g2[:, None] * self.ff(modulate(x, sh2, sc2))
        ctx = ctx + cg[:, None] * ca
        ctx = ctx + cg2[:, None] * self.ff_context(modulate(ctx, csh2, csc2))
        if x.dtype == mx.float16:
            x, ctx = mx.clip(x, -65504, 65504), mx.clip(ctx, -65504, 65504)
        return ctx, x


class SingleBlock(nn.Module):
    def __init__(self, dim, heads, head_dim, mlp_ratio=4.0):
        super().__init__()
        self.norm = AdaNorm(dim, 3)
        self.proj_mlp = nn.Linear(dim, int(dim * mlp_ratio))
        self.proj_out = nn.Linear(dim + int(dim * mlp_ratio), dim)
        self.attn = Attention(dim, heads, head_dim, joint=False)

    def __call__(self, x, ctx, temb, rope, attention):
        T = ctx.shape[1]
        h = mx.concatenate([ctx, x], axis=1)
        shift, scale, gate = self.norm(temb)
        n = modulate(h, shift, scale)
        both = mx.concatenate([self.attn(n, rope, attention),
                               nn.gelu_approx(self.proj_mlp(n))], axis=-1)
        h = h + gate[:, None] * self.proj_out(both)
        if h.dtype == mx.float16:
            h = mx.clip(h, -65504, 65504)
        return h[:, :T], h[:, T:]


class FluxTransformer(nn.Module):
    def __init__(self, cfg: dict, attention=flash_attention):
        super().__init__()
        self.cfg, self.attention = cfg, attention
        heads, hd = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * hd
        out_ch = (cfg.get("out_channels") or cfg["in_channels"]) * cfg.get("patch_size", 1) ** 2
        self.time_text_embed = TimeTextEmbed(dim, cfg["pooled_projection_dim"],
                                             cfg.get("guidance_embeds", False))
        self.context_embedder = nn.Linear(cfg["joint_attention_dim"], dim)
        self.x_embedder = nn.Linear(cfg["in_channels"], dim)
        self.transformer_blocks = [JointBlock(dim, heads, hd) for _ in range(cfg["num_layers"])]
        self.single_transformer_blocks = [SingleBlock(dim, heads, hd)
                                          for _ in range(cfg["num_single_layers"])]
        self.norm_out = AdaNorm(dim, 2)
        self.proj_out = nn.Linear(dim, out_ch)

    def __call__(self, x, context, pooled, timestep, img_ids, txt_ids, guidance=None,
                 rope=None):
        """x [B, L_img, C], context [B, L_txt, joint_dim], pooled [B, pooled_dim], timestep
        [B] in [0, 1], ids [L, 3] numpy; returns the velocity [B, L_img, C_out]."""
        dtype = x.dtype
        x = self.x_embedder(x)
        temb = self.time_text_embed(timestep.astype(dtype) * 1000, pooled,
                                    None if guidance is None else guidance.astype(dtype) * 1000)
        ctx = self.context_embedder(context)
        if rope is None:
            rope = rope_tables(np.concatenate([np.asarray(txt_ids), np.asarray(img_ids)]),
                               self.cfg["axes_dims_rope"])
        for block in self.transformer_blocks + self.single_transformer_blocks:
            ctx, x = block(x, ctx, temb, rope, self.attention)
        scale, shift = self.norm_out(temb)             # note: scale first here
        return self.proj_out(modulate(x, shift, scale))


def load_transformer(folder, dtype=mx.bfloat16, attention=flash_attention):
    """A FLUX transformer from a diffusers `transformer/` folder (config.json + safetensors)."""
    folder = Path(folder)
    cfg = json.loads((folder / "config.json").read_text())
    if cfg.get("_class_name") not in (None, "FluxTransformer2DModel"):
        raise ValueError(f"{folder} holds a {cfg['_class_name']}, not a FluxTransformer2DModel")
    model = FluxTransformer(cfg, attention)
    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        weights.update(mx.load(str(file)))
    if not weights:
        raise FileNotFoundError(f"no *.safetensors in {folder}")
    model.load_weights(list(weights.items()))   # strict: names and shapes must all match
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model
