"""`cond ? a : b` with half/bfloat operands gets MSL's usual arithmetic conversions:
half vs float is a float, half vs an integer a half (bfloat likewise), in both operand
orders, with literals and device references, as in mlx-lm's KL/JS loss kernels
(`(j < V) ? logits[j] : -1e30` with fp16/bf16 logits). C++ rejects these with a class
`half`; the emulator's translator gives both operands their common type (msl_types.h)."""
import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from msl_emulator import metal_kernel  # noqa: E402
from msl_emulator.translate import translate  # noqa: E402

DTYPES = {"half": mx.float16, "bfloat": mx.bfloat16}


def f32(a):
    return np.array(a.astype(mx.float32))


# `T h` selected where c is true, in either operand order.
TERNARY_SOURCE = """
  uint i = thread_position_in_grid.x;
  T h = x[i];
  float f = y[i];
  bool c = (i % 3) != 0;
  fout[i] = {mix_float};
  hout[i] = {mix_int};
  lout[i] = {mix_literal};
  sizes[3 * i + 0] = int(sizeof({mix_float}));
  sizes[3 * i + 1] = int(sizeof({mix_int}));
  sizes[3 * i + 2] = int(sizeof({mix_literal}));
"""
ORDERS = {
    "half_first": dict(mix_float="c ? h : f", mix_int="c ? h : 3", mix_literal="c ? x[i] : -1e30"),
    "half_second": dict(mix_float="!c ? f : h", mix_int="!c ? 3 : h", mix_literal="!c ? -1e30 : x[i]"),
}


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("hname", list(DTYPES))
def test_conditional_mixing_half_or_bfloat_with_float_and_int(hname, order):
    dt = DTYPES[hname]
    n = 48
    rng = np.random.default_rng(11)
    # fractional values: an int result would truncate them
    x = mx.array((rng.standard_normal(n) * 4 + 0.375).astype(np.float32)).astype(dt)
    # not representable in half/bfloat: a half result would round them
    y = (0.1 + np.arange(n) / 7.0).astype(np.float32)
    src = TERNARY_SOURCE.format(**ORDERS[order])
    k = metal_kernel(f"emu_cond_{hname}_{order}", ["x", "y"], ["fout", "hout", "lout", "sizes"], src)
    fout, hout, lout, sizes = k(inputs=[x, mx.array(y)], template=[("T", dt)], grid=(n, 1, 1),
                                threadgroup=(32, 1, 1), output_shapes=[(n,), (n,), (n,), (n, 3)],
                                output_dtypes=[mx.float32, dt, mx.float32, mx.int32])
    xv = f32(x)
    c = (np.arange(n) % 3) != 0
    # half vs float: float, so the float operand is not rounded to half/bfloat
    np.testing.assert_array_equal(np.array(fout), np.where(c, xv, y))
    # half vs int: half/bfloat, so the half operand is not truncated to an int
    np.testing.assert_array_equal(f32(hout), np.where(c, xv, 3.0).astype(np.float32))
    # half vs a float literal: -1e30 stays a float (it would be -inf in half)
    np.testing.assert_array_equal(np.array(lout), np.where(c, xv, np.float32(-1e30)))
    np.testing.assert_array_equal(np.array(sizes), np.tile([4, 2, 4], (n, 1)))


def _type_checks(h):
    """static_asserts on the result type of every arithmetic, comparison and
    conditional operator between `h` (half or bfloat) and the other scalar types."""
    lines = []
    for o in [h, "float", "int", "uint", "short", "ushort", "char", "uchar", "long", "ulong", "bool"]:
        want = "float" if o == "float" else h
        a, b = f"v<{h}>()", f"v<{o}>()"
        for op in "+-*/":
            lines.append(f"EXPECT({a} {op} {b}, {want}); EXPECT({b} {op} {a}, {want});")
        for op in ("==", "!=", "<", ">", "<=", ">="):
            lines.append(f"EXPECT({a} {op} {b}, bool); EXPECT({b} {op} {a}, bool);")
        if o != h:
            lines.append(f"EXPECT(v<bool>() ? {a} : {b}, {want}); EXPECT(v<bool>() ? {b} : {a}, {want});")
    # literals, lvalues, device references, compound assignment, nesting
    lines += [
        f"EXPECT(hv + 1, {h}); EXPECT(2u * hv, {h}); EXPECT(hv - 1.0f, float); EXPECT(0.5 * hv, float);",
        f"EXPECT(c ? hv : 1, {h}); EXPECT(c ? 0 : hv, {h}); EXPECT(c ? hv : 0.5, float);",
        f"EXPECT(c ? -1e30 : hv, float); EXPECT(c ? hv : fv, float); EXPECT(c ? iv : hv, {h});",
        f"EXPECT(c ? hv : hv, {h}&); EXPECT(c ? hv : {h}(1), {h}); EXPECT(c ? fv : fv, float&);",
        f"EXPECT(c ? hv : c ? fv : iv, float); EXPECT(c ? (c ? hv : 1) : 2, {h});",
        f"EXPECT(c ? c ? hv : iv : fv, float); EXPECT(hv += 1.0f, {h}&); EXPECT(hv *= 2, {h}&);",
        f"EXPECT(-hv, {h}); EXPECT(hv++, {h});",
    ]
    return "\n    ".join(lines)


