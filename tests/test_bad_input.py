"""Every bad input of the SPEC raises ValueError/TypeError naming the argument."""
from __future__ import annotations

import numpy as np
import pytest

from arrays import HAVE, convert
from mlx_attn import explain, flash_attention, flash_attention_varlen

F32 = np.float32


def arrays(B=1, Hq=4, Hkv=2, Lq=5, Lk=6, D=8, Dv=8):
    rng = np.random.default_rng(0)
    return (rng.standard_normal((B, Hq, Lq, D)).astype(F32),
            rng.standard_normal((B, Hkv, Lk, D)).astype(F32),
            rng.standard_normal((B, Hkv, Lk, Dv)).astype(F32))


Q, K, V = arrays()

DENSE = [
    # (id, call kwargs overriding q/k/v/options, error type, words the message must contain)
    ("q_rank", dict(q=Q[0]), ValueError, ["q", "rank 4", "(4, 5, 8)"]),
    ("k_rank", dict(k=K[None]), ValueError, ["k", "rank 4"]),
    ("batch", dict(k=np.concatenate([K, K]), v=np.concatenate([V, V])), ValueError,
     ["batch", "B=1", "B=2"]),
    ("head_dim", dict(k=np.zeros((1, 2, 6, 16), F32)), ValueError, ["k", "D=16", "D=8"]),
    ("v_heads", dict(v=np.zeros((1, 1, 6, 8), F32)), ValueError, ["v", "heads"]),
    ("v_keys", dict(v=np.zeros((1, 2, 7, 8), F32)), ValueError, ["v", "7 keys", "6"]),
    ("gqa", dict(k=np.zeros((1, 3, 6, 8), F32), v=np.zeros((1, 3, 6, 8), F32)), ValueError,
     ["Hq % Hkv", "4", "3"]),
    ("mixed_dtype", dict(k=K.astype(np.float16)), TypeError, ["k", "float16", "float32"]),
    ("int_dtype", dict(q=Q.astype(np.int32)), TypeError, ["q", "int32", "allowed"]),
    ("not_array", dict(q=Q.tolist()), TypeError, ["q", "list"]),
    ("mask_shape", dict(mask=np.ones((1, 4, 5, 7), bool)), ValueError,
     ["mask", "(1, 4, 5, 7)", "broadcastable"]),
    ("mask_rank", dict(mask=np.ones((1, 1, 1, 5, 6), bool)), ValueError, ["mask"]),
    ("mask_dtype", dict(mask=np.ones((1, 1, 5, 6), np.int32)), TypeError,
     ["mask", "int32"]),
    ("mask_kind", dict(mask=[[True]]), TypeError, ["mask", "array kind"]),
    ("window_negative", dict(window=(-2, 3)), ValueError, ["window", "-2"]),
    ("window_int_negative", dict(window=-5), ValueError, ["window", "-5"]),
    ("window_type", dict(window=(1, 2, 3)), TypeError, ["window", "(1, 2, 3)"]),
    ("window_float", dict(window=1.5), TypeError, ["window"]),
    ("scale_nan", dict(scale=float("nan")), ValueError, ["scale", "nan"]),
    ("scale_inf", dict(scale=float("inf")), ValueError, ["scale", "inf"]),
    ("scale_type", dict(scale="0.1"), TypeError, ["scale", "'0.1'"]),
    ("softcap_negative", dict(softcap=-1.0), ValueError, ["softcap", "-1.0"]),
    ("softcap_inf", dict(softcap=float("inf")), ValueError, ["softcap"]),
    ("causal_type", dict(causal="yes"), TypeError, ["causal", "'yes'"]),
    ("return_lse_type", dict(return_lse=1), TypeError, ["return_lse"]),
    ("layout", dict(layout="bshd"), ValueError, ["layout", "'bshd'", "bhld", "blhd"]),
    ("backend_name", dict(backend="fastest"), ValueError, ["backend", "'fastest'", "math"]),
    ("head_dim_zero", dict(q=np.zeros((1, 4, 5, 0), F32), k=np.zeros((1, 2, 6, 0), F32)),
     ValueError, ["q", "D=0", "D >= 1"]),
    ("v_head_dim_zero", dict(v=np.zeros((1, 2, 6, 0), F32)), ValueError,
     ["v", "Dv=0", "Dv >= 1"]),
    # an empty batch costs no memory, whatever its length
    ("length_2_31", dict(q=np.empty((0, 4, 2**31, 8), F32), k=np.empty((0, 2, 6, 8), F32),
                         v=np.empty((0, 2, 6, 8), F32)), ValueError,
     ["q", "Lq=2147483648", "2147483647"]),
    ("backend_type", dict(backend=3), TypeError, ["backend", "3"]),
]


