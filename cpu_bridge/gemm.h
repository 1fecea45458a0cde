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

// RESCALE: C = C * cs[n] + A.B. OVERWRITE_MAX: C = A.B and cs[n] = max(cs[n], max_m C[m][n]),
// the forward's block row-max taken while the scores are still in registers.
enum { OVERWRITE = 0, ACCUMULATE = 1, RESCALE = 2, OVERWRITE_MAX = 3 };

template <int M, int NV, int MODE>
inline void micro(float* __restrict C, int64_t ldc, const float* __restrict A, int64_t sam,
                  int64_t sak, const float* __restrict B, int64_t ldb, int K,
                  float* __restrict cs) {
  vf acc[M][NV];
  if (MODE == OVERWRITE || MODE == OVERWRITE_MAX) {
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
      for (int v = 0; v < NV; ++v) acc[m][v] = fma_bcast(acc[m][v], s, b[v]);
      a[m] += sak;
    }
    B += ldb;
  }
#pragma GCC unroll 8
  for (int m = 0; m < M; ++m)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) storev(C + m * ldc + v * W, acc[m][v]);
  if (MODE == OVERWRITE_MAX) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      vf mx = loadv(cs + v * W);
#pragma GCC unroll 8
      for (int m = 0; m < M; ++m) mx = vmax(mx, acc[m][v]);
      storev(cs + v * W, mx);
    }
  }
}

// Walks C in register tiles: whole MR-row tiles, then one tile for the remaining rows, NVMAX
// vectors of columns at a time. A tile type T knows how to shift its operands to row m and
// vector column nv (T::at) and runs one tile of compile-time shape (T::run<M, NV>), so the fp32
// and the bf16 dot-product kernels share this walk.
template <class T, int NV, int REM>
inline void tile_rows_rem(const T& t, int rem) {
  if constexpr (REM > 0) {
    if (rem == REM) return t.template run<REM, NV>();
    tile_rows_rem<T, NV, REM - 1>(t, rem);
  }
}

template <class T, int NV>
inline void tile_rows(const T& t, int M) {
  int m = 0;
  for (; m + MR <= M; m += MR) t.at(m, 0).template run<MR, NV>();
  if (m < M) tile_rows_rem<T, NV, MR - 1>(t.at(m, 0), M - m);
}

template <class T, int NV = NVMAX>
inline void tile_cols(const T& t, int M, int nv) {
  if constexpr (NV > 0) {
    if (nv == NV) return tile_rows<T, NV>(t, M);
    tile_cols<T, NV - 1>(t, M, nv);
  }
}

// C is M x (NVt * W).
template <class T>
inline void tile_all(const T& t, int M, int NVt) {
  if (M <= 0 || NVt <= 0) return;
  for (int n0 = 0; n0 < NVt; n0 += NVMAX) tile_cols<T>(t.at(0, n0), M, imin(NVMAX, NVt - n0));
}

template <int MODE>
struct F32Tile {
  float* C; int64_t ldc;
  const float* A; int64_t sam, sak;
  const float* B; int64_t ldb;
  int K;
  float* cs;
  F32Tile at(int m, int nv) const {
    return {C + m * ldc + nv * W, ldc, A + m * sam, sam, sak, B + nv * W, ldb, K,
            cs ? cs + nv * W : nullptr};
  }
  template <int M, int NV> void run() const { micro<M, NV, MODE>(C, ldc, A, sam, sak, B, ldb, K, cs); }
};

template <int MODE>
inline void gemm(int M, int NVt, float* C, int64_t ldc, const float* A, int64_t sam, int64_t sak,
                 const float* B, int64_t ldb, int K, float* cs = nullptr) {
  tile_all(F32Tile<MODE>{C, ldc, A, sam, sak, B, ldb, K, cs}, M, NVt);
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
