"""The `cpu` kernel's AMX path (isa avx512amx: bf16 forward products on AMX tiles, P rounded to
bf16) against mlx_attn.reference (float64), by the SPEC criterion against the math backend in the
same dtype. Runs only on CPUs with AMX-BF16 (Sapphire Rapids and later Xeons) under an OS that
grants the tile state; elsewhere every test skips with the reason.

The tiles work on whole 16-row / 32-element blocks: the sizes below cover the padded tails (odd
L and head dims), whole blocks (64, 128, 256) and one past them (257), the caller's K rows read
in place (contiguous, D a multiple of 32) and packed, and V / q in the transposed packs.
"""
from __future__ import annotations

import numpy as np
import pytest

from cpu_helpers import HAVE_TORCH, assert_close, check_dense, native_or_skip, rand, run_both
from mlx_attn.reference import reference

pytestmark = pytest.mark.skipif(not HAVE_TORCH, reason="bf16 inputs come from torch")


@pytest.fixture(scope="module", autouse=True)
def amx():
    native = native_or_skip()
    try:
        native.set_isa("avx512amx")
    except ValueError:
        pytest.skip("this CPU (or OS) has no AMX-BF16: the avx512amx kernels cannot run here")
    assert native.isa() == "avx512amx"
    yield native
    native.set_isa("auto")


ODD = [(1, 40), (7, 72), (113, 96), (203, 128)]
BLOCKS = [(64, 64), (128, 128), (256, 40), (257, 96)]
FEATURES = [{}, {"causal": True}, {"window": (40, 7), "softcap": 5.0}]


@pytest.mark.parametrize("L,D", ODD + BLOCKS, ids=lambda x: str(x))
@pytest.mark.parametrize("feat", FEATURES, ids=["plain", "causal", "window-softcap"])
def test_sizes_and_features(L, D, feat):
    check_dense("torch", "bfloat16", (1, 4, 2, L, L, D, D), **feat)


