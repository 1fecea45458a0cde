// Forward kernel for one ISA: one block of query rows against a range of keys, online softmax.
//
// Layout: scores are computed transposed, S^T[j][r] (keys down, query rows across the lanes), so
// the running max / sum / rescale are plain per-lane operations, K and V are read as broadcast
// scalars straight from the caller's memory (float32) or a converted tile (fp16 / bf16), and the
// output accumulates transposed as O^T[e][r]. Exponentials use base 2 (log2(e) folded into q).
// Row blocks of at most 8 rows (decode) take decode.h on AVX-512 instead.
#pragma once
#include <climits>

#include "gemm.h"
#include "kernel_api.h"
#ifdef ATTN_BF16DOT
#include "gemm_bf16.h"
#endif

#ifndef ATTN_BK
#define ATTN_BK 64
#endif

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

constexpr int BK = ATTN_BK;
#ifdef ATTN_BF16DOT
constexpr bool kBf16Dot = true;   // bf16 problems use the AVX512-BF16 dot products
#else
constexpr bool kBf16Dot = false;
#endif
constexpr int BQ = NVMAX * W;
static_assert(BQ <= kMaxRows, "row block too large");

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

size_t fwd_ws_floats(const Problem& p) {
  const size_t f32 = size_t(p.D + p.Dv + 2 * BK) * BQ + size_t(BK) * (p.D + p.Dv) + 8 * BQ + 64;
  // bf16 dot path: q^T pairs and a K tile in bf16 (halves of floats), 64-byte aligned
  return kBf16Dot ? f32 + size_t(p.D + 2) * (BQ + BK) / 2 + 48 : f32;
}
size_t fwd_partial_floats(const Problem& p) { return size_t(2 + p.Dv) * BQ; }

// Per-lane key bounds [lo, hi] of a row block, and the union / intersection over its rows.
struct Bounds {
  vi lo[NVMAX], hi[NVMAX];
  int lo_min, lo_max, hi_min, hi_max;
};

inline void row_bounds(const Problem& p, const Rows& R, int off, Bounds& bd) {
  constexpr int BIG = INT_MAX / 4;
  int lo[BQ], hi[BQ];
  bd.lo_min = BIG; bd.lo_max = -BIG; bd.hi_min = BIG; bd.hi_max = -BIG;
  for (int r = 0; r < BQ; ++r) {
    if (r < R.n) {
      lo[r] = p.wl >= 0 ? R.i[r] + off - p.wl : -BIG;
      hi[r] = p.wr >= 0 ? R.i[r] + off + p.wr : BIG;
      bd.lo_min = imin(bd.lo_min, lo[r]); bd.lo_max = imax(bd.lo_max, lo[r]);
      bd.hi_min = imin(bd.hi_min, hi[r]); bd.hi_max = imax(bd.hi_max, hi[r]);
    } else {
      lo[r] = -BIG; hi[r] = BIG;
    }
  }
  for (int v = 0; v < NVMAX; ++v)
    for (int t = 0; t < W; ++t) { bd.lo[v][t] = lo[v * W + t]; bd.hi[v][t] = hi[v * W + t]; }
}

// Softcap, mask and causal/window on one tile of transposed scores (log2 units out), after
// multiplying them by `premul` (the bf16 dot path leaves q unscaled). Writes back and updates
// the per-lane block max.
template <int NV>
inline void score_tile(const Problem& p, float* ST, int nk, int j0, bool full, const Bounds& bd,
                       const float* MT, bool mask_uniform, const float* mrow_uniform, vf* bm,
                       float premul = 1.0f) {
  const bool cap = p.softcap > 0;
  const float capmul = p.softcap * kLog2e;
  const bool add = p.mask_kind == MASK_ADD;
  const bool pre = premul != 1.0f;
  for (int j = 0; j < nk; ++j) {
    float* srow = ST + j * BQ;
    const vi jj = splati(j0 + j);
    vf mu = splat(0.0f);
    if (p.mask_kind != MASK_NONE && mask_uniform) mu = splat(mrow_uniform[j]);
    for (int v = 0; v < NV; ++v) {
      vf x = loadv(srow + v * W);
      if (pre) x *= premul;
      if (cap) x = tanhv(x) * capmul;
      if (p.mask_kind != MASK_NONE) {
        vf mv = mask_uniform ? mu : loadv(MT + j * BQ + v * W);
        x = add ? x + mv * kLog2e : sel(mv == kNegInf, splat(kNegInf), x);
      }
      if (!full) x = sel((jj >= bd.lo[v]) & (jj <= bd.hi[v]), x, splat(kNegInf));
      storev(srow + v * W, x);
      bm[v] = vmax(bm[v], x);
    }
  }
}

