"""Regressions of the front end (validation, array adapters) and the math backend, each against
the float64 reference: huge window sides, strided cu_seqlens, big-endian numpy, huge scales,
huge finite masks, and lse in the loss with rows that see no key."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from arrays import HAVE, convert, kind_params, lse_tolerance, out_tolerance
from mlx_attn import flash_attention, flash_attention_varlen
from mlx_attn.backends.math import MathBackend
from mlx_attn.reference import max_error, reference, reference_grads, reference_varlen, to_f64
from mlx_attn.validate import check_dense, check_varlen

KINDS = kind_params([("numpy", "float32"), ("torch", "float32"), ("mlx", "float32")])
DENSE = dict(scale=None, causal=False, mask=None, window=None, softcap=None, return_lse=False,
             layout="bhld")
VARLEN = dict(scale=None, causal=False, window=None, softcap=None, return_lse=False)


def _host(rng, *shapes):
    return tuple(rng.standard_normal(s).astype(np.float32) for s in shapes)


def _packed(rng, lens_q, lens_k, H=2, D=8):
    cu_q = np.concatenate([[0], np.cumsum(lens_q)]).astype(np.int32)
    cu_k = np.concatenate([[0], np.cumsum(lens_k)]).astype(np.int32)
    q, k, v = _host(rng, (cu_q[-1], H, D), (cu_k[-1], H, D), (cu_k[-1], H, D))
    return q, k, v, cu_q, cu_k


# -- 1. window sides near and beyond INT32_MAX ---------------------------------------------------
HUGE_SIDES = [(0, 2**31 - 1), (2**31 - 1, 0), (2**31, 2**31), (2**63, 0), (0, 10**30),
              (3, 2**63 + 5), 2**31 - 1, 10**30]


def _unbounded(window):
    """The same window with every side that reaches past the sequences made -1."""
    left, right = (window, 0) if isinstance(window, int) else window
    return (-1 if left >= 2**31 - 1 else left, -1 if right >= 2**31 - 1 else right)


@pytest.mark.parametrize("kind,dtype", KINDS)
@pytest.mark.parametrize("window", HUGE_SIDES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_huge_window_sides_behave_as_unbounded(kind, dtype, window, causal):
    rng = np.random.default_rng(1)
    q, k, v = _host(rng, (1, 2, 5, 8), (1, 2, 9, 8), (1, 2, 9, 8))
    want, want_lse = reference(q, k, v, causal=causal, window=_unbounded(window))
    same, _ = reference(q, k, v, causal=causal, window=window)    # the reference agrees
    assert max_error(same, want) == 0
    out, lse = flash_attention(*(convert(x, kind, dtype) for x in (q, k, v)), causal=causal,
                               window=window, return_lse=True, backend="math")
    assert max_error(out, want) <= out_tolerance(dtype, want)
    assert max_error(lse, want_lse) <= lse_tolerance(want_lse)


@pytest.mark.parametrize("kind,dtype", KINDS)
@pytest.mark.parametrize("window", HUGE_SIDES, ids=str)
def test_huge_window_sides_varlen(kind, dtype, window):
    rng = np.random.default_rng(2)
    q, k, v, cu_q, cu_k = _packed(rng, [3, 0, 6], [5, 2, 4])
    want, _ = reference_varlen(q, k, v, cu_q, cu_k, causal=True, window=_unbounded(window))
    out = flash_attention_varlen(*(convert(x, kind, dtype) for x in (q, k, v)),
                                 convert(cu_q, kind), convert(cu_k, kind), 6, 5, causal=True,
                                 window=window, backend="math")
    assert max_error(out, want) <= out_tolerance(dtype, want)


@pytest.mark.parametrize("kind,dtype", KINDS)
def test_huge_window_sides_any_backend(kind, dtype):
    """backend="auto" (the native kernel where it is built) gets the canonical window."""
    rng = np.random.default_rng(3)
    q, k, v = _host(rng, (1, 2, 5, 8), (1, 2, 9, 8), (1, 2, 9, 8))
    for window in HUGE_SIDES:
        want, _ = reference(q, k, v, window=_unbounded(window))
        out = flash_attention(*(convert(x, kind, dtype) for x in (q, k, v)), window=window)
        assert max_error(out, want) <= out_tolerance(dtype, want), window


def test_window_is_canonicalised_in_the_call():
    """A side that reaches every key becomes -1: no backend ever sees a huge int."""
    q, k = np.zeros((1, 1, 5, 8), np.float32), np.zeros((1, 1, 9, 8), np.float32)

    def window(w, Lq=5, Lk=9):
        return check_dense(q[:, :, :Lq], k[:, :, :Lk], k[:, :, :Lk],
                           **{**DENSE, "window": w}).window
    # query i allows keys i + off - left .. i + off + right, off = Lk - Lq
    assert window((2**63, 10**30)) == (-1, -1)
    assert window((8, 4)) == (-1, -1)            # left >= Lk - 1, right >= Lq - 1
    assert window((7, 3)) == (7, 3)              # both still remove a key
    assert window(2**31) == (-1, 0)
    assert window((3, 2), Lq=9, Lk=2) == (-1, 2)
    assert window((0, 0), Lq=0, Lk=0) == (-1, -1)
    # varlen: against the longest sequence of each side, not the totals
    tq, tk = np.zeros((9, 1, 8), np.float32), np.zeros((12, 1, 8), np.float32)
    cu_q, cu_k = np.array([0, 4, 9], np.int32), np.array([0, 5, 12], np.int32)

    def varlen_window(w):
        return check_varlen(tq, tk, tk, cu_q, cu_k, 5, 7, **{**VARLEN, "window": w}).window
    assert varlen_window((10**30, 2**31)) == (-1, -1)
    assert varlen_window((6, 4)) == (-1, -1)
    assert varlen_window((5, 3)) == (5, 3)


@pytest.mark.parametrize("kind,dtype", KINDS)
def test_math_mask_arithmetic_takes_any_side(kind, dtype):
    """The math backend itself never overflows, even with a side validation did not shrink."""
    rng = np.random.default_rng(4)
    q, k, v = _host(rng, (1, 2, 5, 8), (1, 2, 9, 8), (1, 2, 9, 8))
    call = check_dense(*(convert(x, kind, dtype) for x in (q, k, v)),
                       **{**DENSE, "causal": True, "window": (1, 1), "return_lse": True})
    for window, same in (((2**31 - 1, 2**63), (-1, -1)), ((2**40, 1), (-1, 1)),
                         ((2, 2**31), (2, -1))):
        out, _ = MathBackend().forward(dataclasses.replace(call, window=window))
        want, _ = reference(q, k, v, causal=True, window=same)
        assert max_error(out, want) <= out_tolerance(dtype, want), window


# -- 2. cu_seqlens views -------------------------------------------------------------------------
def _cu_views(kind, cu):
    """Non-contiguous views holding the values of cu."""
    doubled = np.stack([cu, np.full_like(cu, 77)], 1).reshape(-1)   # the real values at ::2
    if kind == "numpy":
        odd = np.zeros(len(cu), np.dtype([("cu", "<i4"), ("pad", "u1")]))   # 5-byte stride
        odd["cu"] = cu
        return {"every_other": doubled[::2], "negative": np.ascontiguousarray(cu[::-1])[::-1],
                "odd_stride": odd["cu"]}
    if kind == "torch":
        import torch
        t = torch.from_numpy(doubled)
        return {"every_other": t[::2], "column": torch.from_numpy(
            np.stack([cu, cu], 1).copy())[:, 1]}
    import mlx.core as mx
    return {"every_other": mx.array(doubled)[::2],
            "reversed": mx.array(np.ascontiguousarray(cu[::-1]))[::-1],
            "column": mx.array(np.stack([cu, cu * 3], 1))[:, 0]}


@pytest.mark.parametrize("kind,dtype", KINDS)
@pytest.mark.parametrize("backend", ["auto", "math"])
def test_strided_cu_seqlens(kind, dtype, backend):
    rng = np.random.default_rng(5)
    q, k, v, cu_q, cu_k = _packed(rng, [3, 0, 6, 5], [4, 2, 6, 1])
    want, want_lse = reference_varlen(q, k, v, cu_q, cu_k, causal=True)
    views_q, views_k = _cu_views(kind, cu_q), _cu_views(kind, cu_k)
    for name in views_q:
        cq, ck = views_q[name], views_k[name]
        if kind != "mlx":
            assert not (cq.flags.c_contiguous if kind == "numpy" else cq.is_contiguous())
        assert to_f64(cq).tolist() == cu_q.tolist()
        out, lse = flash_attention_varlen(*(convert(x, kind, dtype) for x in (q, k, v)), cq, ck,
                                          6, 6, causal=True, return_lse=True, backend=backend)
        assert max_error(out, want) <= out_tolerance(dtype, want), name
        assert max_error(lse, want_lse) <= lse_tolerance(want_lse), name


@pytest.mark.parametrize("kind,dtype", KINDS)
def test_call_holds_contiguous_cu_seqlens(kind, dtype):
    """Backends may read cu_seqlens through a raw pointer: the call holds contiguous copies."""
    cu = np.array([0, 4, 9], np.int32)
    t = convert(np.zeros((9, 1, 8), np.float32), kind, dtype)
    view = _cu_views(kind, cu)["every_other"]
    call = check_varlen(t, t, t, view, view, 5, 5, **VARLEN)
    for got in (call.cu_seqlens_q, call.cu_seqlens_k):
        assert to_f64(got).tolist() == cu.tolist()
        if kind == "numpy":
            assert got.flags.c_contiguous and got.dtype == np.int32
        elif kind == "torch":
            assert got.is_contiguous()
        else:  # MLX shows no strides: the contiguous copy is a new array, not the view
            assert got is not view


# -- 3. big-endian numpy -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [">f4", ">f2"])
@pytest.mark.parametrize("backend", ["auto", "math"])
def test_big_endian_numpy(dtype, backend):
    rng = np.random.default_rng(6)
    q, k, v = (x.astype(dtype) for x in _host(rng, (1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)))
    mask = rng.standard_normal((1, 1, 5, 7)).astype(">f4")
    want, want_lse = reference(q, k, v, mask=mask, causal=True)
    out, lse = flash_attention(q, k, v, mask=mask, causal=True, return_lse=True, backend=backend)
    assert out.dtype == np.dtype(dtype).newbyteorder("=")
    assert max_error(out, want) <= out_tolerance(np.dtype(dtype).name, want)
    assert max_error(lse, want_lse) <= lse_tolerance(want_lse)
    # varlen with big-endian cu_seqlens too
    tq, tk = q[0].swapaxes(0, 1), k[0].swapaxes(0, 1)           # [5, 2, 8], [7, 2, 8]
    cu_q, cu_k = np.array([0, 2, 5], ">i4"), np.array([0, 3, 7], ">i4")
    out = flash_attention_varlen(tq, tk, tk, cu_q, cu_k, 3, 4, backend=backend)
    want, _ = reference_varlen(tq, tk, tk, [0, 2, 5], [0, 3, 7])
    assert max_error(out, want) <= out_tolerance(np.dtype(dtype).name, want)


def test_call_holds_native_byte_order():
    """Converted once, in the numpy adapter, before any backend (or raw pointer) sees it."""
    q = np.ones((1, 1, 3, 4), ">f4")
    call = check_dense(q, q.astype("<f4"), q, **{**DENSE, "mask": np.zeros((3, 3), ">f8")})
    assert all(x.dtype.isnative for x in (call.q, call.k, call.v, call.mask))
    cu = np.array([0, 3], ">i4")
    call = check_varlen(q[0, 0][:, None], q[0, 0][:, None], q[0, 0][:, None], cu, cu, 3, 3,
                        **VARLEN)
    assert call.q.dtype.isnative and call.cu_seqlens_q.dtype == np.int32


# -- 5. huge finite scale ------------------------------------------------------------------------
ALL_DTYPES = kind_params([("numpy", "float32"), ("numpy", "float16"), ("torch", "float32"),
                          ("torch", "bfloat16"), ("mlx", "float32"), ("mlx", "float16")])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")        # numpy reports the overflow
@pytest.mark.parametrize("kind,dtype", ALL_DTYPES)
@pytest.mark.parametrize("scale", [1e38, -1e38, 3e38, 1e300, 1e20])
@pytest.mark.parametrize("options", [{}, dict(causal=True), dict(mask=True), dict(softcap=5.0)],
                         ids=["plain", "causal", "mask", "softcap"])
def test_huge_scale_is_not_nan(kind, dtype, scale, options):
    rng = np.random.default_rng(7)
    q, k, v = (to_f64(convert(x, kind, dtype)) for x in
               _host(rng, (1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8)))
    options = dict(options)
    host = dict(options)
    if options.pop("mask", False):
        m = rng.standard_normal((1, 1, 5, 7)).astype(np.float32)
        m[0, 0, 1, :3] = -np.inf
        options["mask"], host["mask"] = convert(m, kind), m
    want, want_lse = reference(q, k, v, scale=scale, **host)
    out, lse = flash_attention(*(convert(x, kind, dtype) for x in (q, k, v)), scale=scale,
                               return_lse=True, backend="math", **options)
    assert max_error(out, want) <= out_tolerance(dtype, want)
    # lse is float32: beyond its range it is inf, as IEEE float32 rounding of the value
    want_lse = want_lse.astype(np.float32).astype(np.float64)
    assert not np.isnan(to_f64(lse)).any()
    assert max_error(lse, want_lse) <= 1e-5 * float(np.abs(want_lse[np.isfinite(want_lse)])
                                                    .max(initial=1.0))


@pytest.mark.skipif(not HAVE["torch"], reason="torch is not installed")
def test_huge_scale_gradients():
    import torch
    rng = np.random.default_rng(8)
    q, k, v = (x.astype(np.float64) for x in _host(rng, (1, 2, 5, 8), (1, 2, 7, 8),
                                                   (1, 2, 7, 8)))
    dout = rng.standard_normal((1, 2, 5, 8))
    want = reference_grads(q, k, v, dout, scale=1e38, causal=True)
    tq, tk, tv = (torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (q, k, v))
    out = flash_attention(tq, tk, tv, scale=1e38, causal=True, backend="math")
    out.backward(torch.tensor(dout, dtype=torch.float32))
    for t, w in zip((tq, tk, tv), want):
        assert max_error(t.grad, w) <= 1e-4 * max(1.0, float(np.abs(w).max()))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind,dtype", KINDS)
def test_non_finite_inputs_still_propagate(kind, dtype):
    """IEEE propagation (SPEC) is kept: an inf in q poisons its row, as in the reference."""
    rng = np.random.default_rng(9)
    q, k, v = _host(rng, (1, 1, 4, 8), (1, 1, 4, 8), (1, 1, 4, 8))
    q[0, 0, 1, 3], v[0, 0, 2, 0] = np.inf, np.nan
    for scale in (None, 1e38):
        want, _ = reference(q, k, v, scale=scale)
        out = flash_attention(*(convert(x, kind, dtype) for x in (q, k, v)), scale=scale,
                              backend="math")
        out = to_f64(out)
        assert np.isnan(out[0, 0, 1]).all() and np.isnan(out[0, 0, :, 0]).all()
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-4)    # NaN where want is NaN


# -- 6. rows of huge finite additive masks -------------------------------------------------------
# SPEC: only -inf removes a key. In float32 (and float64 for finfo.min) s + mask rounds to the
# mask's spacing, so a row of finfo.min is a softmax over equal scores: the mean of v, as torch's
# SDPA gives, never zeros. A -1e9 row is likewise rounded (spacing 64): the float32 answer is the
# softmax of the rounded scores, and its gradients must be the gradients of that same softmax.
FMIN = float(np.finfo(np.float32).min)
FILLS = [FMIN, -1e30, -1e9, -3e4]
FILL_IDS = ["finfo_min", "-1e30", "-1e9", "-3e4"]


def _finite_mask(rng, fill, Lq=6, Lk=9):
    m = (rng.standard_normal((1, 1, Lq, Lk)) * 2).astype(np.float32)
    m[0, 0, 1] = fill                      # a whole row of the same huge finite value
    m[0, 0, 3, :4] = fill                  # part of a row
    m[0, 0, 5, ::2] = -np.inf              # -inf alongside
    m[0, 0, 5, 1::2] = fill
    return m


def _integer_qkv(rng, Lq=6, Lk=9, D=8):
    """q, k with small integer entries: with scale 1 every score is an exact integer in
    float32 and float64, so the rounding of s + mask is known exactly."""
    q, k = (rng.integers(-3, 4, (1, 2, L, D)).astype(np.float64) for L in (Lq, Lk))
    return q, k, rng.standard_normal((1, 2, Lk, D))


def _float32_mask(q, k, m):
    """The mask as float32 arithmetic applies it: float32(s + m) - s, exact in float64."""
    s = np.einsum("bhid,bhjd->bhij", q, k)
    with np.errstate(invalid="ignore"):
        return (s.astype(np.float32) + m.astype(np.float32)).astype(np.float64) - s


@pytest.mark.parametrize("kind,dtype", kind_params([
    ("numpy", "float32"), ("numpy", "float16"), ("torch", "float32"), ("torch", "float16"),
    ("torch", "bfloat16"), ("mlx", "float32"), ("mlx", "float16"), ("mlx", "bfloat16")]))
@pytest.mark.parametrize("fill", FILLS, ids=FILL_IDS)
def test_rows_of_finite_masks_are_a_softmax(kind, dtype, fill):
    rng = np.random.default_rng(10)
    q, k, v = _integer_qkv(rng)
    v = to_f64(convert(v.astype(np.float32), kind, dtype))
    m = _finite_mask(rng, fill)
    out, lse = flash_attention(*(convert(x.astype(np.float32), kind, dtype) for x in (q, k, v)),
                               mask=convert(m, kind), scale=1.0, window=(6, 2),
                               return_lse=True, backend="math")
    want, want_lse = reference(q, k, v, mask=_float32_mask(q, k, m), scale=1.0, window=(6, 2))
    assert max_error(out, want) <= out_tolerance(dtype, want)
    assert max_error(lse, want_lse) <= lse_tolerance(want_lse)
    if fill in (FMIN, -1e30):   # equal scores: the mean of v over the allowed keys, not zeros
        allowed = slice(0, 1 + 3 + 2 + 1)          # row 1, off = 3: keys 4 - 6 .. 4 + 2
        np.testing.assert_allclose(to_f64(out)[:, :, 1], v[:, :, allowed].mean(2),
                                   atol=out_tolerance(dtype, want))
        exact, _ = reference(q, k, v, mask=m, scale=1.0, window=(6, 2))   # float64 agrees
        assert max_error(out, exact) <= out_tolerance(dtype, want)


@pytest.mark.skipif(not HAVE["torch"], reason="torch is not installed")
@pytest.mark.parametrize("fill", FILLS, ids=FILL_IDS)
def test_finite_mask_rows_match_torch_sdpa(fill):
    """float32: the same forward as torch's own SDPA (whose backward is no reference here)."""
    import torch
    rng = np.random.default_rng(14)
    q, k, v = (torch.from_numpy(x) for x in _host(rng, (1, 2, 6, 8), (1, 2, 9, 8), (1, 2, 9, 8)))
    m = torch.from_numpy(_finite_mask(rng, fill))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)
    torch.testing.assert_close(flash_attention(q, k, v, mask=m, backend="math"), want,
                               atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.skipif(
    not HAVE[k], reason=f"{k} is not installed")) for k in ("torch", "mlx")])
