"""The `cpu` backend (native C++ kernel) against mlx_attn.reference (float64): forward pass.

Every case uses the SPEC criterion max|out - ref64| <= 2 max|math - ref64| + 1e-5, with the math
backend run on the same inputs in the same dtype, for out and lse.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import (HAVE_TORCH, assert_close, check_dense, kinds, make, mlx_ready,
                         native_or_skip, rand, run_both)
from contract.cases import FEATURES
from mlx_attn import flash_attention
from mlx_attn.reference import reference, to_f64

pytestmark = pytest.mark.usefixtures("native")


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


# The SPEC matrix (the odd sizes x features x array kinds x dtypes, masks of every broadcast
# shape, the blhd layout, varlen) runs on the cpu backend in tests/contract/; what follows is
# specific to the cpu kernel (strided and lazy inputs, decode splits, key-block sharing, ISAs).


def test_numpy_strided_inputs():
    """Non-contiguous views (step slices, reversed keys, transposed storage) are read in place."""
    rng = np.random.default_rng(3)
    qb, kb, vb = rand(rng, 2, 4, 60, 2 * 48), rand(rng, 2, 2, 80, 48), rand(rng, 48, 80, 2, 2)
    q = qb[..., ::2]
    k = kb[:, :, ::-1]
    v = vb.transpose(3, 2, 1, 0)
    (out, lse), (mout, mlse) = run_both(q, k, v, causal=True)
    ref_out, ref_lse = reference(q, k, v, causal=True)
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")


def test_torch_strided_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    q = torch.from_numpy(rand(rng, 2, 4, 40, 96))[..., ::2]
    k = torch.from_numpy(rand(rng, 2, 80, 2, 48)).permute(0, 2, 1, 3)
    v = torch.from_numpy(rand(rng, 2, 2, 80, 48)).flip(2)
    (out, lse), (mout, mlse) = run_both(q, k, v, window=(20, 0))
    ref_out, ref_lse = reference(q, k, v, window=(20, 0))
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("Lq", [1, 3, 8])
def test_decode_split_keys(kind, dtype, Lq):
    """Lq <= 8 with GQA packs the group's heads and splits the keys over threads."""
    check_dense(kind, dtype, (1, 8, 2, Lq, 2100, 64, 64), causal=Lq > 1)
    check_dense(kind, dtype, (1, 4, 1, Lq, 1500, 128, 128), window=(300, -1))


@pytest.mark.parametrize("kind", kinds())
def test_empty_and_fully_masked(kind):
    rng = np.random.default_rng(0)

    def call(shapes, **kw):
        q, k, v = (make(kind, "float32", rand(rng, *s)) for s in shapes)
        out, lse = flash_attention(q, k, v, backend="cpu", return_lse=True, **kw)
        return to_f64(out), to_f64(lse)

    out, lse = call([(1, 2, 0, 16), (1, 2, 5, 16), (1, 2, 5, 16)])
    assert out.shape == (1, 2, 0, 16) and lse.shape == (1, 2, 0)
    out, lse = call([(1, 2, 3, 16), (1, 2, 0, 16), (1, 2, 0, 8)])
    assert out.shape == (1, 2, 3, 8) and not out.any() and np.isneginf(lse).all()
    # Lq > Lk with causal: the first Lq - Lk rows see no key -> zeros and -inf
    out, lse = call([(1, 2, 9, 16), (1, 2, 4, 16), (1, 2, 4, 16)], causal=True)
    assert not out[:, :, :5].any() and np.isneginf(lse[:, :, :5]).all()
    assert np.isfinite(out).all() and np.isfinite(lse[:, :, 5:]).all()


def test_nonfinite_inputs_propagate():
    rng = np.random.default_rng(0)
    q, k, v = rand(rng, 1, 1, 4, 16), rand(rng, 1, 1, 6, 16), rand(rng, 1, 1, 6, 16)
    v[0, 0, 2, 3] = np.nan
    out = flash_attention(q, k, v, backend="cpu")
    assert np.isnan(out[0, 0, :, 3]).all() and np.isfinite(np.delete(out[0, 0], 3, axis=1)).all()
    q[0, 0, 1, 0] = np.inf
    out = flash_attention(q, k, v, backend="cpu")
    assert np.isnan(out[0, 0, 1]).all()  # inf * k - max(inf) = nan, as IEEE arithmetic gives


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("Hq", [1, 2])  # 1: few work items, so the keys are also split
@pytest.mark.parametrize("feat", [{}, {"causal": True}, {"window": (300, 20), "softcap": 6.0},
                                  {"mask": "bool"}], ids=["plain", "causal", "window", "mask"])
