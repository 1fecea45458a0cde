"""How a problem is handed to the native kernel (`_kernel.forward` / `_kernel.backward`): every
field is a required keyword argument (a missing, misspelled or extra one is a TypeError naming it;
the optional arrays lse, mask, cu_q, cu_k, dlse are passed as None explicitly). An array is either
a (data pointer, element strides...) tuple in (b, h, l, d) order, or a numpy array of that rank,
which the binding reads in place through the buffer protocol.

Size-1 dims get stride 0 (broadcast), so masks of any broadcastable shape are read in place.
"""
from __future__ import annotations

from ...call import MASK_CODES as MASK_KIND  # the kernels' mask kind codes, stated once

DTYPE_CODE = {"float32": 0, "float16": 1, "bfloat16": 2}
MASK_TYPE = {"bool": 0, "float32": 1, "float16": 2, "bfloat16": 3}


def numpy_desc(a, rank: int):
    item = a.itemsize
    if any(s % item for s in a.strides):
        raise ValueError("strides not a multiple of the item size")
    strides = [0 if n == 1 else s // item for n, s in zip(a.shape, a.strides)]
    return (a.ctypes.data, *strides[-rank:]) if rank else (a.ctypes.data,)


def torch_desc(t, rank: int):
    strides = [0 if n == 1 else s for n, s in zip(t.shape, t.stride())]
    return (t.data_ptr(), *strides[-rank:]) if rank else (t.data_ptr(),)


def varlen_as_bhld(desc):
    """Varlen [total, H, D] description -> (ptr, b=0, h, l, d) strides."""
    ptr, sl, sh, sd = desc
    return (ptr, 0, sh, sl, sd)


def window_of(call):
    """(left, right) with -1 for unbounded, from the call's window (None = unbounded both)."""
    return call.window if call.window is not None else (-1, -1)


def base_spec(dtype, dims, scale, softcap, causal, window):
    """The kernel's scalar keyword arguments (sizes and options); the caller adds the arrays,
    out_f32, mask_kind, mask_type and openmp."""
    B, Hq, Hkv, Lq, Lk, D, Dv = dims
    wl, wr = window
    return dict(dtype=DTYPE_CODE[dtype], B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv,
                scale=float(scale), softcap=float(softcap or 0.0), causal=bool(causal),
                wl=int(wl), wr=int(wr))


def dense_forward(kernel, call, q, k, v, out, lse, openmp):
    """Runs `kernel` (the native forward) on a dense bhld call without a mask (the common,
    latency-bound case), its arguments spelled out (no dict built per call).

    q, k, v, out and lse (or None) are the kernel's array arguments: numpy arrays as they are,
    torch tensors as (data pointer, *stride()). Each spans the problem's own dims, so a size-1
    dim is only ever indexed at 0 and needs no stride 0 (masks, which broadcast, go through
    `torch_desc` / `numpy_desc`). `out` and `lse` are allocated by the caller.
    """
    wl, wr = window_of(call)
    kernel(dtype=DTYPE_CODE[call.dtype], B=call.B, Hq=call.Hq, Hkv=call.Hkv, Lq=call.Lq,
           Lk=call.Lk, D=call.D, Dv=call.Dv, scale=call.scale, softcap=call.softcap or 0.0,
           causal=call.causal, wl=wl, wr=wr, q=q, k=k, v=v, o=out, out_f32=False, lse=lse,
           mask=None, mask_kind=MASK_KIND[None], mask_type=0, cu_q=None, cu_k=None,
           openmp=openmp)