@pytest.mark.parametrize("fill", FILLS, ids=FILL_IDS)
def test_finite_mask_rows_gradients(kind, fill):
    """The backward differentiates the softmax the forward computed (same rounded scores)."""
    rng = np.random.default_rng(11)
    q, k, v = _integer_qkv(rng)
    v = v.astype(np.float32).astype(np.float64)
    dout, dlse = rng.standard_normal((1, 2, 6, 8)), rng.standard_normal((1, 2, 6))
    m = _finite_mask(rng, fill)
    effective = _float32_mask(q, k, m)
    want = reference_grads(q, k, v, dout, mask=effective, scale=1.0, causal=True, dlse=dlse)
    grads = _grads(kind, q, k, v, dout, dlse=dlse, mask=m, scale=1.0, causal=True)
    for g, w in zip(grads, want):
        assert max_error(g, w) <= 1e-4 * max(1.0, float(np.abs(w).max()))


def _grads(kind, q, k, v, dout, dlse=None, **options):
    """float32 dq, dk, dv of sum(out * dout) (+ sum of finite lse * dlse) via the framework."""
    if kind == "torch":
        import torch
        tq, tk, tv = (torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (q, k, v))
        if isinstance(options.get("mask"), np.ndarray):
            options["mask"] = torch.from_numpy(options["mask"])
        out, lse = flash_attention(tq, tk, tv, return_lse=True, backend="math", **options)
        loss = (out * torch.tensor(dout, dtype=torch.float32)).sum()
        if dlse is not None:
            loss = loss + torch.where(torch.isfinite(lse), lse, 0).mul(
                torch.tensor(dlse, dtype=torch.float32)).sum()
        loss.backward()
        return tq.grad, tk.grad, tv.grad
    import mlx.core as mx
    if isinstance(options.get("mask"), np.ndarray):
        options["mask"] = mx.array(options["mask"])

    def loss(a, b, c):
        out, lse = flash_attention(a, b, c, return_lse=True, backend="math", **options)
        total = (out * mx.array(dout.astype(np.float32))).sum()
        if dlse is not None:
            total = total + (mx.where(mx.isfinite(lse), lse, 0)
                             * mx.array(dlse.astype(np.float32))).sum()
        return total
    return mx.grad(loss, argnums=(0, 1, 2))(*(mx.array(x.astype(np.float32)) for x in (q, k, v)))


