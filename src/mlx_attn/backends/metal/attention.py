"""Attention on the Metal kernels as one differentiable MLX function.

`attention(kernels, cfg, q, k, v, mask, cu_q, cu_k)` runs the forward kernels; the backward
kernels are attached with `mx.custom_function`, so `mx.grad`, `mx.vjp` and `mx.compile` see a
single fused operation with a fused backward (no O(Lq x Lk) intermediate on either pass).
"""
from __future__ import annotations

import functools

import mlx.core as mx

from .kernels import Config, MetalKernels


@functools.lru_cache(maxsize=512)
def _function(kernels: MetalKernels, cfg: Config):
    """The custom function for one kernel set and one static configuration."""

    @mx.custom_function
    def attn(q, k, v, mask, cu_q, cu_k):
        out, lse = kernels.forward(cfg, q, k, v, _opt(mask, cfg), _opt_cu(cu_q, cfg),
                                   _opt_cu(cu_k, cfg))
        return out, lse

    @attn.vjp
    def attn_vjp(primals, cotangents, outputs):
        q, k, v, mask, cu_q, cu_k = primals
        dout, dlse = cotangents
        out, lse = outputs
        dq, dk, dv = kernels.backward(cfg, q, k, v, _opt(mask, cfg), _opt_cu(cu_q, cfg),
                                      _opt_cu(cu_k, cfg), out, lse, dout, dlse)
        # masks and sequence offsets get no gradient (SPEC)
        return dq, dk, dv, mx.zeros_like(mask), mx.zeros_like(cu_q), mx.zeros_like(cu_k)

    return attn


def _opt(mask, cfg: Config):
    return mask if cfg.mask_kind else None


def _opt_cu(cu, cfg: Config):
    return cu if cfg.varlen else None


def attention(kernels: MetalKernels, cfg: Config, q, k, v, mask=None, cu_q=None, cu_k=None):
    """(out [Z, Hq, Ltot, Dv], lse [Z, Hq, Ltot] float32) for bhld views q, k, v."""
    # custom_function arguments must be arrays: absent ones are small placeholders
    if mask is None:
        mask = mx.zeros((1,), dtype=mx.bool_)
    if cu_q is None:
        cu_q = cu_k = mx.zeros((1,), dtype=mx.int32)
    out, lse = _function(kernels, cfg)(q, k, v, mask, cu_q, cu_k)
    return out, lse
