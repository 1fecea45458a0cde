"""torch custom ops of the `cpu` backend: `mlx_attn::cpu_attention` and its backward,
registered with autograd and fake (meta) implementations, so torch.autograd and torch.compile see
one op. No `from __future__ import annotations` here: torch infers the op schemas from the
annotations at run time.
"""
from typing import Optional

import torch

from .openmp import torch_openmp
from .status import native
from .strided import (MASK_KIND, MASK_TYPE, base_spec as make_spec, dense_forward,
                      torch_desc, varlen_as_bhld, window_of)


def _register():
    """Registers the torch custom ops (once, at import); returns the forward op."""
    def dims_of(q, k, v, cu_q):
        if cu_q is not None:
            return (cu_q.numel() - 1, q.shape[1], k.shape[1], q.shape[0], k.shape[0], q.shape[2],
                    v.shape[2])
        return (q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3])

    def desc(t, varlen):
        return varlen_as_bhld(torch_desc(t, 3)) if varlen else torch_desc(t, 4)

    def lse_desc(lse, varlen, Lq):
        return (lse.data_ptr(), 0, Lq, 1) if varlen else torch_desc(lse, 3)

    def base_spec(q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal, mask_kind):
        """The kernel's keyword arguments but for o, out_f32, lse (and the backward's) and openmp."""
        varlen = cu_q is not None
        dims = dims_of(q, k, v, cu_q)
        spec = make_spec(str(q.dtype).removeprefix("torch."), dims, scale, softcap, causal,
                         (wl, wr))
        spec.update(q=desc(q, varlen), k=desc(k, varlen), v=desc(v, varlen),
                    cu_q=(cu_q.data_ptr(),) if varlen else None,
                    cu_k=(cu_k.data_ptr(),) if varlen else None)
        if mask is None:
            spec.update(mask=None, mask_kind=MASK_KIND[None], mask_type=0)
        else:
            spec.update(mask=torch_desc(mask, 4), mask_kind=mask_kind,
                        mask_type=MASK_TYPE[str(mask.dtype).removeprefix("torch.")])
        return spec, varlen, dims

    def out_shapes(q, v, cu_q):
        if cu_q is not None:
            return (q.shape[0], q.shape[1], v.shape[2]), (q.shape[1], q.shape[0])
        return (*q.shape[:3], v.shape[3]), tuple(q.shape[:3])

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                  cu_q: Optional[torch.Tensor], cu_k: Optional[torch.Tensor], scale: float,
                  softcap: float, wl: int, wr: int, causal: bool, mask_kind: int,
                  out_f32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """out_f32: out in float32 whatever q's dtype (the backward's delta needs it unrounded)."""
        spec, varlen, dims = base_spec(q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal,
                                       mask_kind)
        oshape, lshape = out_shapes(q, v, cu_q)
        out = torch.empty(oshape, dtype=torch.float32 if out_f32 else q.dtype)
        lse = torch.empty(lshape, dtype=torch.float32)
        native().forward(**spec, o=desc(out, varlen), lse=lse_desc(lse, varlen, dims[3]),
                         out_f32=out.dtype != q.dtype, openmp=torch_openmp())
        return out, lse

    plain = attention
    attention = torch.library.custom_op("mlx_attn::cpu_attention", mutates_args=(),
                                        device_types="cpu")(plain)

    @attention.register_fake
    def _(q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal, mask_kind, out_f32=False):
        oshape, lshape = out_shapes(q, v, cu_q)
        return (q.new_empty(oshape, dtype=torch.float32 if out_f32 else q.dtype),
                q.new_empty(lshape, dtype=torch.float32))

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
        # a float32 out (out_f32) spares the kernel recomputing it for delta
        if dlse is not None:
            dlse = (dlse.data_ptr(), 0, dlse.stride(0), dlse.stride(1)) if varlen \
                else torch_desc(dlse, 3)
        native().backward(**spec, o=desc(out, varlen), out_f32=out.dtype != q.dtype,
                          lse=lse_desc(lse, varlen, dims[3]), dout=desc(dout, varlen), dlse=dlse,
                          dq=desc(dq, varlen), dk=desc(dk, varlen), dv=desc(dv, varlen),
                          openmp=torch_openmp())
        return dq, dk, dv

    @attention_backward.register_fake
    def _(dout, dlse, q, k, v, out, lse, mask, cu_q, cu_k, scale, softcap, wl, wr, causal,
          mask_kind):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup_context(ctx, inputs, output):
        q, k, v, mask, cu_q, cu_k, scale, softcap, wl, wr, causal, mask_kind = inputs[:12]
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse, mask, cu_q, cu_k)
        ctx.args = (scale, softcap, wl, wr, causal, mask_kind)

    def backward(ctx, dout, dlse):
        q, k, v, out, lse, mask, cu_q, cu_k = ctx.saved_tensors
        # dout is float32 when out is (out_f32); the kernel reads it in q's dtype, which is what
        # the caller's out has after torch_forward's cast
        dout = torch.zeros_like(out, dtype=q.dtype) if dout is None else dout.to(q.dtype)
        dq, dk, dv = attention_backward(dout, dlse, q, k, v, out, lse, mask, cu_q, cu_k,
                                        *ctx.args)
        return dq, dk, dv, None, None, None, None, None, None, None, None, None, None

    attention.register_autograd(backward, setup_context=setup_context)
    return attention, plain


