"""The `cpu` backend's gradients (torch.autograd, mx.grad) and MLX transforms (mx.compile,
mx.vmap), against float64 reference gradients from torch autograd of tests/cpu_reference.py.

Criterion, per gradient: max|g - g64| <= 2 max|g_math - g64| + 1e-5 * (1 + max|g64|), where
g_math is the math backend's gradient in the same dtype through the same framework.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import HAVE_MLX, HAVE_TORCH, make, mlx_ready, native_or_skip, rand, to64
from cpu_reference import attention_ref, attention_ref_torch
from mlx_attn import flash_attention, flash_attention_varlen

pytestmark = [pytest.mark.usefixtures("native"),
              pytest.mark.skipif(not HAVE_TORCH, reason="reference gradients need torch")]


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


def check_grad(got, ref, math_got, what):
    eps = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}.get(str(got.dtype).split(".")[-1], 0.0)
    got, math_got = to64(got), to64(math_got)
    err = np.max(np.abs(got - ref), initial=0)
    if not np.isfinite(math_got).all():
        # the math backend's MLX gradient is NaN on rows that see no key (a foundation issue,
        # reported); where it is unusable, allow 2 ulp of the dtype relative to the largest value
        assert err <= 2 * eps * (1 + np.max(np.abs(ref), initial=0)) + 1e-5, (what, err)
        return
    err_math = np.max(np.abs(math_got - ref), initial=0)
    tol = 2 * err_math + 1e-5 * (1 + np.max(np.abs(ref), initial=0))
    assert err <= tol, f"{what}: error {err:.3g} vs math {err_math:.3g}"


def reference_grads(qn, kn, vn, gon, gln, mask=None, **kw):
    import torch
    q, k, v = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (qn, kn, vn))
    if mask is not None and mask.dtype != np.bool_:
        mask = mask.astype(np.float64)
    m = None if mask is None else torch.from_numpy(np.asarray(mask))
    out, lse = attention_ref_torch(q, k, v, mask=m, **kw)
    fin = torch.isfinite(lse)
    loss = (out * torch.from_numpy(gon)).sum() + (torch.where(fin, lse, 0) * torch.from_numpy(gln)).sum()
    return [g.numpy() for g in torch.autograd.grad(loss, (q, k, v))]


def framework_grads(kind, backend, q, k, v, go, gl, **kw):
    if kind == "torch":
        import torch
        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
        out, lse = flash_attention(q, k, v, backend=backend, return_lse=True, **kw)
        lse = torch.where(torch.isfinite(lse), lse, 0)
        loss = (out.float() * go).sum() + (lse * gl).sum()
        return torch.autograd.grad(loss, (q, k, v))
    import mlx.core as mx

    def f(q, k, v):
        out, lse = flash_attention(q, k, v, backend=backend, return_lse=True, **kw)
        lse = mx.where(mx.isinf(lse), 0, lse)
        return (out.astype(mx.float32) * go).sum() + (lse * gl).sum()
    return mx.grad(f, argnums=(0, 1, 2))(q, k, v)


def run_case(kind, dtype, shape, seed=0, mask=None, **kw):
    if kind == "mlx":
        mlx_ready()
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    rng = np.random.default_rng(seed)
    q, k, v = (make(kind, dtype, x) for x in (rand(rng, B, Hq, Lq, D), rand(rng, B, Hkv, Lk, D),
                                              rand(rng, B, Hkv, Lk, Dv)))
    gon, gln = rand(rng, B, Hq, Lq, Dv), rand(rng, B, Hq, Lq)
    go, gl = make(kind, "float32", gon), make(kind, "float32", gln)
    fkw = dict(kw)
    if mask is not None:
        fkw["mask"] = make(kind, "bool" if mask.dtype == np.bool_ else dtype, mask)
        mask = mask if mask.dtype == np.bool_ else to64(fkw["mask"])
    ref = reference_grads(to64(q), to64(k), to64(v), gon.astype(np.float64),
                          gln.astype(np.float64), mask=mask, **kw)
    got = framework_grads(kind, "cpu", q, k, v, go, gl, **fkw)
    mgot = framework_grads(kind, "math", q, k, v, go, gl, **fkw)
    for name, g, r, m in zip("qkv", got, ref, mgot):
        assert tuple(g.shape) == r.shape
        check_grad(g, r, m, "d" + name)


GRAD_KINDS = ["torch"] + (["mlx"] if HAVE_MLX else [])
SHAPES = [(1, 1, 1, 1, 7, 40, 40), (2, 6, 2, 37, 71, 72, 40), (1, 4, 1, 113, 90, 96, 96),
          (1, 2, 2, 130, 130, 128, 128)]
FEATURES = [{}, {"causal": True}, {"window": (9, 4), "softcap": 4.0}, {"causal": True, "softcap": 1.5}]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kind", GRAD_KINDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("feat", FEATURES, ids=["plain", "causal", "window-softcap", "causal-softcap"])
def test_grad_matrix(kind, dtype, shape, feat):
    run_case(kind, dtype, shape, **feat)


@pytest.mark.parametrize("kind", GRAD_KINDS)
@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_grad_masks(kind, mask_kind):
    rng = np.random.default_rng(2)
    if mask_kind == "bool":
        mask = rng.random((2, 1, 1, 50)) > 0.3
    else:
        mask = rng.standard_normal((1, 4, 33, 50)).astype(np.float32)
    run_case(kind, "float32", (2, 4, 2, 33, 50, 64, 64), mask=mask)


@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_grad_decode_and_long_keys(kind):
    """Few (b, kv head) pairs: the backward splits the keys and sums dq over the splits."""
    run_case(kind, "float32", (1, 4, 1, 3, 900, 64, 64), causal=True)


@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_grad_varlen(kind):
    if kind == "mlx":
        mlx_ready()
    rng = np.random.default_rng(4)
    lq, lk = [7, 0, 40, 3], [5, 6, 40, 0]
    cu_q, cu_k = np.cumsum([0] + lq).astype(np.int32), np.cumsum([0] + lk).astype(np.int32)
    qn, kn, vn = rand(rng, cu_q[-1], 4, 32), rand(rng, cu_k[-1], 2, 32), rand(rng, cu_k[-1], 2, 16)
    gon = rand(rng, cu_q[-1], 4, 16)
    q, k, v = (make(kind, "float32", x) for x in (qn, kn, vn))
    cq, ck, go = make(kind, "int32", cu_q), make(kind, "int32", cu_k), make(kind, "float32", gon)
    ref = [np.zeros_like(x, dtype=np.float64) for x in (qn, kn, vn)]
    for s in range(len(lq)):
        a, b, c, d = cu_q[s], cu_q[s + 1], cu_k[s], cu_k[s + 1]
        if a == b or c == d:
            continue  # no query or no key: zero gradients
        sub = [x.swapaxes(0, 1)[None].astype(np.float64) for x in (qn[a:b], kn[c:d], vn[c:d])]
        g = reference_grads(*sub, gon[a:b].swapaxes(0, 1)[None].astype(np.float64),
                            np.zeros((1, 4, b - a)), causal=True)
        for r, gg, lo, hi in zip(ref, g, (a, c, c), (b, d, d)):
            r[lo:hi] = gg[0].swapaxes(0, 1)

    def grads(backend):
        if kind == "torch":
            import torch
            qq, kk, vv = (x.detach().requires_grad_() for x in (q, k, v))
            out = flash_attention_varlen(qq, kk, vv, cq, ck, 40, 40, causal=True, backend=backend)
            return torch.autograd.grad((out * go).sum(), (qq, kk, vv))
        import mlx.core as mx
        f = lambda q, k, v: (flash_attention_varlen(q, k, v, cq, ck, 40, 40, causal=True,  # noqa: E731
                                                    backend=backend) * go).sum()
        return mx.grad(f, argnums=(0, 1, 2))(q, k, v)
    for name, g, r, m in zip("qkv", grads("cpu"), ref, grads("math")):
        check_grad(g, r, m, "d" + name)


def test_torch_opcheck():
    import torch
    from mlx_attn.cpu_torch import torch_ops
    op = torch_ops()
    rng = np.random.default_rng(0)
    q, k, v = (torch.from_numpy(rand(rng, 1, 2, 5, 16)).requires_grad_() for _ in range(3))
    torch.library.opcheck(op, (q, k, v, None, None, None, 0.25, 0.0, -1, -1, True, 0))


def test_torch_compile_graph():
    import torch
    rng = np.random.default_rng(0)
    q, k, v = (torch.from_numpy(rand(rng, 1, 2, 9, 16)) for _ in range(3))
    f = torch.compile(lambda q, k, v: flash_attention(q, k, v, backend="cpu", causal=True),
                      backend="eager", fullgraph=False)
    ref, _ = attention_ref(q.numpy(), k.numpy(), v.numpy(), causal=True)
    np.testing.assert_allclose(f(q, k, v).numpy(), ref, atol=1e-5)


@pytest.mark.skipif(not HAVE_MLX, reason="mlx not installed")
def test_mlx_compile_and_vmap():
    mlx_ready()
    import mlx.core as mx
    rng = np.random.default_rng(0)
    qn, kn, vn = rand(rng, 3, 2, 4, 11, 32), rand(rng, 3, 2, 2, 13, 32), rand(rng, 3, 2, 2, 13, 32)
    q, k, v = (make("mlx", "float32", x) for x in (qn, kn, vn))
    fn = lambda q, k, v: flash_attention(q, k, v, backend="cpu", causal=True)  # noqa: E731
    compiled = mx.compile(fn)
    for i in range(2):
        ref, _ = attention_ref(qn[i], kn[i], vn[i], causal=True)
        np.testing.assert_allclose(np.array(compiled(q[i], k[i], v[i])), ref, atol=1e-5)
    g = mx.compile(mx.grad(lambda q, k, v: fn(q, k, v).sum()))(q[0], k[0], v[0])
    g_ref = mx.grad(lambda q, k, v: flash_attention(q, k, v, backend="math", causal=True).sum())(
        q[0], k[0], v[0])
    np.testing.assert_allclose(np.array(g), np.array(g_ref), atol=1e-4)
    out = mx.vmap(fn)(q, k, v)
    for i in range(3):
        ref, _ = attention_ref(qn[i], kn[i], vn[i], causal=True)
        np.testing.assert_allclose(np.array(out[i]), ref, atol=1e-5)
    out = mx.vmap(fn, in_axes=(0, None, None))(q, k[0], v[0])
    ref, _ = attention_ref(qn[2], kn[0], vn[0], causal=True)
    np.testing.assert_allclose(np.array(out[2]), ref, atol=1e-5)