def test_row_groups_sharing_key_blocks(dtype, Hq, feat):
    """K and V past 1 MB per head: runs of row blocks (5 here: a run of 4 and a single one) read
    each key block once between them."""
    kind = "torch" if dtype == "bfloat16" else "numpy"
    if kind == "torch" and not HAVE_TORCH:
        pytest.skip("torch not installed")
    Lk = 2100 if dtype == "float32" else 4200  # Lk * (D + Dv) * itemsize > 1 MB
    if feat.get("mask") == "bool":
        feat = {"mask": np.random.default_rng(2).random((1, 1, 300, Lk)) > 0.3}
    check_dense(kind, dtype, (1, Hq, 1, 300, Lk, 64, 64), **feat)


@pytest.mark.parametrize("D", [40, 64])
def test_nonfinite_key_in_a_later_block(D):
    """A NaN score met after the first key block (where the kernel takes the block max inside
    its QK^T product and skips the rescale when no row's max moved) still reaches every row."""
    rng = np.random.default_rng(1)
    q, k, v = rand(rng, 1, 2, 70, D), rand(rng, 1, 2, 203, D), rand(rng, 1, 2, 203, D)
    k[0, 1, 150, 5] = np.nan
    out = flash_attention(q, k, v, backend="cpu")
    assert np.isfinite(out[0, 0]).all() and np.isnan(out[0, 1]).all()
    # a key in the last block that dominates every score: the running max must move there
    k = k.copy()
    k[0, 1, 150, 5] = 0.0
    k[0, 0, 200] = q[0, 0].mean(axis=0) * 40
    out = flash_attention(q, k, v, backend="cpu")
    assert np.abs(out - reference(q, k, v)[0]).max() < 1e-4


@pytest.mark.parametrize("isa", ["avx512amx", "avx512bf16", "avx512", "avx2", "neonbf16",
                                 "neon", "generic"])
def test_other_isa_paths(isa, native):
    """Every ISA's kernels (forced with set_isa) pass, whichever `auto` picks on this CPU."""
    try:
        native.set_isa(isa)
    except ValueError:
        pytest.skip(f"{isa} not supported on this CPU")
    try:
        assert native.isa() == isa
        for feat in FEATURES[:5]:
            check_dense("numpy", "float32", (2, 6, 2, 29, 41, 72, 40), **feat)
        check_dense("numpy", "float16", (1, 4, 1, 3, 700, 64, 64), causal=True)
        check_dense("numpy", "float32", (1, 2, 2, 19, 23, 32, 32),
                    mask=np.random.default_rng(0).random((19, 23)) > 0.5)
        if HAVE_TORCH:  # bf16: K read in place (even D) or copied (odd D, strided d)
            check_dense("torch", "bfloat16", (2, 6, 2, 29, 141, 72, 40), causal=True)
            check_dense("torch", "bfloat16", (1, 4, 1, 70, 90, 33, 33), softcap=5.0)
            check_dense("torch", "bfloat16", (1, 4, 2, 70, 90, 64, 64), layout="blhd")
            check_dense("torch", "bfloat16", (1, 2, 2, 65, 300, 128, 128), window=(30, 7))
    finally:
        native.set_isa("auto")


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_bfloat16_strided_head_dim_matches_contiguous(native):
    """A K whose head dim is not contiguous takes the copying path of the bf16 kernels; the
    answer is the same as from a contiguous K, bit for bit."""
    import torch
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 50, 64, generator=g).bfloat16()
    k_t = torch.randn(1, 2, 64, 77, generator=g).bfloat16()  # [B, H, D, L] storage
    v = torch.randn(1, 2, 77, 64, generator=g).bfloat16()
    k = k_t.transpose(2, 3)
    assert k.stride(3) != 1
    out = flash_attention(q, k, v, backend="cpu")
    assert torch.equal(out, flash_attention(q, k.contiguous(), v, backend="cpu"))
    ref, _ = reference(q, k, v)
    assert np.abs(to_f64(out) - ref).max() < 2e-2


def test_thread_counts_agree(native):
    rng = np.random.default_rng(5)
    q, k, v = rand(rng, 1, 3, 150, 64), rand(rng, 1, 3, 300, 64), rand(rng, 1, 3, 300, 64)
    base = flash_attention(q, k, v, backend="cpu", causal=True)
    old = native.num_threads()
    try:
        for t in (1, 3):
            native.set_num_threads(t)
            np.testing.assert_allclose(flash_attention(q, k, v, backend="cpu", causal=True), base,
                                       rtol=0, atol=1e-6)
    finally:
        native.set_num_threads(old)


def test_mlx_lazy_graph_inputs():
    """MLX inputs that are unevaluated expressions (and broadcast views) are evaluated first."""
    mlx_ready()
    import mlx.core as mx
    rng = np.random.default_rng(6)
    q = mx.array(rand(rng, 1, 4, 20, 32)) * 2.0
    k = mx.broadcast_to(mx.array(rand(rng, 1, 1, 30, 32)), (1, 2, 30, 32))
    v = mx.array(rand(rng, 1, 2, 32, 30)).swapaxes(2, 3)
    (out, lse), (mout, mlse) = run_both(q, k, v, causal=True)
    ref_out, ref_lse = reference(q, k, v, causal=True)
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")
