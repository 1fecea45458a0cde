"""Small kernels with known results: SIMD reductions and shuffles, a tiled
matmul with threadgroup memory, simdgroup_matrix 8x8 products, half/bfloat
rounding, atomics and the buffer-passing conventions of mx.fast.metal_kernel."""
import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from msl_emulator import metal_kernel  # noqa: E402


def f32(a):
    return np.array(a.astype(mx.float32)) if a.dtype == mx.bfloat16 else np.array(a)


SIMD_SOURCE = """
  uint i = thread_position_in_grid.x;
  uint lane = thread_index_in_simdgroup;
  int x = a[i];
  float f = float(x) * 0.5f;
  sum[i] = simd_sum(x);
  smax[i] = simd_max(f);
  smin[i] = simd_min(x);
  incl[i] = simd_prefix_inclusive_sum(x);
  excl[i] = simd_prefix_exclusive_sum(x);
  shuf[i] = simd_shuffle(x, ushort(31 - lane));
  sxor[i] = simd_shuffle_xor(x, ushort(5));
  down[i] = simd_shuffle_down(x, ushort(3));
  up[i] = simd_shuffle_up(x, ushort(3));
  bcast[i] = simd_broadcast(x, ushort(7));
  qsum[i] = quad_sum(x);
"""
SIMD_OUTS = ["sum", "smax", "smin", "incl", "excl", "shuf", "sxor", "down", "up", "bcast", "qsum"]


def test_simd_reductions_and_shuffles():
    rng = np.random.default_rng(1)
    n = 96  # three simdgroups in one threadgroup
    a = rng.integers(-50, 50, n).astype(np.int32)
    k = metal_kernel("emu_test_simd", ["a"], SIMD_OUTS, SIMD_SOURCE)
    dts = [mx.float32 if o == "smax" else mx.int32 for o in SIMD_OUTS]
    outs = k(inputs=[mx.array(a)], grid=(n, 1, 1), threadgroup=(n, 1, 1), output_shapes=[(n,)] * len(SIMD_OUTS),
             output_dtypes=dts)
    got = dict(zip(SIMD_OUTS, (np.array(o) for o in outs)))
    g = a.reshape(-1, 32)
    lane = np.arange(32)
    want = {
        "sum": np.repeat(g.sum(1), 32), "smax": np.repeat(g.max(1) * 0.5, 32), "smin": np.repeat(g.min(1), 32),
        "incl": np.cumsum(g, 1).ravel(), "excl": (np.cumsum(g, 1) - g).ravel(),
        "shuf": g[:, 31 - lane].ravel(), "sxor": g[:, lane ^ 5].ravel(),
        "down": np.where(lane + 3 < 32, g[:, np.minimum(lane + 3, 31)], g).ravel(),
        "up": np.where(lane >= 3, g[:, np.maximum(lane - 3, 0)], g).ravel(),
        "bcast": np.repeat(g[:, 7], 32), "qsum": np.repeat(a.reshape(-1, 4).sum(1), 4),
    }
    for name in SIMD_OUTS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


MATMUL_SOURCE = """
  const int M = a_shape[0], K = a_shape[1], N = b_shape[1];
  uint2 t = uint2(thread_position_in_threadgroup.x, thread_position_in_threadgroup.y);
  int row = threadgroup_position_in_grid.y * TILE + t.y;
  int col = threadgroup_position_in_grid.x * TILE + t.x;
  threadgroup float As[TILE][TILE];
  threadgroup float Bs[TILE][TILE];
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += TILE) {
    As[t.y][t.x] = (row < M && k0 + int(t.x) < K) ? a[row * K + k0 + t.x] : 0.0f;
    Bs[t.y][t.x] = (col < N && k0 + int(t.y) < K) ? b[(k0 + t.y) * N + col] : 0.0f;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int kk = 0; kk < TILE; ++kk) acc = fma(As[t.y][kk], Bs[kk][t.x], acc);
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  if (row < M && col < N) c[row * N + col] = acc;
"""


