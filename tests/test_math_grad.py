"""Gradients through the math backend (torch autograd, mx.grad / mx.vjp) vs the analytic
float64 reference gradients."""
from __future__ import annotations

import numpy as np
import pytest

from arrays import HAVE, convert, qkv
from contract.cases import MATH_GRAD_SHAPES
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import max_error, reference_grads, reference_varlen, to_f64

CASES = {
    "plain": dict(),
    "causal": dict(causal=True),
    "window_softcap": dict(window=(4, 2), softcap=2.0),
    "mask_causal": dict(causal=True, mask=True),
    "everything": dict(causal=True, window=(6, 0), softcap=3.0, mask=True, scale=0.3),
}
SHAPES = MATH_GRAD_SHAPES  # declared in tests/contract/cases.py

# float64 autodiff must agree with the analytic reference to rounding; float32 to ~1e-4 of the
# gradient's magnitude (the math path computes in float32).
TOL = {"float64": 1e-9, "float32": 2e-4}


def _inputs(shape, case, layout, seed=0):
    rng = np.random.default_rng(seed)
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    q, k, v = qkv(rng, B, Hq, Hkv, Lq, Lk, D, Dv, dtype="float64", layout=layout)
    options = dict(CASES[case])
    if options.pop("mask", False):
        mask = rng.standard_normal((B, 1, Lq, Lk))
        mask[rng.random(mask.shape) < 0.1] = -np.inf
        options["mask"] = mask
    dout_shape = (B, Hq, Lq, Dv) if layout == "bhld" else (B, Lq, Hq, Dv)
    return q, k, v, rng.standard_normal(dout_shape), options


def _close(got, want, dtype):
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    return max_error(got, want) <= TOL[dtype] * scale


@pytest.mark.skipif(not HAVE["torch"], reason="torch is not installed")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layout", ["bhld", "blhd"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_torch_autograd(dtype, layout, case, shape):
    import torch
    q, k, v, dout, options = _inputs(shape, case, layout)
    want = reference_grads(q, k, v, dout, layout=layout, **options)
    tq, tk, tv = (torch.tensor(x, dtype=getattr(torch, dtype), requires_grad=True)
                  for x in (q, k, v))
    if "mask" in options:
        options["mask"] = torch.tensor(options["mask"], dtype=getattr(torch, dtype))
    out = flash_attention(tq, tk, tv, layout=layout, backend="math", **options)
    out.backward(torch.tensor(dout, dtype=out.dtype))
    for name, t, w in zip("qkv", (tq, tk, tv), want):
        assert _close(t.grad, w, dtype), f"d{name} differs from the reference"


