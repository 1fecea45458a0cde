"""The CUDA bridge's module interface (`mlx_attn.backends.cuda._cuda`) on the emulator: what
mlx_attn loads as its CUDA extension under MLX_ATTN_CUDA_EMULATE=1.

The same functions with the same arguments as cuda_bridge/src/binding.cpp and
binding_varlen.cpp (`plan`, `fwd`, `bwd`, `plan_varlen`, `fwd_varlen`, `bwd_varlen`, the device
queries), taking torch CPU tensors: the kernels run in the emulator
(`attention.forward` / `backward`, `varlen.forward_varlen` / `backward_varlen`) and their
results are written into the caller's `out`, `lse`, `dq`, `dk`, `dv`, so that the backend, the
torch custom ops, autograd, torch.compile and varlen above it run exactly as on a GPU. The
emulated device is an sm_80 part with 108 SMs (an A100, whose SM count the planner reads); MLX_ATTN_CUDA_CONFIG / MLX_ATTN_CUDA_SPLITS force the
planner's choice as they do for the real bridge.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from . import attention, varlen

NUM_SMS = 108
CAPABILITY = (8, 0)


def device_count():
    return 1, ""


def device_info(index: int) -> dict:
    return {"name": f"CUDA emulator (sm_{CAPABILITY[0]}{CAPABILITY[1]}, {NUM_SMS} SMs)",
            "capability": CAPABILITY, "multiprocessors": NUM_SMS}


def kernel_image_error(index: int) -> str:
    return ""


def head_dim_bucket(d: int, dv: int) -> int:
    return attention.head_dim_bucket(d, dv)


def head_dims() -> list:
    return list(attention.HEAD_DIMS)


def launch_dims(bucket: int) -> dict:
    return attention.launch_dims(bucket)


def _override():
    """(config or None, splits or None) from MLX_ATTN_CUDA_CONFIG / MLX_ATTN_CUDA_SPLITS."""
    config = os.environ.get("MLX_ATTN_CUDA_CONFIG", "").strip().lower()
    splits = os.environ.get("MLX_ATTN_CUDA_SPLITS", "").strip()
    if config not in ("", "auto", "prefill", "decode", "0", "1"):
        raise ValueError(f"MLX_ATTN_CUDA_CONFIG={config!r}: allowed are prefill, decode, auto")
    config = {"0": "prefill", "1": "decode", "": None, "auto": None}.get(config, config)
    if splits and not (splits.isdigit() and 1 <= int(splits) <= 128):
        raise ValueError(f"MLX_ATTN_CUDA_SPLITS={splits!r}: allowed is an integer in [1, 128]")
    splits = int(splits) if splits else None
    if splits is not None and config is None:
        config = "decode"  # a split count implies the split-KV configuration
    return config, splits


def plan(B, Hq, Hkv, Lq, Lk, D, Dv, causal, window_left, window_right, device):
    """(config, num_splits): 0 = prefill, 1 = split-KV decode tiles, as the bridge's plan()."""
    config, splits = _override()
    if config is None or splits is None:
        # shapes only: zero-stride placeholders, nothing allocated
        q, k, v = (np.broadcast_to(np.float16(0), s) for s in
                   ((B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv)))
        window = None if (window_left < 0 and window_right < 0) else (window_left, window_right)
        planned, planned_splits = attention.plan(q, k, v, causal=causal, window=window,
                                                 num_sms=NUM_SMS)
        if config is None:
            config, splits = planned, planned_splits if splits is None else splits
        elif splits is None:
            splits = planned_splits if config == planned else 1
    return attention.CONFIGS[config], int(splits)


def _numpy(t: torch.Tensor | None):
    """A zero-copy numpy view of a CPU tensor (bfloat16 as its uint16 bits); None stays None."""
    if t is None:
        return None
    t = t.detach()
    if t.device.type != "cpu":
        raise ValueError(f"the emulated CUDA kernels take CPU tensors, got one on {t.device}")
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def _into(dst: torch.Tensor, src: np.ndarray) -> None:
    if dst.dtype == torch.bfloat16:
        dst.view(torch.int16).copy_(torch.from_numpy(np.ascontiguousarray(src).view(np.int16)))
    else:
        dst.copy_(torch.from_numpy(np.ascontiguousarray(src)))


