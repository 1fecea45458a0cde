"""The CUDA kernels as torch custom ops: `torch.ops.mlx_attn.fwd` and `torch.ops.mlx_attn.bwd`.

    fwd(q, k, v, mask, scale, causal, window_left, window_right, softcap, out_blhd)
        -> (out [B, Hq, Lq, Dv] in q's dtype, lse float32 [B, Hq, Lq])

q/k/v are in the bhld index order (any batch/head/seq strides, contiguous last dim); mask is
None or rank 4 broadcastable to [B, Hq, Lq, Lk] (bool keeps True, floating is added); causal is
bottom-right aligned; window sides are -1 when unbounded; softcap 0 means off.  With
out_blhd=True, out is a [B, Hq, Lq, Dv] view of a contiguous [B, Lq, Hq, Dv] tensor, so that a
caller in the "blhd" layout gets a contiguous result back.

Registered with `torch.library.custom_op` and `register_fake`, so torch.compile traces it and
`torch.library.opcheck` validates it.  On CUDA tensors it runs our kernels (the `_cuda` extension,
tensors passed through DLPack after .detach(), outputs and split-KV workspace allocated here by
torch's caching allocator, launched on the current torch stream); so do CPU tensors under
MLX_ATTN_CUDA_EMULATE=1, in the CUDA emulator (emulators/cuda_emulator).  Otherwise it runs
the math backend, a reference implementation that keeps the op usable (and testable) anywhere.

    bwd(dout, q, k, v, out, lse, dlse, mask, scale, causal, window_left, window_right, softcap,
        deterministic) -> (dq, dk, dv)

is the backward, wired to fwd with `register_autograd` (so torch.autograd and torch.compile
both differentiate fwd; the mask gets no gradient, lse does).  On CUDA it runs our backward
kernels with `deterministic` (torch's deterministic-algorithms mode when called by autograd):
True runs dQ as a pass of its own without float atomics (the same bits on every run);
otherwise dQ is accumulated with float32 atomics in a `dq_accum` workspace allocated here
([B * Hq * Lq, D]).  Elsewhere it evaluates the kernels' formulas in float32 torch (a stand-in so that
the ops can be opchecked and traced without a GPU).

The fused varlen ops (`mlx_attn::fwd_varlen` / `bwd_varlen`) are in varlen_ops.py.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from .extension import emulated, extension, load_error
from .layout import layout_reasons

OP_NAME = "mlx_attn::fwd"


def _empty_out(q: torch.Tensor, B: int, Hq: int, Lq: int, Dv: int, out_blhd: bool):
    if out_blhd:
        return q.new_empty((B, Lq, Hq, Dv)).transpose(1, 2)
    return q.new_empty((B, Hq, Lq, Dv))


@torch.library.custom_op(OP_NAME, mutates_args=())
def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
        scale: float, causal: bool, window_left: int, window_right: int, softcap: float,
        out_blhd: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if _on_kernels(q):
        return _fwd_cuda(q, k, v, mask, scale, causal, window_left, window_right, softcap,
                         out_blhd)
    return _fwd_reference(q, k, v, mask, scale, causal, window_left, window_right, softcap,
                          out_blhd)


@fwd.register_fake
def _fwd_fake(q, k, v, mask, scale, causal, window_left, window_right, softcap, out_blhd):
    B, Hq, Lq, _ = q.shape
    Dv = v.shape[3]
    out = _empty_out(q, B, Hq, Lq, Dv, out_blhd)
    lse = q.new_empty((B, Hq, Lq), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("mlx_attn::bwd", mutates_args=())
def bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
        lse: torch.Tensor, dlse: Optional[torch.Tensor], mask: Optional[torch.Tensor],
        scale: float, causal: bool, window_left: int, window_right: int, softcap: float,
        deterministic: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if _on_kernels(q):
        return _bwd_cuda(dout, q, k, v, out, lse, dlse, mask, scale, causal, window_left,
                         window_right, softcap, deterministic)
    return _bwd_reference(dout, q, k, v, dlse, mask, scale, causal, window_left, window_right,
                          softcap)


@bwd.register_fake
def _bwd_fake(dout, q, k, v, out, lse, dlse, mask, scale, causal, window_left, window_right,
              softcap, deterministic):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, mask, scale, causal, window_left, window_right, softcap, _ = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, mask)
    ctx.scalars = (float(scale), bool(causal), int(window_left), int(window_right),
                   float(softcap))


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, mask = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = bwd(grad_out, q, k, v, out, lse, grad_lse, mask, *ctx.scalars,
                     torch.are_deterministic_algorithms_enabled())
    return dq, dk, dv, None, None, None, None, None, None, None


fwd.register_autograd(_backward, setup_context=_setup_context)


def _on_kernels(q: torch.Tensor) -> bool:
    """CUDA tensors run our kernels; so do CPU tensors under MLX_ATTN_CUDA_EMULATE=1 (emulated)."""
    return q.device.type == "cuda" or (q.device.type == "cpu" and emulated())


def _on_device(q: torch.Tensor):
    """(context that makes q's device current, its device index, its current stream handle);
    on the CPU (emulated kernels) no context, device 0 and stream 0."""
    if q.device.type != "cuda":
        return contextlib.nullcontext(), 0, 0
    return (torch.cuda.device(q.device), q.device.index if q.device.index is not None
            else torch.cuda.current_device(), torch.cuda.current_stream(q.device).cuda_stream)


def _bwd_cuda(dout, q, k, v, out, lse, dlse, mask, scale, causal, window_left, window_right,
              softcap, deterministic):
    ext = require_extension()
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    B, Hq, Lq, _ = q.shape
    if B * Hq * Lq == 0 or k.shape[2] == 0:  # nothing attends: every gradient is 0
        return dq.zero_(), dk.zero_(), dv.zero_()
    # autograd may hand in expanded or strided gradients; the kernels want a unit last stride
    dout = _dense_last(dout.detach())
    if dlse is not None:
        dlse = dlse.detach().to(torch.float32).contiguous()
    if mask is not None:
        mask = mask.detach()
        if mask.dtype == torch.float64:
            mask = mask.float()
    delta = torch.empty((B, Hq, Lq), dtype=torch.float32, device=q.device)
    dq_accum = dq_workspace(B * Hq * Lq, q, deterministic)
    context, _, stream = _on_device(q)
    with context:
        ext.bwd(dout, q.detach(), k.detach(), v.detach(), _dense_last(out.detach()),
                lse.detach().contiguous(), dlse, mask, delta, dq, dk, dv, dq_accum,
                bool(deterministic), float(scale), bool(causal), int(window_left),
                int(window_right), float(softcap), stream)
    return dq, dk, dv


def dq_workspace(rows: int, q: torch.Tensor, deterministic: bool):
    """The non-deterministic backward's float32 dQ accumulator [rows of lse, D] (params.h
    BwdParams; the kernels zero it), None when deterministic."""
    if deterministic:
        return None
    return torch.empty((rows, q.shape[-1]), dtype=torch.float32, device=q.device)


def require_extension():
    ext = extension()
    if ext is None:
        raise RuntimeError(f"mlx_attn CUDA extension mlx_attn.backends.cuda._cuda is not available: "
                           f"{load_error()}")
    return ext


def _dense_last(x: torch.Tensor) -> torch.Tensor:
    """x itself when the kernels can read it in place (layout.py), else a contiguous copy."""
    return x.contiguous() if layout_reasons("x", x) else x


def _bwd_reference(dout, q, k, v, dlse, mask, scale, causal, window_left, window_right, softcap):
    """The kernels' backward formulas (cuda_bridge/.../bwd_math.h) in float32 torch, for
    non-CUDA tensors: a stand-in that keeps the op usable and opcheck-able without a GPU.

    Not the math backend's gradients: autograd does not record below a custom op's autograd
    key, and torch.func.vjp inside the op fails opcheck's schema test. K/V are repeated over
    the group for simplicity.
    """
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    qf, kf, vf, gf = (x.detach().float() for x in (q, k, v, dout))
    kf, vf = kf.repeat_interleave(G, 1), vf.repeat_interleave(G, 1)
    s = scale * (qf @ kf.transpose(-1, -2))
    slope = torch.full_like(s, scale)
    if softcap > 0:
        t = torch.tanh(s / softcap)
        s, slope = softcap * t, scale * (1 - t * t)
    keep = torch.ones(s.shape, dtype=torch.bool)
    if mask is not None:
        m = mask.detach().expand(B, Hq, Lq, Lk)
        if m.dtype == torch.bool:
            keep = keep & m
        else:
            s = s + m.float()
    i = torch.arange(Lq)[:, None] + (Lk - Lq)
    j = torch.arange(Lk)[None, :]
    right = 0 if causal and (window_right < 0 or window_right > 0) else window_right
    if right >= 0:
        keep = keep & (j <= i + right)
    if window_left >= 0:
        keep = keep & (j >= i - window_left)
    s = s.masked_fill(~keep, float("-inf"))
    lse = torch.logsumexp(s, -1, keepdim=True)
    p = torch.exp(s - lse).nan_to_num(0.0)          # rows with no allowed key: p = 0
    delta = (gf * (p @ vf)).sum(-1, keepdim=True)
    if dlse is not None:
        delta = delta - dlse.detach().float()[..., None]
    dx = p * (gf @ vf.transpose(-1, -2) - delta) * slope
    dq = dx @ kf
    dk = (dx.transpose(-1, -2) @ qf).reshape(B, Hkv, G, Lk, D).sum(2)
    dv = (p.transpose(-1, -2) @ gf).reshape(B, Hkv, G, Lk, v.shape[3]).sum(2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _fwd_cuda(q, k, v, mask, scale, causal, window_left, window_right, softcap, out_blhd):
    ext = require_extension()
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    out = _empty_out(q, B, Hq, Lq, Dv, out_blhd)
    lse = torch.empty((B, Hq, Lq), dtype=torch.float32, device=q.device)
    if B * Hq * Lq == 0:
        return out, lse
    if Lk == 0:  # no keys: every row is fully masked
        out.zero_()
        lse.fill_(float("-inf"))
        return out, lse
    if mask is not None:
        mask = mask.detach()
        if mask.dtype == torch.float64:  # the kernel adds float32 (as the math path does)
            mask = mask.float()
    context, device, stream = _on_device(q)
    with context:
        config, splits = ext.plan(B, Hq, Hkv, Lq, Lk, D, Dv, bool(causal), int(window_left),
                                  int(window_right), device)
        o_accum = lse_accum = None
        if splits > 1:
            o_accum = torch.empty((splits, B, Hq, Lq, Dv), dtype=torch.float32, device=q.device)
            lse_accum = torch.empty((splits, B, Hq, Lq), dtype=torch.float32, device=q.device)
        ext.fwd(q.detach(), k.detach(), v.detach(), out, lse, mask, o_accum, lse_accum, splits,
                float(scale), bool(causal), int(window_left), int(window_right), float(softcap),
                config, stream)
    return out, lse


def _fwd_reference(q, k, v, mask, scale, causal, window_left, window_right, softcap, out_blhd):
    ref, lse = _math_forward(q.detach(), k.detach(), v.detach(), mask, scale, causal,
                             window_left, window_right, softcap)
    out = _empty_out(q, *q.shape[:3], v.shape[3], out_blhd)
    out.copy_(ref)
    return out, lse.contiguous()


def _math_forward(q, k, v, mask, scale, causal, window_left, window_right, softcap):
    """The math backend on the op's own (already bhld) arguments: a sibling backend, called
    directly (the op must not call back up into the front end that dispatches to it)."""
    from ...call import AttentionCall
    from ..math import MathBackend

    if mask is not None:
        mask = mask.detach()
    (B, Hq, Lq, D), (_, Hkv, Lk, _), Dv = q.shape, k.shape, v.shape[3]
    call = AttentionCall(
        kind="torch", device=str(q.device), dtype=str(q.dtype).removeprefix("torch."), q=q, k=k,
        v=v, B=B, Hq=Hq, Hkv=Hkv, Lq=Lq, Lk=Lk, D=D, Dv=Dv, scale=float(scale),
        causal=bool(causal), mask=mask,
        mask_kind=None if mask is None else "bool" if mask.dtype == torch.bool else "additive",
        window=None if (window_left < 0 and window_right < 0) else (window_left, window_right),
        softcap=softcap if softcap > 0 else None, return_lse=True)
    return MathBackend().forward(call)
