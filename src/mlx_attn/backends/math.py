"""The `math` backend: the SPEC written with plain framework operations.

It runs anywhere (numpy, torch on any device, MLX on any device), is differentiable through
each framework's own autodiff, and processes queries in chunks so that its extra memory is
O(chunk x Lk) rather than O(Lq x Lk). GQA is computed by grouping query heads over their kv
head (a broadcast), never by repeating K/V.
"""
from __future__ import annotations

import math

from .. import config
from ..call import AttentionCall
from ..frameworks import ops_for
from .base import Backend

NEG_INF = float("-inf")


class MathBackend(Backend):
    name = "math"
    priority = 1000
    fused = False
    array_kinds = frozenset({"mlx", "torch", "numpy"})
    dtypes = frozenset({"float16", "bfloat16", "float32", "float64"})
    features = frozenset({"causal", "mask", "window", "softcap", "lse", "varlen", "backward",
                          "gqa", "dv"})
    summary = "any array kind and device, every feature; chunked over queries"

    def forward(self, call: AttentionCall):
        return attention_bhld(call, call.q, call.k, call.v, call.mask)

    def forward_varlen(self, call: AttentionCall):
        return call.join_sequences([attention_bhld(call, q, k, v, None)
                                    for q, k, v in call.sequences()])


