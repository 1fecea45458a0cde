"""The whole `cuda` path on the CUDA emulator (MLX_ATTN_CUDA_EMULATE=1): dispatch and explain(),
the torch custom ops with autograd, torch.compile, the planner's configurations forced through
the environment, determinism, and varlen, on torch CPU tensors. The SPEC matrix itself runs in
tests/contract (the `cuda-torch-*` cases); this file holds what is specific to the switch.
"""
import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("cuda_emulator") is None:
    pytest.skip("the CUDA emulator (emulators/cuda_emulator) is not on sys.path",
                allow_module_level=True)

import mlx_attn  # noqa: E402
from mlx_attn import config  # noqa: E402
from mlx_attn.reference import max_error, reference, reference_grads  # noqa: E402


@pytest.fixture
def emulated(monkeypatch):
    monkeypatch.setenv("MLX_ATTN_CUDA_EMULATE", "1")
    config.reload()
    yield
    monkeypatch.delenv("MLX_ATTN_CUDA_EMULATE")
    config.reload()


def _inputs(B=1, Hq=4, Hkv=2, Lq=37, Lk=45, D=64, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g).to(dtype) for s in
            ((B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, D))]


def _math_error(q, k, v, ref, **kw):
    return max_error(mlx_attn.flash_attention(q, k, v, backend="math", **kw), ref)


def test_switch_off_by_default_and_checked(monkeypatch):
    q, k, v = _inputs()
    assert "emulated" not in mlx_attn.explain(q, k, v)
    monkeypatch.setenv("MLX_ATTN_CUDA_EMULATE", "maybe")
    config.reload()
    with pytest.raises(ValueError, match="MLX_ATTN_CUDA_EMULATE"):
        mlx_attn.flash_attention(q, k, v)
    monkeypatch.delenv("MLX_ATTN_CUDA_EMULATE")
    config.reload()


def test_explain_says_emulated_and_cuda_is_chosen(emulated):
    q, k, v = _inputs()
    text = mlx_attn.explain(q, k, v, causal=True)
    line = next(x for x in text.splitlines() if x.strip().startswith("cuda"))
    assert "chosen" in line and "emulated" in line
    # float32 is not a CUDA dtype: the cpu backend takes it, with the reason shown for cuda
    text = mlx_attn.explain(*(x.float() for x in (q, k, v)))
    assert "dtype float32 not supported" in text


@pytest.mark.parametrize("forced", [("prefill", None), ("decode", "1"), ("decode", "3")])
def test_planner_configurations_through_the_whole_path(emulated, monkeypatch, forced):
    cfg, splits = forced
    monkeypatch.setenv("MLX_ATTN_CUDA_CONFIG", cfg)
    if splits:
        monkeypatch.setenv("MLX_ATTN_CUDA_SPLITS", splits)
    q, k, v = _inputs(Lq=33, Lk=200)
    out, lse = mlx_attn.flash_attention(q, k, v, causal=True, return_lse=True)
    ref, ref_lse = reference(q, k, v, causal=True)
    assert max_error(out, ref) <= 2 * _math_error(q, k, v, ref, causal=True) + 1e-5
    assert max_error(lse, ref_lse) < 1e-3


def test_autograd_matches_the_reference(emulated):
    q, k, v = (x.requires_grad_() for x in _inputs(dtype=torch.bfloat16, Lq=40, Lk=40))
    out = mlx_attn.flash_attention(q, k, v, causal=True, softcap=5.0)
    assert out.grad_fn is not None
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    dq, dk, dv = torch.autograd.grad((out.float() * dout).sum(), (q, k, v))
    ref = reference_grads(q, k, v, dout.numpy(), causal=True, softcap=5.0)
    qm, km, vm = (x.detach().requires_grad_() for x in (q, k, v))
    om = mlx_attn.flash_attention(qm, km, vm, causal=True, softcap=5.0, backend="math")
    math = torch.autograd.grad((om.float() * dout).sum(), (qm, km, vm))
    for got, r, m in zip((dq, dk, dv), ref, math):
        assert max_error(got, r) <= 2 * max_error(m, r) + 1e-5


