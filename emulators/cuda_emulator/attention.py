"""The real flash-attention kernels of cuda_bridge/ on numpy arrays, under the emulator.

    out, lse = forward(q, k, v, causal=True)                 # q, k, v [B, H, L, D]
    dq, dk, dv = backward(q, k, v, out, lse, dout, causal=True)

fp16 arrays are numpy float16; bf16 arrays are their uint16 bit patterns with
``dtype="bfloat16"`` (``bf16_from_float`` / ``bf16_to_float`` convert). Any float array is
also accepted with an explicit ``dtype`` and rounded to it. Inputs keep their strides when the
kernels accept them (contiguous last dim, other strides multiples of 8 elements), else they
are made contiguous; every buffer sits between guard pages, outputs start as NaN.

One library per (dtype, head-dim bucket) holds the forward (prefill and split-KV
configurations, the combine) and the backward kernels, compiled from attention_host.cpp,
which fills FwdParams / BwdParams as cuda_bridge/src/binding.cpp does and plans as api.cu
does (``plan``); ``config`` / ``splits`` force a configuration.
"""
from __future__ import annotations

import ctypes
import math
from pathlib import Path

import numpy as np

from .compiler import compile_source
from .errors import CudaEmulatorError
from .memory import DeviceArray

HEAD_DIMS = (32, 64, 96, 128, 192, 256)
CONFIGS = {"prefill": 0, "decode": 1}
_TAGS = {"float16": ("fp16", "__half"), "bfloat16": ("bf16", "__nv_bfloat16")}
# FwdParams.mask_type (params.h)
_MASK_TYPES = {np.dtype(bool): 1, np.dtype(np.float32): 2, np.dtype(np.float16): 3, np.dtype(np.uint16): 4}
_HOST_SOURCE = Path(__file__).resolve().parent / "attention_host.cpp"


def bf16_from_float(x) -> np.ndarray:
    """float -> bfloat16 bit patterns (uint16), rounded to nearest even; NaN -> 0x7FFF."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(np.asarray(x, dtype=np.float32)), np.uint16(0x7FFF), r)


def bf16_to_float(b) -> np.ndarray:
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_float(a, dtype: str) -> np.ndarray:
    """An fp16 / bf16 array as float32 values."""
    return bf16_to_float(a) if dtype == "bfloat16" else np.asarray(a, dtype=np.float32)


def head_dim_bucket(d: int, dv: int) -> int:
    """traits.h head_dim_bucket: the smallest bucket >= max(d, dv), 0 if none."""
    return next((b for b in HEAD_DIMS if max(d, dv) <= b), 0)


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p)] + [(n, ctypes.c_int64) for n in ("sb", "sh", "sl", "sk")]


class _Attn(ctypes.Structure):  # EmuAttn in attention_host.cpp
    _fields_ = ([(n, _Tensor) for n in ("q", "k", "v", "out", "mask", "dout", "dq", "dk", "dv")] +
                [(n, ctypes.c_void_p) for n in ("lse", "o_accum", "lse_accum", "dlse", "delta")] +
                [(n, ctypes.c_int64) for n in ("mask_type", "b", "hq", "hkv", "lq", "lk", "d", "dv_dim")] +
                [("scale", ctypes.c_double), ("softcap", ctypes.c_double)] +
                [(n, ctypes.c_int64) for n in ("causal", "window_left", "window_right", "config", "num_splits",
                                                "num_sms")] +
                [(n, ctypes.c_void_p) for n in ("cu_seqlens_q", "cu_seqlens_k")] + [("total_q", ctypes.c_int64)] +
                [("deterministic", ctypes.c_int64), ("dq_accum", ctypes.c_void_p)])


def library(dtype: str, bucket: int, patches=None):
    """The compiled kernels for one (dtype, head-dim bucket) (cached); `patches` edit the
    kernel headers' copies (compile_source), for planting bugs in tests."""
    tag, ctype = _TAGS[dtype]
    return compile_source(_HOST_SOURCE.read_text(), f"attention_{tag}_hdim{bucket}.cu",
                          defines={"EMU_CTYPE": ctype, "EMU_TAG": tag, "EMU_HDIM": bucket}, patches=patches)


