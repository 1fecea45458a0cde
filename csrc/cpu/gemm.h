// Register-blocked micro-kernels: C[m][n] (+)= sum_k A[m*sam + k*sak] * B[k*ldb + n].
// n runs over whole vectors (callers pad), A is broadcast element by element (any strides), so
// one kernel serves QK^T, PV and the five products of the backward pass in their natural layouts.
#pragma once
#include "vec.h"

#if !defined(ATTN_MR) || !defined(ATTN_NV)
#error "define ATTN_MR and ATTN_NV"
#endif

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

constexpr int MR = ATTN_MR;   // rows of C held in registers
constexpr int NVMAX = ATTN_NV;  // vectors of C per row held in registers

enum { OVERWRITE = 0, ACCUMULATE = 1, RESCALE = 2 };  // RESCALE: C = C * cs[n] + A.B

template <int M, int NV, int MODE>
inline void micro(float* __restrict C, int64_t ldc, const float* __restrict A, int64_t sam,
                  int64_t sak, const float* __restrict B, int64_t ldb, int K,
                  const float* __restrict cs) {
  vf acc[M][NV];
  if (MODE == OVERWRITE) {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] = splat(0.0f);
  } else {
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        acc[m][v] = loadv(C + m * ldc + v * W);
        if (MODE == RESCALE) acc[m][v] *= loadv(cs + v * W);
      }
  }
  const float* a[M];
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m) a[m] = A + m * sam;
  for (int k = 0; k < K; ++k) {
    vf b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) b[v] = loadv(B + v * W);
#pragma GCC unroll 8
    for (int m = 0; m < M; ++m) {
      const float s = a[m][0];
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[m][v] += s * b[v];
      a[m] += sak;
    }
    B += ldb;
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) storev(C + m * ldc + v * W, acc[m][v]);
}

template <int NV, int MODE, int REM>
inline void micro_rem(int rem, float* C, int64_t ldc, const float* A, int64_t sam, int64_t sak,
                      const float* B, int64_t ldb, int K, const float* cs) {
  if constexpr (REM > 0) {
    if (rem == REM) return micro<REM, NV, MODE>(C, ldc, A, sam, sak, B, ldb, K, cs);
    micro_rem<NV, MODE, REM - 1>(rem, C, ldc, A, sam, sak, B, ldb, K, cs);
  }
}

template <int NV, int MODE>
inline void gemm_nv(int M, float* C, int64_t ldc, const float* A, int64_t sam, int64_t sak,
                    const float* B, int64_t ldb, int K, const float* cs) {
  int m = 0;
  for (; m + MR <= M; m += MR)
    micro<MR, NV, MODE>(C + m * ldc, ldc, A + m * sam, sam, sak, B, ldb, K, cs);
  if (m < M) micro_rem<NV, MODE, MR - 1>(M - m, C + m * ldc, ldc, A + m * sam, sam, sak, B, ldb, K, cs);
}

template <int MODE, int NV = NVMAX>
inline void gemm_split(int M, int nv, float* C, int64_t ldc, const float* A, int64_t sam,
                       int64_t sak, const float* B, int64_t ldb, int K, const float* cs) {
  if constexpr (NV > 0) {
    if (nv == NV) return gemm_nv<NV, MODE>(M, C, ldc, A, sam, sak, B, ldb, K, cs);
    gemm_split<MODE, NV - 1>(M, nv, C, ldc, A, sam, sak, B, ldb, K, cs);
  }
}

// C is M x (NVt * W). Columns are processed NVMAX vectors at a time.
template <int MODE>
inline void gemm(int M, int NVt, float* C, int64_t ldc, const float* A, int64_t sam, int64_t sak,
                 const float* B, int64_t ldb, int K, const float* cs = nullptr) {
  if (M <= 0 || NVt <= 0) return;
  for (int n0 = 0; n0 < NVt; n0 += NVMAX) {
    const int nv = imin(NVMAX, NVt - n0);
    gemm_split<MODE>(M, nv, C + n0 * W, ldc, A, sam, sak, B + n0 * W, ldb, K,
                     cs ? cs + n0 * W : nullptr);
  }
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
