"""An independent float64 reference of the SPEC, in numpy, for tests, benchmarks and the doctor.

Written straight from ../shared/SPEC.md with einsum and explicit index grids; it shares no
code with the math backend, so a bug in one does not hide in the other. Inputs may be mlx,
torch or numpy arrays of any float dtype; everything is converted to float64 on the host.

`reference_grads` is the analytic backward of the same formula (float64), so gradients of any
backend can be checked without a framework's autodiff.
"""
from __future__ import annotations

import numpy as np

from .frameworks import kind_of, ops_for


def to_f64(x) -> np.ndarray:
    """Any supported array (or None) -> float64 (or bool) numpy array on the host."""
    if x is None or isinstance(x, np.ndarray) and x.dtype in (np.float64, np.bool_):
        return x
    kind = kind_of(x)
    host = ops_for(kind).to_host(x) if kind is not None else np.asarray(x)
    return host if host.dtype == np.bool_ else host.astype(np.float64)


def _bhld(x, layout):
    x = to_f64(x)
    return x if layout == "bhld" else np.swapaxes(x, 1, 2)


def _scores_and_keep(q, k, scale, causal, mask, window, softcap, rows=None):
    """Scores after every SPEC step, the pre-softcap tanh, and which entries survive."""
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    heads = np.arange(Hq) // (Hq // Hkv)          # GQA: query head h reads kv head h // G
    kq = k[:, heads]
    rows = np.arange(Lq) if rows is None else np.asarray(rows)
    s = np.einsum("bhid,bhjd->bhij", q[:, :, rows], kq) * scale
    t = None
    if softcap is not None:
        t = np.tanh(s / softcap)
        s = softcap * t
    keep = np.ones(s.shape, dtype=bool)
    if mask is not None:
        m = np.broadcast_to(to_f64(mask), (B, Hq, Lq, Lk))[:, :, rows]
        if m.dtype == np.bool_:
            keep &= m
        else:
            s = s + m
            keep &= ~np.isneginf(s)
    i = rows[:, None] + (Lk - Lq)                  # bottom-right aligned query position
    j = np.arange(Lk)[None, :]
    if causal:
        keep &= j <= i
    if window is not None:
        left, right = (window, 0) if np.isscalar(window) else window
        # |i - j| < Lq + Lk: a larger side removes nothing (and would overflow int64)
        if left >= 0:
            keep &= j >= i - min(left, Lq + Lk)
        if right >= 0:
            keep &= j <= i + min(right, Lq + Lk)
    return s, t, keep


def _softmax(s, keep):
    s = np.where(keep, s, -np.inf)
    alive = keep.any(-1, keepdims=True)
    m = np.where(alive, s.max(-1, keepdims=True, initial=-np.inf), 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    denom = e.sum(-1, keepdims=True)
    p = e / np.where(alive, denom, 1.0)
    with np.errstate(divide="ignore"):
        lse = np.where(alive, np.log(np.where(alive, denom, 1.0)) + m, -np.inf)[..., 0]
    return p, lse


def reference(q, k, v, *, scale=None, causal=False, mask=None, window=None, softcap=None,
              layout="bhld", rows=None):
    """(out float64 [B, Hq, Lq, Dv] in the caller's layout, lse float64 [B, Hq, Lq]).

    `rows` optionally restricts the computation to some query rows (for big shapes).
    """
    q, k, v = (_bhld(x, layout) for x in (q, k, v))
    B, Hq, Lq, D = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    n = Lq if rows is None else len(rows)
    if n == 0 or Lk == 0:
        out, lse = np.zeros((B, Hq, n, Dv)), np.full((B, Hq, n), -np.inf)
    else:
        scale = 1.0 / np.sqrt(D) if scale is None else scale
        s, _, keep = _scores_and_keep(q, k, scale, causal, mask, window, softcap, rows)
        p, lse = _softmax(s, keep)
        out = np.einsum("bhij,bhjd->bhid", p, v[:, np.arange(Hq) // (Hq // Hkv)])
    return (out if layout == "bhld" else np.swapaxes(out, 1, 2)), lse


def reference_grads(q, k, v, dout, *, scale=None, causal=False, mask=None, window=None,
                    softcap=None, layout="bhld", dlse=None):
    """(dq, dk, dv) float64 of sum(out * dout) (+ sum(lse * dlse) when `dlse` [B, Hq, Lq] is
    given; rows with no key contribute nothing), in the caller's layout."""
    q, k, v, do = (_bhld(x, layout) for x in (q, k, v, dout))
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    G = Hq // Hkv
    heads = np.arange(Hq) // G
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    if Lq and Lk:
        scale = 1.0 / np.sqrt(D) if scale is None else scale
        s, t, keep = _scores_and_keep(q, k, scale, causal, mask, window, softcap)
        p, _ = _softmax(s, keep)
        vq = v[:, heads]
        dv_q = np.einsum("bhij,bhid->bhjd", p, do)             # per query head, then summed
        dp = np.einsum("bhid,bhjd->bhij", do, vq)
        ds = p * (dp - (dp * p).sum(-1, keepdims=True))         # softmax backward
        if dlse is not None:
            ds = ds + p * to_f64(dlse)[..., None]                # d lse / d s = p
        if softcap is not None:
            ds = ds * (1.0 - t * t)                             # d(c*tanh(x/c))/dx
        ds = ds * scale
        dq = np.einsum("bhij,bhjd->bhid", ds, k[:, heads])
        dk_q = np.einsum("bhij,bhid->bhjd", ds, q)
        dk = dk_q.reshape(B, Hkv, G, Lk, D).sum(2)
        dv = dv_q.reshape(B, Hkv, G, Lk, v.shape[3]).sum(2)
    if layout == "blhd":
        dq, dk, dv = (np.swapaxes(x, 1, 2) for x in (dq, dk, dv))
    return dq, dk, dv


def reference_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, *, scale=None, causal=False,
                     window=None, softcap=None):
    """Packed sequences: (out float64 [total_q, Hq, Dv], lse float64 [Hq, total_q])."""
    q, k, v = to_f64(q), to_f64(k), to_f64(v)
    cq = [int(c) for c in to_f64(cu_seqlens_q)]
    ck = [int(c) for c in to_f64(cu_seqlens_k)]
    out = np.zeros(q.shape[:2] + v.shape[2:])
    lse = np.full((q.shape[1], q.shape[0]), -np.inf)
    for s in range(len(cq) - 1):
        part = [x[a:b].swapaxes(0, 1)[None] for x, a, b in
                ((q, cq[s], cq[s + 1]), (k, ck[s], ck[s + 1]), (v, ck[s], ck[s + 1]))]
        o, l = reference(*part, scale=scale, causal=causal, window=window, softcap=softcap)
        out[cq[s]:cq[s + 1]] = o[0].swapaxes(0, 1)
        lse[:, cq[s]:cq[s + 1]] = l[0]
    return out, lse


def max_error(got, want) -> float:
    """max |got - want| over finite entries; inf if the non-finite patterns differ (NaN where
    NaN is expected matches)."""
    got, want = to_f64(got), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape {got.shape} != reference shape {want.shape}")
    if got.size == 0:
        return 0.0
    finite = np.isfinite(want)
    if not np.array_equal(finite, np.isfinite(got)) or \
            not np.array_equal(got[~finite], want[~finite], equal_nan=True):
        return float("inf")
    return float(np.abs(got[finite] - want[finite]).max(initial=0.0))


def passes(err: float, baseline_err: float) -> bool:
    """SPEC criterion: within 2x the same-precision math path's error, plus 1e-5."""
    return err <= 2.0 * baseline_err + 1e-5
