"""The public calls: flash_attention, flash_attention_varlen, explain, backends."""
from __future__ import annotations

from dataclasses import dataclass

from . import dispatch
from .backends import registry
from .frameworks import ops_for
from .validate import check_dense, check_varlen


def flash_attention(q, k, v, *, scale=None, causal=False, mask=None, window=None, softcap=None,
                    return_lse=False, layout="bhld", backend="auto"):
    """Attention per the SPEC. Returns out, or (out, lse) when return_lse=True.

    q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] for layout "bhld" (H and L swapped
    for "blhd"); mlx, torch or numpy arrays, returned as the same kind, device and dtype.
    """
    call = check_dense(q, k, v, scale=scale, causal=causal, mask=mask, window=window,
                       softcap=softcap, return_lse=return_lse, layout=layout)
    out, lse = dispatch.choose(call, backend).forward(call)
    if call.layout == "blhd":
        out = ops_for(call.kind).swapaxes(out, 1, 2)
    return (out, lse) if return_lse else out


def flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, *,
                           scale=None, causal=False, window=None, softcap=None,
                           return_lse=False, backend="auto"):
    """Packed sequences: q [total_q, Hq, D], k/v [total_k, Hkv, D|Dv], int32 cu_seqlens [n+1].

    Returns out [total_q, Hq, Dv], or (out, lse [Hq, total_q]) when return_lse=True.
    """
    call = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                        scale=scale, causal=causal, window=window, softcap=softcap,
                        return_lse=return_lse)
    out, lse = dispatch.choose(call, backend).forward_varlen(call)
    return (out, lse) if return_lse else out


def explain(q, k, v, *, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
            max_seqlen_k=None, backend="auto", **keywords) -> str:
    """For every backend: "chosen", "could run", or the reasons it cannot take these inputs.

    Takes the keywords of flash_attention, or those of flash_attention_varlen when
    cu_seqlens_q is given.
    """
    if cu_seqlens_q is not None:
        call = check_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                            **_with_defaults(keywords, varlen=True))
    else:
        call = check_dense(q, k, v, **_with_defaults(keywords, varlen=False))
    return dispatch.explain_call(call, backend)


_DENSE = dict(scale=None, causal=False, mask=None, window=None, softcap=None, return_lse=False,
              layout="bhld")
_VARLEN = dict(scale=None, causal=False, window=None, softcap=None, return_lse=False)


def _with_defaults(keywords: dict, varlen: bool) -> dict:
    allowed = _VARLEN if varlen else _DENSE
    unknown = set(keywords) - set(allowed)
    if unknown:
        raise TypeError(f"explain() got unexpected keyword(s) {sorted(unknown)}; allowed: "
                        f"{sorted(allowed)}")
    return {**allowed, **keywords}


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reasons: tuple
    priority: int
    fused: bool
    array_kinds: tuple
    dtypes: tuple
    features: tuple
    summary: str


def backends() -> list[BackendInfo]:
    """Every backend, in priority order, whether it can run on this machine and why not."""
    return [BackendInfo(b.name, b.available, tuple(b.availability_reasons), b.priority, b.fused,
                        tuple(sorted(b.array_kinds)), tuple(sorted(b.dtypes)),
                        tuple(sorted(b.features)), b.summary) for b in registry()]
