"""MLX glue of the `cpu` backend: calls the MLX primitive of mlx_attn.backends.cpu._mlx_primitive (whose vjp is the
native backward kernel, so mx.grad, mx.vjp and mx.compile work through it)."""
from __future__ import annotations

import mlx.core as mx

from .strided import MASK_KIND, window_of

_MASK_DTYPES = (mx.bool_, mx.float32, mx.float16, mx.bfloat16)


def mlx_forward(call):
    from . import _mlx_primitive  # noqa: PLC0415
    mask = call.mask
    if mask is not None and mask.dtype not in _MASK_DTYPES:
        mask = mask.astype(mx.float32)
    wl, wr = window_of(call)
    cu_q = cu_k = None
    if call.varlen:
        cu_q, cu_k = call.cu_seqlens_q, call.cu_seqlens_k
    out, lse = _mlx_primitive.attention(call.q, call.k, call.v, mask, cu_q, cu_k, float(call.scale),
                                  float(call.softcap or 0.0), int(wl), int(wr), bool(call.causal),
                                  MASK_KIND[call.mask_kind])
    return out, (lse if call.return_lse else None)