# -- 7. lse in the loss with rows that see no key ------------------------------------------------
ROWLESS = {   # each removes every key of some query rows (Lq = 6 > Lk = 4)
    "bool_row": dict(mask="bool"),
    "neg_inf_row": dict(mask="additive"),
    "causal": dict(causal=True),
    "window": dict(window=(0, 0)),
    "window_causal_softcap": dict(window=(1, 0), causal=True, softcap=3.0),
}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.skipif(
    not HAVE[k], reason=f"{k} is not installed")) for k in ("torch", "mlx")])
@pytest.mark.parametrize("case", list(ROWLESS))
def test_lse_in_the_loss_gives_finite_gradients(kind, case):
    rng = np.random.default_rng(12)
    q, k, v = (x.astype(np.float64) for x in _host(rng, (1, 2, 6, 8), (1, 2, 4, 8),
                                                   (1, 2, 4, 8)))
    dout, dlse = rng.standard_normal((1, 2, 6, 8)), rng.standard_normal((1, 2, 6))
    options = dict(ROWLESS[case])
    keep = np.ones((1, 1, 6, 4), bool)
    keep[..., 3, :] = False                                    # row 3 sees no key at all
    if options.get("mask") == "bool":
        options["mask"] = keep
    elif options.get("mask") == "additive":
        options["mask"] = np.where(keep, 0.0, -np.inf).astype(np.float32)
    _, want_lse = reference(q, k, v, **options)
    assert np.isneginf(want_lse).any(), "the case must have a row without keys"
    dlse = np.where(np.isfinite(want_lse), dlse, 0.0)          # what where(isfinite) passes on
    want = reference_grads(q, k, v, dout, dlse=dlse, **options)
    grads = _grads(kind, q, k, v, dout, dlse=dlse, **dict(options))
    for g, w in zip(grads, want):
        assert np.isfinite(to_f64(g)).all()
        assert max_error(g, w) <= 1e-4 * max(1.0, float(np.abs(w).max()))


