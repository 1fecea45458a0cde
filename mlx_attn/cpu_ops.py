"""Python glue of the `cpu` backend: hands numpy arrays and torch CPU tensors to the native
kernel (mlx_attn._cpu) as data pointers with element strides, without copying.

torch goes through two custom ops (`mlx_attn::cpu_attention` and its backward), registered with
autograd and fake (meta) implementations, so torch.autograd and torch.compile see one op.
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


# -- torch ---------------------------------------------------------------------------------------

@functools.cache
def torch_ops():
    """Registers the torch custom ops once; returns the forward op."""
    import torch  # noqa: PLC0415
    from typing import Optional  # noqa: PLC0415

    def dims_of(q, k, v, cu_q):
        if cu_q is not None:
            return (cu_q.numel() - 1, q.shape[1], k.shape[1], q.shape[0], k.shape[0], q.shape[2],
                    v.shape[2])
        return (q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3])

    def desc(t, varlen):
        return _bhld(_torch_desc(t, 3)) if varlen else _torch_desc(t, 4)

    def lse_desc(lse, varlen, Lq):
        return (lse.data_ptr(), 0, Lq, 1) if varlen else _torch_desc(lse, 3)

    def base_spec(q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal, mask_kind):
        varlen = cu_q is not None
        dims = dims_of(q, k, v, cu_q)
        spec = _spec(str(q.dtype).removeprefix("torch."), dims, scale, softcap, causal, (wl, wr))
        spec.update(q=desc(q, varlen), k=desc(k, varlen), v=desc(v, varlen))
        if varlen:
            spec.update(cu_q=(cu_q.data_ptr(),), cu_k=(cu_k.data_ptr(),))
        if mask is not None:
            spec.update(mask=_torch_desc(mask, 4), mask_kind=mask_kind,
                        mask_type=MASK_TYPE[str(mask.dtype).removeprefix("torch.")])
        return spec, varlen, dims

    def out_shapes(q, v, cu_q):
        if cu_q is not None:
            return (q.shape[0], q.shape[1], v.shape[2]), (q.shape[1], q.shape[0])
        return (*q.shape[:3], v.shape[3]), tuple(q.shape[:3])

    @torch.library.custom_op("mlx_attn::cpu_attention", mutates_args=(), device_types="cpu")
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                  cu_q: Optional[torch.Tensor], cu_k: Optional[torch.Tensor], scale: float,
                  softcap: float, wl: int, wr: int, causal: bool,
                  mask_kind: int) -> tuple[torch.Tensor, torch.Tensor]:
        spec, varlen, dims = base_spec(q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal,
                                       mask_kind)
        oshape, lshape = out_shapes(q, v, cu_q)
        out = torch.empty(oshape, dtype=q.dtype)
        lse = torch.empty(lshape, dtype=torch.float32)
        spec.update(o=desc(out, varlen), lse=lse_desc(lse, varlen, dims[3]))
        native().forward(spec)
        return out, lse

    @attention.register_fake
    def _(q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal, mask_kind):
        oshape, lshape = out_shapes(q, v, cu_q)
        return q.new_empty(oshape), q.new_empty(lshape, dtype=torch.float32)

    @torch.library.custom_op("mlx_attn::cpu_attention_backward", mutates_args=(),
                             device_types="cpu")
    def attention_backward(dout: torch.Tensor, dlse: Optional[torch.Tensor], q: torch.Tensor,
                           k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                           lse: torch.Tensor, mask: Optional[torch.Tensor],
                           cu_q: Optional[torch.Tensor], cu_k: Optional[torch.Tensor],
                           scale: float, softcap: float, wl: int, wr: int, causal: bool,
                           mask_kind: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        spec, varlen, dims = base_spec(q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal,
                                       mask_kind)
        dq, dk, dv = (torch.empty(x.shape, dtype=x.dtype) for x in (q, k, v))
        spec.update(o=desc(out, varlen), lse=lse_desc(lse, varlen, dims[3]),
                    dout=desc(dout, varlen), dq=desc(dq, varlen), dk=desc(dk, varlen),
                    dv=desc(dv, varlen))
        if dlse is not None:
            spec["dlse"] = (dlse.data_ptr(), 0, dlse.stride(0), dlse.stride(1)) if varlen \
                else _torch_desc(dlse, 3)
        native().backward(spec)
        return dq, dk, dv

    @attention_backward.register_fake
    def _(dout, dlse, q, k, v, out, lse, mask, cu_q, cu_k, scale, softcap, wl, wr, causal,
          mask_kind):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup_context(ctx, inputs, output):
        q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal, mask_kind = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, mask, cu_q, cu_k)
        ctx.args = (scale, softcap, wl, wr, causal, mask_kind)

    def backward(ctx, dout, dlse):
        q, k, v, out, lse, mask, cu_q, cu_k = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = attention_backward(dout, dlse, q, k, v, out, lse, mask, cu_q, cu_k,
                                        *ctx.args)
        return dq, dk, dv, None, None, None, None, None, None, None, None, None

    attention.register_autograd(backward, setup_context=setup_context)
    return attention


def _torch_mask(mask):
    import torch  # noqa: PLC0415
    if mask is None or mask.dtype in (torch.bool, torch.float32, torch.float16, torch.bfloat16):
        return mask
    return mask.to(torch.float32)


def torch_forward(call):
    import torch  # noqa: PLC0415
    op = torch_ops()
    wl, wr = call.window if call.window is not None else (-1, -1)
    cu_q = cu_k = None
    if call.varlen:
        cu_q = torch.tensor(call.seqlens_q, dtype=torch.int32)
        cu_k = torch.tensor(call.seqlens_k, dtype=torch.int32)
    out, lse = op(call.q, call.k, call.v, _torch_mask(call.mask), cu_q, cu_k, float(call.scale),
                  float(call.softcap or 0.0), int(wl), int(wr), bool(call.causal),
                  MASK_KIND[call.mask_kind])
    return out, (lse if call.return_lse else None)