def _dense_call(fn, overrides):
    args = dict(q=Q, k=K, v=V)
    args.update(overrides)
    q, k, v = args.pop("q"), args.pop("k"), args.pop("v")
    return fn(q, k, v, **args)


@pytest.mark.parametrize("case", DENSE, ids=[c[0] for c in DENSE])
def test_dense_bad_input(case):
    _, overrides, error, words = case
    with pytest.raises(error) as raised:
        _dense_call(flash_attention, overrides)
    for word in words:
        assert word in str(raised.value), f"{word!r} missing from: {raised.value}"


@pytest.mark.parametrize("case", [c for c in DENSE if c[0] != "backend_type"],
                         ids=[c[0] for c in DENSE if c[0] != "backend_type"])
def test_explain_rejects_the_same_inputs(case):
    _, overrides, error, _ = case
    with pytest.raises(error):
        _dense_call(explain, overrides)


def test_blhd_shape_errors_speak_of_the_callers_layout():
    with pytest.raises(ValueError, match=r"\[B, L, H, D\]"):
        flash_attention(Q[0], K, V, layout="blhd")


@pytest.mark.skipif(not HAVE["torch"], reason="torch is not installed")
def test_mixed_array_kinds_and_devices():
    import torch
    with pytest.raises(TypeError, match="k must be the same array kind as q"):
        flash_attention(Q, torch.from_numpy(K), V)
    tq, tk, tv = (torch.from_numpy(x) for x in (Q, K, V))
    with pytest.raises(ValueError, match="v is on device meta but q is on cpu"):
        flash_attention(tq, tk, tv.to("meta"))
    with pytest.raises(ValueError, match="mask is on device meta"):
        flash_attention(tq, tk, tv, mask=torch.ones(1, 1, 5, 6, dtype=torch.bool,
                                                      device="meta"))


@pytest.mark.skipif(not HAVE["mlx"], reason="mlx is not installed")
def test_mlx_bad_inputs_name_the_argument():
    q, k, v = (convert(x, "mlx") for x in (Q, K, V))
    with pytest.raises(TypeError, match="v has dtype float16 but q has float32"):
        flash_attention(q, k, convert(V, "mlx", "float16"))
    with pytest.raises(ValueError, match="mask"):
        flash_attention(q, k, v, mask=convert(np.ones((2, 1, 1, 6), bool), "mlx"))


# -- varlen ----------------------------------------------------------------------------------
TQ = np.zeros((9, 4, 8), F32)
TK = np.zeros((11, 2, 8), F32)
CU_Q = np.array([0, 4, 9], np.int32)
CU_K = np.array([0, 5, 11], np.int32)

VARLEN = [
    ("cu_dtype", dict(cu_seqlens_q=CU_Q.astype(np.int64)), TypeError,
     ["cu_seqlens_q", "int32", "int64"]),
    ("cu_rank", dict(cu_seqlens_k=CU_K[None]), TypeError, ["cu_seqlens_k", "1-D"]),
    ("cu_start", dict(cu_seqlens_q=np.array([1, 4, 9], np.int32)), ValueError,
     ["cu_seqlens_q", "start at 0"]),
    ("cu_decreasing", dict(cu_seqlens_q=np.array([0, 6, 4, 9], np.int32),
                           cu_seqlens_k=np.array([0, 3, 5, 11], np.int32)), ValueError,
     ["cu_seqlens_q", "non-decreasing"]),
    ("cu_end", dict(cu_seqlens_k=np.array([0, 5, 10], np.int32)), ValueError,
     ["cu_seqlens_k", "total_k=11", "10"]),
    ("cu_count", dict(cu_seqlens_k=np.array([0, 11], np.int32)), ValueError,
     ["cu_seqlens_q has 2 sequences", "cu_seqlens_k has 1"]),
    ("cu_empty", dict(cu_seqlens_q=np.zeros(0, np.int32)), ValueError, ["cu_seqlens_q"]),
    ("cu_kind", dict(cu_seqlens_q=[0, 4, 9]), TypeError, ["cu_seqlens_q", "list"]),
    ("max_small", dict(max_seqlen_q=4), ValueError, ["max_seqlen_q=4", "5"]),
    ("max_type", dict(max_seqlen_k=6.0), TypeError, ["max_seqlen_k", "6.0"]),
    ("max_huge", dict(max_seqlen_q=2**31), ValueError, ["max_seqlen_q=2147483648", "2147483647"]),
    ("head_dim_zero", dict(q=np.zeros((9, 4, 0), F32), k=np.zeros((11, 2, 0), F32)), ValueError,
     ["q", "D=0", "D >= 1"]),
    ("v_head_dim_zero", dict(v=np.zeros((11, 2, 0), F32)), ValueError, ["v", "Dv=0"]),
    ("q_rank", dict(q=TQ[None]), ValueError, ["q", "rank 3"]),
    ("gqa", dict(k=np.zeros((11, 3, 8), F32), v=np.zeros((11, 3, 8), F32)), ValueError,
     ["Hq % Hkv"]),
    ("window", dict(window=(3, -4)), ValueError, ["window"]),
]


