"""Python glue of the `cpu` backend: hands numpy arrays and torch CPU tensors to the native
kernel (mlx_attn._cpu) as data pointers with element strides, without copying.

torch goes through the custom ops of mlx_attn.cpu_torch.
"""
from __future__ import annotations

import functools

import numpy as np

DTYPE_CODE = {"float32": 0, "float16": 1, "bfloat16": 2}
MASK_TYPE = {"bool": 0, "float32": 1, "float16": 2, "bfloat16": 3}
MASK_KIND = {None: 0, "bool": 1, "additive": 2}


@functools.cache
def native():
    """The compiled module; raises ImportError when it is not built."""
    from . import _cpu  # noqa: PLC0415
    return _cpu


# -- array descriptions ------------------------------------------------------------------------

def _np_desc(a: np.ndarray, rank: int):
    item = a.itemsize
    if any(s % item for s in a.strides):
        raise ValueError("strides not a multiple of the item size")
    strides = [0 if n == 1 else s // item for n, s in zip(a.shape, a.strides)]
    return (a.ctypes.data, *strides[-rank:]) if rank else (a.ctypes.data,)


def _torch_desc(t, rank: int):
    strides = [0 if n == 1 else s for n, s in zip(t.shape, t.stride())]
    return (t.data_ptr(), *strides[-rank:]) if rank else (t.data_ptr(),)


def _bhld(desc):
    """Varlen [total, H, D] description -> (ptr, b=0, h, l, d) strides."""
    ptr, sl, sh, sd = desc
    return (ptr, 0, sh, sl, sd)


def _spec(dtype, dims, scale, softcap, causal, window):
    B, Hq, Hkv, Lq, Lk, D, Dv = dims
    wl, wr = window if window is not None else (-1, -1)
    return dict(dtype=DTYPE_CODE[dtype], B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv,
                scale=float(scale), softcap=float(softcap or 0.0), causal=bool(causal),
                wl=int(wl), wr=int(wr))


# -- numpy ---------------------------------------------------------------------------------------

def _np_mask(mask):
    if mask.dtype == np.bool_:
        return mask, MASK_TYPE["bool"]
    if mask.dtype not in (np.float32, np.float16):
        mask = mask.astype(np.float32)
    return mask, MASK_TYPE[mask.dtype.name]


def numpy_forward(call):
    q, k, v = call.q, call.k, call.v
    spec = _spec(call.dtype, (call.B, call.Hq, call.Hkv, call.Lq, call.Lk, call.D, call.Dv),
                 call.scale, call.softcap, call.causal, call.window)
    keep = []
    if call.varlen:
        out = np.empty((call.Lq, call.Hq, call.Dv), q.dtype)
        lse = np.empty((call.Hq, call.Lq), np.float32) if call.return_lse else None
        spec.update(q=_bhld(_np_desc(q, 3)), k=_bhld(_np_desc(k, 3)), v=_bhld(_np_desc(v, 3)),
                    o=_bhld(_np_desc(out, 3)))
        if lse is not None:
            spec["lse"] = (lse.ctypes.data, 0, call.Lq, 1)
        cu_q = np.ascontiguousarray(call.seqlens_q, dtype=np.int32)
        cu_k = np.ascontiguousarray(call.seqlens_k, dtype=np.int32)
        keep += [cu_q, cu_k]
        spec.update(cu_q=(cu_q.ctypes.data,), cu_k=(cu_k.ctypes.data,))
    else:
        out = np.empty((call.B, call.Hq, call.Lq, call.Dv), q.dtype)
        lse = np.empty((call.B, call.Hq, call.Lq), np.float32) if call.return_lse else None
        spec.update(q=_np_desc(q, 4), k=_np_desc(k, 4), v=_np_desc(v, 4), o=_np_desc(out, 4))
        if lse is not None:
            spec["lse"] = _np_desc(lse, 3)
        if call.mask is not None:
            mask, mtype = _np_mask(call.mask)
            keep.append(mask)
            spec.update(mask=_np_desc(mask, 4), mask_type=mtype, mask_kind=MASK_KIND[call.mask_kind])
    native().forward(spec)
    return out, lse
