"""The CUDA forward as a torch custom op: `torch.ops.mlx_attn.fwd`.

    fwd(q, k, v, mask, scale, causal, window_left, window_right, softcap, out_blhd)
        -> (out [B, Hq, Lq, Dv] in q's dtype, lse float32 [B, Hq, Lq])

q/k/v are in the bhld index order (any batch/head/seq strides, contiguous last dim); mask is
None or rank 4 broadcastable to [B, Hq, Lq, Lk] (bool keeps True, floating is added); causal is
bottom-right aligned; window sides are -1 when unbounded; softcap 0 means off.  With
out_blhd=True, out is a [B, Hq, Lq, Dv] view of a contiguous [B, Lq, Hq, Dv] tensor, so that a
caller in the "blhd" layout gets a contiguous result back.

Registered with `torch.library.custom_op` and `register_fake`, so torch.compile traces it and
`torch.library.opcheck` validates it.  On CUDA tensors it runs our kernels (mlx_attn._cuda,
tensors passed through DLPack after .detach(), outputs and split-KV workspace allocated here by
torch's caching allocator, launched on the current torch stream).  On any other device it runs
the math backend, a reference implementation that keeps the op usable (and testable) anywhere.

There is no backward yet (CUDA bridge part 2): a gradient through this op raises a clear error
rather than returning a wrong one.  `flash_attention` never routes gradient-requiring calls here
(the cuda backend does not declare "backward"; the dispatcher picks the math backend).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import extension, load_error

OP_NAME = "mlx_attn::fwd"


def _empty_out(q: torch.Tensor, B: int, Hq: int, Lq: int, Dv: int, out_blhd: bool):
    if out_blhd:
        return q.new_empty((B, Lq, Hq, Dv)).transpose(1, 2)
    return q.new_empty((B, Hq, Lq, Dv))


@torch.library.custom_op(OP_NAME, mutates_args=())
def fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
        scale: float, causal: bool, window_left: int, window_right: int, softcap: float,
        out_blhd: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if q.device.type == "cuda":
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


def _setup_context(ctx, inputs, output):
    pass


def _backward(ctx, grad_out, grad_lse):
    raise NotImplementedError(
        "mlx_attn::fwd (the cuda backend's forward kernel) has no backward yet (CUDA bridge "
        "part 2). Call flash_attention(...) with backend='auto' or 'math' to get gradients: the "
        "dispatcher sends calls that need gradients to the math backend.")


fwd.register_autograd(_backward, setup_context=_setup_context)


def _fwd_cuda(q, k, v, mask, scale, causal, window_left, window_right, softcap, out_blhd):
    ext = extension()
    if ext is None:
        raise RuntimeError(f"mlx_attn CUDA extension mlx_attn._cuda is not available: "
                           f"{load_error()}")
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
    with torch.cuda.device(q.device):
        device = torch.cuda.current_device()
        config, splits = ext.plan(B, Hq, Hkv, Lq, Lk, D, Dv, bool(causal), int(window_left),
                                  int(window_right), device)
        o_accum = lse_accum = None
        if splits > 1:
            o_accum = torch.empty((splits, B, Hq, Lq, Dv), dtype=torch.float32, device=q.device)
            lse_accum = torch.empty((splits, B, Hq, Lq), dtype=torch.float32, device=q.device)
        stream = torch.cuda.current_stream(q.device).cuda_stream
        ext.fwd(q.detach(), k.detach(), v.detach(), out, lse, mask, o_accum, lse_accum, splits,
                float(scale), bool(causal), int(window_left), int(window_right), float(softcap),
                config, stream)
    return out, lse


def _fwd_reference(q, k, v, mask, scale, causal, window_left, window_right, softcap, out_blhd):
    from ..api import flash_attention

    window = None if (window_left < 0 and window_right < 0) else (window_left, window_right)
    if mask is not None:
        mask = mask.detach()
    ref, lse = flash_attention(q.detach(), k.detach(), v.detach(), scale=scale, causal=causal,
                               mask=mask, window=window, softcap=softcap if softcap > 0 else None,
                               return_lse=True, backend="math")
    B, Hq, Lq, _ = q.shape
    out = _empty_out(q, B, Hq, Lq, v.shape[3], out_blhd)
    out.copy_(ref)
    return out, lse.contiguous()