TYPES_HEADER = """
template <class T> T v();
#define EXPECT(expr, type) static_assert(std::is_same<decltype(expr), type>::value, #expr " is not " #type)
"""
TYPES_SOURCE = """
  uint i = thread_position_in_grid.x;
  bool c = (i & 1) != 0;
  float fv = a[i];
  int iv = int(i);
  {
    half hv = half(fv);
    CHECKS_half
    // operands with template argument lists, swizzles, comparisons (a CLAMP-style macro)
    float2 v2 = float2(fv, 1.0f);
    static_assert(std::is_same<decltype(c ? hv : static_cast<vec<float, 2>>(v2).x), float>::value, "cast");
    static_assert(std::is_same<decltype(c ? v2.xy : v2.yx), float2>::value, "swizzles");
    static_assert(std::is_same<decltype((hv) < 0 ? 0 : (hv) > 1 ? 1 : (hv)), half>::value, "clamp");
    static_assert(std::is_same<decltype(c ? hv : as_type<float>(iv)), float>::value, "as_type");
  }
  {
    bfloat hv = bfloat(fv);
    CHECKS_bfloat
  }
  // the other conditionals keep their C++ type and value category
  int j = 0, m = 1;
  (c ? j : m) = 7;
  static_assert(std::is_same<decltype(c ? j : m), int&>::value, "lvalue");
  static_assert(std::is_same<decltype(c ? j : 2L), long>::value, "int vs long");
  const long s = a_shape[0] == 1 ? 0 : a_shape[0];
  out[i] = (c ? fv : 2.0f) + float(c ? j : m) + float(s);
"""


def test_operator_result_types_match_msl():
    src = TYPES_SOURCE.replace("CHECKS_half", _type_checks("half")).replace("CHECKS_bfloat", _type_checks("bfloat"))
    k = metal_kernel("emu_cond_types", ["a"], ["out"], src, header=TYPES_HEADER)
    a = mx.arange(4, dtype=mx.float32)
    (out,) = k(inputs=[a], grid=(4, 1, 1), threadgroup=(4, 1, 1), output_shapes=[(4,)],
               output_dtypes=[mx.float32])
    i = np.arange(4)
    c = (i & 1) != 0
    np.testing.assert_array_equal(np.array(out), np.where(c, i, 2.0) + 7.0 + 4.0)


def test_translation_of_conditionals_keeps_lines_and_leaves_ambiguous_ones():
    src = ("kernel void f(device float* o, const device half* p) {\n"
           "  float a = p[0] > 0 ? p[0] // comment\n      : 0.5f;\n"
           "#if 1 ? 1 : 0\n"
           "#define SEL(c, x, y) ((c) ? (x) : (y))\n"
           "#endif\n"
           "  o[0] = SEL(a > 0, p[1], 1.0f) + (a < 1 ? a : 2.0f);\n"
           "  o[1] = float(f2<1 ? 2 : 3>(a));\n"
           "}\n")
    out, _ = translate(src)
    assert out.count("\n") == src.count("\n")
    lines = out.split("\n")
    cast = "static_cast<typename ::msl_emu::cond_of<decltype(({}))>::template vs<decltype(({}))>::type>"
    assert cast.format("p[0]", "0.5f") + "(p[0]) // comment" in lines[1]
    assert lines[2] == "      : " + cast.format("0.5f", "p[0]") + "(0.5f);"
    assert lines[3] == "#if 1 ? 1 : 0"  # preprocessor conditions are not C++ expressions
    assert cast.format("(x)", "(y)") + "((x))" in lines[4]
    assert "f2<1 ? 2 : 3>(a)" in lines[7]  # `>` may close a template argument list: left as is


