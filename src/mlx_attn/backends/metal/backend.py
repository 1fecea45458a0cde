"""The `metal` backend: our tiled flash-attention Metal kernels, as MLX custom kernels.

`MetalBackend(kernel_factory=...)` takes the factory that builds the kernels; by default it is
`mx.fast.metal_kernel` and the backend needs a Metal GPU as MLX's default device. Tests pass the
MSL emulator's factory instead, which runs the same kernels on the CPU (see tests/test_metal_*).
"""
from __future__ import annotations

import functools

from ...call import AttentionCall
from .blocks import HEAD_DIMS  # the head dims with a tuned block-size entry (no MLX import)
from ..base import Backend


class MetalBackend(Backend):
    name = "metal"
    priority = 10
    array_kinds = frozenset({"mlx"})
    dtypes = frozenset({"float16", "bfloat16", "float32"})
    head_dims = HEAD_DIMS
    features = frozenset({"causal", "mask", "window", "softcap", "lse", "varlen", "backward",
                          "gqa", "dv"})
    summary = "MLX arrays on an Apple GPU (Metal custom kernels, fused forward and backward)"

    def __init__(self, kernel_factory=None):
        #: None: mx.fast.metal_kernel on the default (GPU) device; else an injected factory.
        self.kernel_factory = kernel_factory

    @functools.cached_property
    def kernels(self):
        from .kernels import MetalKernels
        return MetalKernels(self.kernel_factory)

    def _availability_reasons(self) -> list[str]:
        if self.kernel_factory is not None:
            return []
        try:
            import mlx.core as mx
        except ImportError:
            return ["mlx is not installed"]
        try:
            metal = mx.metal.is_available()
        except Exception as error:  # pragma: no cover - defensive: older MLX builds
            return [f"cannot query Metal: {error}"]
        if not metal:
            return ["no Metal GPU (mx.metal.is_available() is False: not an Apple-silicon Mac "
                    "or MLX without Metal)"]
        return []

    def extra_reasons(self, call: AttentionCall) -> list[str]:
        if self.kernel_factory is None and call.device != "gpu":
            return [f"MLX's default device is {call.device}, not the GPU "
                    "(mx.set_default_device(mx.gpu))"]
        return []

    def forward(self, call: AttentionCall):
        import mlx.core as mx
        from .attention import attention
        from .kernels import Config

        B, Hq, Lq, Lk = call.B, call.Hq, call.Lq, call.Lk
        if 0 in (B, Hq, Lq, Lk):
            return _empty(mx, call, (B, Hq, Lq, call.Dv), (B, Hq, Lq))
        mask = call.mask
        if mask is not None and mask.dtype == mx.float64:  # Metal has no double
            mask = mask.astype(mx.float32)
        cfg = Config(call.scale, call.softcap or 0.0, *call.window_sides, mask_kind=call.mask_code)
        out, lse = attention(self.kernels, cfg, call.q, call.k, call.v, mask)
        return out, (lse if call.return_lse else None)

    def forward_varlen(self, call: AttentionCall):
        import mlx.core as mx
        from .attention import attention
        from .kernels import Config

        if 0 in (call.B, call.Hq, call.Lq, call.Lk):
            return _empty(mx, call, (call.Lq, call.Hq, call.Dv), (call.Hq, call.Lq))
        cfg = Config(call.scale, call.softcap or 0.0, *call.window_sides,
                     mask_kind=0, varlen=True, nseq=call.B, max_q=call.max_seqlen_q,
                     max_k=call.max_seqlen_k)
        # packed [total, H, D] -> a bhld view [1, H, total, D]; the kernels add cu offsets
        q, k, v = (mx.swapaxes(x[None], 1, 2) for x in (call.q, call.k, call.v))
        out, lse = attention(self.kernels, cfg, q, k, v, None, call.cu_seqlens_q,
                             call.cu_seqlens_k)
        out = mx.swapaxes(out[0], 0, 1)
        return out, (lse[0] if call.return_lse else None)


def _empty(mx, call, out_shape, lse_shape):
    dtype = getattr(mx, call.dtype)
    out = mx.zeros(out_shape, dtype=dtype)
    lse = mx.full(lse_shape, float("-inf"), dtype=mx.float32)
    return out, (lse if call.return_lse else None)
