"""The torch custom ops mlx_attn::fwd / mlx_attn::bwd on the CPU (no GPU needed).

On non-CUDA tensors the ops run a stand-in (the math backend forward; the kernels' backward
formulas in float32 torch), so everything torch checks about an op is exercised here:
schema, fake (meta) kernels, autograd registration and aot_autograd (torch.library.opcheck),
FakeTensorMode shape/dtype propagation, torch.compile tracing, and the autograd wiring
(dout, dlse, no mask gradient) against the float64 reference.  The CUDA kernels themselves are
tested in test_cuda_gpu.py.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from contract.cases import OPCHECK_SHAPES  # noqa: E402
from mlx_attn import flash_attention  # noqa: E402
from mlx_attn.backends.cuda import ops  # noqa: E402
from mlx_attn.reference import max_error, reference, reference_grads  # noqa: E402

# (B, Hq, Hkv, Lq, Lk, D, Dv), declared in tests/contract/cases.py
SHAPES = OPCHECK_SHAPES


def inputs(B, Hq, Hkv, Lq, Lk, D, Dv, dtype=torch.float16, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, Lq, D, generator=g).to(dtype)
    k = torch.randn(B, Hkv, Lk, D, generator=g).to(dtype)
    v = torch.randn(B, Hkv, Lk, Dv, generator=g).to(dtype)
    return [x.requires_grad_(grad) for x in (q, k, v)]


def fwd_args(q, k, v, mask=None, scale=0.3, causal=False, window=(-1, -1), softcap=0.0,
             out_blhd=False):
    return (q, k, v, mask, scale, causal, window[0], window[1], softcap, out_blhd)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", ["plain", "causal", "bool_mask", "float_mask", "window",
                                     "softcap", "blhd"])
def test_opcheck_fwd(shape, variant):
    q, k, v = inputs(*shape, grad=True)
    B, Hq, _, Lq, Lk, _, _ = shape
    kw = {}
    if variant == "causal":
        kw["causal"] = True
    elif variant == "bool_mask":
        kw["mask"] = torch.rand(B, 1, Lq, Lk, generator=torch.Generator().manual_seed(1)) > 0.3
    elif variant == "float_mask":
        kw["mask"] = torch.randn(1, Hq, 1, Lk)
    elif variant == "window":
        kw["window"] = (2, 1)
    elif variant == "softcap":
        kw["softcap"] = 2.0
    elif variant == "blhd":
        kw["out_blhd"] = True
    result = torch.library.opcheck(ops.fwd, fwd_args(q, k, v, **kw))
    assert set(result.values()) == {"SUCCESS"}, result


def test_opcheck_bwd():
    q, k, v = inputs(*SHAPES[1])
    out, lse = ops.fwd(*fwd_args(q, k, v, causal=True))
    dout = torch.randn_like(out)
    for dlse in (None, torch.randn_like(lse)):
        args = (dout, q, k, v, out, lse, dlse, None, 0.3, True, -1, -1, 0.0, False)
        result = torch.library.opcheck(ops.bwd, args)
        assert set(result.values()) == {"SUCCESS"}, result


@pytest.mark.parametrize("out_blhd", [False, True])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_fake_tensor_propagation(dtype, out_blhd):
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 8, 33, 72, dtype=dtype)
        k = torch.empty(2, 2, 50, 72, dtype=dtype)
        v = torch.empty(2, 2, 50, 40, dtype=dtype)
        out, lse = ops.fwd(*fwd_args(q, k, v, out_blhd=out_blhd))
        assert out.shape == (2, 8, 33, 40) and out.dtype == dtype
        assert lse.shape == (2, 8, 33) and lse.dtype == torch.float32
        if out_blhd:  # a [B, Hq, Lq, Dv] view of a contiguous [B, Lq, Hq, Dv] buffer
            assert out.transpose(1, 2).is_contiguous()
        else:
            assert out.is_contiguous()
        dq, dk, dv = ops.bwd(out, q, k, v, out, lse, None, None, 0.1, False, -1, -1, 0.0,
                             False)
        assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)
        assert dq.dtype == dk.dtype == dv.dtype == dtype


def test_torch_compile_traces_forward_and_backward():
    q, k, v = inputs(*SHAPES[1], dtype=torch.float32, grad=True)

    def f(q, k, v):
        out, lse = ops.fwd(*fwd_args(q, k, v, causal=True, softcap=3.0))
        return (out * out).sum() + lse.sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    loss = compiled(q, k, v)
    got = torch.autograd.grad(loss, (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", ["plain", "causal_mask", "window_softcap"])
def test_autograd_matches_reference(shape, variant):
    q, k, v = inputs(*shape, dtype=torch.float32, grad=True)
    B, Hq, _, Lq, Lk, _, _ = shape
    kw, ref_kw = {}, {}
    if variant == "causal_mask":
        mask = torch.rand(B, Hq, Lq, Lk, generator=torch.Generator().manual_seed(2)) > 0.2
        kw, ref_kw = dict(causal=True, mask=mask), dict(causal=True, mask=mask)
    elif variant == "window_softcap":
        kw, ref_kw = dict(window=(3, 2), softcap=1.5), dict(window=(3, 2), softcap=1.5)
    out, _ = ops.fwd(*fwd_args(q, k, v, **kw))
    dout = torch.randn_like(out)
    out.backward(dout)
    ref_out, _ = reference(q, k, v, scale=0.3, **ref_kw)
    assert max_error(out, ref_out) < 1e-5
    for got, want in zip((q.grad, k.grad, v.grad), reference_grads(q, k, v, dout, scale=0.3,
                                                                   **ref_kw)):
        assert max_error(got, want) < 1e-4


def test_lse_gradient_and_no_mask_gradient():
    """d(lse)/d(q, k) flows (folded into delta); a floating mask gets no gradient."""
    q, k, v = inputs(2, 4, 2, 6, 9, 16, 16, dtype=torch.float32, grad=True)
    mask = torch.randn(1, 1, 6, 9, requires_grad=True)
    out, lse = ops.fwd(*fwd_args(q, k, v, mask=mask, causal=True))
    g_out, g_lse = torch.randn_like(out), torch.randn_like(lse)
    got = torch.autograd.grad((out * g_out).sum() + (lse * g_lse).sum(), (q, k, v))
    # the math backend, differentiated by torch itself, is the yardstick here
    m_out, m_lse = flash_attention(q, k, v, scale=0.3, causal=True, mask=mask.detach(),
                                   return_lse=True, backend="math")
    want = torch.autograd.grad((m_out * g_out).sum() + (m_lse * g_lse).sum(), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    out2, _ = ops.fwd(*fwd_args(q, k, v, mask=mask))
    out2.sum().backward()
    assert mask.grad is None


def test_fully_masked_rows_have_zero_gradient():
    q, k, v = inputs(1, 2, 2, 4, 5, 8, 8, dtype=torch.float32, grad=True)
    mask = torch.ones(1, 1, 4, 5, dtype=torch.bool)
    mask[..., 1, :] = False  # row 1 attends to nothing
    out, lse = ops.fwd(*fwd_args(q, k, v, mask=mask))
    assert torch.all(out[:, :, 1] == 0) and torch.all(lse[:, :, 1] == float("-inf"))
    out.sum().backward()
    assert torch.all(q.grad[:, :, 1] == 0)
    assert np.isfinite(k.grad.numpy()).all() and np.isfinite(v.grad.numpy()).all()


# -- the fused varlen ops (varlen_ops.py) -------------------------------------------------------
from mlx_attn.backends.cuda import varlen_ops  # noqa: E402
from mlx_attn.reference import reference_varlen  # noqa: E402

VARLEN = ([3, 0, 5, 2], [4, 2, 0, 6])  # query / key lengths, with empty sequences


def varlen_inputs(lens_q=VARLEN[0], lens_k=VARLEN[1], Hq=4, Hkv=2, D=16, Dv=8,
                  dtype=torch.float32, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    cu_q = torch.tensor(np.cumsum([0, *lens_q]), dtype=torch.int32)
    cu_k = torch.tensor(np.cumsum([0, *lens_k]), dtype=torch.int32)
    q = torch.randn(sum(lens_q), Hq, D, generator=g).to(dtype).requires_grad_(grad)
    k = torch.randn(sum(lens_k), Hkv, D, generator=g).to(dtype).requires_grad_(grad)
    v = torch.randn(sum(lens_k), Hkv, Dv, generator=g).to(dtype).requires_grad_(grad)
    return q, k, v, cu_q, cu_k, max(lens_q), max(lens_k)


def varlen_args(q, k, v, cu_q, cu_k, mq, mk, scale=0.3, causal=False, window=(-1, -1),
                softcap=0.0):
    return (q, k, v, cu_q, cu_k, mq, mk, scale, causal, window[0], window[1], softcap)


@pytest.mark.parametrize("variant", ["plain", "causal", "window", "softcap"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_opcheck_fwd_varlen(variant, dtype):
    kw = {"causal": dict(causal=True), "window": dict(window=(2, 1)),
          "softcap": dict(softcap=2.0)}.get(variant, {})
    args = varlen_args(*varlen_inputs(dtype=dtype, grad=True), **kw)
    result = torch.library.opcheck(varlen_ops.fwd_varlen, args)
    assert set(result.values()) == {"SUCCESS"}, result


def test_opcheck_bwd_varlen():
    q, k, v, cu_q, cu_k, mq, mk = varlen_inputs()
    out, lse = varlen_ops.fwd_varlen(*varlen_args(q, k, v, cu_q, cu_k, mq, mk, causal=True))
    dout = torch.randn_like(out)
    for dlse, deterministic in ((None, False), (torch.randn_like(lse), True)):
        args = (dout, q, k, v, out, lse, dlse, cu_q, cu_k, mq, mk, 0.3, True, -1, -1, 0.0,
                deterministic)
        result = torch.library.opcheck(varlen_ops.bwd_varlen, args)
        assert set(result.values()) == {"SUCCESS"}, result


def test_varlen_fake_tensor_propagation():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q, k, v = (torch.empty(s, dtype=torch.bfloat16) for s in ((21, 8, 72), (30, 2, 72),
                                                                   (30, 2, 40)))
        cu = torch.empty(4, dtype=torch.int32)
        out, lse = varlen_ops.fwd_varlen(q, k, v, cu, cu, 9, 12, 0.1, True, -1, -1, 0.0)
        assert out.shape == (21, 8, 40) and out.dtype == torch.bfloat16
        assert lse.shape == (8, 21) and lse.dtype == torch.float32
        dq, dk, dv = varlen_ops.bwd_varlen(out, q, k, v, out, lse, None, cu, cu, 9, 12, 0.1,
                                           True, -1, -1, 0.0, False)
        assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)


def test_varlen_autograd_and_compile_match_the_reference():
    q, k, v, cu_q, cu_k, mq, mk = varlen_inputs(grad=True)

    def f(q, k, v):
        out, lse = varlen_ops.fwd_varlen(*varlen_args(q, k, v, cu_q, cu_k, mq, mk, causal=True))
        return out, lse

    out, lse = f(q, k, v)
    ref_out, ref_lse = reference_varlen(q, k, v, cu_q, cu_k, scale=0.3, causal=True)
    assert max_error(out, ref_out) < 1e-5 and max_error(lse, ref_lse) < 1e-5
    loss = lambda q, k, v: sum((x * x).sum() for x in f(q, k, v)[:1]) + f(q, k, v)[1].clamp(-50).sum()
    got = torch.autograd.grad(loss(q, k, v), (q, k, v))
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    again = torch.autograd.grad(compiled(q, k, v), (q, k, v))
    for a, b in zip(got, again):
        torch.testing.assert_close(a, b)
    # per sequence, the dense op's gradients (the stand-in runs them one sequence at a time)
    dout = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), dout)
    for s in range(len(cu_q) - 1):
        (a, b), (c, d) = cu_q[s:s + 2].tolist(), cu_k[s:s + 2].tolist()
        if a == b or c == d:
            continue
        part = [x.detach()[i:j].transpose(0, 1)[None] for x, i, j in
                ((q, a, b), (k, c, d), (v, c, d), (dout, a, b))]
        for g, r, (i, j) in zip((dq, dk, dv), reference_grads(*part, scale=0.3, causal=True),
                                ((a, b), (c, d), (c, d))):
            assert max_error(g[i:j], r[0].swapaxes(0, 1)) < 1e-4
    assert torch.all(dk[4:6] == 0) and torch.all(dv[4:6] == 0)  # keys of a query-less sequence