def test_backward_is_bit_identical_across_runs_and_schedules(emulated):
    from cuda_emulator import emulator_options

    q, k, v = _inputs(Lq=50, Lk=70)
    dout = torch.randn(1, 4, 50, 64, generator=torch.Generator().manual_seed(2)).half()

    def grads():
        x = [t.clone().requires_grad_() for t in (q, k, v)]
        out = mlx_attn.flash_attention(*x, causal=True)
        return torch.autograd.grad(out, x, dout)

    first = grads()
    for schedule in ("reverse", "random"):
        with emulator_options(schedule=schedule, seed=7):
            again = grads()
        for a, b in zip(first, again):
            assert torch.equal(a.view(torch.int16), b.view(torch.int16))


def test_torch_compile_traces_the_emulated_op(emulated):
    q, k, v = _inputs(Lq=20, Lk=20)

    def f(q, k, v):
        return mlx_attn.flash_attention(q, k, v, causal=True) * 2

    compiled = torch.compile(f, backend="aot_eager", fullgraph=False)
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v), rtol=0, atol=0)


def test_varlen_with_empty_and_ragged_sequences(emulated):
    lens_q, lens_k = [5, 0, 17, 1], [9, 3, 17, 30]
    cu_q = torch.tensor(np.cumsum([0, *lens_q]), dtype=torch.int32)
    cu_k = torch.tensor(np.cumsum([0, *lens_k]), dtype=torch.int32)
    g = torch.Generator().manual_seed(3)
    q = torch.randn(sum(lens_q), 4, 64, generator=g).half()
    k = torch.randn(sum(lens_k), 2, 64, generator=g).half()
    v = torch.randn(sum(lens_k), 2, 64, generator=g).half()
    text = mlx_attn.explain(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=17,
                            max_seqlen_k=30, causal=True)
    assert "emulated" in text
    out = mlx_attn.flash_attention_varlen(q, k, v, cu_q, cu_k, 17, 30, causal=True)
    ref = mlx_attn.flash_attention_varlen(q.double(), k.double(), v.double(), cu_q, cu_k, 17, 30,
                                          causal=True, backend="math")
    assert out.shape == q.shape and max_error(out, ref.numpy()) < 2e-3


# -- fused varlen through the whole path --------------------------------------------------------
def _varlen(lens_q=(5, 0, 17, 3, 0), lens_k=(9, 4, 0, 30, 0), Hq=4, Hkv=2, D=64,
            dtype=torch.float16, seed=4):
    cu_q = torch.tensor(np.cumsum([0, *lens_q]), dtype=torch.int32)
    cu_k = torch.tensor(np.cumsum([0, *lens_k]), dtype=torch.int32)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(lens_q), Hq, D, generator=g).to(dtype)
    k = torch.randn(sum(lens_k), Hkv, D, generator=g).to(dtype)
    v = torch.randn(sum(lens_k), Hkv, D, generator=g).to(dtype)
    return (q, k, v, cu_q, cu_k, max(lens_q), max(lens_k))


def test_explain_says_varlen_is_fused(emulated):
    q, k, v, cu_q, cu_k, mq, mk = _varlen()
    text = mlx_attn.explain(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=mq,
                            max_seqlen_k=mk, causal=True)
    line = next(x for x in text.splitlines() if x.strip().startswith("cuda"))
    assert "chosen" in line and "fused, one launch for all sequences (forward and backward)" in line


def test_varlen_is_one_launch_and_matches_the_reference(emulated, monkeypatch):
    from cuda_emulator import torch_bridge

    calls = []
    monkeypatch.setattr(torch_bridge, "fwd", lambda *a, **kw: calls.append("dense"))
    q, k, v, cu_q, cu_k, mq, mk = _varlen(dtype=torch.bfloat16)
    out, lse = mlx_attn.flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, causal=True,
                                               window=(6, 0), return_lse=True)
    assert not calls, "varlen must not fall back to dense launches"
    ref, ref_lse = mlx_attn.reference.reference_varlen(q, k, v, cu_q, cu_k, causal=True,
                                                       window=(6, 0))
    m_out, m_lse = mlx_attn.flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, causal=True,
                                                   window=(6, 0), return_lse=True, backend="math")
    assert max_error(out, ref) <= 2 * max_error(m_out, ref) + 1e-5
    assert max_error(lse, ref_lse) <= 2 * max_error(m_lse, ref_lse) + 1e-5
    assert torch.all(out[5:22] == 0) and torch.all(lse[:, 5:22] == float("-inf"))  # no keys


