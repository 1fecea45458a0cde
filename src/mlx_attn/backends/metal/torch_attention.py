"""Attention on the Metal kernels as one differentiable torch operation (torch.autograd.Function).

`attention(kernels, cfg, q, k, v, mask, cu_q, cu_k)` runs the forward kernels through the torch
launcher (torch_launch.py); backward runs the dQ and dK/dV kernels, so torch.autograd sees one
fused operation with a fused backward (no O(Lq x Lk) intermediate on either pass). The mask and
the sequence offsets get no gradient (SPEC); lse does (its cotangent enters delta).
"""
from __future__ import annotations

import torch

from .launches import Config
from .torch_launch import TorchMetalKernels


class _MetalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernels: TorchMetalKernels, cfg: Config, q, k, v, mask, cu_q, cu_k):
        out, lse = kernels.forward(cfg, q, k, v, mask, cu_q, cu_k)
        ctx.kernels, ctx.cfg = kernels, cfg
        ctx.save_for_backward(q, k, v, mask, cu_q, cu_k, out, lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, mask, cu_q, cu_k, out, lse = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = ctx.kernels.backward(ctx.cfg, q, k, v, mask, cu_q, cu_k, out, lse, dout,
                                          dlse)
        return None, None, dq, dk, dv, None, None, None


def attention(kernels: TorchMetalKernels, cfg: Config, q, k, v, mask=None, cu_q=None,
              cu_k=None):
    """(out [Z, Hq, Ltot, Dv], lse [Z, Hq, Ltot] float32) for bhld views q, k, v."""
    if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        return _MetalAttention.apply(kernels, cfg, q, k, v, mask, cu_q, cu_k)
    return kernels.forward(cfg, q, k, v, mask, cu_q, cu_k)