// Mask values of a tile: uniform across the rows (one value per key) or per (key, row).
inline bool load_mask_tile(const Problem& p, const int64_t* mrow, int n, int j0, int nk,
                           float* MT, float* muni) {
  bool uniform = true;
  for (int r = 1; r < n; ++r) uniform = uniform && mrow[r] == mrow[0];
  const int64_t s3 = p.ms[3];
  if (uniform) {
    for (int j = 0; j < nk; ++j) muni[j] = mask_value(p.mask_type, p.mask, mrow[0] + (j0 + j) * s3);
  } else {
    for (int r = 0; r < BQ; ++r)
      for (int j = 0; j < nk; ++j)
        MT[j * BQ + r] = r < n ? mask_value(p.mask_type, p.mask, mrow[r] + (j0 + j) * s3) : 0.0f;
  }
  return uniform;
}

#ifdef ATTN_BF16DOT
// q^T of a row block as bf16 pairs over the head dim: QTv[d/2][r][2], zero-padded.
inline void pack_qt_pairs(const Problem& p, const Rows& R, const Seq& s, uint16_t* QTv) {
  const uint16_t* q16 = static_cast<const uint16_t*>(p.q);
  const int D2 = p.D + (p.D & 1);
  for (int r = 0; r < BQ; ++r) {
    const int64_t base = R.b * p.qs[0] + R.h[r] * p.qs[1] + (s.qo + R.i[r]) * p.qs[2];
    for (int d = 0; d < D2; ++d)
      QTv[(d >> 1) * 2 * BQ + 2 * r + (d & 1)] = r < R.n && d < p.D ? q16[base + d * p.qs[3]] : 0;
  }
}

// nk rows of K as bf16 rows with pairs over the head dim: the caller's memory when rows are
// contiguous and D is even, else a copy in KSb (row stride D + 1 for odd D, last pair padded).
inline const uint16_t* k_tile_bf16(const Problem& p, int64_t at, int nk, uint16_t* KSb,
                                   int64_t* sam) {
  const uint16_t* k16 = static_cast<const uint16_t*>(p.k);
  if (p.ks[3] == 1 && p.D % 2 == 0) { *sam = p.ks[2]; return k16 + at; }
  const int D2 = p.D + (p.D & 1);
  for (int j = 0; j < nk; ++j)
    for (int d = 0; d < D2; ++d)
      KSb[j * D2 + d] = d < p.D ? k16[at + j * p.ks[2] + d * p.ks[3]] : 0;
  *sam = D2;
  return KSb;
}
#else  // stubs for the discarded `if constexpr (dot)` branches of the other ISAs
template <int MODE>
inline void gemm_bf16(int, int, float*, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
                      int) {}
inline void pack_qt_pairs(const Problem&, const Rows&, const Seq&, uint16_t*) {}
inline const uint16_t* k_tile_bf16(const Problem&, int64_t, int, uint16_t*, int64_t*) {
  return nullptr;
}
#endif

