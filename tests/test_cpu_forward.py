"""The `cpu` backend (native C++ kernel) against mlx_attn.reference (float64): forward pass.

Every case uses the SPEC criterion max|out - ref64| <= 2 max|math - ref64| + 1e-5, with the math
backend run on the same inputs in the same dtype, for out and lse.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import (HAVE_TORCH, assert_close, check_dense, kinds, make, mlx_ready,
                         native_or_skip, rand, run_both, swap12)
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import reference, reference_varlen, to_f64

pytestmark = pytest.mark.usefixtures("native")


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


SHAPES = [  # B, Hq, Hkv, Lq, Lk, D, Dv: the SPEC's odd sizes, GQA, Dv != D
    (1, 1, 1, 1, 1, 40, 40),
    (2, 8, 2, 7, 113, 72, 72),
    (1, 6, 1, 113, 203, 96, 40),
    (2, 2, 2, 203, 7, 128, 128),
    (1, 4, 4, 203, 113, 64, 64),
]
FEATURES = [
    {},
    {"causal": True},
    {"window": (7, 3)},
    {"softcap": 5.0},
    {"causal": True, "softcap": 2.0, "window": 9},
    {"window": (-1, 2), "scale": 0.3},
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("feat", FEATURES, ids=lambda f: "-".join(map(str, f)) or "plain")
def test_forward_matrix(kind, dtype, shape, feat):
    check_dense(kind, dtype, shape, **feat)


MASKS = [  # mask shape builder (B, Hq, Lq, Lk) -> shape, all broadcastable to [B, Hq, Lq, Lk]
    lambda B, H, Lq, Lk: (Lq, Lk),
    lambda B, H, Lq, Lk: (B, 1, 1, Lk),
    lambda B, H, Lq, Lk: (1, H, Lq, Lk),
    lambda B, H, Lq, Lk: (B, H, Lq, Lk),
    lambda B, H, Lq, Lk: (H, 1, Lk),
]


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mask_shape", range(len(MASKS)))
@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_masks(kind, dtype, mask_shape, mask_kind):
    B, Hq, Hkv, Lq, Lk, D = 2, 6, 2, 37, 91, 64
    rng = np.random.default_rng(mask_shape)
    shape = MASKS[mask_shape](B, Hq, Lq, Lk)
    if mask_kind == "bool":
        mask = rng.random(shape) > 0.3
        if len(shape) >= 2 and shape[-2] == Lq:
            mask[..., 0, :] = False  # a fully removed row: zeros and lse -inf
    else:
        mask = (rng.standard_normal(shape) * 2).astype(np.float32)
        mask[rng.random(shape) < 0.2] = -np.inf
    check_dense(kind, dtype, (B, Hq, Hkv, Lq, Lk, D, D), mask=mask, causal=mask_shape == 3)


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("feat", [{"causal": True}, {"window": (5, 5), "softcap": 3.0}])
def test_blhd_layout(kind, feat):
    check_dense(kind, "float32", (2, 4, 2, 33, 65, 72, 72), layout="blhd", **feat)
    check_dense(kind, "float16", (1, 8, 1, 113, 7, 40, 40), layout="blhd", **feat)


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


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("feat", [{}, {"causal": True}, {"window": (4, 2), "softcap": 3.0}],
                         ids=["plain", "causal", "window-softcap"])
def test_varlen(kind, dtype, feat):
    rng = np.random.default_rng(1)
    lq, lk = [5, 0, 70, 1, 33], [9, 4, 70, 0, 20]
    cu_q, cu_k = np.cumsum([0] + lq).astype(np.int32), np.cumsum([0] + lk).astype(np.int32)
    Hq, Hkv, D, Dv = 4, 2, 40, 24
    qn, kn = rand(rng, cu_q[-1], Hq, D), rand(rng, cu_k[-1], Hkv, D)
    vn = rand(rng, cu_k[-1], Hkv, Dv)
    q, k, v = (make(kind, dtype, x) for x in (qn, kn, vn))
    cq, ck = make(kind, "int32", cu_q), make(kind, "int32", cu_k)
    args = (q, k, v, cq, ck, max(lq), max(lk))
    out, lse = flash_attention_varlen(*args, backend="cpu", return_lse=True, **feat)
    mout, mlse = flash_attention_varlen(*args, backend="math", return_lse=True, **feat)
    ref_out, ref_lse = reference_varlen(q, k, v, cu_q, cu_k, **feat)
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")


@pytest.mark.parametrize("isa", ["avx512bf16", "avx512", "avx2", "generic"])
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