def test_varlen_max_seqlen_above_the_longest_is_accepted(emulated):
    """SPEC: max_seqlen_* need only be at least the longest sequence (the grid is cut to the
    totals; the bridge refuses a max above them)."""
    q, k, v, cu_q, cu_k, mq, mk = _varlen(seed=9)
    got = mlx_attn.flash_attention_varlen(q, k, v, cu_q, cu_k, 10_000, 2**31 - 1, causal=True)
    want = mlx_attn.flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, causal=True)
    text = mlx_attn.explain(q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=10_000,
                            max_seqlen_k=2**31 - 1)
    assert "chosen" in next(x for x in text.splitlines() if x.strip().startswith("cuda"))
    assert torch.equal(got, want)


def test_varlen_autograd_matches_the_reference(emulated):
    q, k, v, cu_q, cu_k, mq, mk = _varlen(seed=5)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    out = mlx_attn.flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, causal=True, softcap=4.0)
    assert out.grad_fn is not None
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(6))
    got = torch.autograd.grad((out.float() * dout).sum(), (q, k, v))
    qm, km, vm = (x.detach().requires_grad_() for x in (q, k, v))
    om = mlx_attn.flash_attention_varlen(qm, km, vm, cu_q, cu_k, mq, mk, causal=True,
                                         softcap=4.0, backend="math")
    math = torch.autograd.grad((om.float() * dout).sum(), (qm, km, vm))
    for s in range(len(cu_q) - 1):  # per sequence: the float64 reference's gradients
        (a, b), (c, d) = cu_q[s:s + 2].tolist(), cu_k[s:s + 2].tolist()
        if a == b or c == d:
            continue
        part = [x.detach()[i:j].transpose(0, 1)[None] for x, i, j in
                ((q, a, b), (k, c, d), (v, c, d), (dout, a, b))]
        ref = reference_grads(*part, causal=True, softcap=4.0)
        for g, m, r, (i, j) in zip(got, math, ref, ((a, b), (c, d), (c, d))):
            r = r[0].swapaxes(0, 1)
            assert max_error(g[i:j], r) <= 2 * max_error(m[i:j], r) + 1e-5
    assert torch.all(got[1][9:13] == 0)  # keys of a sequence without queries


def test_varlen_op_traced_by_torch_compile(emulated):
    q, k, v, cu_q, cu_k, mq, mk = _varlen(seed=7)

    def f(q, k, v):
        return mlx_attn.flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, causal=True) * 2

    compiled = torch.compile(f, backend="aot_eager", fullgraph=False)
    torch.testing.assert_close(compiled(q, k, v), f(q, k, v), rtol=0, atol=0)


def test_opcheck_of_the_varlen_ops_on_the_emulated_kernels(emulated):
    from mlx_attn.backends.cuda import varlen_ops

    q, k, v, cu_q, cu_k, mq, mk = _varlen(seed=8)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    args = (q, k, v, cu_q, cu_k, mq, mk, 0.125, True, -1, -1, 0.0)
    result = torch.library.opcheck(varlen_ops.fwd_varlen, args)
    assert set(result.values()) == {"SUCCESS"}, result
    q, k, v = (x.detach() for x in (q, k, v))  # the backward op has no backward of its own
    out, lse = varlen_ops.fwd_varlen(q, k, v, *args[3:])
    bargs = (torch.randn_like(out), q, k, v, out, lse, None, cu_q, cu_k, mq, mk, 0.125, True,
             -1, -1, 0.0, False)
    result = torch.library.opcheck(varlen_ops.bwd_varlen, bargs)
    assert set(result.values()) == {"SUCCESS"}, result
