// Forward kernel for decode-sized row blocks (at most 8 query rows of one kv head: the GQA group's
// heads at Lq <= 8), AVX-512 only.
//
// fwd.h puts query rows across the vector lanes; with 1-8 rows that wastes most of each vector
// and broadcasts every K and V element on its own. Here the head dim runs across the lanes
// instead, so each K / V row is read once per chunk as whole vectors:
//   S[r][j]   = dot(q[r], k[j])     16 keys at a time: 16 lane-wise partial dot products,
//                                   then one transposing reduction into a vector of 16 scores
//   O[r][:]  += p[r][j] * v[j][:]   e-tiles of O kept in registers over a chunk of keys
// Decode reads every K / V element once per call, so this path is bound by memory bandwidth
// rather than by broadcasts. Online softmax per chunk of BKD keys, as in fwd.h (log2 units).
// Mask values are read per (row, key) with the mask's own strides.
#pragma once
#include <immintrin.h>

#include "fwd.h"

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

static_assert(W == 16, "the decode kernel is AVX-512 only");

constexpr int kDecodeRows = 8;  // most rows the driver sends to this kernel
constexpr int BKD = 64;         // keys per chunk (4 score vectors per row)

size_t fwd_small_ws_floats(const Problem& p) {
  const size_t Dp = padw(p.D), Dvp = padw(p.Dv);
  // Q rows, O rows, scores / P, a K chunk and a V chunk (packed when not float32 rows)
  return kDecodeRows * (Dp + Dvp) + kDecodeRows * BKD + BKD * (Dp + Dvp) + 64;
}

// Sum of each of the 16 vectors, as one vector (lane t = sum of a[t]): a transposing reduction
// that halves the vector count at each of four levels. "Block" = a 128-bit quarter (4 lanes).
inline __m512 reduce16(__m512 a[16]) {
  // 1. b[i], per block: (a[2i], a[2i+1], a[2i], a[2i+1]), each the sum of two of its lanes
  __m512 b[8];
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  // 2. c[i], per block: (a[4i], .., a[4i+3]), each the sum of that block's four lanes
  __m512 c[4];
  for (int i = 0; i < 4; ++i) {
    const __m512 lo = _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m512 hi = _mm512_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2));
    c[i] = _mm512_add_ps(lo, hi);
  }
  // 3. e[i], blocks: a[8i..8i+3] over blocks 0+1, the same over 2+3, then a[8i+4..8i+7] alike
  __m512 e[2];
  for (int i = 0; i < 2; ++i) {
    const __m512 lo = _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0));
    const __m512 hi = _mm512_shuffle_f32x4(c[2 * i], c[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1));
    e[i] = _mm512_add_ps(lo, hi);
  }
  // 4. block t: a[4t..4t+3], the halves over blocks 0+1 and 2+3 added
  const __m512 lo = _mm512_shuffle_f32x4(e[0], e[1], _MM_SHUFFLE(2, 0, 2, 0));
  const __m512 hi = _mm512_shuffle_f32x4(e[0], e[1], _MM_SHUFFLE(3, 1, 3, 1));
  return _mm512_add_ps(lo, hi);
}

// n (<= 16) lanes of a row, the rest zero, never reading past them.
inline __m512 load_tail(const float* x, int n) {
  return n >= 16 ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), x);
}

// A chunk of nk rows of K (or V) as float32 rows of stride Dp (zero-padded), unless float32 rows
// can be read in place (then *ld is the caller's row stride and the head-dim tail is masked).
template <int DT>
inline const float* chunk_rows(const void* base, int64_t at, int64_t rs, int64_t ds, int nk,
                               int D, int Dp, float* buf, int64_t* ld) {
  if (DT == F32 && ds == 1) {
    *ld = rs;
    return static_cast<const float*>(base) + at;
  }
  for (int j = 0; j < nk; ++j) {
    convert_row<DT>(buf + size_t(j) * Dp, base, at + j * rs, ds, D, 1.0f);
    for (int d = D; d < Dp; ++d) buf[size_t(j) * Dp + d] = 0.0f;
  }
  *ld = Dp;
  return buf;
}

