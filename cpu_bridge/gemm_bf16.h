// bf16 dot-product micro-kernels for CPUs with AVX512-BF16 (vdpbf16ps: two bf16 products summed
// into each float32 lane, twice the float32 FMA rate on Zen 4), and for AArch64 CPUs with BF16
// (bfdot, the same two products per lane). Only the AVX512-BF16 translation unit (ATTN_BF16DOT)
// and the NEON-BF16 one (ATTN_BF16DOT_FWD, forward only) include this.
//
//   C[m][n] (+)= sum_k A[m][k] * B[k][n]     (float32 C, bf16 A and B, float32 accumulation)
//   A: bf16 rows with k contiguous, row stride sam; a pair A[m][2t], A[m][2t+1] is broadcast as
//      one 32-bit word.
//   B: bf16 in pair-interleaved ("VNNI") layout: Bp[t][n][2] = (B[2t][n], B[2t+1][n]), ldb bf16
//      elements from one pair row to the next.
//   K2 = number of k pairs; callers zero-pad an odd K.
#pragma once
#if !defined(ATTN_NEON)
#include <immintrin.h>
#endif

#include "gemm.h"

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

#if defined(ATTN_NEON)
#if !defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
#error "the NEON bf16 kernels need a target with BF16 (e.g. -march=armv8.2-a+bf16)"
#endif
// 6 x 4 tiles as the float32 ones: 24 accumulators, 4 B vectors (4 columns x 2 k each) and the
// broadcast A pair.
template <int M, int NV, int MODE>
inline void micro_bf16(float* __restrict C, int64_t ldc, const uint16_t* __restrict A, int64_t sam,
                       const uint16_t* __restrict B, int64_t ldb, int K2) {
  static_assert(MODE == OVERWRITE || MODE == ACCUMULATE, "no rescale mode for bf16 tiles");
  float32x4_t acc[M][NV];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      acc[m][v] = MODE == OVERWRITE ? vdupq_n_f32(0.0f) : vld1q_f32(C + m * ldc + v * W);
  for (int t = 0; t < K2; ++t) {
    bfloat16x8_t b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = vreinterpretq_bf16_u16(vld1q_u16(B + v * 2 * W));
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      uint32_t pair;
      std::memcpy(&pair, A + m * sam + 2 * t, sizeof pair);
      const bfloat16x8_t a = vreinterpretq_bf16_u32(vdupq_n_u32(pair));
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = vbfdotq_f32(acc[m][v], a, b[v]);
    }
    B += ldb;
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) vst1q_f32(C + m * ldc + v * W, acc[m][v]);
}
#else
static_assert(W == 16, "the x86 bf16 dot-product kernels are AVX-512 only");

inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

template <int M, int NV, int MODE>
inline void micro_bf16(float* __restrict C, int64_t ldc, const uint16_t* __restrict A, int64_t sam,
                       const uint16_t* __restrict B, int64_t ldb, int K2) {
  static_assert(MODE == OVERWRITE || MODE == ACCUMULATE, "no rescale mode for bf16 tiles");
  __m512 acc[M][NV];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      acc[m][v] = MODE == OVERWRITE ? _mm512_setzero_ps() : _mm512_loadu_ps(C + m * ldc + v * W);
  for (int t = 0; t < K2; ++t) {
    __m512bh b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = as_bh(_mm512_loadu_si512(B + v * 2 * W));
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      int32_t pair;
      std::memcpy(&pair, A + m * sam + 2 * t, sizeof pair);
      const __m512bh a = as_bh(_mm512_set1_epi32(pair));
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = _mm512_dpbf16_ps(acc[m][v], a, b[v]);
    }
    B += ldb;
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + m * ldc + v * W, acc[m][v]);
}
#endif

template <int MODE>
struct Bf16Tile {
  float* C; int64_t ldc;
  const uint16_t* A; int64_t sam;
  const uint16_t* B; int64_t ldb;
  int K2;
  Bf16Tile at(int m, int nv) const {
    return {C + m * ldc + nv * W, ldc, A + m * sam, sam, B + 2 * nv * W, ldb, K2};
  }
  template <int M, int NV> void run() const { micro_bf16<M, NV, MODE>(C, ldc, A, sam, B, ldb, K2); }
};

// C (M x NVt*W, row stride ldc) (+)= A (M x 2*K2) . B (2*K2 x NVt*W, pair-interleaved)
template <int MODE>
inline void gemm_bf16(int M, int NVt, float* C, int64_t ldc, const uint16_t* A, int64_t sam,
                      const uint16_t* B, int64_t ldb, int K2) {
  if (K2 <= 0) {
    if (MODE == OVERWRITE)
      for (int m = 0; m < M; ++m) std::memset(C + m * ldc, 0, sizeof(float) * NVt * W);
    return;
  }
  tile_all(Bf16Tile<MODE>{C, ldc, A, sam, B, ldb, K2}, M, NVt);
}

#if !defined(ATTN_NEON)  // the AVX-512 backward's packing (bwd_bf16.h)
// Two float32 vectors -> 16 interleaved bf16 pairs (a[r], b[r]), rounded to nearest even.
inline void store_bf16_pairs(uint16_t* dst, __m512 a, __m512 b) {
  // cvtne2ps puts its second operand in the low half; the permutation interleaves the halves
  const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(b, a);
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                       23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  _mm512_storeu_si512(dst, _mm512_permutexvar_epi16(idx, both));
}

// x as the pairs (hi[r], lo[r]) with hi = bf16(x) and lo = bf16(x - hi): 16 significant bits,
// so a dot product against a duplicated bf16 operand is nearly as exact as float32.
inline void store_split_pairs(uint16_t* dst, __m512 x) {
  const __m512i hi16 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(x));
  const __m512 hi = _mm512_castsi512_ps(_mm512_slli_epi32(hi16, 16));
  store_bf16_pairs(dst, hi, _mm512_sub_ps(x, hi));
}
#endif

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
