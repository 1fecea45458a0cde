// Forward kernel for decode-sized row blocks (at most 8 query rows of one kv head: the GQA group's
// heads at Lq <= 8), for AVX-512 (16 lanes), AVX2 (8 lanes, 16 ymm registers) and NEON (4 lanes,
// 32 q registers).
//
// fwd.h puts query rows across the vector lanes; with 1-8 rows that wastes most of each vector
// and broadcasts every K and V element on its own. Here the head dim runs across the lanes
// instead, so each K / V row is read once per chunk as whole vectors:
//   S[r][j]   = dot(q[r], k[j])     W keys at a time: W lane-wise partial dot products,
//                                   then one transposing reduction into a vector of W scores
//   O[r][:]  += p[r][j] * v[j][:]   e-tiles of O kept in registers over a chunk of keys
// Decode reads every K / V element once per call, so this path is bound by memory bandwidth
// rather than by broadcasts. Online softmax per chunk of BKD keys, as in fwd.h (log2 units).
// fp16 / bf16 K and V are converted a row at a time in registers (F16C or fcvtl; bf16 by a
// 16-bit shift).
// Mask values are read per (row, key) with the mask's own strides.
#pragma once
#if !defined(ATTN_NEON)
#include <immintrin.h>
#endif

#include "fwd.h"

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

#if defined(ATTN_NEON)
static_assert(W == 4, "the NEON decode kernel has 4 lanes");
#else
static_assert(W == 16 || W == 8, "the decode kernel is AVX-512 or AVX2");
#endif

constexpr int kDecodeRows = 8;  // most rows the driver sends to this kernel
constexpr int BKD = 64;         // keys per chunk (64 / W score vectors per row)

size_t fwd_small_ws_floats(const Problem& p) {
  const size_t Dp = padw(p.D), Dvp = padw(p.Dv);
  // Q rows, O rows, scores / P, a K chunk and a V chunk (packed when not float32 rows)
  return kDecodeRows * (Dp + Dvp) + kDecodeRows * BKD + BKD * (Dp + Dvp) + 64;
}

// ---- what differs between the widths: register type, tail loads, the transposing
// reduction, conversions ----
#if defined(ATTN_NEON)
typedef float32x4_t vreg;
inline vreg vld(const float* x) { return vld1q_f32(x); }
inline void vst(float* x, vreg a) { vst1q_f32(x, a); }
inline vreg vfma(vreg a, vreg b, vreg c) { return vfmaq_f32(c, a, b); }  // c + a * b
inline vreg vset(float x) { return vdupq_n_f32(x); }
inline vreg vzero() { return vdupq_n_f32(0.0f); }
// fmaxnmv skips a NaN lane; a NaN score still makes its row NaN through exp2 below
inline float hmax(vf x) { return vmaxnmvq_f32((float32x4_t)x); }
inline float hsum(vf x) { return vaddvq_f32((float32x4_t)x); }

// n (<= 4) lanes of a row, the rest zero, never reading past them (no masked loads on NEON).
inline vreg load_tail(const float* x, int n) {
  if (n >= 4) return vld1q_f32(x);
  float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  for (int t = 0; t < n; ++t) buf[t] = x[t];
  return vld1q_f32(buf);
}

// Sum of each of the 4 vectors, as one vector (lane t = sum of a[t]): two levels of faddp.
inline vreg reduce_w(vreg a[4]) {
  return vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3]));
}

inline vreg cvt_f16(const uint16_t* x) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(x))); }
inline vreg cvt_bf16(const uint16_t* x) {
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(x), 16));
}
#elif ATTN_W == 16
typedef __m512 vreg;
inline vreg vld(const float* x) { return _mm512_loadu_ps(x); }
inline void vst(float* x, vreg a) { _mm512_storeu_ps(x, a); }
inline vreg vfma(vreg a, vreg b, vreg c) { return _mm512_fmadd_ps(a, b, c); }
inline vreg vset(float x) { return _mm512_set1_ps(x); }
inline vreg vzero() { return _mm512_setzero_ps(); }
inline float hmax(vf x) { return _mm512_reduce_max_ps((__m512)x); }
inline float hsum(vf x) { return _mm512_reduce_add_ps((__m512)x); }

// n (<= 16) lanes of a row, the rest zero, never reading past them.
inline vreg load_tail(const float* x, int n) {
  return n >= 16 ? _mm512_loadu_ps(x) : _mm512_maskz_loadu_ps(__mmask16((1u << n) - 1), x);
}