def chunk_rows(call: AttentionCall) -> int:
    """How many query rows to process at once (at least 1)."""
    setting = config.chunk_setting()
    if setting == 0:
        return max(call.Lq, 1)
    if setting is None:
        per_row = max(call.B * call.Hq * call.Lk, 1)
        return max(16, config.AUTO_CHUNK_ELEMENTS // per_row)
    return setting


def attention_bhld(call: AttentionCall, q, k, v, mask):
    """out [B, Hq, Lq, Dv] in q's dtype, and lse [B, Hq, Lq] float32 if asked."""
    ops = ops_for(call.kind)
    B, Hq, Lq, _ = q.shape
    Hkv, Lk, Dv = k.shape[1], k.shape[2], v.shape[3]
    G = Hq // Hkv
    compute = "float64" if call.dtype == "float64" else "float32"
    if Lq == 0 or Lk == 0:
        # zeros that still hang off q, k and v in autodiff (sums of empty slices are exactly 0)
        tie = sum(ops.sum(ops.reshape(x[..., :0], (-1,)), 0) for x in (q, k, v))
        out = ops.full((B, Hq, Lq, Dv), 0.0, call.dtype, q) + ops.astype(tie, call.dtype)
        lse = ops.full((B, Hq, Lq), NEG_INF, "float32", q)
        return out, (lse if call.return_lse else None)
    # kv heads get a singleton group axis; query heads are grouped under their kv head
    kt = ops.swapaxes(ops.astype(k, compute), -1, -2)            # [B, Hkv, D, Lk]
    vc = ops.astype(v, compute)                                   # [B, Hkv, Lk, Dv]
    step = chunk_rows(call)
    outs, lses = [], []
    for start in range(0, Lq, step):
        stop = min(start + step, Lq)
        out, lse = _chunk(call, ops, q, kt, vc, mask, start, stop, compute, G, Lq, Lk)
        if step < Lq:
            ops.finish_chunk(out, lse)
        outs.append(out)
        lses.append(lse)
    out = outs[0] if len(outs) == 1 else ops.concat(outs, 2)
    lse = (lses[0] if len(lses) == 1 else ops.concat(lses, 2)) if call.return_lse else None
    return out, lse


def _chunk(call, ops, q, kt, vc, mask, start, stop, compute, G, Lq, Lk):
    B, Hq, _, D = q.shape
    Hkv, Dv = kt.shape[1], vc.shape[-1]
    n = stop - start
    # a kv head's G query heads are stacked as G*n rows of one matmul (no broadcast copies of K)
    qc = ops.reshape(ops.astype(q[:, :, start:stop], compute), (B, Hkv, G * n, D))
    r = ops.reshape(qc @ kt, (B, Hkv, G, n, Lk))                 # raw dot products

    # 1-2. scores, scaled and softcapped. The scores are held divided by 2**E (E > 0 only when
    # |scale| > 1): scale * dot may overflow the compute dtype where dot does not (inf - inf
    # would then be NaN), while softmax only needs differences, rescaled by 2**E after the
    # row max is taken. Powers of two are exact, so for ordinary inputs nothing changes.
    if call.softcap is None:
        sigma, E = _pow2_split(call.scale)
        s = r * sigma
    else:  # c * tanh(scale * dot / c) is bounded by c: no shift needed
        rho, F = _pow2_split(call.scale / call.softcap)
        s, E = ops.tanh(_times_pow2(r * rho, F)) * call.softcap, 0
    # 3. mask: bool keeps True, floating is added (held divided by 2**E as the scores are)
    if mask is not None:
        m = _mask_rows(ops, mask, start, stop, Hq, Hkv, G)
        if call.mask_kind == "bool":
            s = ops.where(m, s, NEG_INF)
        else:
            s = s + _times_pow2(ops.astype(m, compute), -E)
    # 4-5. causal and window, bottom-right aligned
    allowed = _allowed(call, ops, q, start, stop, Lq, Lk)
    if allowed is not None:
        s = ops.where(allowed, s, NEG_INF)
    # 6. softmax in float32 (float64 for float64 inputs); fully removed rows give p = 0
    # the row max is only a shift for stability (softmax does not depend on it): no gradient
    row_max = ops.stop_gradient(ops.amax(s, -1))
    row_max = ops.where(row_max == NEG_INF, 0.0, row_max)
    e = ops.exp(_times_pow2(s - row_max, E))
    denom = ops.sum(e, -1)
    # the max entry gives exp(0) = 1, so denom == 0 only for a row with no key at all
    empty = denom == 0
    denom = ops.where(empty, 1.0, denom)     # (not log(0): its gradient 1/0 * 0 would be NaN)
    p = e / denom
    # 7. weighted sum of values
    out = ops.reshape(ops.reshape(p, (B, Hkv, G * n, Lk)) @ vc, (B, Hq, n, Dv))
    lse = None
    if call.return_lse:
        lse = ops.where(empty, NEG_INF, ops.log(denom) + _times_pow2(row_max, E))
        lse = ops.astype(ops.reshape(lse, (B, Hq, n)), "float32")
    return ops.astype(out, call.dtype), lse


def _pow2_split(x: float):
    """(sigma, E) with x == sigma * 2**E exactly; E = 0 for |x| <= 1, else |sigma| < 1."""
    mantissa, exponent = math.frexp(x)
    return (x, 0) if exponent <= 0 else (mantissa, exponent)


def _times_pow2(x, E: int):
    """x * 2**E, exact (IEEE with the result rounded once), for any int E: in steps of at most
    2**100, so that no factor itself overflows or flushes to 0 (0 * inf would be NaN)."""
    while E:
        step = max(-100, min(E, 100))
        x = x * 2.0 ** step
        E -= step
    return x


def _mask_rows(ops, mask, start, stop, Hq, Hkv, G):
    """The mask's rows for this chunk, shaped to broadcast over [B, Hkv, G, n, Lk]."""
    mB, mH, mLq, mLk = mask.shape
    if mLq != 1:
        mask = mask[:, :, start:stop]
    rows = mask.shape[2]
    if mH == Hq and Hq != 1:
        return ops.reshape(mask, (mB, Hkv, G, rows, mLk))
    return ops.reshape(mask, (mB, 1, 1, rows, mLk))


def _allowed(call, ops, q, start, stop, Lq, Lk):
    """Bool [n, Lk] of keys allowed by causal and window, or None when both are off."""
    if not call.causal and call.window is None:
        return None
    # d = j - (i + Lk - Lq): key j's distance from query i's bottom-right aligned position.
    # Every d lies in [1 - Lk, Lq - 1] and every intermediate fits an int32 (MLX's arange), as
    # do the sides once clamped to that range (a larger side removes nothing).
    rows = ops.reshape(ops.arange(stop - start, q) + start, (stop - start, 1))
    keys = ops.reshape(ops.arange(Lk, q) + (Lq - Lk), (1, Lk))
    d = keys - rows
    conds = []
    if call.causal:
        conds.append(d <= 0)
    if call.window is not None:
        left, right = call.window
        if left >= 0:
            conds.append(d >= -min(left, Lk))
        if right >= 0:
            conds.append(d <= min(right, Lq))
    allowed = None
    for cond in conds:
        allowed = cond if allowed is None else (allowed & cond)
    return allowed
