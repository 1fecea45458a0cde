"""The CUDA emulator's instruction semantics against numpy: the ptx.h wrappers the kernels use
(mma.sync m16n8k16 f16/bf16 fragments, ldmatrix x4 and .trans, cp.async groups, ex2), warp
shuffles and votes, and __half / __nv_bfloat16 rounding. Fragment layouts here are the PTX
ISA's, written independently of the kernels' layout.h and of the emulator."""
import numpy as np
import pytest

from cuda_emulator import DeviceArray, compile_source

PRELUDE = r"""
#include <cuda_runtime.h>
#include "mlx_attn_cuda/ptx.h"
using namespace mlx_attn_cuda;
"""


@pytest.fixture(scope="module")
def mod():
    return compile_source(PRELUDE + r"""
// D = A B + C with A [16][16], B [16][8] (k, n) as 16-bit patterns, C, D [16][8] float:
// lane l = 4g + t holds A(g + 8(j%2), 2t + 8(j/2) + {0,1}) in reg j, B(2t + 8j + {0,1}, g) in
// reg j, C/D(g + 8(e/2), 2t + e%2) in element e.
template <class T>
__global__ void mma_kernel(const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  const int l = threadIdx.x, g = l >> 2, t = l & 3;
  uint32_t a[4], b[2];
  float d[4];
  for (int j = 0; j < 4; ++j) {
    const int r = g + 8 * (j & 1), c = 2 * t + 8 * (j >> 1);
    a[j] = A[r * 16 + c] | (uint32_t)A[r * 16 + c + 1] << 16;
  }
  for (int j = 0; j < 2; ++j) {
    const int k = 2 * t + 8 * j;
    b[j] = B[k * 8 + g] | (uint32_t)B[(k + 1) * 8 + g] << 16;
  }
  for (int e = 0; e < 4; ++e) d[e] = C[(g + 8 * (e >> 1)) * 8 + 2 * t + (e & 1)];
  mma_16816<T>(d, a, b[0], b[1]);
  for (int e = 0; e < 4; ++e) D[(g + 8 * (e >> 1)) * 8 + 2 * t + (e & 1)] = d[e];
}
extern "C" void run_mma(int bf16, const uint16_t* A, const uint16_t* B, const float* C, float* D) {
  if (bf16) mma_kernel<__nv_bfloat16><<<1, 32>>>(A, B, C, D);
  else mma_kernel<__half><<<1, 32>>>(A, B, C, D);
}

// 32 rows of 8 b16 values in shared memory; lane l gives the address of row rowmap[l].
__global__ void ldsm_kernel(const uint16_t* src, const int* rowmap, uint32_t* out, int trans) {
  __shared__ uint16_t tile[32 * 8];
  const int l = threadIdx.x;
  for (int i = l; i < 256; i += 32) tile[i] = src[i];
  __syncwarp();
  const uint32_t addr = smem_u32(tile) + rowmap[l] * 16;
  uint32_t r[4];
  if (trans) ldsm_x4_trans(addr, r[0], r[1], r[2], r[3]);
  else ldsm_x4(addr, r[0], r[1], r[2], r[3]);
  for (int i = 0; i < 4; ++i) out[l * 4 + i] = r[i];
}
extern "C" void run_ldsm(const uint16_t* src, const int* rowmap, uint32_t* out, int trans) {
  ldsm_kernel<<<1, 32>>>(src, rowmap, out, trans);
}

// One thread, four 16-byte chunks: groups 0 and 1 copy, group 2 zero-fills from an address it
// must not read, a fourth copy stays uncommitted; the shared tile is dumped after each wait.
__global__ void cp_async_kernel(const float* src, const float* never_read, float* out) {
  __shared__ float s[16];
  const uint32_t b = smem_u32(s);
  cp_async_16(b, src, true); cp_async_commit();
  cp_async_16(b + 16, src + 4, true); cp_async_commit();
  cp_async_16(b + 32, never_read, false); cp_async_commit();
  cp_async_16(b + 48, src + 12, true);
  for (int i = 0; i < 16; ++i) out[i] = s[i];
  cp_async_wait<2>();
  for (int i = 0; i < 16; ++i) out[16 + i] = s[i];
  cp_async_wait<0>();
  for (int i = 0; i < 16; ++i) out[32 + i] = s[i];
  cp_async_commit();
  cp_async_wait<0>();
  for (int i = 0; i < 16; ++i) out[48 + i] = s[i];
}
extern "C" void run_cp_async(const float* src, float* out) {
  cp_async_kernel<<<1, 1>>>(src, (const float*)16, out);
}

// Every shuffle flavour and vote on lane values 10 * lane + 1.
__global__ void shfl_kernel(float* out, double* out64, unsigned* votes) {
  const int l = threadIdx.x;
  const float x = 10.f * l + 1.f;
  int k = 0;
  for (int m : {1, 2, 16, 31}) out[(k++) * 32 + l] = __shfl_xor_sync(0xffffffffu, x, m);
  out[(k++) * 32 + l] = __shfl_xor_sync(0xffffffffu, x, 4, 8);
  out[(k++) * 32 + l] = __shfl_sync(0xffffffffu, x, (l * 7) % 32);
  out[(k++) * 32 + l] = __shfl_sync(0xffffffffu, x, (l * 7) % 32, 8);
  out[(k++) * 32 + l] = __shfl_up_sync(0xffffffffu, x, 3);
  out[(k++) * 32 + l] = __shfl_up_sync(0xffffffffu, x, 3, 16);
  out[(k++) * 32 + l] = __shfl_down_sync(0xffffffffu, x, 3);
  out[(k++) * 32 + l] = __shfl_down_sync(0xffffffffu, x, 3, 16);
  out[(k++) * 32 + l] = quad_max(x * ((l & 1) ? -1.f : 1.f));
  out[(k++) * 32 + l] = quad_sum(x);
  out64[l] = __shfl_xor_sync(0xffffffffu, 1e300 * (l + 1), 5);
  votes[l] = __ballot_sync(0xffffffffu, l % 3 == 0);
  votes[32 + l] = __any_sync(0xffffffffu, l == 17) | __all_sync(0xffffffffu, l < 40) << 1 |
                  __all_sync(0xffffffffu, l < 31) << 2;
}
extern "C" void run_shfl(float* out, double* out64, unsigned* votes) { shfl_kernel<<<1, 32>>>(out, out64, votes); }

__global__ void convert_kernel(const float* x, int n, uint16_t* h, uint16_t* bf, float* h_back, float* bf_back,
                               uint32_t* packed, float* ex2) {
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    const __half a = __float2half_rn(x[i]);
    const __nv_bfloat16 b = __float2bfloat16_rn(x[i]);
    h[i] = __half_as_ushort(a);
    bf[i] = __bfloat16_as_ushort(b);
    h_back[i] = __half2float(a);
    bf_back[i] = __bfloat162float(b);
    packed[2 * i] = pack2<__half>(x[i], -x[i]);
    packed[2 * i + 1] = pack2<__nv_bfloat16>(x[i], -x[i]);
    ex2[i] = exp2_approx(x[i]);
  }
}
extern "C" void run_convert(const float* x, int n, uint16_t* h, uint16_t* bf, float* hb, float* bb, uint32_t* p,
                            float* e) {
  convert_kernel<<<1, 64>>>(x, n, h, bf, hb, bb, p, e);
}
""", "ptx_semantics.cu")


