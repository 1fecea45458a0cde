"""The `cpu` backend at the sizes that once corrupted the heap, on every ISA path.

The backward's dq accumulator was sized by the driver with rows rounded up to 64 and spaced by
the kernels with rows rounded up to their own row block (24 on AVX2, 12 on the generic kernels):
under GQA the last query head of a kv head wrote past the end whenever L was a multiple of 64.
Odd lengths never showed it, and AVX-512 (row block 64) never had it. So: block-multiple lengths
(64, 128, 256, 257), GQA and MQA, gradients, each ISA forced with set_isa, and generated GQA
gradient problems at those lengths. `.ci/sanitize` runs this file under ASan/UBSan with the
kernels' bounds checks on.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

from contract.cases import BLOCK_FEATURES, BLOCK_SHAPES  # noqa: E402
from cpu_helpers import HAVE_MLX, HAVE_TORCH, native_or_skip, run_child  # noqa: E402
from test_cpu_grad import GRAD_KINDS, run_case  # noqa: E402
from test_cpu_hypothesis import feature_kwargs  # noqa: E402

ISAS = ["avx512amx", "avx512bf16", "avx512", "avx2", "neonbf16", "neon", "generic"]
pytestmark = pytest.mark.skipif(not GRAD_KINDS, reason="needs torch or mlx for gradients")


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


@pytest.fixture(params=ISAS)
def isa(request, native):
    """Each ISA's kernels, forced, whichever one `auto` picks on this CPU."""
    try:
        native.set_isa(request.param)
    except ValueError:
        pytest.skip(f"{request.param} not supported on this CPU")
    yield request.param
    native.set_isa("auto")


# (B, Hq, Hkv, Lq, Lk, D, Dv): the reported reproducers first, then the SPEC's block multiples
# (declared in tests/contract/cases.py, where every backend runs them)
REPRODUCERS = [(1, 4, 2, 64, 64, 64, 64), (1, 2, 1, 64, 1, 8, 8), (2, 8, 2, 128, 128, 64, 64)]
BLOCK_MULTIPLES = BLOCK_SHAPES[:5]
FEATURES = BLOCK_FEATURES


@pytest.mark.parametrize("kind", GRAD_KINDS)
@pytest.mark.parametrize("shape", REPRODUCERS + BLOCK_MULTIPLES, ids=lambda s: "x".join(map(str, s)))
def test_gqa_grad_block_multiples(isa, kind, shape):
    run_case(kind, "float32", shape, causal=shape[3] == 256)


