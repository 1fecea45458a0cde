"""The fused varlen kernels and the backward's dQ modes on a GPU (skipped without one, with the
reason): one launch for all sequences against the float64 reference per sequence, in both
forced tile configurations; its bits against the dense launch of each sequence alone; empty
sequences; the deterministic and the dq_accum backward; opcheck of the varlen ops on CUDA
tensors.  The same kernels run on every machine under the emulator
(tests/cuda_emulator/test_cuda_emu_varlen.py); test_cuda_gpu.py holds the dense matrix.
Criterion (SPEC): max|ours - ref64| <= 2 * max|math same dtype - ref64| + 1e-5."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from contract.tolerance import fused_ok  # noqa: E402
from mlx_attn import flash_attention_varlen  # noqa: E402
from mlx_attn.reference import max_error, reference_grads, reference_varlen  # noqa: E402
from test_cuda_gpu import _SKIP, EXT, make_case  # noqa: E402

needs_gpu = pytest.mark.skipif(_SKIP is not None, reason=f"cuda backend unavailable: {_SKIP}")

DTYPES = [torch.float16, torch.bfloat16]
# (query lengths, key lengths): empty sequences (lq = 0, lk = 0, both), Lq != Lk both ways, a
# sequence over several 128-row query blocks beside one-row ones
RAGGED = [([5, 0, 17, 3, 0, 9, 300], [9, 4, 0, 30, 0, 9, 280]), ([1] * 40, list(range(1, 41))),
          ([203], [203])]
TILES = {"prefill": (0, 1), "decode": (1, 1)}


def _dt(x) -> str:
    return str(x.dtype).rsplit(".", 1)[-1]


@pytest.fixture(params=list(TILES))
def forced_tiles(request):
    previous = EXT.set_plan_override(*TILES[request.param])
    try:
        yield request.param
    finally:
        EXT.set_plan_override(*previous)


def make_varlen(dtype, lens_q, lens_k, Hq=8, Hkv=2, D=72, Dv=None, seed=0, grad=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    cu = lambda lens: torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()],  # noqa: E731
                                   dtype=torch.int32, device="cuda")
    rnd = lambda *s: torch.randn(*s, generator=g, device="cuda").to(dtype)  # noqa: E731
    q, k, v = rnd(sum(lens_q), Hq, D), rnd(sum(lens_k), Hkv, D), rnd(sum(lens_k), Hkv, Dv or D)
    if grad:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    return q, k, v, cu(lens_q), cu(lens_k), max(lens_q), max(lens_k)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("kw", [dict(causal=True), dict(window=(17, 3)), dict(softcap=2.5),
                                dict()], ids=["causal", "window", "softcap", "plain"])
@pytest.mark.parametrize("lens", RAGGED, ids=["ragged", "decode_like", "one"])
def test_fused_varlen_forward(forced_tiles, lens, kw, dtype):
    q, k, v, cq, ck, mq, mk = make_varlen(dtype, *lens)
    out, lse = flash_attention_varlen(q, k, v, cq, ck, mq, mk, return_lse=True, backend="cuda",
                                      **kw)
    m_out, m_lse = flash_attention_varlen(q, k, v, cq, ck, mq, mk, return_lse=True,
                                          backend="math", **kw)
    ref_out, ref_lse = reference_varlen(q, k, v, cq, ck, **kw)
    assert fused_ok(max_error(out, ref_out), max_error(m_out, ref_out), _dt(out))
    assert fused_ok(max_error(lse, ref_lse), max_error(m_lse, ref_lse), _dt(out))


@needs_gpu
@pytest.mark.parametrize("Dv", [72, 40])
def test_each_sequence_has_the_bits_of_its_dense_launch(forced_tiles, Dv):
    """The fused launch computes each sequence exactly as a dense B=1 launch would."""
    from mlx_attn.backends.cuda import ops

    lens_q, lens_k = RAGGED[0]
    q, k, v, cq, ck, mq, mk = make_varlen(torch.bfloat16, lens_q, lens_k, Dv=Dv)
    scale = 0.1
    out, lse = flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=True, return_lse=True,
                                      scale=scale, backend="cuda")
    cq, ck = cq.tolist(), ck.tolist()
    for s in range(len(lens_q)):
        a, b, c, d = cq[s], cq[s + 1], ck[s], ck[s + 1]
        if a == b or c == d:
            continue
        o, l = ops.fwd(*(x[i:j].transpose(0, 1)[None] for x, i, j in
                         ((q, a, b), (k, c, d), (v, c, d))), None, scale, True, -1, -1, 0.0,
                       False)
        assert torch.equal(out[a:b], o[0].transpose(0, 1)) and torch.equal(lse[:, a:b], l[0])


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize("deterministic", [False, True])
def test_varlen_backward(dtype, deterministic):
    q, k, v, cq, ck, mq, mk = make_varlen(dtype, *RAGGED[0], grad=True)
    torch.use_deterministic_algorithms(deterministic)
    try:
        out = flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=True, backend="cuda")
        dout = torch.randn_like(out)
        got = torch.autograd.grad(out, (q, k, v), dout)
    finally:
        torch.use_deterministic_algorithms(False)
    m_out = flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=True, backend="math")
    base = torch.autograd.grad(m_out, (q, k, v), dout)
    cq, ck = cq.tolist(), ck.tolist()
    for s in range(len(cq) - 1):
        a, b, c, d = cq[s], cq[s + 1], ck[s], ck[s + 1]
        if a == b or c == d:
            continue
        part = [x[i:j].detach().transpose(0, 1)[None] for x, i, j in
                ((q, a, b), (k, c, d), (v, c, d), (dout, a, b))]
        for g, m, r, (i, j) in zip(got, base, reference_grads(*part, causal=True),
                                   ((a, b), (c, d), (c, d))):
            r = r[0].swapaxes(0, 1)
            assert fused_ok(max_error(g[i:j], r), max_error(m[i:j], r), _dt(g))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
def test_deterministic_varlen_backward_is_bitwise_repeatable(dtype):
    q, k, v, cq, ck, mq, mk = make_varlen(dtype, *RAGGED[0], grad=True)
    dout = torch.randn(q.shape[0], 8, 72, device="cuda").to(dtype)
    torch.use_deterministic_algorithms(True)
    try:
        runs = [torch.autograd.grad(flash_attention_varlen(q, k, v, cq, ck, mq, mk, causal=True,
                                                           backend="cuda"), (q, k, v), dout)
                for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@needs_gpu
def test_dense_backward_with_the_dq_accum_workspace_meets_the_criterion():
    """deterministic=False hands the kernels a float32 dq_accum (ops.dq_workspace)."""
    from mlx_attn.backends.cuda import ops

    q, k, v, kw, layout = make_case("gqa", 113, 113, 64, torch.float16)
    out, lse = ops.fwd(q, k, v, None, 0.125, True, -1, -1, 0.0, False)
    dout = torch.randn_like(out)
    got = ops.bwd(dout, q, k, v, out, lse, None, None, 0.125, True, -1, -1, 0.0, False)
    det = ops.bwd(dout, q, k, v, out, lse, None, None, 0.125, True, -1, -1, 0.0, True)
    refs = reference_grads(q, k, v, dout, scale=0.125, causal=True)
    for g, d, r in zip(got, det, refs):
        assert fused_ok(max_error(g, r), max_error(d, r), "float16")


@needs_gpu
def test_opcheck_of_the_varlen_ops_on_cuda():
    from mlx_attn.backends.cuda import varlen_ops

    q, k, v, cq, ck, mq, mk = make_varlen(torch.float16, [5, 0, 17], [9, 4, 20], grad=True)
    result = torch.library.opcheck(varlen_ops.fwd_varlen,
                                   (q, k, v, cq, ck, mq, mk, 0.125, True, -1, -1, 0.0))
    assert set(result.values()) == {"SUCCESS"}, result


@needs_gpu
def test_fused_varlen_backward_entry_point():
    """The fused varlen backward gives the per-sequence gradients of the reference formulas."""
    from mlx_attn.backends.cuda import varlen_ops

    q, k, v, cq, ck, mq, mk = make_varlen(torch.bfloat16, *RAGGED[0])
    out, lse = varlen_ops.fwd_varlen(q, k, v, cq, ck, mq, mk, 0.125, True, -1, -1, 0.0)
    dout = torch.randn_like(out)
    fused = varlen_ops._bwd_fused(dout, q, k, v, out, lse, None, cq, ck, mq, mk, 0.125, True, -1,
                                  -1, 0.0, False)
    per_seq = varlen_ops._bwd_per_sequence(dout, q, k, v, out, lse, None, cq, ck, 0.125, True,
                                           -1, -1, 0.0)
    for a, b in zip(fused, per_seq):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)