// S[r][16 keys] for rows 0..n-1 (n <= 8), keys j0 .. j0 + nk - 1 of the chunk (nk <= 16).
inline void scores16(const float* Q, int Dp, int D, const float* K, int64_t ldk, int nk, int n,
                     float* S, int ldS) {
  const int nd = Dp / 16, tail = D - (nd - 1) * 16;
  for (int r = 0; r < n; ++r) {
    const float* q = Q + size_t(r) * Dp;
    __m512 acc[16];
    for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
    for (int t = 0; t < nd; ++t) {
      const __m512 qv = _mm512_loadu_ps(q + t * 16);
      const bool last = t == nd - 1;
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        if (j < nk) {
          const float* kr = K + j * ldk + t * 16;
          const __m512 kv = last ? load_tail(kr, tail) : _mm512_loadu_ps(kr);
          acc[j] = _mm512_fmadd_ps(kv, qv, acc[j]);
        }
      }
    }
    _mm512_storeu_ps(S + size_t(r) * ldS, reduce16(acc));
  }
}

// O[r][e-tile] += sum_j P[r][j] V[j][e-tile] over the chunk's nk keys, for NR rows and an e-tile
// of EV vectors (NR x EV accumulators in registers).
template <int NR, int EV>
inline void pv_tile(float* O, int Dvp, int Dv, const float* P, int ldP, const float* V,
                    int64_t ldv, int nk, int e0) {
  __m512 acc[NR][EV];
  int lanes[EV];
#pragma GCC unroll 8
  for (int v = 0; v < EV; ++v) lanes[v] = imax(0, imin(16, Dv - e0 - v * 16));
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < EV; ++v) acc[r][v] = _mm512_loadu_ps(O + size_t(r) * Dvp + e0 + v * 16);
  for (int j = 0; j < nk; ++j) {
    __m512 vv[EV];
#pragma GCC unroll 8
    for (int v = 0; v < EV; ++v) vv[v] = load_tail(V + j * ldv + e0 + v * 16, lanes[v]);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const __m512 pr = _mm512_set1_ps(P[size_t(r) * ldP + j]);
#pragma GCC unroll 8
      for (int v = 0; v < EV; ++v) acc[r][v] = _mm512_fmadd_ps(pr, vv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < EV; ++v) _mm512_storeu_ps(O + size_t(r) * Dvp + e0 + v * 16, acc[r][v]);
}

// O += P V for the chunk: e-tiles of 4 vectors for up to 4 rows, else of 2 (then 1 for a tail).
template <int NR>
inline void pv_chunk(float* O, int Dvp, int Dv, const float* P, int ldP, const float* V,
                     int64_t ldv, int nk) {
  constexpr int EV = NR <= 4 ? 4 : 2;
  int e0 = 0;
  for (; e0 + 16 * EV <= Dvp; e0 += 16 * EV) pv_tile<NR, EV>(O, Dvp, Dv, P, ldP, V, ldv, nk, e0);
  for (; e0 < Dvp; e0 += 16) pv_tile<NR, 1>(O, Dvp, Dv, P, ldP, V, ldv, nk, e0);
}

template <int NR = kDecodeRows>
inline void pv_rows(int n, float* O, int Dvp, int Dv, const float* P, int ldP, const float* V,
                    int64_t ldv, int nk) {
  if constexpr (NR > 0) {
    if (n == NR) return pv_chunk<NR>(O, Dvp, Dv, P, ldP, V, ldv, nk);
    pv_rows<NR - 1>(n, O, Dvp, Dv, P, ldP, V, ldv, nk);
  }
}