@pytest.mark.parametrize("feat", FEATURES, ids=["plain", "causal", "window-softcap"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_gqa_grad_features_at_64(isa, dtype, feat):
    kind = "torch" if HAVE_TORCH else "mlx"
    run_case(kind, dtype, (1, 4, 2, 128, 64, 64, 64), seed=2, **feat)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_gqa_grad_varlen_block_multiples(isa):
    import torch
    from mlx_attn import flash_attention_varlen
    from mlx_attn.reference import reference_grads

    lens_q, lens_k = [64, 128, 7], [128, 64, 0]
    cq, ck = (np.concatenate([[0], np.cumsum(n)]).astype(np.int32) for n in (lens_q, lens_k))
    rng = np.random.default_rng(4)
    qn, kn, vn = (rng.standard_normal(s).astype(np.float32)
                  for s in ((cq[-1], 4, 64), (ck[-1], 2, 64), (ck[-1], 2, 64)))
    go = rng.standard_normal((cq[-1], 4, 64))
    q, k, v = (torch.from_numpy(x).requires_grad_() for x in (qn, kn, vn))
    out = flash_attention_varlen(q, k, v, torch.from_numpy(cq), torch.from_numpy(ck),
                                 max(lens_q), max(lens_k), causal=True, backend="cpu")
    got = torch.autograd.grad((out.double() * torch.from_numpy(go)).sum(), (q, k, v))
    # float64 reference, one sequence at a time ([L, H, D] -> [1, H, L, D])
    ref = [np.zeros(x.shape) for x in (qn, kn, vn)]
    for s in range(len(lens_q)):
        sq, sk = slice(cq[s], cq[s + 1]), slice(ck[s], ck[s + 1])
        if lens_q[s] == 0 or lens_k[s] == 0:
            continue
        bh = lambda x: x.transpose(1, 0, 2)[None]  # noqa: E731
        grads = reference_grads(bh(qn[sq]), bh(kn[sk]), bh(vn[sk]), bh(go[sq]), causal=True)
        for r, g, sl in zip(ref, grads, (sq, sk, sk)):
            r[sl] = g[0].transpose(1, 0, 2)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.numpy(), r, atol=2e-4)


@pytest.mark.parametrize("kind", GRAD_KINDS)
@pytest.mark.parametrize("Lq", [1, 7, 64, 128, 200])
def test_gqa_grad_without_keys_is_zero(isa, kind, Lq):
    """Lk = 0: nothing attends, dq is exactly 0 (it was read from an uninitialised overrun)."""
    import_grads = _grads(kind)
    rng = np.random.default_rng(Lq)
    q = rng.standard_normal((1, 8, Lq, 64)).astype(np.float32)
    kv = np.zeros((1, 2, 0, 64), np.float32)
    dq = import_grads(q, kv, kv)
    assert dq.shape == q.shape and not np.any(dq)


def _grads(kind):
    from mlx_attn import flash_attention
    if kind == "torch":
        import torch

        def f(q, k, v):
            qt = torch.from_numpy(q).requires_grad_()
            out = flash_attention(qt, torch.from_numpy(k), torch.from_numpy(v), backend="cpu")
            (out * 2).sum().backward()
            return qt.grad.numpy()
        return f
    import mlx.core as mx

    def g(q, k, v):
        kk, vv = mx.array(k), mx.array(v)
        return np.array(mx.grad(lambda q: (flash_attention(q, kk, vv, backend="cpu") * 2).sum())(
            mx.array(q)))
    return g


LENGTHS = st.one_of(st.sampled_from([64, 128, 192, 256, 257]), st.integers(0, 300))


@st.composite
def gqa_problems(draw):
    Hkv = draw(st.integers(1, 2))
    G = draw(st.integers(2, 4))
    shape = (draw(st.integers(1, 2)), G * Hkv, Hkv, draw(LENGTHS), draw(LENGTHS),
             draw(st.sampled_from([8, 40, 64, 72, 128])), 0)
    shape = shape[:6] + (draw(st.sampled_from([shape[5], 24])),)
    kw = draw(feature_kwargs(max_side=100, min_softcap=1.0, scale=False))
    return (draw(st.sampled_from(ISAS)), draw(st.sampled_from(GRAD_KINDS)),
            draw(st.sampled_from(["float32", "bfloat16"])), shape, kw, draw(st.integers(0, 999)))


@settings(max_examples=40, deadline=None, derandomize=True, print_blob=True)
@given(gqa_problems())
def test_generated_gqa_gradients(native, problem):
    isa, kind, dtype, shape, kw, seed = problem
    try:
        native.set_isa(isa)
    except ValueError:
        isa = "auto"
    try:
        if 0 in shape[3:5]:
            return  # no gradient to compare with the math backend (covered above)
        run_case(kind, dtype, shape, seed=seed, **kw)
    finally:
        native.set_isa("auto")


def _threads_in_child(value):
    code = ("import numpy as np\nfrom mlx_attn import flash_attention\n"
            "from mlx_attn.backends.cpu.status import native\n"
            "q = np.ones((1, 1, 4, 8), np.float32)\n"
            "try:\n    flash_attention(q, q, q, backend='cpu')\n"
            "    print('threads', native().num_threads())\n"
            "except ValueError as e:\n    print('error', e)\n")
    return run_child(code, MLX_ATTN_THREADS=value).stdout.strip()


def test_thread_count_is_capped(native):
    out = _threads_in_child("100000")
    assert out.startswith("threads "), out
    assert int(out.split()[1]) <= 4 * (os.cpu_count() or 1)


@pytest.mark.parametrize("value", ["0", "-1", "abc", "3x"])
def test_bad_thread_count_is_a_clear_error(native, value):
    out = _threads_in_child(value)
    assert out.startswith("error MLX_ATTN_THREADS must be a positive integer"), out
    assert repr(value) in out


def test_set_num_threads_is_capped(native):
    old = native.num_threads()
    try:
        native.set_num_threads(10 ** 6)
        assert native.num_threads() <= 4 * (os.cpu_count() or 1)
        with pytest.raises(ValueError, match="threads must be >= 0"):
            native.set_num_threads(-3)
    finally:
        native.set_num_threads(old)


@pytest.mark.skipif(not HAVE_MLX, reason="mlx not installed")
def test_sanitized_build_is_loaded_when_asked():
    """Under .ci/sanitize the extensions imported must be the sanitized ones (else it checks
    nothing)."""
    if not os.environ.get("MLX_ATTN_SANITIZED"):
        pytest.skip("not a sanitizer run (.ci/sanitize sets MLX_ATTN_SANITIZED)")
    from mlx_attn.backends.cpu import _kernel
    libs = open(f"/proc/{os.getpid()}/maps").read()
    assert "libasan" in libs and "build" not in _kernel.__file__
