"""Attention on the CUDA kernels as one differentiable MLX function (MLX arrays on an NVIDIA GPU,
`mlx[cuda]`).

`attention(call)` runs the forward launches of mlx_launch.py; the backward launches are attached
with `mx.custom_function`, so `mx.grad` / `mx.vjp` see one fused operation with a fused backward.
Every input is passed with ensure_row_contiguous, so strides are those of the row-major bhld
shapes (a mask keeps its own shape, with stride 0 on its size-1 dims: broadcast in the kernel).
Deterministic backward (no float atomics): MLX_ATTN_CUDA_DETERMINISTIC=1.
"""
from __future__ import annotations

import functools
import math

import mlx.core as mx

from ... import config
from ...call import AttentionCall
from . import mlx_launch
from .extension import extension


def _row_major(shape) -> list:
    strides, n = [], 1
    for size in reversed(shape):
        strides.append(n)
        n *= int(size)
    return strides[::-1]


def _strides3(shape) -> tuple:
    """(batch, head, row) strides of a row-major rank-4 array, 0 on size-1 dims (the bridge's
    stride_or_0: a size-1 dim is never stepped)."""
    st = _row_major(shape)
    return tuple(0 if int(n) == 1 else s for n, s in zip(shape[:3], st[:3]))


def mask_dtype(mask) -> str:
    return str(mask.dtype).split(".")[-1].replace("bool_", "bool")


def problem(call: AttentionCall, mask, dlse: bool = False) -> dict:
    """The entries' scalars (mlx_launch.FWD_SCALARS / BWD_SCALARS) for `call`'s bhld arrays."""
    B, Hq, Hkv, Lq, Lk, D, Dv = call.B, call.Hq, call.Hkv, call.Lq, call.Lk, call.D, call.Dv
    left, right = call.window if call.window is not None else (-1, -1)
    s = dict(b=B, hq=Hq, hkv=Hkv, lq=Lq, lk=Lk, d=D, d_v=Dv, causal=int(call.causal),
             window_left=min(int(left), mlx_launch.INT32_MAX),
             window_right=min(int(right), mlx_launch.INT32_MAX), num_splits=1,
             scale=float(call.scale), scale_log2=float(call.scale) * math.log2(math.e),
             softcap=float(call.softcap or 0.0), has_dlse=int(dlse),
             deterministic=int(config.cuda_deterministic()))
    q_shape, k_shape, v_shape, o_shape = (B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv), (B, Hq, Lq, Dv)
    for prefix, shape in (("q", q_shape), ("k", k_shape), ("v", v_shape), ("o", o_shape),
                          ("do", o_shape), ("dq", q_shape), ("dk", k_shape), ("dv", v_shape)):
        s[f"{prefix}_sb"], s[f"{prefix}_sh"], s[f"{prefix}_sl"] = _strides3(shape)
    if mask is None:
        s.update(mask_type=0, m_sb=0, m_sh=0, m_sq=0, m_sk=0)
    else:
        st = [0 if int(n) == 1 else x for n, x in zip(mask.shape, _row_major(mask.shape))]
        s.update(mask_type=mlx_launch.MASK_TYPES[mask_dtype(mask)], m_sb=st[0], m_sh=st[1],
                 m_sq=st[2], m_sk=st[3])
    return s


def size_reasons(call: AttentionCall) -> list:
    """Why MLX's int32 scalars cannot describe this problem ([] when they can)."""
    numels = [call.B * call.Hq * call.Lq * max(call.D, call.Dv), call.B * call.Hkv * call.Lk * max(call.D, call.Dv)]
    if call.mask is not None:
        numels.append(math.prod(int(n) for n in call.mask.shape))
    if max(numels) > mlx_launch.INT32_MAX:
        return ["an array has more than 2^31 - 1 elements: MLX passes the kernels' strides as int32"]
    return []


def _plan(s: dict) -> tuple:
    """(config, num_splits) from the bridge's planner, as the torch path plans (device 0: MLX's
    CUDA device)."""
    return tuple(extension().plan(s["b"], s["hq"], s["hkv"], s["lq"], s["lk"], s["d"], s["d_v"],
                                  bool(s["causal"]), s["window_left"], s["window_right"], 0))


def forward(s: dict, dtype: str, q, k, v, mask):
    """(out [B, Hq, Lq, Dv], lse float32 [B, Hq, Lq]) from the forward launches."""
    bucket = extension().head_dim_bucket(s["d"], s["d_v"])
    cfg, splits = _plan(s)
    s = dict(s, num_splits=splits)
    launches = mlx_launch.forward_launches(s, mlx_launch.launch_dims(bucket), cfg, splits, dtype,
                                           bucket)
    arrays = mlx_launch.run_all(launches, dict(q=q, k=k, v=v, mask=mask), s, dtype, bucket)
    return arrays["out"], arrays["lse"]


def backward(s: dict, dtype: str, q, k, v, mask, lse, dout, dlse):
    """(dq, dk, dv) from the backward launches."""
    bucket = extension().head_dim_bucket(s["d"], s["d_v"])
    arrays = dict(q=q, k=k, v=v, mask=mask, lse=lse, dout=dout, dlse=dlse,
                  delta=mx.zeros((1,), dtype=mx.float32))
    launches = mlx_launch.backward_launches(s, mlx_launch.launch_dims(bucket), dtype, bucket,
                                            bool(s["deterministic"]), tuple(k.shape),
                                            tuple(v.shape))
    arrays = mlx_launch.run_all(launches, arrays, s, dtype, bucket)
    return arrays["dq"], arrays["dk"], arrays["dv"]


@functools.lru_cache(maxsize=512)
def _function(key: tuple, dtype: str):
    """The custom function for one problem description (`key`: sorted scalar items)."""
    s = dict(key)

    @mx.custom_function
    def attn(q, k, v, mask):
        return forward(s, dtype, q, k, v, mask)

    @attn.vjp
    def attn_vjp(primals, cotangents, outputs):
        q, k, v, mask = primals
        dout, dlse = cotangents
        out, lse = outputs
        dq, dk, dv = backward(dict(s, has_dlse=1), dtype, q, k, v, mask, lse,
                              dout.astype(q.dtype), dlse.astype(mx.float32))
        return dq, dk, dv, mx.zeros_like(mask)  # the mask gets no gradient (SPEC)

    return attn


def attention(call: AttentionCall):
    """(out, lse) for the call's bhld MLX arrays."""
    mask = call.mask
    if mask is not None and mask_dtype(mask) == "float64":
        mask = mask.astype(mx.float32)
    s = problem(call, mask)
    if mask is None:  # custom_function arguments must be arrays: a placeholder, never read
        mask = mx.zeros((1,), dtype=mx.bool_)
    return _function(tuple(sorted(s.items())), call.dtype)(call.q, call.k, call.v, mask)