@pytest.mark.parametrize("case", VARLEN, ids=[c[0] for c in VARLEN])
def test_varlen_bad_input(case):
    _, overrides, error, words = case
    args = dict(q=TQ, k=TK, v=TK, cu_seqlens_q=CU_Q, cu_seqlens_k=CU_K, max_seqlen_q=5,
                max_seqlen_k=6)
    args.update(overrides)
    with pytest.raises(error) as raised:
        flash_attention_varlen(**args)
    for word in words:
        assert word in str(raised.value), f"{word!r} missing from: {raised.value}"


def test_valid_varlen_arguments_are_accepted():
    """The baseline of the table above is itself valid, so each case fails for its own reason."""
    out = flash_attention_varlen(TQ, TK, TK, CU_Q, CU_K, 5, 6)
    assert out.shape == (9, 4, 8)
    assert flash_attention(Q, K, V).shape == (1, 4, 5, 8)


# -- every array kind, and sizes beyond what 32-bit indices address ------------------------------
KIND_CASES = [c for c in DENSE if c[0] not in ("backend_type", "not_array", "mask_kind",
                                                "length_2_31")]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.skipif(
    not HAVE[k], reason=f"{k} is not installed")) for k in ("torch", "mlx")])
@pytest.mark.parametrize("case", KIND_CASES, ids=[c[0] for c in KIND_CASES])
def test_bad_input_of_every_array_kind(kind, case):
    """The same errors for torch and MLX arrays as for numpy."""
    _, overrides, error, words = case
    args = {name: convert(x, kind) if isinstance(x, np.ndarray) else x
            for name, x in {"q": Q, "k": K, "v": V, **overrides}.items()}
    with pytest.raises(error) as raised:
        _dense_call(flash_attention, args)
    for word in words:
        assert word in str(raised.value), f"{word!r} missing from: {raised.value}"


def _huge(kind, shape):
    """A float32 array of `shape` that holds one element (stride 0 / a lazy broadcast)."""
    if kind == "numpy":
        return np.lib.stride_tricks.as_strided(np.zeros(1, F32), shape, (0,) * len(shape))
    if kind == "torch":
        import torch
        return torch.zeros(1).expand(*shape)
    import mlx.core as mx
    return mx.broadcast_to(mx.zeros((1,) * len(shape)), shape)   # never evaluated


HUGE = [   # (q shape, k/v shape, words); each dimension fits an int32, a product does not
    ((2**16, 2**16, 1, 8), (2**16, 2**16, 1, 8), ["q", "B*Hq*Lq", "4294967296 rows"]),
    ((1, 2**16, 2**16, 8), (1, 1, 4, 8), ["q", "B*Hq*Lq", "rows"]),
    ((1, 2**12, 4, 8), (1, 2**12, 2**20, 8), ["k", "B*Hkv*Lk", "rows"]),
    ((1, 1, 2**30, 8), (1, 1, 2**30 + 5, 8), ["Lq + Lk", "2147483653"]),
]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.skipif(
    not HAVE[k], reason=f"{k} is not installed")) for k in ("numpy", "torch", "mlx")])
@pytest.mark.parametrize("case", HUGE, ids=lambda c: "x".join(map(str, c[0] + c[1])))
def test_sizes_beyond_int32_are_rejected_before_any_work(kind, case):
    qs, ks, words = case
    q, k = _huge(kind, qs), _huge(kind, ks)
    for fn in (explain, flash_attention):            # explain first: it never computes
        with pytest.raises(ValueError) as raised:
            fn(q, k, k)
        for word in words:
            assert word in str(raised.value), f"{word!r} missing from: {raised.value}"


def test_varlen_sizes_beyond_int32_are_rejected():
    q = _huge("numpy", (2**31, 1, 8))
    cu = np.array([0, 1], np.int32)
    with pytest.raises(ValueError, match=r"q has total_q=2147483648"):
        flash_attention_varlen(q, q[:1], q[:1], cu, cu, 1, 1)
    q = _huge("numpy", (2**20, 2**12, 8))
    with pytest.raises(ValueError, match=r"q has total_q\*Hq = 4294967296 rows"):
        flash_attention_varlen(q, q[:1, :1], q[:1, :1], cu, cu, 1, 1)
