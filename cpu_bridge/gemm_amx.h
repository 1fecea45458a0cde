// AMX (Intel Advanced Matrix Extensions) bf16 tiles for the forward pass of bf16 problems:
// Sapphire Rapids and later Xeons, where one TDPBF16PS does 16 x 16 x 32 products (about 16x the
// AVX-512 float32 rate). Only isa_avx512amx.cpp (ATTN_AMX, -mamx-tile -mamx-bf16) includes this.
//
//   C[m][n] (+)= sum_k A[m][k] * B[k][n]     float32 C, bf16 A and B, float32 accumulation
//   A: bf16 rows, k contiguous, lda elements apart; M a multiple of 16, K of 32 (callers pad)
//   B: pair-interleaved ("VNNI") bf16: Bp[k/2][n][2], ldb elements from one pair row to the next;
//      N a multiple of 16
//
// Every tile is the largest shape (16 rows x 64 bytes), so one configuration serves all products;
// tiles 0-3 hold C (a 2 x 2 block of 16 x 16), 4-5 A, 6-7 B. The configuration is per thread:
// AmxTiles loads it for a scope and releases the tiles after.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernel_api.h"
#include "vec.h"

#if !defined(__AMX_TILE__) || !defined(__AMX_BF16__) || !defined(__AVX512BF16__)
#error "gemm_amx.h needs -mamx-tile -mamx-bf16 -mavx512bf16"
#endif

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

constexpr int kAmxK = 32;  // bf16 elements of k per tile row (64 bytes)

struct AmxTiles {
  AmxTiles() {
    struct alignas(64) {
      uint8_t palette, start_row, reserved[14];
      uint16_t colsb[16];
      uint8_t rows[16];
    } cfg;
    std::memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; ++t) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
    _tile_loadconfig(&cfg);
  }
  ~AmxTiles() { _tile_release(); }
  AmxTiles(const AmxTiles&) = delete;
  AmxTiles& operator=(const AmxTiles&) = delete;
};

// One MB x NB block of 16 x 16 C tiles (MB, NB in {1, 2}) over the whole K.
template <int MB, int NB, bool ACC>
inline void amx_block(float* C, int64_t ldc, const uint16_t* A, int64_t lda, const uint16_t* B,
                      int64_t ldb, int K) {
  const int64_t cs = ldc * 4, as = lda * 2, bs = ldb * 2;
  float* C1 = C + 16 * ldc;
  if (ACC) {
    _tile_loadd(0, C, cs);
    if (NB > 1) _tile_loadd(1, C + 16, cs);
    if (MB > 1) _tile_loadd(2, C1, cs);
    if (MB > 1 && NB > 1) _tile_loadd(3, C1 + 16, cs);
  } else {
    _tile_zero(0);
    if (NB > 1) _tile_zero(1);
    if (MB > 1) _tile_zero(2);
    if (MB > 1 && NB > 1) _tile_zero(3);
  }
  for (int k = 0; k < K; k += kAmxK) {
    const uint16_t* b = B + (k / 2) * ldb;
    _tile_loadd(4, A + k, as);
    if (MB > 1) _tile_loadd(5, A + 16 * lda + k, as);
    _tile_loadd(6, b, bs);
    if (NB > 1) _tile_loadd(7, b + 32, bs);  // 16 columns of pairs further
    _tile_dpbf16ps(0, 4, 6);
    if (NB > 1) _tile_dpbf16ps(1, 4, 7);
    if (MB > 1) _tile_dpbf16ps(2, 5, 6);
    if (MB > 1 && NB > 1) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, C, cs);
  if (NB > 1) _tile_stored(1, C + 16, cs);
  if (MB > 1) _tile_stored(2, C1, cs);
  if (MB > 1 && NB > 1) _tile_stored(3, C1 + 16, cs);
}

template <bool ACC>
inline void amx_gemm(int M, int N, int K, float* C, int64_t ldc, const uint16_t* A, int64_t lda,
                     const uint16_t* B, int64_t ldb) {
  for (int n = 0; n < N; n += 32) {
    const bool two_n = n + 32 <= N;
    for (int m = 0; m < M; m += 32) {
      float* c = C + m * ldc + n;
      const uint16_t* a = A + m * lda;
      const uint16_t* b = B + 2 * n;
      if (m + 32 <= M) {
        if (two_n) amx_block<2, 2, ACC>(c, ldc, a, lda, b, ldb, K);
        else amx_block<2, 1, ACC>(c, ldc, a, lda, b, ldb, K);
      } else {
        if (two_n) amx_block<1, 2, ACC>(c, ldc, a, lda, b, ldb, K);
        else amx_block<1, 1, ACC>(c, ldc, a, lda, b, ldb, K);
      }
    }
  }
}

// Rows j0 .. j0 + nk - 1 of a bf16 [rows][D] operand (element strides sr, sd) as A rows:
// dst[j][Dp], Dp = D padded to 32, zero past D and for the rows nk .. rows_to - 1.
inline void amx_pack_rows(uint16_t* dst, int Dp, const uint16_t* src, int64_t sr, int64_t sd,
                          int nk, int D, int rows_to) {
  for (int j = 0; j < nk; ++j) {
    uint16_t* d = dst + int64_t(j) * Dp;
    const uint16_t* s = src + j * sr;
    if (sd == 1) {
      std::memcpy(d, s, sizeof(uint16_t) * D);
    } else {
      for (int e = 0; e < D; ++e) d[e] = s[e * sd];
    }
    std::memset(d + D, 0, sizeof(uint16_t) * (Dp - D));
  }
  std::memset(dst + int64_t(nk) * Dp, 0, sizeof(uint16_t) * size_t(rows_to - nk) * Dp);
}