template <int DT, int NV>
void fwd_rows_t(const Problem& p, const Rows& R, int kbeg, int kend, float* ws, float* partial) {
  constexpr int BQn = NV * W;  // lanes in use for this block (<= BQ); layouts keep stride BQ
  (void)BQn;
  const int D = p.D, Dv = p.Dv, G = p.Hq / p.Hkv;
  const Seq s = seq_of(p, R.b);
  const int off = s.Lk - s.Lq;
  const int hk = R.h[0] / G;
  float* QT = ws;                      // D x BQ
  float* OT = QT + size_t(D) * BQ;     // Dv x BQ
  float* ST = OT + size_t(Dv) * BQ;    // BK x BQ
  float* MT = ST + size_t(BK) * BQ;    // BK x BQ
  float* KS = MT + size_t(BK) * BQ;    // BK x D
  float* VS = KS + size_t(BK) * D;     // BK x Dv
  float* MU = VS + size_t(BK) * Dv;    // BK
  float* ALPHA = MU + BK;              // BQ
  float* tmp = ALPHA + BQ;             // 2 * BQ

  const bool cap = p.softcap > 0;
  const float qmul = cap ? p.scale / p.softcap : p.scale * kLog2e;
  // bf16 with AVX512-BF16: S^T = K Q^T as bf16 dot products of the caller's bits, q unscaled
  constexpr bool dot = kBf16Dot && DT == BF16;
  const int D2 = D + (D & 1);
  uint16_t* QTv = reinterpret_cast<uint16_t*>(
      (reinterpret_cast<uintptr_t>(tmp + 2 * BQ) + 63) & ~uintptr_t(63));  // D2 x BQ pairs
  uint16_t* KSb = QTv + size_t(D2) * BQ + 32;                                // BK x D2
  if constexpr (dot) pack_qt_pairs(p, R, s, QTv);
  // pack q^T, scaled (zero-padded lanes)
  for (int r = 0; r < BQ && !dot; ++r) {
    if (r < R.n) {
      const int64_t base = R.b * p.qs[0] + R.h[r] * p.qs[1] + (s.qo + R.i[r]) * p.qs[2];
      for (int d = 0; d < D; ++d) QT[d * BQ + r] = to_f32<DT>(p.q, base + d * p.qs[3]) * qmul;
    } else {
      for (int d = 0; d < D; ++d) QT[d * BQ + r] = 0.0f;
    }
  }
  for (int64_t e = 0; e < int64_t(Dv) * BQ; ++e) OT[e] = 0.0f;

  Bounds bd;
  row_bounds(p, R, off, bd);
  int klo = imax(kbeg, imax(bd.lo_min, 0));
  int khi = imin(kend, bd.hi_max >= INT_MAX / 8 ? s.Lk : imin(bd.hi_max + 1, s.Lk));
  if (p.wl < 0) klo = imax(kbeg, 0);

  int64_t mrow[BQ];
  if (p.mask_kind != MASK_NONE)
    for (int r = 0; r < R.n; ++r)
      mrow[r] = R.b * p.ms[0] + R.h[r] * p.ms[1] + R.i[r] * p.ms[2];

  vf m[NV], l[NV];
  for (int v = 0; v < NV; ++v) { m[v] = splat(kNegInf); l[v] = splat(0.0f); }

  const int64_t kbase = R.b * p.ks[0] + hk * p.ks[1] + s.ko * p.ks[2];
  const int64_t vbase = R.b * p.vs[0] + hk * p.vs[1] + s.ko * p.vs[2];
  for (int j0 = klo; j0 < khi; j0 += BK) {
    const int nk = imin(BK, khi - j0);
    const float *Kb, *Vb;
    int64_t ksr, ksd, vsr, vsd;
    if constexpr (DT == F32) {
      Kb = static_cast<const float*>(p.k) + kbase + j0 * p.ks[2]; ksr = p.ks[2]; ksd = p.ks[3];
      Vb = static_cast<const float*>(p.v) + vbase + j0 * p.vs[2]; vsr = p.vs[2]; vsd = p.vs[3];
    } else {
      for (int j = 0; j < nk; ++j) {
        if (!dot) convert_row<DT>(KS + j * D, p.k, kbase + (j0 + j) * p.ks[2], p.ks[3], D, 1.0f);
        convert_row<DT>(VS + j * Dv, p.v, vbase + (j0 + j) * p.vs[2], p.vs[3], Dv, 1.0f);
      }
      Kb = KS; ksr = D; ksd = 1; Vb = VS; vsr = Dv; vsd = 1;
    }
    // 1. S^T = K Q^T; a plain fp32 tile (every key allowed, no softcap, no mask) also takes its
    //    row max here, in registers, instead of in a second pass over S^T
    const bool full = bd.lo_max <= j0 && j0 + nk - 1 <= bd.hi_min;
    const bool plain = !dot && full && !cap && p.mask_kind == MASK_NONE;
    float* BM = tmp;  // NV * W block maxima, fed by gemm<OVERWRITE_MAX>
    for (int v = 0; v < NV; ++v) storev(BM + v * W, splat(kNegInf));
    if constexpr (dot) {
      int64_t sam;
      const uint16_t* A = k_tile_bf16(p, kbase + j0 * p.ks[2], nk, KSb, &sam);
      gemm_bf16<OVERWRITE>(nk, NV, ST, BQ, A, sam, QTv, 2 * BQ, D2 / 2);
    } else if (plain) {
      gemm<OVERWRITE_MAX>(nk, NV, ST, BQ, Kb, ksr, ksd, QT, BQ, D, BM);
    } else {
      gemm<OVERWRITE>(nk, NV, ST, BQ, Kb, ksr, ksd, QT, BQ, D);
    }
    // 2. softcap, mask, causal / window bounds (log2 units) and the block max
    vf bm[NV];
    for (int v = 0; v < NV; ++v) bm[v] = loadv(BM + v * W);
    if (!plain) {
      bool uniform = true;
      if (p.mask_kind != MASK_NONE) uniform = load_mask_tile(p, mrow, R.n, j0, nk, MT, MU);
      score_tile<NV>(p, ST, nk, j0, full, bd, MT, uniform, MU, bm, dot ? qmul : 1.0f);
    }
    // 3. new running max; alpha rescales what was accumulated under the old one
    vf mu[NV], lsum[NV];
    bool moved = false;
    for (int v = 0; v < NV; ++v) {
      vf mn = vmax(m[v], bm[v]);
      mu[v] = sel(mn == kNegInf, splat(0.0f), mn);
      vi grew = mn != m[v];
      for (int t = 0; t < W; ++t) moved = moved || grew[t];
      storev(ALPHA + v * W, exp2v(m[v] - mu[v]));
      m[v] = mn;
      lsum[v] = splat(0.0f);
    }
    // 4. P^T = exp2(S^T - max), in place, and its row sums
    for (int j = 0; j < nk; ++j) {
      float* srow = ST + j * BQ;
      for (int v = 0; v < NV; ++v) {
        vf e = exp2v(loadv(srow + v * W) - mu[v]);
        storev(srow + v * W, e);
        lsum[v] += e;
      }
    }
    for (int v = 0; v < NV; ++v) l[v] = l[v] * loadv(ALPHA + v * W) + lsum[v];
    // 5. O^T = O^T * alpha + V^T P^T (alpha is all ones when no row's max moved: skip it)
    if (moved) gemm<RESCALE>(Dv, NV, OT, BQ, Vb, vsd, vsr, ST, BQ, nk, ALPHA);
    else gemm<ACCUMULATE>(Dv, NV, OT, BQ, Vb, vsd, vsr, ST, BQ, nk);
  }

  float* mm = tmp;
  float* ll = tmp + BQ;
  for (int v = 0; v < NV; ++v) { storev(mm + v * W, m[v]); storev(ll + v * W, l[v]); }
  if (partial) {
    for (int r = 0; r < BQ; ++r) { partial[r] = r < NV * W ? mm[r] : kNegInf; partial[BQ + r] = r < NV * W ? ll[r] : 0.0f; }
    std::memcpy(partial + 2 * BQ, OT, sizeof(float) * size_t(Dv) * BQ);
    return;
  }
  for (int r = 0; r < R.n; ++r) {
    const float inv = ll[r] == 0.0f ? 0.0f : 1.0f / ll[r];
    const int64_t ob = R.b * p.os[0] + R.h[r] * p.os[1] + (s.qo + R.i[r]) * p.os[2];
    for (int e = 0; e < Dv; ++e) store_o<DT>(p, ob + e * p.os[3], OT[e * BQ + r] * inv);
    if (p.lse) {
      const float lse = ll[r] == 0.0f ? kNegInf : (mm[r] + std::log2(ll[r])) * kLn2;
      p.lse[R.b * p.ls[0] + R.h[r] * p.ls[1] + (s.qo + R.i[r]) * p.ls[2]] = lse;
    }
  }
}