def _common(q, mask, scale, causal, window_left, window_right, softcap):
    dtype = "bfloat16" if q.dtype == torch.bfloat16 else "float16"
    window = None if (window_left < 0 and window_right < 0) else (int(window_left), int(window_right))
    return dict(mask=_numpy(mask), scale=float(scale), causal=bool(causal), window=window,
                softcap=float(softcap) if softcap > 0 else None, dtype=dtype)


def fwd(q, k, v, out, lse, mask, o_accum, lse_accum, num_splits, scale, causal, window_left,
        window_right, softcap, config, stream):
    """Forward into out and lse (the split-KV workspace is the emulator's own)."""
    o, l = attention.forward(_numpy(q), _numpy(k), _numpy(v),
                             **_common(q, mask, scale, causal, window_left, window_right, softcap),
                             config=("prefill", "decode")[config], splits=int(num_splits),
                             num_sms=NUM_SMS)
    _into(out, o)
    _into(lse, l)


def bwd(dout, q, k, v, out, lse, dlse, mask, delta, dq, dk, dv, dq_accum, deterministic, scale,
        causal, window_left, window_right, softcap, stream):
    """Backward into dq, dk, dv (delta and dq_accum are the emulator's own workspace)."""
    grads = attention.backward(_numpy(q), _numpy(k), _numpy(v), _numpy(out), _numpy(lse),
                               _numpy(dout), dlse=_numpy(dlse),
                               **_common(q, mask, scale, causal, window_left, window_right, softcap),
                               deterministic=bool(deterministic))
    for dst, src in zip((dq, dk, dv), grads):
        _into(dst, src)


# ---- fused varlen (binding_varlen.cpp) ----------------------------------------------------------
def plan_varlen(num_seqs, Hq, Hkv, max_seqlen_q, max_seqlen_k, D, Dv, causal, window_left,
                window_right, device):
    """(config, 1): the varlen planner's tiles (blocks.h make_plan_varlen), or the forced
    MLX_ATTN_CUDA_CONFIG; never a split."""
    config, _ = _override()
    if config is None:
        config = varlen.plan_shapes(num_seqs, Hq, Hkv, max_seqlen_q, max_seqlen_k, D, Dv,
                                    num_sms=NUM_SMS)
    return attention.CONFIGS[config], 1


def _varlen_common(q, cu_seqlens_q, cu_seqlens_k, scale, causal, window_left, window_right,
                   softcap):
    kw = _common(q, None, scale, causal, window_left, window_right, softcap)
    del kw["mask"]
    return (_numpy(cu_seqlens_q), _numpy(cu_seqlens_k)), kw


def fwd_varlen(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, scale,
               causal, window_left, window_right, softcap, config, stream):
    """Fused varlen forward into out [total_q, Hq, Dv] and lse [Hq, total_q]."""
    cu, kw = _varlen_common(q, cu_seqlens_q, cu_seqlens_k, scale, causal, window_left,
                            window_right, softcap)
    o, l = varlen.forward_varlen(_numpy(q), _numpy(k), _numpy(v), *cu, int(max_seqlen_q),
                                 int(max_seqlen_k), config=("prefill", "decode")[config],
                                 num_sms=NUM_SMS, **kw)
    _into(out, o)
    _into(lse, l)


def bwd_varlen(dout, q, k, v, out, lse, dlse, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
               max_seqlen_k, delta, dq, dk, dv, dq_accum, deterministic, scale, causal,
               window_left, window_right, softcap, stream):
    """Fused varlen backward into dq, dk, dv (delta and dq_accum are the emulator's own)."""
    cu, kw = _varlen_common(q, cu_seqlens_q, cu_seqlens_k, scale, causal, window_left,
                            window_right, softcap)
    grads = varlen.backward_varlen(_numpy(q), _numpy(k), _numpy(v), _numpy(out), _numpy(lse),
                                   _numpy(dout), *cu, int(max_seqlen_q), int(max_seqlen_k),
                                   dlse=_numpy(dlse), deterministic=bool(deterministic), **kw)
    for dst, src in zip((dq, dk, dv), grads):
        _into(dst, src)