// The 16 x 16 transpose of 32-bit words held in r[0..15] (row i in r[i]), in place: words
// interleaved within 128-bit lanes (unpack 32, then 64), then the lanes moved (shuffle_i32x4).
inline void transpose16_epi32(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int g = 0; g < 4; ++g) {  // s[4g + c], lane L: column 4L + c of rows 4g .. 4g + 3
    r[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    r[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    r[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    r[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i x0 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x44);
    const __m512i x1 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xEE);
    const __m512i y0 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x44);
    const __m512i y1 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xEE);
    t[c] = _mm512_shuffle_i32x4(x0, y0, 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(x0, y0, 0xDD);
    t[8 + c] = _mm512_shuffle_i32x4(x1, y1, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(x1, y1, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Word 2i of the result is a[i], word 2i + 1 is b[i] (16 bf16 each): two rows as pairs.
inline __m512i interleave_bf16(__m256i a, __m256i b) {
  alignas(64) static const uint16_t ix[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22,
                                              7, 23, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13,
                                              29, 14, 30, 15, 31};
  const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
  return _mm512_permutexvar_epi16(_mm512_load_si512(ix), both);
}

// V^T of nk keys as A rows: dst[e][j] (row stride ld >= nk padded to 32), zero for j >= nk up to
// the padding and for the rows e in [Dv, Dvp). With contiguous rows of V, blocks of 32 keys x 16
// dims: pairs of key rows interleaved into 32-bit words, then a 16 x 16 word transpose.
inline void amx_pack_vt(uint16_t* dst, int64_t ld, const uint16_t* v, int64_t sr, int64_t sd,
                        int nk, int Dv, int Dvp) {
  const int nkp = round_up(nk, kAmxK);
  for (int e = Dv; e < Dvp; ++e) std::memset(dst + e * ld, 0, sizeof(uint16_t) * nkp);
  if (sd != 1) {
    for (int e = 0; e < Dv; ++e) {
      uint16_t* d = dst + e * ld;
      int j = 0;
      for (; j < nk; ++j) d[j] = v[e * sd + j * sr];
      for (; j < nkp; ++j) d[j] = 0;
    }
    return;
  }
  for (int e0 = 0; e0 < Dv; e0 += 16) {
    const int ne = Dv - e0 < 16 ? Dv - e0 : 16;
    const __mmask16 cols = __mmask16((1u << ne) - 1u);
    for (int j0 = 0; j0 < nkp; j0 += 32) {
      __m512i w[16];
      for (int i = 0; i < 16; ++i) {  // word row i: keys j0 + 2i and j0 + 2i + 1
        const int j = j0 + 2 * i;
        const __m256i a = j < nk ? _mm256_maskz_loadu_epi16(cols, v + j * sr + e0)
                                 : _mm256_setzero_si256();
        const __m256i b = j + 1 < nk ? _mm256_maskz_loadu_epi16(cols, v + (j + 1) * sr + e0)
                                     : _mm256_setzero_si256();
        w[i] = interleave_bf16(a, b);
      }
      transpose16_epi32(w);  // w[e]: the 16 key pairs of dim e0 + e
      for (int e = 0; e < ne; ++e) _mm512_storeu_si512(dst + (e0 + e) * ld + j0, w[e]);
    }
  }
}

// q^T of a row block as B tiles read it: QTv[d/2][r][2] bf16 pairs over the head dim (kBQ rows,
// zero past the block's rows and up to D padded to 32). Rows of contiguous q with an even D are
// 32-bit words [r][d/2]: 16 x 16 word transposes; other layouts take the scalar pack_qt_pairs.
template <int kBQ>
inline void amx_pack_qt_rows(const Problem& p, const Rows& R, const Seq& s, uint16_t* QTv,
                             int Dp) {
  const uint16_t* q16 = static_cast<const uint16_t*>(p.q);
  const int words = p.D / 2;
  for (int r0 = 0; r0 < kBQ; r0 += 16) {
    for (int c0 = 0; c0 < Dp / 2; c0 += 16) {
      const int nc = words - c0 < 0 ? 0 : (words - c0 < 16 ? words - c0 : 16);
      const __mmask16 cols = __mmask16((1u << nc) - 1u);
      __m512i w[16];
      for (int i = 0; i < 16; ++i) {
        const int r = r0 + i;
        if (r < R.n && nc > 0) {
          const int64_t base = R.b * p.qs[0] + R.h[r] * p.qs[1] + (s.qo + R.i[r]) * p.qs[2];
          w[i] = _mm512_maskz_loadu_epi32(cols, q16 + base + 2 * c0);
        } else {
          w[i] = _mm512_setzero_si512();
        }
      }
      transpose16_epi32(w);  // w[c]: word c0 + c of the 16 rows
      for (int c = 0; c < 16; ++c) _mm512_storeu_si512(QTv + (c0 + c) * 2 * kBQ + 2 * r0, w[c]);
    }
  }
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