template <int DT, int NV = NVMAX>
void fwd_rows_nv(int nv, const Problem& p, const Rows& R, int k0, int k1, float* ws, float* part) {
  if constexpr (NV > 0) {
    if (nv == NV) return fwd_rows_t<DT, NV>(p, R, k0, k1, ws, part);
    fwd_rows_nv<DT, NV - 1>(nv, p, R, k0, k1, ws, part);
  }
}

void fwd_rows(const Problem& p, const Rows& R, int k0, int k1, float* ws, float* part) {
  const int nv = (R.n + W - 1) / W;
  switch (p.dtype) {
    case F32: return fwd_rows_nv<F32>(nv, p, R, k0, k1, ws, part);
    case F16: return fwd_rows_nv<F16>(nv, p, R, k0, k1, ws, part);
    default: return fwd_rows_nv<BF16>(nv, p, R, k0, k1, ws, part);
  }
}

// Merge split-K partials (m, l in log2 units, unnormalised O^T) into o / lse.
template <int DT>
void fwd_merge_t(const Problem& p, const Rows& R, int nsplit, const float* parts) {
  const size_t stride = fwd_partial_floats(p);
  const Seq s = seq_of(p, R.b);
  for (int r = 0; r < R.n; ++r) {
    float M = kNegInf;
    for (int t = 0; t < nsplit; ++t) M = imax(M, parts[t * stride + r]);
    const float Mu = M == kNegInf ? 0.0f : M;
    float L = 0.0f;
    float wgt[256];
    for (int t = 0; t < nsplit; ++t) {
      const float* pt = parts + t * stride;
      wgt[t] = pt[BQ + r] == 0.0f ? 0.0f : std::exp2(pt[r] - Mu);
      L += pt[BQ + r] * wgt[t];
    }
    const float inv = L == 0.0f ? 0.0f : 1.0f / L;
    const int64_t ob = R.b * p.os[0] + R.h[r] * p.os[1] + (s.qo + R.i[r]) * p.os[2];
    for (int e = 0; e < p.Dv; ++e) {
      float acc = 0.0f;
      for (int t = 0; t < nsplit; ++t)
        if (wgt[t] != 0.0f) acc += parts[t * stride + 2 * BQ + e * BQ + r] * wgt[t];
      store_o<DT>(p, ob + e * p.os[3], acc * inv);
    }
    if (p.lse)
      p.lse[R.b * p.ls[0] + R.h[r] * p.ls[1] + (s.qo + R.i[r]) * p.ls[2]] =
          L == 0.0f ? kNegInf : (M + std::log2(L)) * kLn2;
  }
}

void fwd_merge(const Problem& p, const Rows& R, int nsplit, const float* parts) {
  switch (p.dtype) {
    case F32: return fwd_merge_t<F32>(p, R, nsplit, parts);
    case F16: return fwd_merge_t<F16>(p, R, nsplit, parts);
    default: return fwd_merge_t<BF16>(p, R, nsplit, parts);
  }
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