# _PLAIN is the op's implementation as a Python function: a call that needs neither autograd nor
# tracing runs it directly, without the dispatcher's per-call cost (tens of microseconds, which is
# most of a decode step on small models).
_OP, _PLAIN = _register()


def torch_ops():
    """The forward custom op (mlx_attn::cpu_attention)."""
    return _OP


def _torch_mask(mask):
    if mask is None or mask.dtype in (torch.bool, torch.float32, torch.float16, torch.bfloat16):
        return mask
    return mask.to(torch.float32)


# torch.func transforms wrap tensors without changing their Python type
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: True)


def _plain_tensors(call) -> bool:
    """Plain CPU tensors outside any transform: subclasses (FakeTensor...), torch.func wrappers
    (vmap, grad) and torch.compile tracing go through the registered op."""
    tensor = torch.Tensor
    return type(call.q) is tensor and type(call.k) is tensor and type(call.v) is tensor and \
        (call.mask is None or type(call.mask) is tensor) and not _functorch_active() and \
        not torch.compiler.is_compiling()


def _raw_desc(t):
    return (t.data_ptr(), *t.stride())


def _direct_dense(call):
    """A dense call without mask, autograd or tracing: the kernel straight from the call's own
    sizes (no op dispatch, no re-derived dims)."""
    B, Hq, Lq = call.B, call.Hq, call.Lq
    out = torch.empty((B, Hq, Lq, call.Dv), dtype=call.q.dtype)
    lse = torch.empty((B, Hq, Lq), dtype=torch.float32) if call.return_lse else None
    dense_forward(native().forward, call, _raw_desc(call.q), _raw_desc(call.k),
                  _raw_desc(call.v), _raw_desc(out), None if lse is None else _raw_desc(lse),
                  torch_openmp())
    return out, lse


def torch_forward(call):
    # no autograd and no tracing: the op's implementation runs without the dispatcher, and a
    # dense call without mask goes straight to the kernel
    plain = not call.requires_grad and _plain_tensors(call)
    if plain and not call.varlen and call.mask is None:
        return _direct_dense(call)
    wl, wr = window_of(call)
    cu_q = cu_k = None
    if call.varlen:
        cu_q = torch.tensor(call.seqlens_q, dtype=torch.int32)
        cu_k = torch.tensor(call.seqlens_k, dtype=torch.int32)
    # training in fp16 / bf16: keep out in float32 for the backward's delta = rowsum(dout * out)
    # (else the backward recomputes it: one more forward) and hand the caller the rounded copy
    out_f32 = call.q.dtype != torch.float32 and call.requires_grad
    op = _PLAIN if plain else _OP
    out, lse = op(call.q, call.k, call.v, _torch_mask(call.mask), cu_q, cu_k, float(call.scale),
                  float(call.softcap or 0.0), int(wl), int(wr), bool(call.causal),
                  MASK_KIND[call.mask_kind], out_f32)
    if out_f32:
        out = out.to(call.q.dtype)
    return out, (lse if call.return_lse else None)
