"""The CUDA kernels on a GPU against the float64 SPEC reference (skipped without one).

Forward matrix: fp16/bf16 x L in {1, 7, 113, 203} x D in {40, 72, 96, 128} (plus the other
buckets) x {plain, causal, GQA, bool mask, additive mask, window, softcap, Dv != D, blhd,
non-contiguous}, lse included; the split-KV decode path; gradients over the same matrix;
varlen with ragged (and empty) sequences, forward and backward; deterministic backward
(bitwise equal across runs); torch.compile and opcheck on CUDA tensors.
Criterion (SPEC, tests/contract/tolerance.py): max|ours - ref64| <= 2 * max|math same dtype -
ref64| + 1e-5 (the same criterion for lse).
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mlx_attn import flash_attention, flash_attention_varlen  # noqa: E402
from mlx_attn.backends.cuda import CudaBackend  # noqa: E402
from contract.tolerance import fused_ok  # noqa: E402
from mlx_attn.reference import (max_error, reference, reference_grads,  # noqa: E402
                                reference_varlen)


def _why_not() -> str | None:
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__}"
    reasons = CudaBackend().availability_reasons
    return "; ".join(reasons) if reasons else None


_SKIP = _why_not()
pytestmark = pytest.mark.skipif(_SKIP is not None, reason=f"cuda backend unavailable: {_SKIP}")

DTYPES = [torch.float16, torch.bfloat16]


def _dt(x) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]
LENGTHS = [(1, 1), (7, 7), (113, 113), (203, 203), (7, 113), (113, 7), (1, 203)]
DIMS = [40, 72, 96, 128]
VARIANTS = ["plain", "causal", "gqa", "bool_mask", "add_mask", "window", "softcap", "dv",
            "blhd", "strided"]


def make_case(variant, Lq, Lk, D, dtype, seed=0, grad=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    B, Hq, Hkv, Dv = 2, 4, 4, D
    if variant == "gqa":
        Hkv = 2
    if variant == "dv":
        Dv = 32 if D != 32 else 64
    rnd = lambda *s: torch.randn(*s, generator=g, device="cuda")  # noqa: E731
    q, k, v = rnd(B, Hq, Lq, D), rnd(B, Hkv, Lk, D), rnd(B, Hkv, Lk, Dv)
    kw = dict(scale=None)
    if variant == "causal":
        kw["causal"] = True
    elif variant == "bool_mask":
        kw["mask"] = torch.rand(B, 1, Lq, Lk, generator=g, device="cuda") > 0.25
        kw["causal"] = True
    elif variant == "add_mask":
        kw["mask"] = rnd(1, Hq, Lq, Lk)
    elif variant == "window":
        kw["window"] = (17, 3)
        kw["causal"] = Lq > 50
    elif variant == "softcap":
        kw["softcap"] = 2.5
        kw["causal"] = True
    layout = "bhld"
    if variant == "blhd":
        layout = "blhd"
        q, k, v = (x.transpose(1, 2).contiguous() for x in (q, k, v))
    q, k, v = (x.to(dtype) for x in (q, k, v))
    if variant == "strided":  # views with a padded last axis and swapped batch/head strides
        q, k, v = (torch.cat([x, x[..., :8]], -1)[..., :x.shape[-1]] for x in (q, k, v))
    if grad:
        q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    return q, k, v, kw, layout


def check_forward(q, k, v, kw, layout):
    out, lse = flash_attention(q, k, v, **kw, layout=layout, return_lse=True, backend="cuda")
    m_out, m_lse = flash_attention(q, k, v, **kw, layout=layout, return_lse=True, backend="math")
    ref_out, ref_lse = reference(q, k, v, **kw, layout=layout)
    assert out.dtype == q.dtype and out.device == q.device and lse.dtype == torch.float32
    err, base = max_error(out, ref_out), max_error(m_out, ref_out)
    assert fused_ok(err, base, _dt(out)), f"out error {err} vs math {base}"
    lerr, lbase = max_error(lse, ref_lse), max_error(m_lse, ref_lse)
    assert fused_ok(lerr, lbase, _dt(out)), f"lse error {lerr} vs math {lbase}"


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("Lq, Lk", LENGTHS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matrix(variant, Lq, Lk, D, dtype):
    check_forward(*make_case(variant, Lq, Lk, D, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("D", [8, 32, 64, 160, 192, 256])
@pytest.mark.parametrize("variant", ["plain", "causal", "gqa"])
def test_forward_other_buckets(variant, D, dtype):
    check_forward(*make_case(variant, 113, 203, D, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("Lk", [1, 63, 4096, 20000])
@pytest.mark.parametrize("variant", ["plain", "gqa", "window", "bool_mask"])
def test_decode_split_kv(variant, Lk, dtype):
    """Lq = 1 and small Lq * G go to the 64-row tiles, split over the keys when Lk is long."""
    check_forward(*make_case(variant, 1, Lk, 128, dtype))
    check_forward(*make_case(variant, 4, Lk, 64, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("Lq, Lk", [(1, 1), (7, 113), (113, 113), (203, 203), (113, 7)])
@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_matrix(variant, Lq, Lk, D, dtype):
    q, k, v, kw, layout = make_case(variant, Lq, Lk, D, dtype, grad=True)
    out = flash_attention(q, k, v, **kw, layout=layout, backend="cuda")
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    m_out = flash_attention(q, k, v, **kw, layout=layout, backend="math")
    base = torch.autograd.grad(m_out, (q, k, v), dout)
    refs = reference_grads(q, k, v, dout, **kw, layout=layout)
    for name, a, b, r in zip("qkv", got, base, refs):
        err, berr = max_error(a, r), max_error(b, r)
        assert fused_ok(err, berr, _dt(a)), f"d{name} error {err} vs math {berr}"


def test_no_empty_rows_nan():
    q, k, v, kw, layout = make_case("plain", 5, 6, 64, torch.float16, grad=True)
    mask = torch.zeros(1, 1, 5, 6, dtype=torch.bool, device="cuda")
    out, lse = flash_attention(q, k, v, mask=mask, return_lse=True, backend="cuda")
    assert torch.all(out == 0) and torch.all(lse == float("-inf"))
    out.sum().backward()
    assert all(torch.all(x.grad == 0) for x in (q, k, v))


def _varlen(dtype, cu_q, cu_k, causal, grad):
    g = torch.Generator(device="cuda").manual_seed(5)
    Hq, Hkv, D = 8, 2, 72
    mk = lambda n, h: torch.randn(n, h, D, generator=g, device="cuda").to(dtype)  # noqa: E731
    q, k, v = mk(cu_q[-1], Hq), mk(cu_k[-1], Hkv), mk(cu_k[-1], Hkv)
    if grad:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    cq = torch.tensor(cu_q, dtype=torch.int32, device="cuda")
    ck = torch.tensor(cu_k, dtype=torch.int32, device="cuda")
    mq = max(b - a for a, b in zip(cu_q, cu_q[1:]))
    mk_ = max(b - a for a, b in zip(cu_k, cu_k[1:]))
    return q, k, v, cq, ck, mq, mk_


VARLEN = [([0, 3, 3, 120, 121], [0, 5, 90, 90, 300]), ([0, 203], [0, 203]),
          ([0, 1, 2, 3], [0, 1000, 1001, 1500])]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("cu_q, cu_k", VARLEN)
def test_varlen_forward_and_backward(cu_q, cu_k, causal, dtype):
    q, k, v, cq, ck, mq, mk = _varlen(dtype, cu_q, cu_k, causal, grad=True)
    out, lse = flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=causal, return_lse=True,
                                      backend="cuda")
    m_out, m_lse = flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=causal,
                                          return_lse=True, backend="math")
    ref_out, ref_lse = reference_varlen(q, k, v, cq, ck, causal=causal)
    assert fused_ok(max_error(out, ref_out), max_error(m_out, ref_out), _dt(out))
    assert fused_ok(max_error(lse, ref_lse), max_error(m_lse, ref_lse), _dt(out))
    dout = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), dout)
    base = torch.autograd.grad(m_out, (q, k, v), dout)
    for a, b in zip(got, base):  # per-sequence float64 gradients
        assert torch.isfinite(a).all()
    for s in range(len(cu_q) - 1):
        a, b_ = cu_q[s], cu_q[s + 1]
        c, d = cu_k[s], cu_k[s + 1]
        part = [x[a:b_].detach().transpose(0, 1)[None] for x in (q,)] + \
               [x[c:d].detach().transpose(0, 1)[None] for x in (k, v)]
        refs = reference_grads(*part, dout[a:b_].transpose(0, 1)[None], causal=causal)
        for got_g, base_g, ref, (lo, hi) in zip(got, base, refs, ((a, b_), (c, d), (c, d))):
            ref = ref[0].swapaxes(0, 1)
            assert fused_ok(max_error(got_g[lo:hi], ref), max_error(base_g[lo:hi], ref),
                            _dt(got_g))


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_deterministic_backward_bitwise(dtype):
    q, k, v, kw, layout = make_case("gqa", 203, 203, 128, dtype, grad=True)
    dout = torch.randn(2, 4, 203, 128, device="cuda").to(dtype)
    torch.use_deterministic_algorithms(True)
    try:
        runs = [torch.autograd.grad(flash_attention(q, k, v, causal=True, backend="cuda"),
                                    (q, k, v), dout) for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_torch_compile_on_cuda():
    from mlx_attn.backends.cuda import ops

    q, k, v, kw, layout = make_case("gqa", 113, 113, 64, torch.bfloat16, grad=True)

    def f(q, k, v):
        out, lse = ops.fwd(q, k, v, None, 0.125, True, -1, -1, 0.0, False)
        return out.float().square().sum() + lse.sum()

    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(q, k, v), (q, k, v))
    want = torch.autograd.grad(f(q, k, v), (q, k, v))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_opcheck_on_cuda():
    from mlx_attn.backends.cuda import ops

    q, k, v, kw, layout = make_case("gqa", 37, 50, 64, torch.float16, grad=True)
    args = (q, k, v, None, 0.125, True, 4, -1, 0.0, False)
    result = torch.library.opcheck(ops.fwd, args)
    assert set(result.values()) == {"SUCCESS"}, result
