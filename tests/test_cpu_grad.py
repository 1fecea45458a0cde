"""The `cpu` backend's gradients through torch.autograd, mx.grad and mx.vjp, and the MLX
transforms mx.compile / mx.vmap, against mlx_attn.reference.reference_grads (float64).

Loss: sum(out * dout) + sum(lse * dlse) (lse's -inf rows replaced by 0), so the gradient through
the returned lse is checked too. Criterion per gradient: the SPEC's, against the math backend's
gradient in the same dtype through the same framework.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import HAVE_MLX, HAVE_TORCH, assert_close, make, mlx_ready, native_or_skip, rand
from mlx_attn import flash_attention
from mlx_attn.reference import reference, reference_grads, to_f64

pytestmark = pytest.mark.usefixtures("native")

GRAD_KINDS = (["torch"] if HAVE_TORCH else []) + (["mlx"] if HAVE_MLX else [])


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


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


# The SPEC gradient matrix (sizes x features x torch/mlx x fp32/bf16, fp16, masks, blhd, varlen)
# runs on the cpu backend in tests/contract/; what follows is specific to the cpu kernel.


def run_case(kind, dtype, shape, seed=0, mask=None, **kw):
    B, Hq, Hkv, Lq, Lk, D, Dv = shape
    rng = np.random.default_rng(seed)
    q, k, v = (make(kind, dtype, x) for x in (rand(rng, B, Hq, Lq, D), rand(rng, B, Hkv, Lk, D),
                                              rand(rng, B, Hkv, Lk, Dv)))
    gon, gln = rand(rng, B, Hq, Lq, Dv), rand(rng, B, Hq, Lq)
    go, gl = make(kind, "float32", gon), make(kind, "float32", gln)
    if mask is not None:
        kw["mask"] = make(kind, "bool" if mask.dtype == np.bool_ else dtype, mask)
    ref = reference_grads(q, k, v, gon, dlse=gln, **kw)
    got = framework_grads(kind, "cpu", q, k, v, go, gl, **kw)
    mgot = framework_grads(kind, "math", q, k, v, go, gl, **kw)
    for name, g, r, m, x in zip("qkv", got, ref, mgot, (q, k, v)):
        assert tuple(g.shape) == r.shape and str(g.dtype) == str(x.dtype)
        assert_close(g, r, m, "d" + name)


@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_grad_decode_and_long_keys(kind):
    """Few (b, kv head) pairs: the backward splits the keys and sums dq over the splits."""
    run_case(kind, "float32", (1, 4, 1, 3, 900, 64, 64), causal=True)


@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_grad_rows_without_keys(kind):
    """Lq > Lk with causal: rows that see no key have zero gradient (never NaN)."""
    run_case(kind, "float32", (1, 2, 1, 9, 4, 16, 16), causal=True)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_opcheck():
    import torch
    from mlx_attn.backends.cpu.torch_op import torch_ops
    rng = np.random.default_rng(0)
    q, k, v = (torch.from_numpy(rand(rng, 1, 2, 5, 16)).requires_grad_() for _ in range(3))
    torch.library.opcheck(torch_ops(), (q, k, v, None, None, None, 0.25, 0.0, -1, -1, True, 0))
    # the training form for bf16: out comes back in float32 for the backward's delta
    qb, kb, vb = (x.detach().bfloat16().requires_grad_() for x in (q, k, v))
    args = (qb, kb, vb, None, None, None, 0.25, 0.0, -1, -1, True, 0, True)
    assert torch_ops()(*args)[0].dtype == torch.float32
    torch.library.opcheck(torch_ops(), args)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
@pytest.mark.parametrize("isa", ["avx512amx", "avx512bf16", "avx512", "avx2", "neonbf16",
                                 "neon", "generic"])
def test_grad_each_isa_bfloat16(isa, native):
    """Every kernel path's bf16 backward (AVX512-BF16 dot products or float32 products), forced
    with set_isa, whichever one `auto` picks on this CPU."""
    try:
        native.set_isa(isa)
    except ValueError:
        pytest.skip(f"{isa} not supported on this CPU")
    try:
        run_case("torch", "bfloat16", (2, 6, 2, 7, 113, 72, 40), causal=True)
        run_case("torch", "bfloat16", (1, 4, 1, 203, 90, 40, 40), window=(9, 4), softcap=4.0)
        run_case("torch", "bfloat16", (1, 2, 2, 113, 300, 128, 128), seed=1,
                 mask=np.random.default_rng(1).random((113, 300)) > 0.3)
        run_case("torch", "bfloat16", (1, 2, 1, 5, 9, 1, 4), scale=3.0, seed=3)
    finally:
        native.set_isa("auto")


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_torch_compile_graph():
    import torch
    rng = np.random.default_rng(0)
    q, k, v = (torch.from_numpy(rand(rng, 1, 2, 9, 16)) for _ in range(3))
    f = torch.compile(lambda q, k, v: flash_attention(q, k, v, backend="cpu", causal=True),
                      backend="eager", fullgraph=False)
    ref, _ = reference(q, k, v, causal=True)
    np.testing.assert_allclose(f(q, k, v).numpy(), ref, atol=1e-5)


@pytest.mark.skipif(not HAVE_MLX, reason="mlx not installed")
def test_mlx_vjp_with_lse_cotangent():
    mlx_ready()
    import mlx.core as mx
    rng = np.random.default_rng(9)
    qn, kn, vn = rand(rng, 1, 4, 13, 40), rand(rng, 1, 2, 29, 40), rand(rng, 1, 2, 29, 24)
    gon, gln = rand(rng, 1, 4, 13, 24), rand(rng, 1, 4, 13)
    q, k, v = (mx.array(x) for x in (qn, kn, vn))
    outs, grads = mx.vjp(lambda q, k, v: flash_attention(q, k, v, backend="cpu", window=(6, 2),
                                                         return_lse=True),
                         [q, k, v], [mx.array(gon), mx.array(gln)])
    ref = reference_grads(qn, kn, vn, gon, dlse=gln, window=(6, 2))
    for g, r in zip(grads, ref):
        np.testing.assert_allclose(to_f64(g), r, atol=1e-4)


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
        ref, _ = reference(qn[i], kn[i], vn[i], causal=True)
        np.testing.assert_allclose(np.array(compiled(q[i], k[i], v[i])), ref, atol=1e-5)
    g = mx.compile(mx.grad(lambda q, k, v: fn(q, k, v).sum(), argnums=(0, 1, 2)))(q[0], k[0], v[0])
    ref = reference_grads(qn[0], kn[0], vn[0], np.ones((2, 4, 11, 32)), causal=True)
    for gg, r in zip(g, ref):
        np.testing.assert_allclose(np.array(gg), r, atol=1e-4)
    out = mx.vmap(fn)(q, k, v)
    for i in range(3):
        ref, _ = reference(qn[i], kn[i], vn[i], causal=True)
        np.testing.assert_allclose(np.array(out[i]), ref, atol=1e-5)
    out = mx.vmap(fn, in_axes=(0, None, None))(q, k[0], v[0])
    ref, _ = reference(qn[2], kn[0], vn[0], causal=True)
    np.testing.assert_allclose(np.array(out[2]), ref, atol=1e-5)


@pytest.mark.parametrize("kind", GRAD_KINDS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_grad_peaked_softmax_low_precision(kind, dtype):
    """A near one-hot softmax: dp - delta cancels, so delta must come from a float32 output
    (the backward recomputes it) rather than the output rounded to the input dtype."""
    run_case(kind, dtype, (1, 2, 1, 5, 9, 1, 4), scale=3.0, seed=3)
    run_case(kind, dtype, (1, 2, 2, 16, 2, 40, 40), scale=1.0)