def test_numpy_rows_without_keys_are_zeros_and_minus_inf():
    rng = np.random.default_rng(13)
    q, k, v = _host(rng, (1, 2, 6, 8), (1, 2, 4, 8), (1, 2, 4, 8))
    for options in ROWLESS.values():
        options = dict(options)
        if "mask" in options:
            keep = np.ones((1, 1, 6, 4), bool)
            keep[..., 3, :] = False
            options["mask"] = keep if options["mask"] == "bool" else np.where(keep, 0, -np.inf)
        out, lse = flash_attention(q, k, v, return_lse=True, backend="math", **options)
        want, want_lse = reference(q, k, v, **options)
        assert np.isfinite(out).all() and not np.isnan(lse).any()
        assert max_error(out, want) <= 1e-4 and max_error(lse, want_lse) <= 1e-4


def test_max_error_matches_nan_only_where_the_reference_has_nan():
    from mlx_attn.reference import max_error
    nan, inf = float("nan"), float("inf")
    assert max_error(np.array([nan, 1.0]), [nan, 1.5]) == 0.5
    assert max_error(np.array([0.0, 1.0]), [nan, 1.0]) == inf
    assert max_error(np.array([nan, 1.0]), [0.0, 1.0]) == inf
    assert max_error(np.array([inf, 1.0]), [-inf, 1.0]) == inf
