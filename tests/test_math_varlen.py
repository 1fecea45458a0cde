"""flash_attention_varlen on the math backend against the float64 varlen reference."""
from __future__ import annotations

import numpy as np
import pytest

from arrays import convert, kind_params, lse_tolerance, out_tolerance
from mlx_attn import flash_attention_varlen
from mlx_attn.reference import max_error, reference_varlen, to_f64

SEQS = {
    "single": ([7], [7]),
    "mixed": ([1, 113, 7, 30], [1, 113, 7, 30]),
    "cross": ([5, 1, 12], [9, 20, 3]),          # Lq != Lk per sequence: bottom-right per seq
    "empty_seqs": ([0, 6, 0, 3], [4, 6, 0, 5]),
    "decode": ([1, 1, 1], [17, 40, 5]),
}


def packed(rng, lens_q, lens_k, Hq, Hkv, D, Dv, kind, dtype):
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q = convert(rng.standard_normal((cu_q[-1], Hq, D)).astype(np.float32), kind, dtype)
    k = convert(rng.standard_normal((cu_k[-1], Hkv, D)).astype(np.float32), kind, dtype)
    v = convert(rng.standard_normal((cu_k[-1], Hkv, Dv)).astype(np.float32), kind, dtype)
    return q, k, v, convert(cu_q, kind), convert(cu_k, kind), max(lens_q), max(lens_k)


OPTIONS = [dict(), dict(causal=True), dict(window=(3, 1)), dict(softcap=2.0, scale=0.3),
           dict(causal=True, window=5, softcap=4.0)]


@pytest.mark.parametrize("kind,dtype", kind_params([("numpy", "float32"), ("torch", "float32"),
                                                    ("torch", "bfloat16"), ("mlx", "float32"),
                                                    ("mlx", "float16")]))
@pytest.mark.parametrize("seqs", list(SEQS))
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_varlen_matches_reference(kind, dtype, seqs, options):
    rng = np.random.default_rng(11)
    q, k, v, cu_q, cu_k, mq, mk = packed(rng, *SEQS[seqs], 6, 2, 40, 24, kind, dtype)
    out, lse = flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, return_lse=True,
                                      backend="math", **options)
    want, want_lse = reference_varlen(q, k, v, cu_q, cu_k, **options)
    assert tuple(out.shape) == want.shape and tuple(lse.shape) == want_lse.shape
    assert max_error(out, want) <= out_tolerance(dtype, want)
    assert max_error(lse, want_lse) <= lse_tolerance(want_lse)


def test_sequences_do_not_attend_across_each_other():
    rng = np.random.default_rng(12)
    q, k, v, cu_q, cu_k, mq, mk = packed(rng, [4, 5], [4, 5], 2, 2, 8, 8, "numpy", "float32")
    out = flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, backend="math")
    v2 = v.copy()
    v2[4:] += 100.0                       # change only the second sequence's values
    out2 = flash_attention_varlen(q, k, v2, cu_q, cu_k, mq, mk, backend="math")
    np.testing.assert_array_equal(out[:4], out2[:4])
    assert not np.allclose(out[4:], out2[4:])


def test_no_sequences():
    q = np.zeros((0, 2, 8), np.float32)
    cu = np.zeros(1, np.int32)
    out, lse = flash_attention_varlen(q, q, q, cu, cu, 0, 0, return_lse=True, backend="math")
    assert out.shape == (0, 2, 8) and lse.shape == (2, 0)


def test_without_lse_returns_only_out():
    rng = np.random.default_rng(13)
    q, k, v, cu_q, cu_k, mq, mk = packed(rng, [3, 2], [3, 2], 2, 1, 8, 8, "numpy", "float32")
    out = flash_attention_varlen(q, k, v, cu_q, cu_k, mq, mk, backend="math")
    assert out.shape == (5, 2, 8)
    assert np.all(np.isfinite(to_f64(out)))