def dev(a, name):
    return DeviceArray.from_numpy(np.ascontiguousarray(a), name)


def bf16_bits(x) -> np.ndarray:
    """Round-to-nearest-even float32 -> bfloat16, decided in float64 between the two
    neighbouring bf16 values (independent of the emulator's bit trick)."""
    x = np.asarray(x, np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        return _bf16_bits(x)


def _bf16_bits(x):
    u = x.view(np.uint32)
    lo = (u >> 16).astype(np.uint32)
    hi = lo + 1

    def f(b):  # the value of a bf16 pattern; the one past the largest finite acts as 2^128 (IEEE)
        v = (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return np.where((b & 0x7FFF) == 0x7F80, np.copysign(2.0 ** 128, v), v)
    dlo, dhi = np.abs(x.astype(np.float64) - f(lo)), np.abs(f(hi) - x.astype(np.float64))
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    pick = np.where(np.isinf(x), lo, pick)
    return np.where(np.isnan(x), 0x7FFF, pick).astype(np.uint16)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mma_fragments_and_float32_accumulation(mod, dtype):
    rng = np.random.default_rng(1)
    A = rng.integers(-8, 9, (16, 16)).astype(np.float32) / 4  # exact in both formats
    B = rng.integers(-8, 9, (16, 8)).astype(np.float32) / 4
    C = rng.integers(-100, 100, (16, 8)).astype(np.float32) / 8
    bits = (lambda m: m.astype(np.float16).view(np.uint16)) if dtype == "float16" else bf16_bits
    D = DeviceArray((16, 8), np.float32, name="D")
    mod.call("run_mma", int(dtype == "bfloat16"), dev(bits(A), "A"), dev(bits(B), "B"), dev(C, "C"), D)
    np.testing.assert_array_equal(D.numpy(), A.astype(np.float64) @ B + C)  # exact: all small dyadics

    # float32 accumulation: 1 + 2^-12 (per product) is lost in fp16 but kept in float32
    A = np.zeros((16, 16), np.float32)
    A[:, 0] = 1.0
    A[:, 1] = 2.0 ** -6
    B = np.zeros((16, 8), np.float32)
    B[0, :] = 1.0
    B[1, :] = 2.0 ** -6
    mod.call("run_mma", int(dtype == "bfloat16"), dev(bits(A), "A"), dev(bits(B), "B"),
             dev(np.zeros((16, 8), np.float32), "C"), D)
    assert np.all(D.numpy() == np.float32(1 + 2.0 ** -12))

    # NaN and inf propagate along their row / column only
    A = rng.integers(-4, 5, (16, 16)).astype(np.float32)
    A[3, 5] = np.nan
    B = rng.integers(-4, 5, (16, 8)).astype(np.float32)
    B[:, 6] = 0.0
    B[2, 6] = np.inf
    mod.call("run_mma", int(dtype == "bfloat16"), dev(bits(A), "A"), dev(bits(B), "B"),
             dev(np.zeros((16, 8), np.float32), "C"), D)
    with np.errstate(invalid="ignore"):
        want = np.einsum("ik,kj->ij", A.astype(np.float64), B)
    np.testing.assert_array_equal(np.isnan(D.numpy()), np.isnan(want))
    np.testing.assert_array_equal(D.numpy()[np.isfinite(want)], want[np.isfinite(want)])


@pytest.mark.parametrize("trans", [False, True])
def test_ldmatrix_x4(mod, trans):
    rng = np.random.default_rng(2)
    tile = rng.integers(0, 2 ** 16, (32, 8)).astype(np.uint16)
    rowmap = rng.permutation(32).astype(np.int32)  # lanes point at rows in any order
    out = DeviceArray((32, 4), np.uint32, name="out")
    mod.call("run_ldsm", dev(tile, "tile"), dev(rowmap, "rowmap"), out, int(trans))
    got = out.numpy()
    for lane in range(32):
        for i in range(4):
            m = tile[rowmap[8 * i:8 * i + 8]]  # matrix i: the rows lanes 8i..8i+7 point at
            if trans:
                lo, hi = m[2 * (lane % 4), lane // 4], m[2 * (lane % 4) + 1, lane // 4]
            else:
                lo, hi = m[lane // 4, 2 * (lane % 4)], m[lane // 4, 2 * (lane % 4) + 1]
            assert got[lane, i] == int(lo) | int(hi) << 16, (lane, i)


def test_cp_async_groups_and_wait(mod):
    src = np.arange(1, 17, dtype=np.float32)
    out = DeviceArray((4, 16), np.float32, name="out")
    mod.call("run_cp_async", dev(src, "src"), out)
    got = out.numpy()
    assert np.isnan(got[0]).all()                       # read before any wait: NaN
    np.testing.assert_array_equal(got[1, :4], src[:4])  # wait_group 2: group 0 landed
    assert np.isnan(got[1, 4:]).all()
    np.testing.assert_array_equal(got[2, :8], src[:8])  # wait_group 0: committed groups landed
    np.testing.assert_array_equal(got[2, 8:12], 0)      # src-size 0: zero fill, no read
    assert np.isnan(got[2, 12:]).all()                  # not committed: not waited for
    np.testing.assert_array_equal(got[3, 12:], src[12:])


def test_shuffles_and_votes(mod):
    out = DeviceArray((13, 32), np.float32, name="out")
    out64 = DeviceArray((32,), np.float64, name="out64")
    votes = DeviceArray((64,), np.uint32, name="votes")
    mod.call("run_shfl", out, out64, votes)
    x = 10.0 * np.arange(32) + 1
    lane = np.arange(32)

    def shfl(src):  # a source outside the caller's segment gives the caller's own value
        return x[np.where(src >= 0, src, lane)]

    seg8, seg16 = lane // 8 * 8, lane // 16 * 16
    want = [x[lane ^ m] for m in (1, 2, 16, 31)]
    want.append(x[lane ^ 4])
    want.append(x[(lane * 7) % 32])
    want.append(x[seg8 + (lane * 7) % 32 % 8])
    want.append(shfl(np.where(lane >= 3, lane - 3, -1)))
    want.append(shfl(np.where(lane - 3 >= seg16, lane - 3, -1)))
    want.append(shfl(np.where(lane + 3 < 32, lane + 3, -1)))
    want.append(shfl(np.where(lane + 3 < seg16 + 16, lane + 3, -1)))
    signed = x * np.where(lane & 1, -1, 1)
    want.append(signed.reshape(8, 4).max(1).repeat(4))
    want.append(x.reshape(8, 4).sum(1).repeat(4))
    np.testing.assert_array_equal(out.numpy(), np.array(want, np.float32))
    np.testing.assert_array_equal(out64.numpy(), 1e300 * ((lane ^ 5) + 1))
    ballot = sum(1 << int(i) for i in lane if i % 3 == 0)
    assert (votes.numpy()[:32] == ballot).all()
    assert (votes.numpy()[32:] == 0b011).all()


def test_half_and_bfloat16_rounding(mod):
    h = lambda b: float(np.array([b], np.uint16).view(np.float16)[0])  # noqa: E731
    special = [0.0, -0.0, 1.0, -2.5, 65504.0, 65519.99, 65520.0, 1e6, -1e6, np.inf, -np.inf, np.nan,
               1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -11 + 2.0 ** -20,  # fp16 ties and near-ties
               1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8, 1 + 2.0 ** -8 + 2.0 ** -20,     # bf16 ties and near-ties
               2.0 ** -14, 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 1.5 * 2.0 ** -24,  # fp16 subnormals
               h(0x03FF) + 2.0 ** -26, 2.0 ** -126, 2.0 ** -149, 1e-40, 3.4e38, -3.4e38,
               float(np.float32(3.3961e38))]
    rng = np.random.default_rng(3)
    x = np.array(special + list(rng.standard_normal(200) * 10.0 ** rng.integers(-8, 6, 200)), np.float32)
    n = len(x)
    outs = dict(h=DeviceArray((n,), np.uint16, name="h"), bf=DeviceArray((n,), np.uint16, name="bf"),
                hb=DeviceArray((n,), np.float32, name="hb"), bb=DeviceArray((n,), np.float32, name="bb"),
                p=DeviceArray((n, 2), np.uint32, name="p"), e=DeviceArray((n,), np.float32, name="e"))
    mod.call("run_convert", dev(x, "x"), n, *outs.values())
    with np.errstate(over="ignore", invalid="ignore"):
        want_h = np.where(np.isnan(x), np.uint16(0x7FFF), x.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(outs["h"].numpy(), want_h)
    np.testing.assert_array_equal(outs["bf"].numpy(), bf16_bits(x))
    np.testing.assert_array_equal(outs["hb"].numpy(), want_h.view(np.float16).astype(np.float32))
    np.testing.assert_array_equal(outs["bb"].numpy(), (bf16_bits(x).astype(np.uint32) << 16).view(np.float32))
    # pack2: the first value in the low half
    with np.errstate(over="ignore", invalid="ignore"):
        neg_h = np.where(np.isnan(x), np.uint16(0x7FFF), (-x).astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(outs["p"].numpy()[:, 0], want_h.astype(np.uint32) | neg_h.astype(np.uint32) << 16)
    np.testing.assert_array_equal(outs["p"].numpy()[:, 1],
                                  bf16_bits(x).astype(np.uint32) | bf16_bits(-x).astype(np.uint32) << 16)
    # ex2.approx.ftz: subnormal inputs count as 0, subnormal results flush to +0, ex2(-inf) = 0
    e = outs["e"].numpy()
    with np.errstate(over="ignore"):
        ref = np.exp2(np.where(np.abs(x) < np.finfo(np.float32).tiny, 0, x).astype(np.float64))
    ref = np.where(ref < np.finfo(np.float32).tiny, 0, np.minimum(ref, np.inf))
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(e, ref.astype(np.float32), rtol=2e-7)
    assert e[special.index(-np.inf)] == 0 and np.isnan(e[np.isnan(x)]).all()