def test_tiled_matmul_with_threadgroup_memory():
    rng = np.random.default_rng(2)
    M, K, N, T = 37, 23, 29, 8
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    k = metal_kernel("emu_test_matmul", ["a", "b"], ["c"], MATMUL_SOURCE)
    # MLX dispatches exactly `grid` threads, so edge threadgroups would be partial and
    # leave tile entries unwritten: round the grid up, as a real tiled kernel must.
    grid = ((N + T - 1) // T * T, (M + T - 1) // T * T, 1)
    (c,) = k(inputs=[mx.array(a), mx.array(b)], template=[("TILE", T)], grid=grid, threadgroup=(T, T, 1),
             output_shapes=[(M, N)], output_dtypes=[mx.float32])
    np.testing.assert_allclose(np.array(c), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


SGMAT_SOURCE = """
  uint lane = thread_index_in_simdgroup;
  simdgroup_matrix<float, 8, 8> A, Bt, C, D;
  simdgroup_matrix<half, 8, 8> B;
  // A: an 8x8 window at column 2, row 1 of a 10x12 row-major device array
  simdgroup_load(A, a, 12, ulong2(2, 1));
  // B from threadgroup memory, used transposed
  threadgroup half bs[64];
  for (int i = lane; i < 64; i += 32) bs[i] = b[i];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  simdgroup_load(B, bs, 8);
  simdgroup_load(Bt, b, 8, ulong2(0, 0), true);
  C = simdgroup_matrix<float, 8, 8>(2.0f);  // 2 * identity
  simdgroup_multiply_accumulate(D, A, Bt, C);
  simdgroup_store(D, d, 9, ulong2(1, 0));  // into column 1.. of an 8x9 output
  simdgroup_matrix<float, 8, 8> E;
  simdgroup_multiply(E, A, B);
  simdgroup_store(E, e, 8);
  te[2 * lane] = A.thread_elements()[0];
  te[2 * lane + 1] = A.thread_elements()[1];
  simdgroup_matrix<float, 8, 8> F = make_filled_simdgroup_matrix<float, 8, 8>(3.0f);
  F.thread_elements()[1] = float(lane);
  simdgroup_store(F, f, 8);
"""


def test_simdgroup_matrix_8x8():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((10, 12)).astype(np.float32)
    b = rng.standard_normal((8, 8)).astype(np.float16)
    k = metal_kernel("emu_test_sgmat", ["a", "b"], ["d", "e", "te", "f"], SGMAT_SOURCE)
    d, e, te, f = k(inputs=[mx.array(a), mx.array(b)], grid=(32, 1, 1), threadgroup=(32, 1, 1),
                    output_shapes=[(8, 9), (8, 8), (64,), (8, 8)], output_dtypes=[mx.float32] * 4, init_value=-1.0)
    A = a[1:9, 2:10].astype(np.float64)
    B = b.astype(np.float64)
    np.testing.assert_allclose(np.array(d)[:, 1:], A @ B.T + 2 * np.eye(8), rtol=1e-5, atol=1e-5)
    assert np.all(np.array(d)[:, 0] == -1.0)  # column 0 untouched (init_value)
    np.testing.assert_allclose(np.array(e), A @ B, rtol=1e-5, atol=1e-5)
    # Apple's layout: lane l holds row (l/4 & 4) + (l/2) % 4, columns (l/4 & 2)*2 + (l%2)*2 and +1
    lane = np.arange(32)
    rows = ((lane // 4) & 4) + (lane // 2) % 4
    cols = ((lane // 4) & 2) * 2 + (lane % 2) * 2
    te = np.array(te).reshape(32, 2)
    np.testing.assert_array_equal(te[:, 0], A[rows, cols].astype(np.float32))
    np.testing.assert_array_equal(te[:, 1], A[rows, cols + 1].astype(np.float32))
    want_f = np.full((8, 8), 3.0, np.float32)
    want_f[rows, cols + 1] = lane
    np.testing.assert_array_equal(np.array(f), want_f)
    # every (row, column) is held by exactly one lane
    assert len(set(zip(rows, cols))) == 32


ROUND_SOURCE = """
  uint i = thread_position_in_grid.x;
  float x = inp[i];
  h[i] = half(x);
  bf[i] = bfloat(x);
  half hx = half(x), hy = half(y[i]);
  hsum[i] = hx + hy;            // half + half rounds to half
  hmix[i] = float(hx * 0.5h + hy);
  bfloat bx = bfloat(x), by = bfloat(y[i]);
  bsum[i] = bx + by;
"""


def test_half_and_bfloat_rounding():
    # ties, values just around ties, subnormals, overflow, NaN/inf
    base = [1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 1.0 + 2.0 ** -11 + 2.0 ** -20, 65504.0, 65520.0, 65519.0,
            2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 1e-8, -0.0, np.inf, -np.inf, np.nan,
            1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.0e38, 1.0 + 2.0 ** -8 + 2.0 ** -20, 0.1, -7.3]
    rng = np.random.default_rng(4)
    x = np.concatenate([np.array(base, np.float32), (rng.standard_normal(44) * 100).astype(np.float32)])
    y = rng.standard_normal(x.size).astype(np.float32)
    k = metal_kernel("emu_test_round", ["inp", "y"], ["h", "bf", "hsum", "hmix", "bsum"], ROUND_SOURCE)
    h, bf, hsum, hmix, bsum = k(inputs=[mx.array(x), mx.array(y)], grid=(x.size, 1, 1), threadgroup=(32, 1, 1),
                                output_shapes=[x.shape] * 5,
                                output_dtypes=[mx.float16, mx.bfloat16, mx.float16, mx.float32, mx.bfloat16])
    with np.errstate(all="ignore"):
        hx, hy = x.astype(np.float16), y.astype(np.float16)  # numpy rounds to nearest even
    np.testing.assert_array_equal(np.array(h), hx)
    want_bf = np.array(mx.array(x).astype(mx.bfloat16).astype(mx.float32))
    np.testing.assert_array_equal(f32(bf), want_bf)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(np.array(hsum), hx + hy)
        want_mix = (hx * np.float16(0.5)) + hy
    np.testing.assert_array_equal(np.array(hmix), want_mix.astype(np.float32))
    bx = np.array(mx.array(x).astype(mx.bfloat16).astype(mx.float32))
    by = np.array(mx.array(y).astype(mx.bfloat16).astype(mx.float32))
    want_bsum = np.array(mx.array(bx + by).astype(mx.bfloat16).astype(mx.float32))
    np.testing.assert_array_equal(f32(bsum), want_bsum)


ATOMIC_SOURCE = """
  uint i = thread_position_in_grid.x;
  int bin = idx[i];
  atomic_fetch_add_explicit(&counts[bin], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&total[0], w[i], memory_order_relaxed);
"""


def test_atomic_outputs():
    rng = np.random.default_rng(5)
    n = 300
    idx = rng.integers(0, 7, n).astype(np.int32)
    w = rng.integers(0, 4, n).astype(np.float32)  # integer-valued: any summation order is exact
    k = metal_kernel("emu_test_atomic", ["idx", "w"], ["counts", "total"], ATOMIC_SOURCE, atomic_outputs=True)
    counts, total = k(inputs=[mx.array(idx), mx.array(w)], grid=(n, 1, 1), threadgroup=(64, 1, 1),
                      output_shapes=[(7,), (1,)], output_dtypes=[mx.int32, mx.float32], init_value=0)
    np.testing.assert_array_equal(np.array(counts), np.bincount(idx, minlength=7))
    assert float(np.array(total)[0]) == w.sum()


CONV_SOURCE = """
  uint3 g = thread_position_in_grid;
  uint3 tpg = threads_per_threadgroup;
  // x is a transposed view: read it through its shape/strides
  int64_t loc = elem_to_loc(g.y * x_shape[1] + g.x, x_shape, x_strides, x_ndim);
  bool keep = keep_mask[g.y * x_shape[1] + g.x];
  float val = clamp(float(x[loc]) * scale + offset[0], -3.0f, 3.0f);
  out[g.y * x_shape[1] + g.x] = select(-1.0f, val, keep);
  dims[g.y * x_shape[1] + g.x] = int(tpg.x * 100 + tpg.y);
"""


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_scalars_bool_and_strided_inputs(dtype):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((5, 7)).astype(np.float32)
    x = mx.array(base).astype(dtype).T  # (7, 5), not row-contiguous
    keep = rng.random((7, 5)) > 0.5
    k = metal_kernel("emu_test_conv", ["x", "keep_mask", "scale", "offset"], ["out", "dims"], CONV_SOURCE,
                     ensure_row_contiguous=False)
    out, dims = k(inputs=[x, mx.array(keep), mx.array(2.0), mx.array([0.25])], grid=(5, 7, 1),
                  threadgroup=(4, 4, 1), output_shapes=[(7, 5), (7, 5)], output_dtypes=[mx.float32, mx.int32])
    xv = f32(x)
    np.testing.assert_array_equal(np.array(out), np.where(keep, np.clip(xv * 2.0 + 0.25, -3, 3), -1.0).astype(np.float32))
    # partial threadgroups at the grid's edge report their actual size
    d = np.array(dims)
    assert d[0, 0] == 404 and d[6, 4] == 103 and d[0, 4] == 104 and d[6, 0] == 403


IDIOM_HEADER = """
constant constexpr int kFoo = 3;
template <typename T>
METAL_FUNC float load_scaled(const device T* p, int i, const constant float& s) { return float(p[i]) * s; }
METAL_FUNC void fill(threadgroup float* buf, uint t) { buf[t] = float(t); }
"""
IDIOM_SOURCE = """
  uint t = thread_position_in_threadgroup.x;
  threadgroup float buf[64];
  threadgroup float* bp = buf;
  fill(bp, t);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  thread float acc[4];
  #pragma unroll
  for (short j = 0; j < 4; ++j) acc[j] = bp[(t + j) % 64];
  const device float4* x4 = (const device float4*)x;
  float4 q = x4[t / 4];
  half hm = simd_max(half(q.w));
  out[t] = load_scaled(x, t, s) + acc[0] + acc[3] * kFoo + precise::exp(0.0f) + metal::fast::exp(0.0f)
           + dot(q.xy, float2(1.0f, 0.0f)) * 0.0f + float(hm);
"""


def test_header_helpers_pointers_and_vector_loads():
    k = metal_kernel("emu_test_idioms", ["x", "s"], ["out"], IDIOM_SOURCE, header=IDIOM_HEADER)
    (o,) = k(inputs=[mx.arange(64, dtype=mx.float32), mx.array(2.0)], template=[("T", mx.float32)],
             grid=(64, 1, 1), threadgroup=(64, 1, 1), output_shapes=[(64,)], output_dtypes=[mx.float32])
    t = np.arange(64)
    simd_max_w = np.where(t < 32, 31.0, 63.0)  # max over each simdgroup of x[4*(t//4) + 3]
    np.testing.assert_array_equal(np.array(o), t * 2 + t + ((t + 3) % 64) * 3 + 2 + simd_max_w)