template <int DT>
void fwd_small_t(const Problem& p, const Rows& R, int kbeg, int kend, float* ws, float* partial) {
  const int D = p.D, Dv = p.Dv, Dp = padw(D), Dvp = padw(Dv), G = p.Hq / p.Hkv, n = R.n;
  const Seq s = seq_of(p, R.b);
  const int hk = R.h[0] / G;
  float* Q = ws;                                  // [8][Dp], scaled
  float* O = Q + size_t(kDecodeRows) * Dp;        // [8][Dvp], unnormalised
  float* S = O + size_t(kDecodeRows) * Dvp;       // [8][BKD]: scores, then P
  float* KS = S + size_t(kDecodeRows) * BKD;      // [BKD][Dp]
  float* VS = KS + size_t(BKD) * Dp;              // [BKD][Dvp]
  ATTN_CHECK(VS + size_t(BKD) * Dvp <= ws + fwd_small_ws_floats(p), "decode workspace");
  ATTN_CHECK(n >= 1 && n <= kDecodeRows, "decode row block size");

  const bool cap = p.softcap > 0;
  const float qmul = q_multiplier(p);
  const float capmul = p.softcap * kLog2e;
  for (int r = 0; r < n; ++r) {
    const int64_t base = R.b * p.qs[0] + R.h[r] * p.qs[1] + (s.qo + R.i[r]) * p.qs[2];
    convert_row<DT>(Q + size_t(r) * Dp, p.q, base, p.qs[3], D, qmul);
    for (int d = D; d < Dp; ++d) Q[size_t(r) * Dp + d] = 0.0f;
    for (int e = 0; e < Dvp; ++e) O[size_t(r) * Dvp + e] = 0.0f;
  }
  // allowed keys of each row, and of the block
  constexpr int BIG = INT_MAX / 4;
  int lo[kDecodeRows], hi[kDecodeRows], klo = BIG, khi = -BIG;
  for (int r = 0; r < n; ++r) {
    const Span keys = keys_seen(R.i[r], R.i[r], s.Lq, s.Lk, p.wl, p.wr);
    lo[r] = keys.lo; hi[r] = keys.hi;
    klo = imin(klo, lo[r]); khi = imax(khi, hi[r]);
  }
  klo = imax(klo, kbeg); khi = imin(khi + 1, kend);
  float m[kDecodeRows], l[kDecodeRows];
  for (int r = 0; r < n; ++r) { m[r] = kNegInf; l[r] = 0.0f; }
  const bool masked = p.mask_kind != MASK_NONE, add = p.mask_kind == MASK_ADD;
  int64_t mrow[kDecodeRows];
  for (int r = 0; r < n && masked; ++r)
    mrow[r] = R.b * p.ms[0] + R.h[r] * p.ms[1] + R.i[r] * p.ms[2];
  alignas(64) float mb[16];

  const int64_t kbase = R.b * p.ks[0] + hk * p.ks[1] + s.ko * p.ks[2];
  const int64_t vbase = R.b * p.vs[0] + hk * p.vs[1] + s.ko * p.vs[2];
  const __m512i iota16 = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  for (int j0 = klo; j0 < khi; j0 += BKD) {
    const int nk = imin(BKD, khi - j0);
    int64_t ldk, ldv;
    const float* K = chunk_rows<DT>(p.k, kbase + j0 * p.ks[2], p.ks[2], p.ks[3], nk, D, Dp, KS, &ldk);
    const float* V = chunk_rows<DT>(p.v, vbase + j0 * p.vs[2], p.vs[2], p.vs[3], nk, Dv, Dvp, VS, &ldv);
    // 1. scores, 16 keys at a time
    for (int c = 0; c < nk; c += 16)
      scores16(Q, Dp, D, K + c * ldk, ldk, imin(16, nk - c), n, S + c, BKD);
    // 2. softcap, bounds, running max, P = exp2(S - max), row sums, O *= alpha
    const int nvec = (nk + 15) / 16;
    for (int r = 0; r < n; ++r) {
      float* sr = S + size_t(r) * BKD;
      __m512 bm = _mm512_set1_ps(kNegInf);
      for (int c = 0; c < nvec; ++c) {
        __m512 x = _mm512_loadu_ps(sr + c * 16);
        if (cap) x = (__m512)(tanhv((vf)x) * capmul);
        if (masked) {  // mask values of the (up to) 16 keys, then added or applied as keep/remove
          const int j1 = j0 + c * 16, cnt = imin(16, j0 + nk - j1);
          for (int t = 0; t < 16; ++t)
            mb[t] = t < cnt ? mask_log2(p.mask_type, p.mask, mrow[r] + (j1 + t) * p.ms[3]) : 0.0f;
          const __m512 mv = _mm512_load_ps(mb);
          x = add ? _mm512_add_ps(mv, x)  // mv: log2 units
                  : _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mv, _mm512_set1_ps(kNegInf), _CMP_EQ_OQ),
                                         x, _mm512_set1_ps(kNegInf));
        }
        const __m512i jj = _mm512_add_epi32(iota16, _mm512_set1_epi32(j0 + c * 16));
        const __mmask16 ok = _mm512_cmpge_epi32_mask(jj, _mm512_set1_epi32(lo[r])) &
                             _mm512_cmple_epi32_mask(jj, _mm512_set1_epi32(imin(hi[r], j0 + nk - 1)));
        x = _mm512_mask_blend_ps(ok, _mm512_set1_ps(kNegInf), x);
        _mm512_storeu_ps(sr + c * 16, x);
        bm = (__m512)vmax((vf)bm, (vf)x);  // NaN scores stay NaN, as in fwd.h
      }
      // (a NaN score may drop out of the max, but its exp2 below makes the row NaN anyway)
      const float bmax = _mm512_reduce_max_ps(bm);
      const float mn = m[r] > bmax ? m[r] : bmax;
      const float mu = mn == kNegInf ? 0.0f : mn;
      const float alpha = m[r] == mn ? 1.0f : std::exp2(m[r] - mu);
      m[r] = mn;
      __m512 sum = _mm512_setzero_ps();
      for (int c = 0; c < nvec; ++c) {
        const __m512 e = (__m512)exp2v((vf)_mm512_loadu_ps(sr + c * 16) - mu);
        _mm512_storeu_ps(sr + c * 16, e);
        sum = _mm512_add_ps(sum, e);
      }
      l[r] = l[r] * alpha + _mm512_reduce_add_ps(sum);
      if (alpha != 1.0f) {
        const __m512 a = _mm512_set1_ps(alpha);
        for (int e = 0; e < Dvp; e += 16)
          _mm512_storeu_ps(O + size_t(r) * Dvp + e, _mm512_mul_ps(a, _mm512_loadu_ps(O + size_t(r) * Dvp + e)));
      }
    }
    // 3. O += P V
    pv_rows(n, O, Dvp, Dv, S, BKD, V, ldv, nk);
  }

  if (partial) {  // (m, l, O^T) in fwd.h's partial layout for fwd_merge
    for (int r = 0; r < BQ; ++r) { partial[r] = r < n ? m[r] : kNegInf; partial[BQ + r] = r < n ? l[r] : 0.0f; }
    for (int e = 0; e < Dv; ++e)
      for (int r = 0; r < BQ; ++r) partial[2 * BQ + e * BQ + r] = r < n ? O[size_t(r) * Dvp + e] : 0.0f;
    return;
  }
  for (int r = 0; r < n; ++r) {
    const float inv = l[r] == 0.0f ? 0.0f : 1.0f / l[r];
    const int64_t ob = R.b * p.os[0] + R.h[r] * p.os[1] + (s.qo + R.i[r]) * p.os[2];
    for (int e = 0; e < Dv; ++e) store_o<DT>(p, ob + e * p.os[3], O[size_t(r) * Dvp + e] * inv);
    store_row_stats(p, R.b, R.h[r], s.qo + R.i[r], m[r], l[r]);
  }
}

void fwd_small(const Problem& p, const Rows& R, int k0, int k1, float* ws, float* partial) {
  switch (p.dtype) {
    case F32: return fwd_small_t<F32>(p, R, k0, k1, ws, partial);
    case F16: return fwd_small_t<F16>(p, R, k0, k1, ws, partial);
    default: return fwd_small_t<BF16>(p, R, k0, k1, ws, partial);
  }
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
