"""The Metal backend's test matrix and checks, shared by the emulated run on Linux
(test_metal_emulated.py) and the run on a real Apple GPU (test_metal_device.py).

This module defines no tests itself. Every check compares the `metal` backend with the
float64 SPEC reference (mlx_attn.reference) using the SPEC criterion of tests/contract/tolerance.py:
the error may be at most 2x the error of the same-dtype math path (+1e-5); fp32 may also be
within 1e-4 absolute. The generic SPEC matrix runs on the metal backend in tests/contract/; the
cases here are the Metal kernels' own (tile-table edges, decode kernels, head dims 192/256).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from arrays import convert
from contract.tolerance import assert_lse, fused_ok
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import max_error, reference, reference_grads, reference_varlen, to_f64


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple            # B, Hq, Hkv, Lq, Lk, D, Dv
    dtype: str = "float16"
    layout: str = "bhld"
    opts: dict = field(default_factory=dict)
    mask: str | None = None  # bool | additive | bool_dead_rows | head_bias
    grad: bool = True
    lse_grad: bool = False   # also back-propagate through lse

    def __repr__(self):
        return self.name


# L in {1, 7, 33, 113}; head dims 64, 72, 128 (+ 256 and Dv != D once); GQA; both layouts.
# Lq <= 8 runs the decode kernels, longer queries the prefill kernels; the backward is shared.
DENSE = [
    Case("plain_gqa", (2, 4, 2, 33, 33, 64, 64)),
    Case("causal_blhd", (1, 4, 2, 113, 113, 64, 64), layout="blhd", opts=dict(causal=True)),
    Case("decode7_causal", (1, 4, 1, 7, 113, 64, 64), opts=dict(causal=True)),
    Case("decode1", (2, 2, 1, 1, 113, 64, 64), layout="blhd"),
    Case("bool_mask", (1, 2, 1, 33, 47, 64, 64), mask="bool"),
    Case("dead_rows_causal", (1, 2, 2, 33, 7, 64, 64), mask="bool_dead_rows",
         opts=dict(causal=True)),
    Case("additive_decode", (1, 4, 2, 7, 33, 72, 72), "float32", mask="head_bias"),
    Case("window_softcap", (1, 4, 2, 113, 113, 72, 72), "float32", "blhd",
         opts=dict(window=(8, 2), softcap=5.0)),
    Case("lse_grad_scale", (1, 2, 1, 33, 33, 72, 72), "float32", mask="additive",
         opts=dict(scale=0.2), lse_grad=True),
    Case("bf16_window_causal", (1, 2, 1, 33, 33, 128, 128), "bfloat16",
         opts=dict(causal=True, window=16)),
    Case("d256_fwd", (1, 1, 1, 33, 33, 256, 256), grad=False, opts=dict(causal=True)),
    Case("dv_differs", (1, 2, 1, 7, 33, 128, 64), "float32", grad=True),
    # the largest tiles of the block table: fp32 at D=256 (8-row tiles), and D=96, 192
    Case("d256_f32", (1, 2, 1, 17, 17, 256, 256), "float32", opts=dict(causal=True)),
    Case("d96_bf16", (1, 2, 2, 9, 20, 96, 96), "bfloat16", grad=False),
    Case("d192_decode", (1, 2, 1, 3, 40, 192, 192), grad=False, opts=dict(window=(9, -1))),
]

# (lens_q, lens_k, Hq, Hkv, D, dtype, options, grad)
VARLEN = {
    "varlen_causal_gqa": ([5, 0, 33, 17], [7, 3, 33, 40], 4, 2, 64, "float16",
                          dict(causal=True), True),
    "varlen_decode": ([1, 1, 1], [10, 50, 0], 2, 1, 64, "float16", dict(), True),
    "varlen_window_softcap": ([13, 1, 30], [20, 9, 30], 2, 2, 72, "float32",
                              dict(window=(4, 1), softcap=3.0), True),
}


def _mx(x, dtype):
    return convert(x, "mlx", dtype)


def _mask(rng, case):
    B, Hq, _, Lq, Lk, _, _ = case.shape
    if case.mask in ("bool", "bool_dead_rows"):
        m = rng.random((B, 1, Lq, Lk)) < 0.7
        if case.mask == "bool_dead_rows":
            m[:, :, ::3] = False                  # every third row sees no key at all
        return _mx(m, "bool")
    if case.mask == "additive":
        m = rng.standard_normal((B, Hq, Lq, Lk)).astype(np.float32)
        m[rng.random(m.shape) < 0.1] = -np.inf
        return _mx(m, "float32")
    if case.mask == "head_bias":                  # broadcast over B and Lq, fp32 bias
        return _mx(rng.standard_normal((1, Hq, 1, Lk)).astype(np.float32), "float32")
    return None


def _inputs(case, seed=0):
    rng = np.random.default_rng(seed)
    B, Hq, Hkv, Lq, Lk, D, Dv = case.shape
    shapes = [(B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, Dv), (B, Hq, Lq, Dv)]
    if case.layout == "blhd":
        shapes = [(s[0], s[2], s[1], s[3]) for s in shapes]
    q, k, v, dout = (_mx(rng.standard_normal(s).astype(np.float32), case.dtype) for s in shapes)
    opts = dict(case.opts)
    mask = _mask(rng, case)
    if mask is not None:
        opts["mask"] = mask
    dlse = _mx(rng.standard_normal((B, Hq, Lq)).astype(np.float32), "float32")
    return q, k, v, dout, dlse, opts


def _within(err, base, dtype):
    return fused_ok(err, base, dtype)


def check_forward(case, backend="metal"):
    q, k, v, _, _, opts = _inputs(case)
    out, lse = flash_attention(q, k, v, layout=case.layout, return_lse=True, backend=backend,
                               **opts)
    base, base_lse = flash_attention(q, k, v, layout=case.layout, return_lse=True,
                                     backend="math", **opts)
    want, want_lse = reference(q, k, v, layout=case.layout, **opts)
    assert out.dtype == q.dtype and tuple(out.shape) == want.shape
    err, berr = max_error(out, want), max_error(base, want)
    assert _within(err, berr, case.dtype), f"out error {err:.3g} vs math {berr:.3g}"
    assert_lse(lse, want_lse, base_lse)
    return out, lse


def _loss_fn(case, backend, opts, dout, dlse):
    import mlx.core as mx

    def loss(q, k, v):
        out, lse = flash_attention(q, k, v, layout=case.layout, return_lse=True,
                                   backend=backend, **opts)
        total = (out.astype(mx.float32) * dout.astype(mx.float32)).sum()
        if case.lse_grad:
            total = total + (lse * dlse).sum()
        return total
    return loss


def check_grad(case, backend="metal"):
    import mlx.core as mx
    q, k, v, dout, dlse, opts = _inputs(case)
    grads = mx.grad(_loss_fn(case, backend, opts, dout, dlse), argnums=(0, 1, 2))(q, k, v)
    for g, x in zip(grads, (q, k, v)):
        assert g.dtype == x.dtype and g.shape == x.shape
        assert bool(mx.all(mx.isfinite(g))), "non-finite gradient"
    if case.lse_grad:
        _check_directional(case, grads, q, k, v, dout, dlse, opts)
        return grads
    base = mx.grad(_loss_fn(case, "math", opts, dout, dlse), argnums=(0, 1, 2))(q, k, v)
    want = reference_grads(q, k, v, dout, layout=case.layout, **opts)
    for name, g, b, w in zip("qkv", grads, base, want):
        err, berr = max_error(g, w), max_error(b, w)
        assert _within(err, berr, case.dtype), f"d{name} error {err:.3g} vs math {berr:.3g}"
    return grads


def _check_directional(case, grads, q, k, v, dout, dlse, opts):
    """d/de loss(x + e u) from central differences of the float64 reference, against <g, u>."""
    rng = np.random.default_rng(1)
    x64 = [to_f64(x) for x in (q, k, v)]
    o64 = {key: (to_f64(val) if key == "mask" else val) for key, val in opts.items()}
    d64, l64 = to_f64(dout), to_f64(dlse)

    def loss64(a, b, c):
        out, lse = reference(a, b, c, layout=case.layout, **o64)
        return float((out * d64).sum() + (lse * l64).sum())

    for idx in range(3):
        u = rng.standard_normal(x64[idx].shape)
        eps = 1e-5
        plus = [x + eps * u if i == idx else x for i, x in enumerate(x64)]
        minus = [x - eps * u if i == idx else x for i, x in enumerate(x64)]
        want = (loss64(*plus) - loss64(*minus)) / (2 * eps)
        got = float((to_f64(grads[idx]) * u).sum())
        assert abs(got - want) <= 1e-3 * max(1.0, abs(want)), f"d{'qkv'[idx]}: {got} vs {want}"


def varlen_inputs(name, seed=0):
    lens_q, lens_k, Hq, Hkv, D, dtype, opts, grad = VARLEN[name]
    rng = np.random.default_rng(seed)
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q, k, v = (_mx(rng.standard_normal((n, h, D)).astype(np.float32), dtype)
               for n, h in ((cu_q[-1], Hq), (cu_k[-1], Hkv), (cu_k[-1], Hkv)))
    dout = _mx(rng.standard_normal((cu_q[-1], Hq, D)).astype(np.float32), dtype)
    return (q, k, v, _mx(cu_q, "int32"), _mx(cu_k, "int32"), max(lens_q), max(lens_k),
            dout, dtype, opts, grad)


def check_varlen(name, backend="metal"):
    import mlx.core as mx
    q, k, v, cu_q, cu_k, mq, mk, dout, dtype, opts, grad = varlen_inputs(name)

    def run(b):
        return flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, return_lse=True, backend=b,
                                      **opts)
    (out, lse), (base, base_lse) = run(backend), run("math")
    want, want_lse = reference_varlen(q, k, v, cu_q, cu_k, **opts)
    assert tuple(out.shape) == want.shape and tuple(lse.shape) == want_lse.shape
    err, berr = max_error(out, want), max_error(base, want)
    assert _within(err, berr, dtype), f"out error {err:.3g} vs math {berr:.3g}"
    assert_lse(lse, want_lse, base_lse)
    if not grad:
        return

    def loss(b):
        return lambda a, c, d: (flash_attention_varlen(a, c, d, cu_q, cu_k, mq, mk, backend=b,
                                                       **opts).astype(mx.float32)
                                * dout.astype(mx.float32)).sum()
    grads = mx.grad(loss(backend), argnums=(0, 1, 2))(q, k, v)
    base = mx.grad(loss("math"), argnums=(0, 1, 2))(q, k, v)
    cq, ck = np.array(cu_q), np.array(cu_k)
    x64 = [to_f64(x) for x in (q, k, v, dout)]
    for s in range(len(cq) - 1):
        rows = [(cq[s], cq[s + 1]), (ck[s], ck[s + 1]), (ck[s], ck[s + 1])]
        if cq[s] == cq[s + 1] or ck[s] == ck[s + 1]:
            for g, (a, b) in zip(grads, rows):   # nothing to attend: zero gradient
                assert np.all(to_f64(g)[a:b] == 0)
            continue
        part = [x[a:b].swapaxes(0, 1)[None] for x, (a, b) in
                zip(x64, rows + [(cq[s], cq[s + 1])])]
        want = reference_grads(*part, **opts)
        for name_, g, bg, w, (a, b) in zip("qkv", grads, base, want, rows):
            got = to_f64(g)[a:b].swapaxes(0, 1)[None]
            ref_b = to_f64(bg)[a:b].swapaxes(0, 1)[None]
            err, berr = max_error(got, w), max_error(ref_b, w)
            assert _within(err, berr, dtype), f"seq {s} d{name_}: {err:.3g} vs math {berr:.3g}"


def params(items):
    return [pytest.param(c, id=c.name) for c in items]