@pytest.mark.parametrize("shape", [(2, 6, 2, 29, 141, 72, 40), (1, 4, 1, 70, 90, 33, 33),
                                   (1, 2, 2, 65, 300, 128, 128), (1, 8, 8, 200, 513, 64, 128),
                                   (1, 4, 1, 3, 700, 64, 64), (1, 4, 4, 16, 2048, 128, 128)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gqa_dv_odd_head_dim_and_split_keys(shape):
    """GQA groups, Dv != D, an odd D (K and q packed), and few rows with many keys (split-K)."""
    check_dense("torch", "bfloat16", shape, causal=shape[3] < shape[4])


@pytest.mark.parametrize("kind", ["bool", "additive"])
def test_masks(kind):
    rng = np.random.default_rng(1)
    mask = rng.random((113, 257)) > 0.3 if kind == "bool" else rng.standard_normal((113, 257))
    check_dense("torch", "bfloat16", (1, 4, 2, 113, 257, 64, 64), mask=mask.astype(
        np.bool_ if kind == "bool" else np.float32))


def test_blhd_layout_and_strided_operands():
    """blhd (strided rows) and non-contiguous head dims: the packs' strided fallbacks."""
    import torch

    check_dense("torch", "bfloat16", (2, 4, 2, 130, 200, 64, 64), layout="blhd", causal=True)
    rng = np.random.default_rng(3)
    qb, kb, vb = rand(rng, 1, 4, 150, 128), rand(rng, 1, 2, 190, 128), rand(rng, 64, 190, 2, 1)
    q = torch.from_numpy(qb).bfloat16()[..., ::2]        # d stride 2
    k = torch.from_numpy(kb).bfloat16()[..., ::2]
    v = torch.from_numpy(vb).bfloat16().permute(3, 2, 1, 0)  # d stride 380
    (out, lse), (mout, mlse) = run_both(q, k, v, causal=True)
    ref_out, ref_lse = reference(q, k, v, causal=True)
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")


def test_varlen():
    import torch

    from mlx_attn import flash_attention_varlen

    lens_q, lens_k = [64, 7, 0, 203, 128], [128, 64, 9, 203, 1]
    cq, ck = (torch.tensor(np.concatenate([[0], np.cumsum(n)]), dtype=torch.int32)
              for n in (lens_q, lens_k))
    rng = np.random.default_rng(5)
    q, k, v = (torch.from_numpy(rng.standard_normal(s).astype(np.float32)).bfloat16()
               for s in ((int(cq[-1]), 4, 96), (int(ck[-1]), 2, 96), (int(ck[-1]), 2, 96)))
    args = (q, k, v, cq, ck, max(lens_q), max(lens_k))
    out = flash_attention_varlen(*args, causal=True, backend="cpu")
    mout = flash_attention_varlen(*args, causal=True, backend="math")
    for s in range(len(lens_q)):
        sq, sk = slice(int(cq[s]), int(cq[s + 1])), slice(int(ck[s]), int(ck[s + 1]))
        if lens_q[s] == 0:
            continue
        bh = lambda x: x.transpose(0, 1)[None]  # noqa: E731  [L, H, D] -> [1, H, L, D]
        ref, _ = reference(bh(q[sq]), bh(k[sk]), bh(v[sk]), causal=True)
        assert_close(bh(out[sq]), ref, bh(mout[sq]), f"out of sequence {s}")


def test_gradients_through_the_amx_forward():
    """The backward (AVX512-BF16 kernels) reads the AMX forward's statistics."""
    import torch

    from mlx_attn import flash_attention
    from mlx_attn.reference import reference_grads

    rng = np.random.default_rng(7)
    qn, kn, vn = rand(rng, 1, 4, 203, 64), rand(rng, 1, 2, 257, 64), rand(rng, 1, 2, 257, 64)
    go = rng.standard_normal((1, 4, 203, 64))
    grads = []
    for backend in ("cpu", "math"):
        q, k, v = (torch.from_numpy(x).bfloat16().requires_grad_() for x in (qn, kn, vn))
        out = flash_attention(q, k, v, causal=True, backend=backend)
        grads.append(torch.autograd.grad((out.double() * torch.from_numpy(go)).sum(), (q, k, v)))
    q, k, v = (torch.from_numpy(x).bfloat16().double().numpy() for x in (qn, kn, vn))
    ref = reference_grads(q, k, v, go, causal=True)
    for got, math, r, name in zip(grads[0], grads[1], ref, "qkv"):
        assert_close(got, r, math, f"d{name}")


def test_nonfinite_and_empty_rows():
    """A NaN in one query row stays in that row; rows whose keys are all masked give 0 / -inf."""
    import torch

    from mlx_attn import flash_attention

    rng = np.random.default_rng(9)
    q, k, v = (torch.from_numpy(rand(rng, 1, 2, 100, 64)).bfloat16() for _ in range(3))
    q[0, 0, 17, 5] = float("nan")
    out = flash_attention(q, k, v, backend="cpu")
    assert torch.isnan(out[0, 0, 17]).all()
    assert torch.isfinite(out[0, 0, :17]).all() and torch.isfinite(out[0, 1]).all()
    mask = torch.ones(100, 100, dtype=torch.bool)
    mask[40] = False
    out, lse = flash_attention(q, k, v, mask=mask, backend="cpu", return_lse=True)
    assert (out[:, :, 40] == 0).all() and torch.isneginf(lse[:, :, 40]).all()


@pytest.mark.parametrize("Lk,D,vmean,qmul", [(8192, 128, 10.0, 1.0), (2048, 128, 50.0, 2.0),
                                             (1024, 128, 100.0, 4.0), (300, 64, 20.0, 6.0)])
def test_p_rounded_to_bf16_stays_within_the_criterion(Lk, D, vmean, qmul):
    """P is rounded to bf16 for P V: the worst inputs for that (V far from zero, so that P's
    rounding errors add up in the output; peaked rows) still meet the SPEC criterion."""
    import torch

    g = torch.Generator().manual_seed(Lk)
    q = (torch.randn(1, 2, 64, D, generator=g) * qmul).bfloat16()
    k = torch.randn(1, 2, Lk, D, generator=g).bfloat16()
    v = (torch.randn(1, 2, Lk, D, generator=g) + vmean).bfloat16()
    (out, lse), (mout, mlse) = run_both(q, k, v)
    ref_out, ref_lse = reference(q, k, v)
    assert_close(out, ref_out, mout)
    assert_close(lse, ref_lse, mlse, "lse")
