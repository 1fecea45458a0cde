"""The `cpu` backend's decode kernel (row blocks of at most 8 query rows of one kv head: the GQA
group at Lq <= 8, head dim across the vector lanes; cpu_bridge/decode.h) against the float64
reference, by the SPEC criterion. CPUs without AVX-512 take the row-lane kernels (fwd.h)
instead; the same cases must pass either way."""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import (HAVE_TORCH, assert_close, check_dense, kinds, make, native_or_skip, rand,
                         run_both)
from contract.cases import DECODE_FEATURES, DECODE_SHAPES
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.reference import reference, reference_varlen


@pytest.fixture(scope="module")
def native():
    return native_or_skip()


pytestmark = pytest.mark.usefixtures("native")

# rows per block G * Lq in 1..8, odd head dims, Dv != D, key counts that end mid-vector and
# mid-chunk, and long ones that split over threads (declared in tests/contract/cases.py)
SHAPES, FEATURES = DECODE_SHAPES, DECODE_FEATURES


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("feat", FEATURES, ids=lambda f: "-".join(f) or "plain")
def test_decode_float32(shape, feat):
    check_dense("numpy", "float32", shape, **feat)


@pytest.mark.parametrize("kind", kinds())
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2], SHAPES[5]],
                         ids=lambda s: "x".join(map(str, s)))
def test_decode_half_precision(kind, dtype, shape):
    check_dense(kind, dtype, shape, causal=True)


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_decode_strided_inputs():
    """blhd layout, and a K whose head dim is not contiguous (packed per chunk)."""
    import torch
    check_dense("torch", "float32", (2, 8, 2, 1, 300, 64, 64), layout="blhd", window=(40, 0))
    rng = np.random.default_rng(3)
    q = torch.from_numpy(rand(rng, 1, 8, 1, 48))
    k = torch.from_numpy(rand(rng, 1, 2, 333, 96))[..., ::2]
    v = torch.from_numpy(rand(rng, 1, 333, 2, 48)).transpose(1, 2)
    for dtype in (torch.float32, torch.bfloat16):
        args = [x.to(dtype) for x in (q, k, v)]
        (out, lse), (mout, mlse) = run_both(*args, softcap=3.0)
        ref_out, ref_lse = reference(*args, softcap=3.0)
        assert_close(out, ref_out, mout)
        assert_close(lse, ref_lse, mlse, "lse")


@pytest.mark.parametrize("kind", kinds())
def test_decode_masks(kind):
    """bool and additive masks, broadcast over heads or per head, with a fully removed row."""
    rng = np.random.default_rng(5)
    keep = rng.random((1, 1, 1, 150)) > 0.3
    check_dense(kind, "float32", (1, 8, 2, 1, 150, 64, 64), mask=keep)
    check_dense(kind, "float32", (1, 8, 2, 1, 150, 72, 72), mask=np.where(keep, 0.5, -np.inf))
    per_head = rng.random((2, 8, 3, 97)) > 0.5
    per_head[1, 5, 2] = False
    check_dense(kind, "float32", (2, 8, 4, 3, 97, 40, 40), mask=per_head, causal=True)
    check_dense(kind, "float16", (2, 8, 4, 3, 97, 40, 40),
                mask=rng.standard_normal((1, 8, 1, 97)).astype(np.float32))


@pytest.mark.parametrize("kind", kinds())
def test_decode_varlen(kind):
    """Sequences of 1-2 query rows (one empty, one without keys) over packed keys."""
    rng = np.random.default_rng(6)
    cu_q = np.array([0, 1, 1, 3, 5], dtype=np.int32)
    cu_k = np.array([0, 90, 100, 100, 777], dtype=np.int32)
    q, k, v = rand(rng, 5, 8, 64), rand(rng, 777, 2, 64), rand(rng, 777, 2, 64)
    args = [make(kind, "float32", x) for x in (q, k, v)] + \
        [make(kind, "int32", c) for c in (cu_q, cu_k)] + [2, 677]
    out, lse = flash_attention_varlen(*args, backend="cpu", return_lse=True, window=(100, 0))
    mout, mlse = flash_attention_varlen(*args, backend="math", return_lse=True, window=(100, 0))
    ref_out, ref_lse = reference_varlen(q, k, v, cu_q, cu_k, window=(100, 0))
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")


def test_decode_nonfinite_and_empty_rows():
    rng = np.random.default_rng(7)
    q, k, v = rand(rng, 1, 4, 1, 40), rand(rng, 1, 1, 200, 40), rand(rng, 1, 1, 200, 40)
    k[0, 0, 130, 3] = np.nan  # met in the third chunk of keys
    out = flash_attention(q, k, v, backend="cpu")
    assert np.isnan(out).all()
    # Lq > Lk with causal: the first rows see no key (zeros, lse -inf); the rest see some
    q = rand(rng, 1, 4, 2, 40)
    out, lse = flash_attention(q, k[:, :, :1].copy() * 0 + 1, v[:, :, :1].copy(), backend="cpu",
                               causal=True, return_lse=True)
    assert not out[:, :, 0].any() and np.isneginf(lse[:, :, 0]).all()
    assert np.isfinite(out[:, :, 1]).all() and np.isfinite(lse[:, :, 1]).all()
