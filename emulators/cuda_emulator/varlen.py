"""The fused varlen kernels of cuda_bridge/ on numpy arrays, under the emulator.

    out, lse = forward_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal=True)
    dq, dk, dv = backward_varlen(q, k, v, out, lse, dout, cu_q, cu_k, max_q, max_k)

q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv], cu_seqlens int32 [n + 1]
(SPEC), out [total_q, Hq, Dv], lse float32 [Hq, total_q]; dtypes as attention.py's (fp16, or
bf16 as uint16 bits with dtype="bfloat16").  One launch for all sequences: the kernels read
cu_seqlens themselves (params.h Seq), and the launch is described as binding.cpp's varlen
entry points describe it (batch strides 0, b = n, lq / lk the longest lengths, no split).
The cu_seqlens arrays sit between guard pages like every other buffer, so a kernel reading
past them is reported.
"""
from __future__ import annotations

import ctypes

import numpy as np

from .attention import (CONFIGS, _Attn, _as_dtype, _dtype_of, _run, _Tensor, _window,
                        head_dim_bucket, library)
from .memory import DeviceArray


def _packed(a, name: str) -> tuple[DeviceArray, _Tensor]:
    """[total, H, D] on the device (its own strides when the kernels take them) and the bhld
    view the kernels read: [1, H, total, D] with batch stride 0."""
    a = np.asarray(a)
    item = a.itemsize
    ok = a.ndim == 3 and (a.shape[2] <= 1 or a.strides[2] == item) and all(
        a.strides[i] % item == 0 and (a.strides[i] // item) % 8 == 0 for i in range(2) if a.shape[i] > 1)
    d = DeviceArray.from_numpy(a, name, contiguous=not ok)
    return d, _bhld(d)


def _bhld(d: DeviceArray) -> _Tensor:
    item = d.dtype.itemsize
    sl, sh = (0 if n == 1 else s // item for n, s in zip(d.shape[:2], d.strides[:2]))
    return _Tensor(d.ptr, 0, sh, sl, 0)


def _cu(cu, name: str, total: int) -> DeviceArray:
    cu = np.asarray(cu)
    if cu.dtype != np.int32 or cu.ndim != 1 or cu.size < 1:
        raise ValueError(f"{name} must be int32 [n + 1], got {cu.dtype} {cu.shape}")
    if cu[0] != 0 or np.any(np.diff(cu) < 0) or cu[-1] != total:
        raise ValueError(f"{name} must start at 0, not decrease and end at {total}, got {cu}")
    return DeviceArray.from_numpy(cu, name)


def _describe(q, k, v, cu_q, cu_k, max_q, max_k, scale, causal, window, softcap, num_sms):
    (Tq, Hq, D), (Tk, Hkv, Dk), Dv = q.shape, k.shape, v.shape[2]
    if Dk != D or v.shape[:2] != k.shape[:2] or Hq % Hkv or np.asarray(cu_q).shape != np.asarray(cu_k).shape:
        raise ValueError(f"bad shapes q {q.shape}, k {k.shape}, v {v.shape}, cu_seqlens "
                         f"{np.shape(cu_q)} / {np.shape(cu_k)}")
    if D % 8 or Dv % 8 or not head_dim_bucket(D, Dv):
        raise ValueError(f"head dims not supported by the kernels: D={D}, Dv={Dv}")
    lens_q, lens_k = np.diff(np.asarray(cu_q)), np.diff(np.asarray(cu_k))
    if max_q < lens_q.max(initial=0) or max_k < lens_k.max(initial=0):
        raise ValueError(f"max_seqlen_q / _k ({max_q}, {max_k}) below the longest sequence")
    a = _Attn()
    a.b, a.hq, a.hkv, a.lq, a.lk, a.d, a.dv_dim = len(lens_q), Hq, Hkv, int(max_q), int(max_k), D, Dv
    a.total_q = Tq
    a.scale = 1.0 / np.sqrt(D) if scale is None else float(scale)
    a.softcap = 0.0 if softcap is None else float(softcap)
    a.causal = int(bool(causal))
    a.window_left, a.window_right = _window(causal, window)
    a.num_sms = num_sms
    a.num_splits = 1
    return a


def plan_shapes(num_seqs, Hq, Hkv, max_seqlen_q, max_seqlen_k, D, Dv, *, num_sms: int = 108,
                dtype: str = "float16") -> str:
    """The varlen planner's tiles ("prefill" / "decode") on shapes alone (binding_varlen.cpp
    plan_varlen; the dtype does not change it)."""
    a = _Attn()
    a.b, a.hq, a.hkv, a.lq, a.lk, a.d, a.dv_dim = num_seqs, Hq, Hkv, max_seqlen_q, max_seqlen_k, D, Dv
    a.window_left = a.window_right = -1
    a.num_sms = num_sms
    config = ctypes.c_int64()
    library(dtype, head_dim_bucket(D, Dv)).lib.emu_plan_varlen(ctypes.byref(a), ctypes.byref(config))
    return ("prefill", "decode")[config.value]


def plan_varlen(a: _Attn, mod) -> str:
    """The planner's configuration for the described varlen launch (blocks.h make_plan_varlen)."""
    config, splits = ctypes.c_int64(), ctypes.c_int64()
    mod.lib.emu_plan(ctypes.byref(a), ctypes.byref(config), ctypes.byref(splits))
    assert splits.value == 1, "varlen never splits"
    return ("prefill", "decode")[config.value]


def forward_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *, scale=None,
                   causal=False, window=None, softcap=None, dtype=None, config=None,
                   num_sms: int = 108, out_row_pad: int = 0, patches=None):
    """(out [total_q, Hq, Dv] in q's dtype, lse float32 [Hq, total_q]) from one fused launch.
    `config` "prefill" / "decode" forces the tiles; `out_row_pad` (a multiple of 8) writes out
    into a wider [total_q, Hq, Dv + pad] buffer (strided rows), of which out is a view."""
    dtype = _dtype_of(np.asarray(q), dtype)
    q, k, v = (_as_dtype(x, dtype) for x in (q, k, v))
    a = _describe(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                  window, softcap, num_sms)
    Tq, Hq, Dv = q.shape[0], a.hq, a.dv_dim
    if Tq == 0 or k.shape[0] == 0 or a.lq == 0:  # no launch (binding: the Python side's case)
        return (np.zeros((Tq, Hq, Dv), q.dtype),
                np.full((Hq, Tq), -np.inf if Tq else 0, np.float32))
    mod = library(dtype, head_dim_bucket(a.d, a.dv_dim), patches)
    keep = [_cu(cu_seqlens_q, "cu_seqlens_q", Tq), _cu(cu_seqlens_k, "cu_seqlens_k", k.shape[0])]
    a.cu_seqlens_q, a.cu_seqlens_k = keep[0].ptr, keep[1].ptr
    config = plan_varlen(a, mod) if config is None else config
    a.config = CONFIGS[config]
    for x, name in ((q, "q"), (k, "k"), (v, "v")):
        d, t = _packed(x, name)
        keep.append(d)
        setattr(a, name, t)
    if out_row_pad % 8:
        raise ValueError(f"out_row_pad must be a multiple of 8, got {out_row_pad}")
    out = DeviceArray((Tq, Hq, Dv + out_row_pad), q.dtype, name="out")
    lse = DeviceArray((Hq, Tq), np.float32, name="lse")
    a.out, a.lse = _bhld(out), lse.ptr
    _run(mod, "emu_fwd", a)
    return out.copy_to_host()[:, :, :Dv], lse.copy_to_host()


def backward_varlen(q, k, v, out, lse, dout, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                    max_seqlen_k, *, dlse=None, scale=None, causal=False, window=None,
                    softcap=None, dtype=None, deterministic=False, patches=None):
    """(dq, dk, dv) in q's dtype from one fused backward launch, given the forward's out and
    lse [Hq, total_q].  Not deterministic: dQ goes through the float32 dq_accum workspace
    ([Hq * total_q, D], params.h BwdParams), allocated here."""
    dtype = _dtype_of(np.asarray(q), dtype)
    q, k, v, out, dout = (_as_dtype(x, dtype) for x in (q, k, v, out, dout))
    a = _describe(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
                  window, softcap, 108)
    Tq, Tk, Hq = q.shape[0], k.shape[0], a.hq
    if Tq == 0 or Tk == 0 or a.lq == 0:  # nothing attends: every gradient is 0
        return tuple(np.zeros(x.shape, x.dtype) for x in (q, k, v))
    mod = library(dtype, head_dim_bucket(a.d, a.dv_dim), patches)
    keep = [_cu(cu_seqlens_q, "cu_seqlens_q", Tq), _cu(cu_seqlens_k, "cu_seqlens_k", Tk)]
    a.cu_seqlens_q, a.cu_seqlens_k = keep[0].ptr, keep[1].ptr
    for x, name in ((q, "q"), (k, "k"), (v, "v"), (out, "out"), (dout, "dout")):
        d, t = _packed(x, name)
        keep.append(d)
        setattr(a, name, t)
    for x, name in ((lse, "lse"), (dlse, "dlse")):
        if x is not None:
            d = DeviceArray.from_numpy(np.ascontiguousarray(x, dtype=np.float32), name)
            keep.append(d)
            setattr(a, name, d.ptr)
    delta = DeviceArray((Hq, Tq), np.float32, name="delta")
    a.delta = delta.ptr
    a.deterministic = int(bool(deterministic))
    if not deterministic:
        dq_accum = DeviceArray((Hq * Tq, a.d), np.float32, name="dq_accum")
        keep.append(dq_accum)
        a.dq_accum = dq_accum.ptr
    grads = [DeviceArray(x.shape, x.dtype, name=n) for x, n in ((q, "dq"), (k, "dk"), (v, "dv"))]
    a.dq, a.dk, a.dv = (_bhld(g) for g in grads)
    _run(mod, "emu_bwd", a)
    return tuple(g.copy_to_host() for g in grads)