@pytest.mark.skipif(not HAVE["mlx"], reason="mlx is not installed")
@pytest.mark.parametrize("layout", ["bhld", "blhd"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_mlx_grad_and_vjp(layout, case, shape):
    import mlx.core as mx
    q, k, v, dout, options = _inputs(shape, case, layout)
    want = reference_grads(q, k, v, dout, layout=layout, **options)
    mq, mk, mv, mdout = (convert(x, "mlx", "float32") for x in (q, k, v, dout))
    if "mask" in options:
        options["mask"] = convert(options["mask"], "mlx", "float32")

    def loss(a, b, c):
        return (flash_attention(a, b, c, layout=layout, backend="math", **options) * mdout).sum()

    grads = mx.grad(loss, argnums=(0, 1, 2))(mq, mk, mv)
    for name, g, w in zip("qkv", grads, want):
        assert _close(g, w, "float32"), f"d{name} (mx.grad) differs from the reference"
    _, vjps = mx.vjp(lambda a, b, c: flash_attention(a, b, c, layout=layout, backend="math",
                                                     **options), [mq, mk, mv], [mdout])
    for name, g, w in zip("qkv", vjps, want):
        assert _close(g, w, "float32"), f"d{name} (mx.vjp) differs from the reference"


@pytest.mark.skipif(not HAVE["torch"], reason="torch is not installed")
def test_torch_varlen_gradients_match_per_sequence_reference():
    import torch
    rng = np.random.default_rng(3)
    lens = [3, 0, 9, 1]
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    q, k, v = (rng.standard_normal((cu[-1], h, 16)) for h in (4, 2, 2))
    dout = rng.standard_normal((cu[-1], 4, 16))
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    tcu = torch.from_numpy(cu)
    out = flash_attention_varlen(tq, tk, tv, tcu, tcu, 9, 9, causal=True, softcap=2.0,
                                 backend="math")
    out.backward(torch.tensor(dout))
    for s in range(len(lens)):
        a, b = cu[s], cu[s + 1]
        if a == b:
            continue
        part = [x[a:b].swapaxes(0, 1)[None] for x in (q, k, v, dout)]
        want = reference_grads(*part, causal=True, softcap=2.0)
        for t, w in zip((tq, tk, tv), want):
            got = to_f64(t.grad)[a:b].swapaxes(0, 1)[None]
            assert max_error(got, w) <= 1e-9
    want_out, _ = reference_varlen(q, k, v, cu, cu, causal=True, softcap=2.0)
    assert max_error(out, want_out) <= 1e-10


@pytest.mark.skipif(not HAVE["torch"], reason="torch is not installed")
def test_fully_masked_rows_have_zero_gradients_not_nan():
    import torch
    q, k, v = (torch.randn(1, 2, 5, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    kk = k[:, :, :2]
    vv = v[:, :, :2]
    out = flash_attention(q, kk, vv, causal=True, backend="math")   # rows 0..2 see nothing
    out.sum().backward()
    assert torch.all(torch.isfinite(q.grad)) and torch.all(q.grad[:, :, :3] == 0)
    assert torch.all(torch.isfinite(k.grad)) and torch.all(torch.isfinite(v.grad))


@pytest.mark.parametrize("Lq,Lk", [(0, 5), (5, 0), (0, 0)])
def test_empty_lengths_stay_differentiable(Lq, Lk):
    """Lq or Lk = 0: zeros that autodiff still reaches, with zero (not missing) gradients."""
    if HAVE["torch"]:
        import torch
        q = torch.randn(1, 2, Lq, 8, requires_grad=True)
        k, v = (torch.randn(1, 1, Lk, 8, requires_grad=True) for _ in range(2))
        flash_attention(q, k, v, backend="math").sum().backward()
        assert all(t.grad is not None and not t.grad.any() for t in (q, k, v))
    if HAVE["mlx"]:
        import mlx.core as mx
        grads = mx.grad(lambda a, b, c: flash_attention(a, b, c, backend="math").sum(),
                        argnums=(0, 1, 2))(mx.ones((1, 2, Lq, 8)), mx.ones((1, 1, Lk, 8)),
                                           mx.ones((1, 1, Lk, 8)))
        assert [g.shape for g in grads] == [(1, 2, Lq, 8), (1, 1, Lk, 8), (1, 1, Lk, 8)]
        assert not any(np.any(np.array(g)) for g in grads)


@pytest.mark.skipif(not HAVE["mlx"], reason="mlx is not installed")
@pytest.mark.parametrize("options", [dict(causal=True), dict(softcap=2.0, mask="bool"),
                                     dict(mask="additive", window=(1, 0))],
                         ids=["causal", "softcap-bool", "additive-window"])
def test_mlx_rows_without_keys_have_zero_gradients(options):
    import mlx.core as mx
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal(s) for s in ((1, 2, 6, 8), (1, 2, 3, 8), (1, 2, 3, 8)))
    dout = rng.standard_normal((1, 2, 6, 8))
    options = dict(options)
    host = dict(options)
    keep = np.ones((1, 1, 6, 3), bool)
    keep[..., 4, :] = False                                   # row 4 sees no key at all
    if options.get("mask") == "bool":
        options["mask"], host["mask"] = mx.array(keep), keep
    elif options.get("mask") == "additive":
        additive = np.where(keep, 0.0, -np.inf)
        options["mask"], host["mask"] = mx.array(additive.astype(np.float32)), additive
    want = reference_grads(q, k, v, dout, **host)
    mq, mk, mv, md = (mx.array(x.astype(np.float32)) for x in (q, k, v, dout))
    grads = mx.grad(lambda a, b, c: (flash_attention(a, b, c, backend="math", **options)
                                     * md).sum(), argnums=(0, 1, 2))(mq, mk, mv)
    for g, w in zip(grads, want):
        assert np.all(np.isfinite(np.array(g)))
        assert _close(g, w, "float32")
