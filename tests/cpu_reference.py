"""An independent float64 reference of the SPEC for the cpu backend's tests.

Written straight from /SPEC.md "Scores, in this order" (not from any backend). `attention_ref`
works on numpy float64; `attention_ref_torch` is the same formula in torch float64 so that torch
autograd gives reference gradients.
"""
from __future__ import annotations

import numpy as np


def allowed(Lq, Lk, causal, window):
    off = Lk - Lq
    i = np.arange(Lq)[:, None] + off
    j = np.arange(Lk)[None, :]
    ok = np.ones((Lq, Lk), bool)
    if causal:
        ok &= j <= i
    if window is not None:
        left, right = (window, 0) if isinstance(window, int) else window
        if left >= 0:
            ok &= j >= i - left
        if right >= 0:
            ok &= j <= i + right
    return ok


def attention_ref(q, k, v, scale=None, causal=False, mask=None, window=None, softcap=None):
    """bhld float64: returns (out [B,Hq,Lq,Dv], lse [B,Hq,Lq])."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    scale = 1 / np.sqrt(D) if scale is None else scale
    heads = np.arange(Hq) // (Hq // Hkv)
    s = scale * np.einsum("bhid,bhjd->bhij", q, k[:, heads])
    if softcap:
        s = softcap * np.tanh(s / softcap)
    if mask is not None:
        mask = np.asarray(mask)
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask.astype(np.float64)
    s = np.where(allowed(Lq, Lk, causal, window), s, -np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s.max(-1, keepdims=True) if Lk else np.full(s.shape[:-1] + (1,), -np.inf)
        m = np.where(np.isneginf(m), 0.0, m)
        e = np.exp(s - m)
        d = e.sum(-1, keepdims=True)
        p = e / np.where(d == 0, 1.0, d)
        lse = (np.log(d) + m)[..., 0]
    out = np.einsum("bhij,bhjd->bhid", p, v[:, heads])
    return out, lse


def varlen_ref(q, k, v, cu_q, cu_k, **kw):
    """Packed [total, H, D] float64 reference: (out [total_q, Hq, Dv], lse [Hq, total_q])."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    out = np.zeros((q.shape[0], q.shape[1], v.shape[2]))
    lse = np.full((q.shape[1], q.shape[0]), -np.inf)
    for s in range(len(cu_q) - 1):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_k[s], cu_k[s + 1]
        o, l = attention_ref(q[a:b].swapaxes(0, 1)[None], k[c:d].swapaxes(0, 1)[None],
                             v[c:d].swapaxes(0, 1)[None], **kw)
        out[a:b] = o[0].swapaxes(0, 1)
        lse[:, a:b] = l[0]
    return out, lse


def attention_ref_torch(q, k, v, scale=None, causal=False, mask=None, window=None, softcap=None):
    """The same formula in torch (any dtype; use float64 for reference gradients)."""
    import torch
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    scale = 1 / D ** 0.5 if scale is None else scale
    heads = torch.arange(Hq) // (Hq // Hkv)
    s = scale * q @ k[:, heads].transpose(-1, -2)
    if softcap:
        s = softcap * torch.tanh(s / softcap)
    if mask is not None:
        s = torch.where(mask, s, -torch.inf) if mask.dtype == torch.bool else s + mask.to(s.dtype)
    s = s.masked_fill(~torch.from_numpy(allowed(Lq, Lk, causal, window)), -torch.inf)
    m = s.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    e = torch.exp(s - m)
    d = e.sum(-1, keepdim=True)
    p = e / torch.where(d == 0, torch.ones_like(d), d)
    return p @ v[:, heads], (torch.log(d) + m)[..., 0]
