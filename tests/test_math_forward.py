"""The math backend against the float64 reference: sizes, layouts, features, kinds, dtypes."""
from __future__ import annotations

import numpy as np
import pytest

from contract.cases import MATH_FEATURES
from arrays import convert, kind_params, lse_tolerance, out_tolerance, qkv
from mlx_attn import flash_attention
from mlx_attn.frameworks import kind_of, ops_for
from mlx_attn.reference import max_error, reference, to_f64

LENGTHS = [(0, 0), (0, 7), (7, 0), (1, 1), (7, 7), (113, 113), (203, 203), (1, 203), (7, 113),
           (113, 7), (203, 1)]
HEADS = [(1, 1), (8, 2), (6, 1)]
DIMS = [8, 40, 72, 128]


def check(out, lse, q, k, v, dtype, **features):
    want, want_lse = reference(q, k, v, **features)
    assert max_error(out, want) <= out_tolerance(dtype, want), "out differs from the reference"
    if lse is not None:
        assert kind_of(lse) == kind_of(q)
        assert ops_for(kind_of(lse)).dtype_name(lse) == "float32"
        assert max_error(lse, want_lse) <= lse_tolerance(want_lse), "lse differs"


@pytest.mark.parametrize("Lq,Lk", LENGTHS)
@pytest.mark.parametrize("Hq,Hkv", HEADS)
@pytest.mark.parametrize("D", DIMS)
@pytest.mark.parametrize("causal", [False, True])
def test_sizes(Lq, Lk, Hq, Hkv, D, causal):
    rng = np.random.default_rng(Lq * 1000 + Lk + D)
    q, k, v = qkv(rng, 2, Hq, Hkv, Lq, Lk, D)
    out, lse = flash_attention(q, k, v, causal=causal, return_lse=True, backend="math")
    assert out.shape == (2, Hq, Lq, D) and lse.shape == (2, Hq, Lq)
    check(out, lse, q, k, v, "float32", causal=causal)


FEATURES = MATH_FEATURES  # declared in tests/contract/cases.py


def build_mask(kind_name, rng, shape, kind, dtype):
    if kind_name == "bool":
        m = rng.random(shape) < 0.8
        return convert(m, kind, "bool"), m
    m = (rng.standard_normal(shape) * 2).astype(np.float32)
    m[rng.random(shape) < 0.1] = -np.inf
    return convert(m, kind, dtype), to_f64(convert(m, kind, dtype))


@pytest.mark.parametrize("kind,dtype", kind_params())
@pytest.mark.parametrize("layout", ["bhld", "blhd"])
@pytest.mark.parametrize("feature", list(FEATURES))
def test_features_kinds_dtypes(kind, dtype, layout, feature):
    rng = np.random.default_rng(7)
    B, Hq, Hkv, Lq, Lk, D, Dv = 2, 6, 2, 13, 29, 40, 24
    q, k, v = qkv(rng, B, Hq, Hkv, Lq, Lk, D, Dv, kind=kind, dtype=dtype, layout=layout)
    options = dict(FEATURES[feature])
    ref_options = dict(options)
    if "mask" in options:
        mask, host = build_mask(options["mask"], rng, (B, 1, Lq, Lk), kind, dtype)
        options["mask"], ref_options["mask"] = mask, host
    out, lse = flash_attention(q, k, v, layout=layout, return_lse=True, backend="math",
                               **options)
    assert kind_of(out) == kind and ops_for(kind).dtype_name(out) == dtype
    expected_shape = (B, Hq, Lq, Dv) if layout == "bhld" else (B, Lq, Hq, Dv)
    assert tuple(out.shape) == expected_shape
    check(out, lse, q, k, v, dtype, layout=layout, **ref_options)


@pytest.mark.parametrize("shape", [(1, 1, 1, 29), (2, 1, 1, 29), (1, 6, 13, 29), (2, 6, 13, 29),
                                   (13, 29), (29,), (1, 6, 1, 1)])
@pytest.mark.parametrize("mask_kind", ["bool", "additive"])
def test_mask_broadcasting(shape, mask_kind):
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, 2, 6, 3, 13, 29, 8)
    mask, host = build_mask(mask_kind, rng, shape, "numpy", "float32")
    out = flash_attention(q, k, v, mask=mask, backend="math")
    check(out, None, q, k, v, "float32", mask=host)


@pytest.mark.parametrize("kind,dtype", kind_params([("numpy", "float32"), ("torch", "float16"),
                                                    ("mlx", "bfloat16")]))