def _dtype_of(q, dtype):
    if dtype is None:
        if q.dtype == np.float16:
            return "float16"
        raise TypeError(f"q has dtype {q.dtype}: pass dtype='float16' or 'bfloat16' (bf16 as uint16 bits)")
    if dtype not in _TAGS:
        raise ValueError(f"dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    return dtype


def _as_dtype(a, dtype: str) -> np.ndarray:
    a = np.asarray(a)
    if dtype == "float16":
        return a if a.dtype == np.float16 else a.astype(np.float16)
    if a.dtype == np.uint16:
        return a
    return bf16_from_float(a)


def _operand(a, name: str) -> DeviceArray:
    """On the device with its strides if the kernels take them (binding.cpp check_operand)."""
    a = np.asarray(a)
    item = a.itemsize
    ok = a.ndim == 4 and (a.shape[3] <= 1 or a.strides[3] == item) and all(
        (a.strides[i] // item) % 8 == 0 and a.strides[i] % item == 0 for i in range(3) if a.shape[i] > 1)
    return DeviceArray.from_numpy(a, name, contiguous=not ok)


def _tensor(d: DeviceArray) -> _Tensor:
    item = d.dtype.itemsize
    st = [0 if n == 1 else s // item for n, s in zip(d.shape, d.strides)] + [0] * (4 - len(d.shape))
    return _Tensor(d.ptr, *st[:4])


def _window(causal, window):
    if window is None:
        return -1, -1
    left, right = (window, 0) if isinstance(window, (int, np.integer)) else window
    for side in (left, right):
        if not -1 <= int(side) < 2 ** 63:
            raise ValueError(f"window sides must be -1 (unbounded) or >= 0, got {window}")
    return int(left), int(right)


def _describe(q, k, v, mask, scale, causal, window, softcap, num_sms):
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    if k.shape[0] != B or v.shape[:3] != k.shape[:3] or k.shape[3] != D or Hq % Hkv:
        raise ValueError(f"bad shapes q {q.shape}, k {k.shape}, v {v.shape}")
    if min(B, Hq, Lq, Lk) == 0 or D % 8 or Dv % 8 or not head_dim_bucket(D, Dv):
        raise ValueError(f"sizes not supported by the kernels: q {q.shape}, k {k.shape}, v {v.shape}")
    a = _Attn()
    a.b, a.hq, a.hkv, a.lq, a.lk, a.d, a.dv_dim = B, Hq, Hkv, Lq, Lk, D, Dv
    a.scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    a.softcap = 0.0 if softcap is None else float(softcap)
    a.causal = int(bool(causal))
    a.window_left, a.window_right = _window(causal, window)
    a.num_sms = num_sms
    return a


def _mask(a: _Attn, mask, keep: list):
    if mask is None:
        return
    m = np.asarray(mask)
    if m.dtype not in _MASK_TYPES:
        raise TypeError(f"mask must be bool, float32, float16 or bfloat16 (uint16 bits), got {m.dtype}")
    m = np.broadcast_to(m, (a.b, a.hq, a.lq, a.lk))  # zero strides on broadcast dims
    d = DeviceArray.from_numpy(m, "mask")
    keep.append(d)
    a.mask, a.mask_type = _tensor(d), _MASK_TYPES[m.dtype]


def plan(q, k, v, *, causal=False, window=None, num_sms: int = 108, dtype=None) -> tuple[str, int]:
    """(configuration, number of KV splits) the planner of api.cu picks on a GPU with `num_sms`."""
    dtype = _dtype_of(np.asarray(q), dtype)
    a = _describe(np.asarray(q), np.asarray(k), np.asarray(v), None, None, causal, window, None, num_sms)
    lib = library(dtype, head_dim_bucket(a.d, a.dv_dim)).lib
    config, splits = ctypes.c_int64(), ctypes.c_int64()
    lib.emu_plan(ctypes.byref(a), ctypes.byref(config), ctypes.byref(splits))
    return ("prefill", "decode")[config.value], splits.value


_KERNELS = ("prefill", "decode", "combine", "bwd_dq", "bwd_dkdv", "bwd_convert")


def launch_dims(bucket: int) -> dict:
    """{kernel: (rows per CTA, threads, dynamic smem bytes)} from launch_dims.cuh, as the
    bridge's launch_dims()."""
    out = (ctypes.c_int * 18)()
    library("float16", bucket if bucket in HEAD_DIMS else 64).lib.emu_launch_dims(ctypes.c_int64(bucket), out)
    return {name: tuple(out[3 * i:3 * i + 3]) for i, name in enumerate(_KERNELS)}


def _run(lib_mod, fn: str, a: _Attn):
    err = ctypes.create_string_buffer(16384)
    if lib_mod.call(fn, ctypes.byref(a), err, len(err)):
        raise CudaEmulatorError(err.value.decode(errors="replace"))


def forward(q, k, v, *, mask=None, scale=None, causal=False, window=None, softcap=None, dtype=None,
            config=None, splits=None, num_sms: int = 108, patches=None):
    """(out [B, Hq, Lq, Dv] in q's dtype, lse float32 [B, Hq, Lq]) from the forward kernels.
    `config` "prefill" / "decode" and `splits` force the planner's choice."""
    dtype = _dtype_of(np.asarray(q), dtype)
    q, k, v = (_as_dtype(x, dtype) for x in (q, k, v))
    a = _describe(q, k, v, mask, scale, causal, window, softcap, num_sms)
    mod = library(dtype, head_dim_bucket(a.d, a.dv_dim), patches)
    if config is None or splits is None:
        c, s = ctypes.c_int64(), ctypes.c_int64()
        mod.lib.emu_plan(ctypes.byref(a), ctypes.byref(c), ctypes.byref(s))
        config = ("prefill", "decode")[c.value] if config is None else config
        splits = (s.value if CONFIGS[config] == c.value else 1) if splits is None else splits
    a.config, a.num_splits = CONFIGS[config], int(splits)
    keep = [_operand(q, "q"), _operand(k, "k"), _operand(v, "v")]
    a.q, a.k, a.v = (_tensor(d) for d in keep)
    _mask(a, mask, keep)
    B, Hq, Lq, Dv = a.b, a.hq, a.lq, a.dv_dim
    out = DeviceArray((B, Hq, Lq, Dv), q.dtype, name="out")
    lse = DeviceArray((B, Hq, Lq), np.float32, name="lse")
    a.out, a.lse = _tensor(out), lse.ptr
    if a.num_splits > 1:
        o_acc = DeviceArray((a.num_splits, B, Hq, Lq, Dv), np.float32, name="o_accum")
        l_acc = DeviceArray((a.num_splits, B, Hq, Lq), np.float32, name="lse_accum")
        keep += [o_acc, l_acc]
        a.o_accum, a.lse_accum = o_acc.ptr, l_acc.ptr
    _run(mod, "emu_fwd", a)
    return out.copy_to_host(), lse.copy_to_host()


def backward(q, k, v, out, lse, dout, *, dlse=None, mask=None, scale=None, causal=False, window=None,
             softcap=None, dtype=None, patches=None, deterministic=False):
    """(dq, dk, dv) in q's dtype from the backward kernels (delta, dK/dV, then the dQ kernel
    when `deterministic`, else dQ by float32 atomics into a dq_accum workspace and its
    conversion), given the forward's out and lse."""
    dtype = _dtype_of(np.asarray(q), dtype)
    q, k, v, out, dout = (_as_dtype(x, dtype) for x in (q, k, v, out, dout))
    a = _describe(q, k, v, mask, scale, causal, window, softcap, 108)
    mod = library(dtype, head_dim_bucket(a.d, a.dv_dim), patches)
    a.num_splits = 1
    keep = [_operand(x, n) for x, n in ((q, "q"), (k, "k"), (v, "v"), (out, "out"), (dout, "dout"))]
    a.q, a.k, a.v, a.out, a.dout = (_tensor(d) for d in keep)
    _mask(a, mask, keep)
    lse_d = DeviceArray.from_numpy(np.ascontiguousarray(lse, dtype=np.float32), "lse")
    keep.append(lse_d)
    a.lse = lse_d.ptr
    if dlse is not None:
        dlse_d = DeviceArray.from_numpy(np.ascontiguousarray(dlse, dtype=np.float32), "dlse")
        keep.append(dlse_d)
        a.dlse = dlse_d.ptr
    delta = DeviceArray((a.b, a.hq, a.lq), np.float32, name="delta")
    grads = [DeviceArray(x.shape, q.dtype, name=n) for x, n in ((q, "dq"), (k, "dk"), (v, "dv"))]
    a.delta = delta.ptr
    a.dq, a.dk, a.dv = (_tensor(g) for g in grads)
    a.deterministic = int(bool(deterministic))
    if not deterministic:  # float32 [B * Hq * Lq, D] (params.h), zeroed by the delta kernel
        dq_accum = DeviceArray((a.b * a.hq * a.lq, a.d), np.float32, name="dq_accum")
        keep.append(dq_accum)
        a.dq_accum = dq_accum.ptr
    _run(mod, "emu_bwd", a)
    return tuple(g.copy_to_host() for g in grads)