// Sum of each of the 16 vectors, as one vector (lane t = sum of a[t]): a transposing reduction
// that halves the vector count at each of four levels. "Block" = a 128-bit quarter (4 lanes).
inline vreg reduce_w(vreg a[16]) {
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

inline vreg cvt_f16(const uint16_t* x) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
}
inline vreg cvt_bf16(const uint16_t* x) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
#else  // AVX2 + FMA + F16C
typedef __m256 vreg;
inline vreg vld(const float* x) { return _mm256_loadu_ps(x); }
inline void vst(float* x, vreg a) { _mm256_storeu_ps(x, a); }
inline vreg vfma(vreg a, vreg b, vreg c) { return _mm256_fmadd_ps(a, b, c); }
inline vreg vset(float x) { return _mm256_set1_ps(x); }
inline vreg vzero() { return _mm256_setzero_ps(); }
// (once per row and chunk: not worth shuffles; vmax's NaN rule, as the AVX-512 reduction)
inline float hmax(vf x) {
  float m = x[0];
  for (int t = 1; t < 8; ++t) m = m > x[t] ? m : x[t];
  return m;
}
inline float hsum(vf x) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128((__m256)x), _mm256_extractf128_ps((__m256)x, 1));
  const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// n (<= 8) lanes of a row, the rest zero; vmaskmovps never touches the masked-off lanes.
inline vreg load_tail(const float* x, int n) {
  if (n >= 8) return _mm256_loadu_ps(x);
  const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_maskload_ps(x, keep);
}

// Sum of each of the 8 vectors, as one vector (lane t = sum of a[t]), in three levels.
inline vreg reduce_w(vreg a[8]) {
  // 1. per 128-bit half: (a[2i], a[2i+1], a[2i], a[2i+1]), each the sum of two of its lanes
  __m256 b[4];
  for (int i = 0; i < 4; ++i)
    b[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]),
                         _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  // 2. per half: (a[4i], .., a[4i+3]), each the sum of that half's four lanes
  __m256 c[2];
  for (int i = 0; i < 2; ++i) {
    const __m256 lo = _mm256_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 hi = _mm256_shuffle_ps(b[2 * i], b[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2));
    c[i] = _mm256_add_ps(lo, hi);
  }
  // 3. lanes 0-3: a[0..3] over both halves of c[0]; lanes 4-7: a[4..7] from c[1]
  return _mm256_add_ps(_mm256_permute2f128_ps(c[0], c[1], 0x20),
                       _mm256_permute2f128_ps(c[0], c[1], 0x31));
}

inline vreg cvt_f16(const uint16_t* x) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
}
inline vreg cvt_bf16(const uint16_t* x) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
#endif

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
    float* dst = buf + size_t(j) * Dp;
    int d = 0;
    if (DT != F32 && ds == 1) {  // whole vectors converted in registers
      const uint16_t* src = static_cast<const uint16_t*>(base) + at + j * rs;
      for (; d + W <= D; d += W) vst(dst + d, DT == F16 ? cvt_f16(src + d) : cvt_bf16(src + d));
      for (; d < D; ++d) dst[d] = to_f32<DT>(src, d);
    } else {
      convert_row<DT>(dst, base, at + j * rs, ds, D, 1.0f);
      d = D;
    }
    for (; d < Dp; ++d) dst[d] = 0.0f;
  }
  *ld = Dp;
  return buf;
}

// S[r][W keys] for rows 0..n-1 (n <= 8), keys j0 .. j0 + nk - 1 of the chunk (nk <= W).
inline void scores_w(const float* Q, int Dp, int D, const float* K, int64_t ldk, int nk, int n,
                     float* S, int ldS) {
  const int nd = Dp / W, tail = D - (nd - 1) * W;
  for (int r = 0; r < n; ++r) {
    const float* q = Q + size_t(r) * Dp;
    vreg acc[W];
    for (int j = 0; j < W; ++j) acc[j] = vzero();
    for (int t = 0; t < nd; ++t) {
      const vreg qv = vld(q + t * W);
      const bool last = t == nd - 1;
#pragma GCC unroll 16
      for (int j = 0; j < W; ++j) {
        if (j < nk) {
          const float* kr = K + j * ldk + t * W;
          const vreg kv = last ? load_tail(kr, tail) : vld(kr);
          acc[j] = vfma(kv, qv, acc[j]);
        }
      }
    }
    vst(S + size_t(r) * ldS, reduce_w(acc));
  }
}

// O[r][e-tile] += sum_j P[r][j] V[j][e-tile] over the chunk's nk keys, for NR rows and an e-tile
// of EV vectors (NR x EV accumulators in registers).
template <int NR, int EV>
inline void pv_tile(float* O, int Dvp, int Dv, const float* P, int ldP, const float* V,
                    int64_t ldv, int nk, int e0) {
  vreg acc[NR][EV];
  int lanes[EV];
#pragma GCC unroll 8
  for (int v = 0; v < EV; ++v) lanes[v] = imax(0, imin(W, Dv - e0 - v * W));
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < EV; ++v) acc[r][v] = vld(O + size_t(r) * Dvp + e0 + v * W);
  for (int j = 0; j < nk; ++j) {
    vreg vv[EV];
#pragma GCC unroll 8
    for (int v = 0; v < EV; ++v) vv[v] = load_tail(V + j * ldv + e0 + v * W, lanes[v]);
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      const vreg pr = vset(P[size_t(r) * ldP + j]);
#pragma GCC unroll 8
      for (int v = 0; v < EV; ++v) acc[r][v] = vfma(pr, vv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r)
#pragma GCC unroll 8
    for (int v = 0; v < EV; ++v) vst(O + size_t(r) * Dvp + e0 + v * W, acc[r][v]);
}

