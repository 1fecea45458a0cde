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
    """(batch, head, row) strides of a row-major array, 0 on size-1 dims (the bridge's
    stride_or_0: a size-1 dim is never stepped). Rank 4: bhld; rank 3: packed varlen
    [total, H, D], whose batch stride is 0 (binding_varlen.cpp packed_strides)."""
    st = [0 if int(n) == 1 else x for n, x in zip(shape, _row_major(shape))]
    return (st[0], st[1], st[2]) if len(shape) == 4 else (0, st[1], st[0])


def mask_dtype(mask) -> str:
    return str(mask.dtype).split(".")[-1].replace("bool_", "bool")


def problem(call: AttentionCall, mask, dlse: bool = False) -> dict:
    """The entries' scalars (mlx_launch.FWD_SCALARS / BWD_SCALARS) for `call`'s bhld arrays
    (varlen: packed [total, H, D], b sequences, lq / lk the longest; binding_varlen.cpp)."""
    B, Hq, Hkv, Lq, Lk, D, Dv = call.B, call.Hq, call.Hkv, call.Lq, call.Lk, call.D, call.Dv
    left, right = call.window if call.window is not None else (-1, -1)
    varlen = dict(varlen=0, total_q=0)
    if call.varlen:  # SPEC allows any max_seqlen >= the longest; the grid needs no more
        varlen = dict(varlen=1, total_q=Lq)
        Lq, Lk = min(int(call.max_seqlen_q), Lq), min(int(call.max_seqlen_k), Lk)
    s = dict(varlen, b=B, hq=Hq, hkv=Hkv, lq=Lq, lk=Lk, d=D, d_v=Dv, causal=int(call.causal),
             window_left=min(int(left), mlx_launch.INT32_MAX),
             window_right=min(int(right), mlx_launch.INT32_MAX), num_splits=1,
             scale=float(call.scale), scale_log2=float(call.scale) * math.log2(math.e),
             softcap=float(call.softcap or 0.0), has_dlse=int(dlse),
             deterministic=int(config.cuda_deterministic()))
    q_shape, k_shape, v_shape = (tuple(x.shape) for x in (call.q, call.k, call.v))
    o_shape = q_shape[:-1] + (Dv,)
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
    batch = 1 if call.varlen else call.B  # varlen: Lq / Lk are the packed totals
    width = max(call.D, call.Dv)
    numels = [batch * call.Hq * call.Lq * width, batch * call.Hkv * call.Lk * width]
    if call.mask is not None:
        numels.append(math.prod(int(n) for n in call.mask.shape))
    if max(numels) > mlx_launch.INT32_MAX:
        return ["an array has more than 2^31 - 1 elements: MLX passes the kernels' strides as int32"]
    return []


def _plan(s: dict) -> tuple:
    """(config, num_splits) from the bridge's planner (plan, or plan_varlen: never split), as
    the torch path plans (device 0: MLX's CUDA device)."""
    plan = extension().plan_varlen if s["varlen"] else extension().plan
    return tuple(plan(s["b"], s["hq"], s["hkv"], s["lq"], s["lk"], s["d"], s["d_v"],
                      bool(s["causal"]), s["window_left"], s["window_right"], 0))


def forward(s: dict, dtype: str, q, k, v, mask, cu_q, cu_k):
    """(out [B, Hq, Lq, Dv], lse float32 [B, Hq, Lq]) from the forward launches."""
    bucket = extension().head_dim_bucket(s["d"], s["d_v"])
    cfg, splits = _plan(s)
    s = dict(s, num_splits=splits)
    launches = mlx_launch.forward_launches(s, mlx_launch.launch_dims(bucket), cfg, splits, dtype,
                                           bucket)
    arrays = mlx_launch.run_all(launches, dict(q=q, k=k, v=v, mask=mask, cu_q=cu_q, cu_k=cu_k),
                                s, dtype, bucket)
    return arrays["out"], arrays["lse"]


def backward(s: dict, dtype: str, q, k, v, mask, cu_q, cu_k, lse, dout, dlse):
    """(dq, dk, dv) from the backward launches."""
    bucket = extension().head_dim_bucket(s["d"], s["d_v"])
    arrays = dict(q=q, k=k, v=v, mask=mask, cu_q=cu_q, cu_k=cu_k, lse=lse, dout=dout, dlse=dlse,
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
    def attn(q, k, v, mask, cu_q, cu_k):
        return forward(s, dtype, q, k, v, mask, cu_q, cu_k)

    @attn.vjp
    def attn_vjp(primals, cotangents, outputs):
        q, k, v, mask, cu_q, cu_k = primals
        dout, dlse = cotangents
        out, lse = outputs
        dq, dk, dv = backward(dict(s, has_dlse=1), dtype, q, k, v, mask, cu_q, cu_k, lse,
                              dout.astype(q.dtype), dlse.astype(mx.float32))
        # masks and sequence offsets get no gradient (SPEC)
        return dq, dk, dv, mx.zeros_like(mask), mx.zeros_like(cu_q), mx.zeros_like(cu_k)

    return attn


def attention(call: AttentionCall):
    """(out, lse) for the call's MLX arrays: bhld, or packed varlen ([total_q, Hq, Dv] and lse
    [Hq, total_q])."""
    if 0 in (call.B, call.Hq, call.Lq, call.Lk):  # nothing to launch (an empty grid)
        o_shape = (call.Lq, call.Hq, call.Dv) if call.varlen else (call.B, call.Hq, call.Lq, call.Dv)
        lse_shape = (call.Hq, call.Lq) if call.varlen else (call.B, call.Hq, call.Lq)
        return (mx.zeros(o_shape, dtype=call.q.dtype),
                mx.full(lse_shape, float("-inf"), dtype=mx.float32))
    mask = call.mask
    if mask is not None and mask_dtype(mask) == "float64":
        mask = mask.astype(mx.float32)
    s = problem(call, mask)
    # custom_function arguments must be arrays: placeholders for what is absent, never read
    if mask is None:
        mask = mx.zeros((1,), dtype=mx.bool_)
    cu_q, cu_k = ((call.cu_seqlens_q, call.cu_seqlens_k) if call.varlen else
                  (mx.zeros((1,), dtype=mx.int32),) * 2)
    return _function(tuple(sorted(s.items())), call.dtype)(call.q, call.k, call.v, mask, cu_q, cu_k)