def test_fully_masked_rows_give_zeros_and_minus_inf_lse(kind, dtype):
    rng = np.random.default_rng(5)
    q, k, v = qkv(rng, 1, 2, 2, 6, 4, 8, kind=kind, dtype=dtype)
    # causal with Lq > Lk: the first Lq - Lk rows see no key at all (bottom-right alignment)
    out, lse = flash_attention(q, k, v, causal=True, return_lse=True, backend="math")
    out, lse = to_f64(out), to_f64(lse)
    assert np.all(out[:, :, :2] == 0) and np.all(np.isneginf(lse[:, :, :2]))
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(lse[:, :, 2:]))
    # a bool mask removing a whole row; an additive -inf row likewise
    mask = np.ones((1, 1, 6, 4), bool)
    mask[0, 0, 3] = False
    for m in (convert(mask, kind, "bool"), convert(np.where(mask, 0.0, -np.inf), kind, dtype)):
        out, lse = flash_attention(q, k, v, mask=m, return_lse=True, backend="math")
        out, lse = to_f64(out), to_f64(lse)
        assert np.all(out[:, :, 3] == 0) and np.all(np.isneginf(lse[:, :, 3]))
        assert np.all(np.isfinite(np.delete(out, 3, axis=2)))


def test_window_zero_zero_attends_to_the_diagonal_only():
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, 1, 1, 1, 5, 5, 8)
    out = flash_attention(q, k, v, window=(0, 0), backend="math")
    np.testing.assert_allclose(out, v, rtol=0, atol=1e-6)


def test_window_unbounded_both_sides_is_no_window():
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, 1, 2, 1, 9, 17, 8)
    a = flash_attention(q, k, v, window=(-1, -1), backend="math")
    b = flash_attention(q, k, v, backend="math")
    np.testing.assert_array_equal(a, b)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((2, 9, 4, 2, 16)).astype(np.float32)
    q = base[..., 0, :].transpose(0, 2, 1, 3)[:, :, ::1]         # [2, 4, 9, 16], strided
    k = base[:, ::-1, :, 1, :].transpose(0, 2, 1, 3)              # reversed, strided
    v = np.asfortranarray(rng.standard_normal((2, 4, 9, 16)).astype(np.float32))
    assert not q.flags.c_contiguous and not k.flags.c_contiguous
    out = flash_attention(q, k, v, causal=True, backend="math")
    check(out, None, q, k, v, "float32", causal=True)


def test_float64_is_kept_and_exact():
    rng = np.random.default_rng(6)
    q, k, v = qkv(rng, 1, 4, 2, 31, 45, 24, dtype="float64")
    out, lse = flash_attention(q, k, v, causal=True, softcap=2.0, return_lse=True,
                               backend="math")
    assert out.dtype == np.float64
    check(out, lse, q, k, v, "float64", causal=True, softcap=2.0)


@pytest.mark.parametrize("chunk", ["1", "5", "0", "off", "64"])
def test_chunking_does_not_change_results(chunk, monkeypatch):
    from mlx_attn import config
    monkeypatch.setenv("MLX_ATTN_CHUNK", chunk)
    config.reload()
    try:
        rng = np.random.default_rng(8)
        q, k, v = qkv(rng, 2, 4, 2, 37, 41, 16)
        mask, host = build_mask("additive", rng, (2, 4, 37, 41), "numpy", "float32")
        out, lse = flash_attention(q, k, v, mask=mask, causal=True, window=(7, 2),
                                   return_lse=True, backend="math")
        check(out, lse, q, k, v, "float32", mask=host, causal=True, window=(7, 2))
    finally:
        monkeypatch.delenv("MLX_ATTN_CHUNK")
        config.reload()


def test_math_backend_chunks_rows():
    """The chunk size the backend uses follows MLX_ATTN_CHUNK (its memory bound rests on it)."""
    from mlx_attn import config
    from mlx_attn.backends.math import chunk_rows
    from mlx_attn.validate import check_dense
    q = np.zeros((1, 8, 8192, 64), np.float32)
    call = check_dense(q, q, q, scale=None, causal=False, mask=None, window=None, softcap=None,
                       return_lse=False, layout="bhld")
    assert chunk_rows(call) * 8 * 8192 <= config.AUTO_CHUNK_ELEMENTS
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLX_ATTN_CHUNK", "512")
        config.reload()
        assert chunk_rows(call) == 512
        mp.setenv("MLX_ATTN_CHUNK", "off")
        config.reload()
        assert chunk_rows(call) == 8192
    config.reload()


@pytest.mark.parametrize("kind,dtype", kind_params([("torch", "float32"), ("mlx", "float32")]))
def test_nan_in_inputs_propagates(kind, dtype):
    rng = np.random.default_rng(9)
    q, k, v = (np.asarray(x) for x in qkv(rng, 1, 1, 1, 4, 4, 8))
    v = v.copy()
    v[0, 0, 2, 0] = np.nan
    out = to_f64(flash_attention(*(convert(x, kind, dtype) for x in (q, k, v)), backend="math"))
    assert np.all(np.isnan(out[0, 0, :, 0])) and np.all(np.isfinite(out[0, 0, :, 1:]))