// Vectors per e-tile for NR rows: NR x EV accumulators, EV rows of V and a broadcast must fit
// the register file (32 zmm; 16 ymm; 32 NEON q registers: (NR + 1) x EV + 1 <= 31, at most 8).
template <int NR> constexpr int pv_vectors() {
  if (W == 4) return 30 / (NR + 1) < 8 ? 30 / (NR + 1) : 8;
  if (W == 16) return NR <= 4 ? 4 : 2;
  return NR <= 2 ? 4 : NR <= 6 ? 2 : 1;
}

// O += P V for the chunk: e-tiles of pv_vectors<NR>() vectors, then single vectors for a tail.
template <int NR>
inline void pv_chunk(float* O, int Dvp, int Dv, const float* P, int ldP, const float* V,
                     int64_t ldv, int nk) {
  constexpr int EV = pv_vectors<NR>();
  int e0 = 0;
  for (; e0 + W * EV <= Dvp; e0 += W * EV) pv_tile<NR, EV>(O, Dvp, Dv, P, ldP, V, ldv, nk, e0);
  for (; e0 < Dvp; e0 += W) pv_tile<NR, 1>(O, Dvp, Dv, P, ldP, V, ldv, nk, e0);
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
  alignas(64) float mb[W];

  const int64_t kbase = R.b * p.ks[0] + hk * p.ks[1] + s.ko * p.ks[2];
  const int64_t vbase = R.b * p.vs[0] + hk * p.vs[1] + s.ko * p.vs[2];
  for (int j0 = klo; j0 < khi; j0 += BKD) {
    const int nk = imin(BKD, khi - j0);
    int64_t ldk, ldv;
    const float* K = chunk_rows<DT>(p.k, kbase + j0 * p.ks[2], p.ks[2], p.ks[3], nk, D, Dp, KS, &ldk);
    const float* V = chunk_rows<DT>(p.v, vbase + j0 * p.vs[2], p.vs[2], p.vs[3], nk, Dv, Dvp, VS, &ldv);
    // 1. scores, W keys at a time
    for (int c = 0; c < nk; c += W)
      scores_w(Q, Dp, D, K + c * ldk, ldk, imin(W, nk - c), n, S + c, BKD);
    // 2. softcap, bounds, running max, P = exp2(S - max), row sums, O *= alpha
    const int nvec = (nk + W - 1) / W;
    for (int r = 0; r < n; ++r) {
      float* sr = S + size_t(r) * BKD;
      vf bm = splat(kNegInf);
      for (int c = 0; c < nvec; ++c) {
        vf x = loadv(sr + c * W);
        if (cap) x = tanhv(x) * capmul;
        if (masked) {  // mask values of the (up to) W keys, then added or applied as keep/remove
          const int j1 = j0 + c * W, cnt = imin(W, j0 + nk - j1);
          for (int t = 0; t < W; ++t)
            mb[t] = t < cnt ? mask_log2(p.mask_type, p.mask, mrow[r] + (j1 + t) * p.ms[3]) : 0.0f;
          const vf mv = loadv(mb);
          x = add ? x + mv : sel(mv == kNegInf, splat(kNegInf), x);  // mv: log2 units
        }
        const vi jj = iota() + (j0 + c * W);
        x = sel((jj >= lo[r]) & (jj <= imin(hi[r], j0 + nk - 1)), x, splat(kNegInf));
        storev(sr + c * W, x);
        bm = vmax(bm, x);  // NaN scores stay NaN, as in fwd.h
      }
      // (a NaN score may drop out of the max, but its exp2 below makes the row NaN anyway)
      const float bmax = hmax(bm);
      const float mn = m[r] > bmax ? m[r] : bmax;
      const float mu = mn == kNegInf ? 0.0f : mn;
      const float alpha = m[r] == mn ? 1.0f : std::exp2(m[r] - mu);
      m[r] = mn;
      vf sum = splat(0.0f);
      for (int c = 0; c < nvec; ++c) {
        const vf e = exp2v(loadv(sr + c * W) - mu);
        storev(sr + c * W, e);
        sum += e;
      }
      l[r] = l[r] * alpha + hsum(sum);
      if (alpha != 1.0f)
        for (int e = 0; e < Dvp; e += W) storev(O + size_t(r) * Dvp + e, loadv(O + size_t(r) * Dvp + e) * alpha);
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
