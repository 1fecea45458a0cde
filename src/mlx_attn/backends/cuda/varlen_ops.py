"""The fused varlen kernels as torch custom ops: `torch.ops.mlx_attn.fwd_varlen` / `.bwd_varlen`.

    fwd_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale, causal,
               window_left, window_right, softcap)
        -> (out [total_q, Hq, Dv] in q's dtype, lse float32 [Hq, total_q])

q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv], cu_seqlens int32 [n + 1] (already
checked by validate.py: starting at 0, non-decreasing, max_seqlen_* at least every length).  On
CUDA tensors (and CPU tensors under MLX_ATTN_CUDA_EMULATE=1) one launch serves every sequence:
the kernels read cu_seqlens themselves (docs/cuda.md "Varlen").  Elsewhere a stand-in loops over
the sequences with the dense op's reference code, so the ops are opchecked and traced anywhere.

    bwd_varlen(dout, q, k, v, out, lse, dlse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
               max_seqlen_k, scale, causal, window_left, window_right, softcap, deterministic)
        -> (dq, dk, dv)

is wired to fwd_varlen with `register_autograd`.  On the kernels it is one fused backward for all
sequences too; elsewhere the stand-in loops over the sequences with the reference formulas.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import ops

Tensor = torch.Tensor


@torch.library.custom_op("mlx_attn::fwd_varlen", mutates_args=())
def fwd_varlen(q: Tensor, k: Tensor, v: Tensor, cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
               max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool,
               window_left: int, window_right: int, softcap: float) -> tuple[Tensor, Tensor]:
    scalars = (scale, causal, window_left, window_right, softcap)
    if ops._on_kernels(q):
        return _fwd_kernels(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                            *scalars)
    return _fwd_per_sequence(q, k, v, cu_seqlens_q, cu_seqlens_k, *scalars)


@fwd_varlen.register_fake
def _fwd_varlen_fake(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
                     causal, window_left, window_right, softcap):
    total_q, Hq, _ = q.shape
    return (q.new_empty((total_q, Hq, v.shape[2])),
            q.new_empty((Hq, total_q), dtype=torch.float32))


@torch.library.custom_op("mlx_attn::bwd_varlen", mutates_args=())
def bwd_varlen(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
               dlse: Optional[Tensor], cu_seqlens_q: Tensor, cu_seqlens_k: Tensor,
               max_seqlen_q: int, max_seqlen_k: int, scale: float, causal: bool,
               window_left: int, window_right: int, softcap: float,
               deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    scalars = (scale, causal, window_left, window_right, softcap)
    if ops._on_kernels(q):
        return _bwd_fused(dout, q, k, v, out, lse, dlse, cu_seqlens_q, cu_seqlens_k,
                          max_seqlen_q, max_seqlen_k, *scalars, deterministic)
    return _bwd_per_sequence(dout, q, k, v, out, lse, dlse, cu_seqlens_q, cu_seqlens_k, *scalars)


@bwd_varlen.register_fake
def _bwd_varlen_fake(dout, q, k, v, out, lse, dlse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                     max_seqlen_k, scale, causal, window_left, window_right, softcap,
                     deterministic):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_k)
    ctx.rest = (int(max_q), int(max_k), float(scale), bool(causal), int(left), int(right),
                float(softcap))


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, cu_q, cu_k = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = bwd_varlen(grad_out, q, k, v, out, lse, grad_lse, cu_q, cu_k, *ctx.rest,
                            torch.are_deterministic_algorithms_enabled())
    return (dq, dk, dv) + (None,) * 9


fwd_varlen.register_autograd(_backward, setup_context=_setup_context)


# ---- the kernels -----------------------------------------------------------------------------
def _fwd_kernels(q, k, v, cu_q, cu_k, max_q, max_k, scale, causal, left, right, softcap):
    ext = ops.require_extension()
    total_q, Hq, D = q.shape
    Hkv, Dv = k.shape[1], v.shape[2]
    out = q.new_empty((total_q, Hq, Dv))
    lse = torch.empty((Hq, total_q), dtype=torch.float32, device=q.device)
    if total_q == 0:
        return out, lse
    if k.shape[0] == 0:  # no keys in any sequence: every row is fully masked
        return out.zero_(), lse.fill_(float("-inf"))
    n = cu_q.shape[0] - 1
    # SPEC allows any max_seqlen at least the longest; the grid needs no more than the totals
    max_q, max_k = min(int(max_q), total_q), min(int(max_k), k.shape[0])
    context, device, stream = ops._on_device(q)
    with context:
        config, _ = ext.plan_varlen(n, Hq, Hkv, int(max_q), int(max_k), D, Dv, bool(causal),
                                    int(left), int(right), device)
        ext.fwd_varlen(q.detach(), k.detach(), v.detach(), out, lse, cu_q.detach(),
                       cu_k.detach(), int(max_q), int(max_k), float(scale), bool(causal),
                       int(left), int(right), float(softcap), config, stream)
    return out, lse


def _bwd_fused(dout, q, k, v, out, lse, dlse, cu_q, cu_k, max_q, max_k, scale, causal, left,
               right, softcap, deterministic):
    ext = ops.require_extension()
    dq, dk, dv = (torch.empty_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))
    total_q, Hq, _ = q.shape
    if total_q == 0 or k.shape[0] == 0:  # nothing attends: every gradient is 0
        return dq.zero_(), dk.zero_(), dv.zero_()
    dout = ops._dense_last(dout.detach())
    if dlse is not None:
        dlse = dlse.detach().to(torch.float32).contiguous()
    delta = torch.empty((Hq, total_q), dtype=torch.float32, device=q.device)
    dq_accum = ops.dq_workspace(Hq * total_q, q, deterministic)
    max_q, max_k = min(int(max_q), total_q), min(int(max_k), k.shape[0])
    context, _, stream = ops._on_device(q)
    with context:
        ext.bwd_varlen(dout, q.detach(), k.detach(), v.detach(), ops._dense_last(out.detach()),
                       lse.detach().contiguous(), dlse, cu_q.detach(), cu_k.detach(), int(max_q),
                       int(max_k), delta, dq, dk, dv, dq_accum, bool(deterministic),
                       float(scale), bool(causal), int(left), int(right), float(softcap), stream)
    return dq, dk, dv


# ---- one sequence at a time: the stand-in off the kernels (reference formulas) --------------
def _spans(cu_q: Tensor, cu_k: Tensor):
    """(q0, q1, k0, k1) of every sequence with query rows (host copies of cu_seqlens)."""
    cq, ck = cu_q.tolist(), cu_k.tolist()
    return [(cq[s], cq[s + 1], ck[s], ck[s + 1]) for s in range(len(cq) - 1) if cq[s + 1] > cq[s]]


def _bhld(x: Tensor) -> Tensor:
    """[L, H, D] -> a [1, H, L, D] view."""
    return x.transpose(0, 1)[None]


def _fwd_per_sequence(q, k, v, cu_q, cu_k, scale, causal, left, right, softcap):
    out = q.new_zeros((q.shape[0], q.shape[1], v.shape[2]))
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32,
                     device=q.device)
    for q0, q1, k0, k1 in _spans(cu_q, cu_k):
        if k1 == k0:
            continue  # no keys: zeros, lse -inf
        o, l = ops._fwd_reference(_bhld(q[q0:q1]), _bhld(k[k0:k1]), _bhld(v[k0:k1]), None, scale,
                                  causal, left, right, softcap, False)
        out[q0:q1] = o[0].transpose(0, 1)
        lse[:, q0:q1] = l[0]
    return out, lse


def _bwd_per_sequence(dout, q, k, v, out, lse, dlse, cu_q, cu_k, scale, causal, left, right,
                      softcap):
    """The reference formulas per sequence.  Keys of sequences without queries get zero
    gradients."""
    dq, dk, dv = (torch.zeros_like(x, memory_format=torch.contiguous_format) for x in (q, k, v))
    for q0, q1, k0, k1 in _spans(cu_q, cu_k):
        if k1 == k0:
            continue  # nothing attends: zero gradients
        qs, ks, vs = _bhld(q[q0:q1]), _bhld(k[k0:k1]), _bhld(v[k0:k1])
        gs = _bhld(dout[q0:q1])
        dls = None if dlse is None else dlse[:, q0:q1][None]
        g = ops._bwd_reference(gs, qs, ks, vs, dls, None, scale, causal, left, right, softcap)
        for dst, src, a, b in ((dq, g[0], q0, q1), (dk, g[1], k0, k1), (dv, g[2], k0, k1)):
            dst[a:b] = src[0].transpose(0, 1)
    return dq, dk, dv
