"""The `cpu` backend with large finite additive masks (SPEC: only -inf removes a key).

A row whose every key carries finfo(float32).min used to come back as zeros: the kernel works in
log2 units and finfo.min * log2(e) overflowed to -inf, which removes the key. A row of -1e9 gave
gradients off by O(10): the backward recomputed P = exp2(S - lse) from a float32 lse of magnitude
1.4e9, whose rounding (128 in log2 units) had swallowed the row sum. The kernel now saturates
finite masks and recomputes P from the row's (max, log2 sum) when lse is that coarse.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import HAVE_TORCH
from test_cpu_grad import GRAD_KINDS, run_case
from test_cpu_memory_safety import isa, native  # noqa: F401  (fixtures)

FMIN = float(np.finfo(np.float32).min)


def row_mask(value, Lq=64, Lk=80, rows=(3, 40)):
    m = np.random.default_rng(7).standard_normal((Lq, Lk)).astype(np.float32)
    for r in rows:
        m[r] = value
    return m


@pytest.mark.parametrize("value", [FMIN, -1e30, -1e9, -1e4], ids=["finfo.min", "-1e30", "-1e9", "-1e4"])
@pytest.mark.parametrize("kind", GRAD_KINDS)
def test_rows_of_large_finite_masks(isa, kind, value):  # noqa: F811
    """Forward and gradients against the float64 reference, GQA, at a block-multiple length."""
    run_case(kind, "float32", (1, 4, 2, 64, 80, 64, 64), mask=row_mask(value))


@pytest.mark.parametrize("value", [FMIN, -1e9], ids=["finfo.min", "-1e9"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_rows_of_large_finite_masks_half(value, dtype):
    run_case(GRAD_KINDS[0], dtype, (1, 4, 1, 64, 70, 40, 40), causal=True, mask=row_mask(value, 64, 70))


@pytest.mark.skipif(not HAVE_TORCH, reason="torch not installed")
def test_finfo_min_row_matches_torch_sdpa():
    """The row is a softmax over equal finite scores (float32 rounds s + finfo.min to finfo.min):
    the mean of v, as torch's own SDPA gives, and never zeros."""
    import torch
    from mlx_attn import flash_attention
    rng = np.random.default_rng(1)
    q, k, v = (torch.from_numpy(rng.standard_normal((1, 2, 16, 32)).astype(np.float32))
               for _ in range(3))
    mask = torch.zeros(16, 16)
    mask[5] = FMIN
    out = flash_attention(q, k, v, mask=mask, backend="cpu")
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[0, :, 5], v[0].mean(1), atol=1e-5, rtol=1e-5)