# mlx-lm's KL-divergence forward kernel (mlx_lm/tuner/losses.py), shrunk to a small
# threadgroup: logits are T (fp16/bf16 inputs), the padding of the last block is
# `(offset + j < V) ? logits[offset + j] : -1e30`, a T vs float conditional.
KL_SOURCE = """
  constexpr int M = 4;
  constexpr int block = TG * M;
  constexpr int full_blocks = V / block;
  constexpr int extra = V - full_blocks * block;
  threadgroup float shared[32 * 2];
  uint out_idx = threadgroup_position_in_grid.y;
  uint simd_lane_id = thread_index_in_simdgroup;
  uint simd_group_id = simdgroup_index_in_threadgroup;
  uint n_simd = simdgroups_per_threadgroup;
  logits_q += out_idx * V;
  logits_p += out_idx * V;
  out += out_idx;
  float max_q = -1e30, max_p = -1e30, sum_q = 0, sum_p = 0;
  int offset = thread_index_in_threadgroup * M;
  for (int b = 0; b < full_blocks + (extra > 0); b++) {
    float vals_q[M], vals_p[M];
    for (int j = 0; j < M; j++) {
      vals_q[j] = (offset + j < V) ? logits_q[offset + j] : -1e30;
      vals_p[j] = (offset + j >= V) ? -1e30 : logits_p[offset + j];
    }
    float pq = max_q, pp = max_p;
    for (int j = 0; j < M; j++) { max_q = max(max_q, vals_q[j]); max_p = max(max_p, vals_p[j]); }
    sum_q *= metal::fast::exp(pq - max_q);
    sum_p *= metal::fast::exp(pp - max_p);
    for (int j = 0; j < M; j++) {
      sum_q += metal::fast::exp(vals_q[j] - max_q);
      sum_p += metal::fast::exp(vals_p[j] - max_p);
    }
    offset += block;
  }
  float pq = max_q, pp = max_p;
  max_q = simd_max(max_q);
  max_p = simd_max(max_p);
  if (simd_lane_id == 0) { shared[2 * simd_group_id] = max_q; shared[2 * simd_group_id + 1] = max_p; }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  max_q = simd_lane_id < n_simd ? shared[2 * simd_lane_id] : -1e30;
  max_p = simd_lane_id < n_simd ? shared[2 * simd_lane_id + 1] : -1e30;
  max_q = simd_max(max_q);
  max_p = simd_max(max_p);
  sum_q = simd_sum(sum_q * metal::fast::exp(pq - max_q));
  sum_p = simd_sum(sum_p * metal::fast::exp(pp - max_p));
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (simd_lane_id == 0) { shared[2 * simd_group_id] = sum_q; shared[2 * simd_group_id + 1] = sum_p; }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  sum_q = simd_sum(simd_lane_id < n_simd ? shared[2 * simd_lane_id] : 0.0f);
  sum_p = simd_sum(simd_lane_id < n_simd ? shared[2 * simd_lane_id + 1] : 0.0f);
  float lse_p = max_p + metal::fast::log(sum_p);
  float lse_q_minus_p = max_q + metal::fast::log(sum_q) - lse_p;
  float kl = 0;
  offset = thread_index_in_threadgroup * M;
  for (int b = 0; b < full_blocks + (extra > 0); b++) {
    for (int j = 0; j < M; j++) {
      float q = (offset + j < V) ? logits_q[offset + j] : -1e30;
      float p = (offset + j < V) ? logits_p[offset + j] : -1e30;
      kl += metal::fast::exp(p - lse_p) * (p - q + lse_q_minus_p);
    }
    offset += block;
  }
  kl = simd_sum(kl);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  if (simd_lane_id == 0) shared[simd_group_id] = kl;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  kl = simd_sum(simd_lane_id < n_simd ? shared[simd_lane_id] : 0.0f);
  if (thread_index_in_threadgroup == 0) out[0] = kl;
"""


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_mlx_lm_style_kl_loss_kernel_in_half_precision(dtype):
    rows, V, TG = 3, 300, 64  # 300 = one full block of 256 and a partial one
    rng = np.random.default_rng(12)
    q = mx.array(rng.standard_normal((rows, V)).astype(np.float32) * 2).astype(dtype)
    p = mx.array(rng.standard_normal((rows, V)).astype(np.float32) * 2).astype(dtype)
    k = metal_kernel("emu_cond_kl_forward", ["logits_q", "logits_p"], ["out"], KL_SOURCE)
    (out,) = k(inputs=[q, p], template=[("T", dtype), ("V", V), ("TG", TG)], grid=(TG, rows, 1),
               threadgroup=(TG, 1, 1), output_shapes=[(rows,)], output_dtypes=[mx.float32])
    qv, pv = f32(q).astype(np.float64), f32(p).astype(np.float64)
    lq = qv - np.log(np.exp(qv).sum(-1, keepdims=True))
    lp = pv - np.log(np.exp(pv).sum(-1, keepdims=True))
    want = (np.exp(lp) * (lp - lq)).sum(-1)
    np.testing.assert_allclose(np.array(out), want, rtol=1e-4, atol=1e-5)
