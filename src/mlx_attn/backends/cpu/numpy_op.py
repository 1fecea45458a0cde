"""numpy arrays through the native kernel: data pointers with element strides, never a copy of
q, k or v (non-float32/16 masks are converted once)."""
from __future__ import annotations

import numpy as np

from .status import native
from .strided import (MASK_KIND, MASK_TYPE, base_spec, dense_forward, numpy_desc,
                      varlen_as_bhld, window_of)


def _mask(mask):
    if mask.dtype == np.bool_:
        return mask, MASK_TYPE["bool"]
    if mask.dtype not in (np.float32, np.float16):
        mask = mask.astype(np.float32)
    return mask, MASK_TYPE[mask.dtype.name]


def numpy_forward(call):
    q, k, v = call.q, call.k, call.v
    kernel = native().forward
    if call.varlen:
        out = np.empty((call.Lq, call.Hq, call.Dv), q.dtype)
        lse = np.empty((call.Hq, call.Lq), np.float32) if call.return_lse else None
    else:
        out = np.empty((call.B, call.Hq, call.Lq, call.Dv), q.dtype)
        lse = np.empty((call.B, call.Hq, call.Lq), np.float32) if call.return_lse else None
        if call.mask is None:  # arrays read in place by the binding
            dense_forward(kernel, call, q, k, v, out, lse, False)
            return out, lse
    spec = base_spec(call.dtype, (call.B, call.Hq, call.Hkv, call.Lq, call.Lk, call.D, call.Dv),
                     call.scale, call.softcap, call.causal, window_of(call))
    # the arrays whose pointers the tuples hold stay referenced until the kernel returns
    if call.varlen:
        cu_q = np.ascontiguousarray(call.seqlens_q, dtype=np.int32)
        cu_k = np.ascontiguousarray(call.seqlens_k, dtype=np.int32)
        kernel(**spec, q=varlen_as_bhld(numpy_desc(q, 3)), k=varlen_as_bhld(numpy_desc(k, 3)),
               v=varlen_as_bhld(numpy_desc(v, 3)), o=varlen_as_bhld(numpy_desc(out, 3)),
               out_f32=False, lse=None if lse is None else (lse.ctypes.data, 0, call.Lq, 1),
               mask=None, mask_kind=MASK_KIND[None], mask_type=0,
               cu_q=(cu_q.ctypes.data,), cu_k=(cu_k.ctypes.data,), openmp=False)
        return out, lse
    mask, mask_type = _mask(call.mask)
    kernel(**spec, q=numpy_desc(q, 4), k=numpy_desc(k, 4), v=numpy_desc(v, 4),
           o=numpy_desc(out, 4), out_f32=False, lse=None if lse is None else numpy_desc(lse, 3),
           mask=numpy_desc(mask, 4), mask_kind=MASK_KIND[call.mask_kind], mask_type=mask_type,
           cu_q=None, cu_k=None, openmp=False)
    return out, lse
