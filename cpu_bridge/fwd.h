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
// bf16 dot products for S = Q K^T: ATTN_BF16DOT (AVX512-BF16, the backward too, bwd_bf16.h) or
// ATTN_BF16DOT_FWD (NEON BF16: the forward only)
#if defined(ATTN_BF16DOT) || defined(ATTN_BF16DOT_FWD)
#define ATTN_BF16DOT_S 1
#include "gemm_bf16.h"
#endif
// AMX tiles for both products of bf16 problems (Sapphire Rapids and later): ATTN_AMX
#ifdef ATTN_AMX
#include "gemm_amx.h"
#endif

#ifndef ATTN_BK
#define ATTN_BK 64
#endif

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

constexpr int BK = ATTN_BK;
#ifdef ATTN_BF16DOT_S
constexpr bool kBf16Dot = true;   // bf16 problems use the bf16 dot products for S
#else
constexpr bool kBf16Dot = false;
#endif
#ifdef ATTN_AMX
constexpr bool kAmx = true;       // bf16 problems run S = Q K^T and O += P V on AMX tiles
#else
constexpr bool kAmx = false;
#endif
constexpr int BQ = NVMAX * W;
static_assert(BQ <= kMaxRows, "row block too large");

inline int padw(int d) { return int(round_up(d, W)); }  // whole vectors

// What q is multiplied by before S = q . k: the scale, and log2(e) for the base-2 softmax, or,
// with softcap c, 1 / c (the tanh takes s / c and the result is multiplied by c * log2(e)).
inline float q_multiplier(const Problem& p) {
  return p.softcap > 0 ? p.scale / p.softcap : p.scale * kLog2e;
}

size_t fwd_partial_floats(const Problem& p) { return size_t(2 + p.Dv) * BQ; }

// What a finished row leaves besides o: its lse and, when asked, its softmax statistics, from its
// max m2 and sum l (log2 units; l == 0: no key, lse -inf, and statistics that make P zero).
inline void store_row_stats(const Problem& p, int b, int h, int64_t row, float m2, float l) {
  if (p.lse)
    p.lse[b * p.ls[0] + h * p.ls[1] + row * p.ls[2]] =
        l == 0.0f ? kNegInf : (m2 + std::log2(l)) * kLn2;
  if (p.stats) {
    float* st = p.stats + b * p.ss[0] + h * p.ss[1] + row * p.ss[2];
    st[0] = l == 0.0f ? INFINITY : m2;
    st[1] = l == 0.0f ? 0.0f : std::log2(l);
  }
}

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
        x = add ? x + mv : sel(mv == kNegInf, splat(kNegInf), x);  // mv: log2 units
      }
      if (!full) x = sel((jj >= bd.lo[v]) & (jj <= bd.hi[v]), x, splat(kNegInf));
      storev(srow + v * W, x);
      bm[v] = vmax(bm[v], x);
    }
  }
}

// Mask values of a tile (log2 units): uniform across the rows (one value per key) or per (key, row).
inline bool load_mask_tile(const Problem& p, const int64_t* mrow, int n, int j0, int nk,
                           float* MT, float* muni) {
  bool uniform = true;
  for (int r = 1; r < n; ++r) uniform = uniform && mrow[r] == mrow[0];
  const int64_t s3 = p.ms[3];
  if (uniform) {
    for (int j = 0; j < nk; ++j) muni[j] = mask_log2(p.mask_type, p.mask, mrow[0] + (j0 + j) * s3);
  } else {
    for (int r = 0; r < BQ; ++r)
      for (int j = 0; j < nk; ++j)
        MT[j * BQ + r] = r < n ? mask_log2(p.mask_type, p.mask, mrow[r] + (j0 + j) * s3) : 0.0f;
  }
  return uniform;
}

#ifdef ATTN_BF16DOT_S
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
#ifdef ATTN_AMX
// q^T of a row block for the AMX product, padded to the tiles' head dim (gemm_amx.h)
inline void amx_pack_qt(const Problem& p, const Rows& R, const Seq& s, uint16_t* QTv) {
  const int Dp = round_up(p.D, kAmxK), D2 = p.D + (p.D & 1);
  if (p.qs[3] == 1 && p.D % 2 == 0) return amx_pack_qt_rows<BQ>(p, R, s, QTv, Dp);
  pack_qt_pairs(p, R, s, QTv);
  std::memset(QTv + size_t(D2 / 2) * 2 * BQ, 0, sizeof(uint16_t) * size_t(Dp - D2) * BQ);
}
#endif
#ifndef ATTN_AMX  // stubs for the discarded `if constexpr (amx)` branches of the other ISAs
constexpr int kAmxK = 32;
inline void amx_pack_rows(uint16_t*, int, const uint16_t*, int64_t, int64_t, int, int, int) {}
inline void amx_pack_vt(uint16_t*, int64_t, const uint16_t*, int64_t, int64_t, int, int, int) {}
inline void amx_pack_qt(const Problem&, const Rows&, const Seq&, uint16_t*) {}
template <bool ACC>
inline void amx_gemm(int, int, int, float*, int64_t, const uint16_t*, int64_t, const uint16_t*,
                     int64_t) {}
struct AmxTiles {};
#endif

// One row block's state while a group walks the key blocks: q^T (or its bf16 pairs), the O^T
// accumulator, the running max / sum per lane (log2 units), its key bounds and mask rows.
struct RowState {
  const Rows* R;
  Seq s;
  Bounds bd;
  int klo, khi;  // keys this block needs, within the work item's [k0, k1)
  int nv;        // vectors of rows in use
  int64_t mrow[BQ];
  float *QT, *OT, *m, *l;
  uint16_t* QTv;
};

// Per-thread scratch shared by a group's row blocks (one key block at a time).
struct Scratch {
  float *ST, *MT, *KS, *VS, *MU, *ALPHA, *BM;
  uint16_t* KSb;
  uint16_t *VT, *PB;  // AMX: V^T of the key block, and a row block's P^T as bf16 pairs
};

// One key block of K and V as the products read them: float32 rows (the caller's memory, or
// converted from fp16 / bf16), and for the bf16 dot path K's own bf16 rows.
struct KVTile {
  const float *K, *V;
  int64_t ksr, ksd, vsr, vsd;
  const uint16_t* K16;
  int64_t k16_ld;
  const uint16_t* VT;  // AMX: V^T, BK bf16 per row
};

// AMX pads the operands to whole tiles: the head dim of q and k to 32 (a tile row of k), the
// rows of O^T (Dv) to 16 (a tile's rows).
inline int amx_d(const Problem& p) { return round_up(p.D, kAmxK); }
inline int amx_dv(const Problem& p) { return round_up(p.Dv, 16); }
inline int ot_rows(const Problem& p) { return kAmx ? amx_dv(p) : p.Dv; }

inline size_t row_state_floats(const Problem& p) {
  const size_t D2 = kAmx ? amx_d(p) : p.D + (p.D & 1);
  return size_t(p.D + ot_rows(p) + 2) * BQ + (kBf16Dot ? D2 * BQ / 2 + 16 : 0) + 16;
}

size_t fwd_ws_floats(const Problem& p) {
  const size_t scratch = size_t(2 * BK + 2) * BQ + size_t(BK) * (p.D + p.Dv) + BK + 64;
  // bf16 dot path: a K tile in bf16 (halves of floats); AMX: padded, plus V^T and P^T pairs
  const size_t k16 = kBf16Dot ? size_t((kAmx ? amx_d(p) : p.D) + 2) * BK / 2 + 32 : 0;
  const size_t amx = kAmx ? size_t(amx_dv(p)) * BK / 2 + size_t(BK) * BQ / 2 + 64 : 0;
  return scratch + k16 + amx + kRowGroup * row_state_floats(p);
}

inline float* align64(float* x) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(x) + 63) & ~uintptr_t(63));
}

template <int DT>
void row_begin(const Problem& p, const Rows& R, int kbeg, int kend, float* mem, RowState& st) {
  constexpr bool dot = kBf16Dot && DT == BF16;
  const int D = p.D, Dv = p.Dv;
  st.R = &R;
  st.s = seq_of(p, R.b);
  st.nv = (R.n + W - 1) / W;
  st.QT = mem;                          // D x BQ, scaled
  st.OT = st.QT + size_t(D) * BQ;       // Dv (AMX: padded to 16) x BQ
  st.m = st.OT + size_t(ot_rows(p)) * BQ;  // BQ
  st.l = st.m + BQ;                     // BQ
  st.QTv = reinterpret_cast<uint16_t*>(align64(st.l + BQ));  // (D + 1) / 2 x BQ pairs
  const float qmul = q_multiplier(p);
  if constexpr (dot) {
    // q unscaled: the scores are scaled after the product
    if constexpr (kAmx) {
      amx_pack_qt(p, R, st.s, st.QTv);
    } else {
      pack_qt_pairs(p, R, st.s, st.QTv);
    }
  } else {
    for (int r = 0; r < BQ; ++r) {
      if (r < R.n) {
        const int64_t base = R.b * p.qs[0] + R.h[r] * p.qs[1] + (st.s.qo + R.i[r]) * p.qs[2];
        for (int d = 0; d < D; ++d) st.QT[d * BQ + r] = to_f32<DT>(p.q, base + d * p.qs[3]) * qmul;
      } else {
        for (int d = 0; d < D; ++d) st.QT[d * BQ + r] = 0.0f;
      }
    }
  }
  for (int64_t e = 0; e < int64_t(ot_rows(p)) * BQ; ++e) st.OT[e] = 0.0f;
  for (int r = 0; r < BQ; ++r) { st.m[r] = kNegInf; st.l[r] = 0.0f; }
  row_bounds(p, R, st.s.Lk - st.s.Lq, st.bd);
  st.klo = p.wl < 0 ? imax(kbeg, 0) : imax(kbeg, imax(st.bd.lo_min, 0));
  st.khi = imin(kend, st.bd.hi_max >= INT_MAX / 8 ? st.s.Lk : imin(st.bd.hi_max + 1, st.s.Lk));
  if (p.mask_kind != MASK_NONE)
    for (int r = 0; r < R.n; ++r) st.mrow[r] = R.b * p.ms[0] + R.h[r] * p.ms[1] + R.i[r] * p.ms[2];
}

// Keys j0 .. j0 + nk - 1 of (sequence, kv head) as a KVTile (fp16 / bf16 converted into scratch).
template <int DT>
KVTile kv_tile(const Problem& p, int64_t kbase, int64_t vbase, int j0, int nk, const Scratch& sc) {
  constexpr bool dot = kBf16Dot && DT == BF16;
  const int D = p.D, Dv = p.Dv;
  KVTile t{};
  if constexpr (DT == F32) {
    t.K = static_cast<const float*>(p.k) + kbase + j0 * p.ks[2]; t.ksr = p.ks[2]; t.ksd = p.ks[3];
    t.V = static_cast<const float*>(p.v) + vbase + j0 * p.vs[2]; t.vsr = p.vs[2]; t.vsd = p.vs[3];
  } else if constexpr (dot && kAmx) {  // bf16 tiles as AMX reads them
    const uint16_t* k16 = static_cast<const uint16_t*>(p.k) + kbase + j0 * p.ks[2];
    const uint16_t* v16 = static_cast<const uint16_t*>(p.v) + vbase + j0 * p.vs[2];
    if (p.ks[3] == 1 && D % kAmxK == 0 && nk % 16 == 0) {  // whole tiles: the caller's rows
      t.K16 = k16; t.k16_ld = p.ks[2];
    } else {
      amx_pack_rows(sc.KSb, amx_d(p), k16, p.ks[2], p.ks[3], nk, D, round_up(nk, 16));
      t.K16 = sc.KSb; t.k16_ld = amx_d(p);
    }
    amx_pack_vt(sc.VT, BK, v16, p.vs[2], p.vs[3], nk, Dv, amx_dv(p));
    t.VT = sc.VT;
    return t;
  } else {
    for (int j = 0; j < nk; ++j) {
      if (!dot) convert_row<DT>(sc.KS + j * D, p.k, kbase + (j0 + j) * p.ks[2], p.ks[3], D, 1.0f);
      convert_row<DT>(sc.VS + j * Dv, p.v, vbase + (j0 + j) * p.vs[2], p.vs[3], Dv, 1.0f);
    }
    t.K = sc.KS; t.ksr = D; t.ksd = 1; t.V = sc.VS; t.vsr = Dv; t.vsd = 1;
  }
  if constexpr (dot) t.K16 = k_tile_bf16(p, kbase + j0 * p.ks[2], nk, sc.KSb, &t.k16_ld);
  return t;
}

// The new running max per lane from a key block's max bm: writes it to st.m, alpha (what the
// old accumulators are multiplied by) to sc.ALPHA, and the max to subtract (0 for rows with no
// key yet) to mu; true when any row's max moved.
template <int NV>
inline bool new_running_max(RowState& st, const vf* bm, const Scratch& sc, vf* mu) {
  bool moved = false;
  for (int v = 0; v < NV; ++v) {
    const vf mo = loadv(st.m + v * W);
    const vf mn = vmax(mo, bm[v]);
    mu[v] = sel(mn == kNegInf, splat(0.0f), mn);
    vi grew = mn != mo;
    for (int i = 0; i < W; ++i) moved = moved || grew[i];
    storev(sc.ALPHA + v * W, exp2v(mo - mu[v]));
    storev(st.m + v * W, mn);
  }
  return moved;
}

#ifdef ATTN_AMX
#include "fwd_amx.h"
#else
template <int NV>
inline void row_key_block_amx(const Problem&, RowState&, int, int, const KVTile&, const Scratch&) {}
inline void row_end_amx(const Problem&, const RowState&) {}
#endif

// The online-softmax step of one row block against one key block (each step labelled).
template <int DT, int NV>
void row_key_block(const Problem& p, RowState& st, int j0, int nk, const KVTile& t,
                   const Scratch& sc) {
  constexpr bool dot = kBf16Dot && DT == BF16;
  if constexpr (kAmx && dot) return row_key_block_amx<NV>(p, st, j0, nk, t, sc);
  const bool cap = p.softcap > 0;
  const float qmul = q_multiplier(p);
  // 1. S^T = K Q^T; a plain fp32 tile (every key allowed, no softcap, no mask) also takes its
  //    row max here, in registers, instead of in a second pass over S^T
  const bool full = st.bd.lo_max <= j0 && j0 + nk - 1 <= st.bd.hi_min;
  const bool plain = !dot && full && !cap && p.mask_kind == MASK_NONE;
  for (int v = 0; v < NV; ++v) storev(sc.BM + v * W, splat(kNegInf));
  if constexpr (dot) {
    const int D2 = p.D + (p.D & 1);
    gemm_bf16<OVERWRITE>(nk, NV, sc.ST, BQ, t.K16, t.k16_ld, st.QTv, 2 * BQ, D2 / 2);
  } else if (plain) {
    gemm<OVERWRITE_MAX>(nk, NV, sc.ST, BQ, t.K, t.ksr, t.ksd, st.QT, BQ, p.D, sc.BM);
  } else {
    gemm<OVERWRITE>(nk, NV, sc.ST, BQ, t.K, t.ksr, t.ksd, st.QT, BQ, p.D);
  }
  // 2. softcap, mask, causal / window bounds (log2 units) and the block max
  vf bm[NV];
  for (int v = 0; v < NV; ++v) bm[v] = loadv(sc.BM + v * W);
  if (!plain) {
    bool uniform = true;
    if (p.mask_kind != MASK_NONE) uniform = load_mask_tile(p, st.mrow, st.R->n, j0, nk, sc.MT, sc.MU);
    score_tile<NV>(p, sc.ST, nk, j0, full, st.bd, sc.MT, uniform, sc.MU, bm, dot ? qmul : 1.0f);
  }
  // 3. new running max; alpha rescales what was accumulated under the old one
  vf mu[NV], lsum[NV];
  const bool moved = new_running_max<NV>(st, bm, sc, mu);
  for (int v = 0; v < NV; ++v) lsum[v] = splat(0.0f);
  // 4. P^T = exp2(S^T - max), in place, and its row sums
  for (int j = 0; j < nk; ++j) {
    float* srow = sc.ST + j * BQ;
    for (int v = 0; v < NV; ++v) {
      vf e = exp2v(loadv(srow + v * W) - mu[v]);
      storev(srow + v * W, e);
      lsum[v] += e;
    }
  }
  for (int v = 0; v < NV; ++v)
    storev(st.l + v * W, loadv(st.l + v * W) * loadv(sc.ALPHA + v * W) + lsum[v]);
  // 5. O^T = O^T * alpha + V^T P^T (alpha is all ones when no row's max moved: skip it)
  if (moved) gemm<RESCALE>(p.Dv, NV, st.OT, BQ, t.V, t.vsd, t.vsr, sc.ST, BQ, nk, sc.ALPHA);
  else gemm<ACCUMULATE>(p.Dv, NV, st.OT, BQ, t.V, t.vsd, t.vsr, sc.ST, BQ, nk);
}

// o / lse of a finished row block, or its (m, l, unnormalised O^T) for a split-K merge.
template <int DT>
void row_end(const Problem& p, const RowState& st, float* partial) {
  const Rows& R = *st.R;
  if (partial) {
    for (int r = 0; r < BQ; ++r) { partial[r] = st.m[r]; partial[BQ + r] = st.l[r]; }
    std::memcpy(partial + 2 * BQ, st.OT, sizeof(float) * size_t(p.Dv) * BQ);
    return;
  }
  if constexpr (kAmx && DT == BF16) {
    if (!p.out_f32 && p.os[3] == 1) return row_end_amx(p, st);
  }
  for (int r = 0; r < R.n; ++r) {
    const float inv = st.l[r] == 0.0f ? 0.0f : 1.0f / st.l[r];
    const int64_t ob = R.b * p.os[0] + R.h[r] * p.os[1] + (st.s.qo + R.i[r]) * p.os[2];
    for (int e = 0; e < p.Dv; ++e) store_o<DT>(p, ob + e * p.os[3], st.OT[e * BQ + r] * inv);
    store_row_stats(p, R.b, R.h[r], st.s.qo + R.i[r], st.m[r], st.l[r]);
  }
}

template <int DT, int NV = NVMAX>
void row_key_block_nv(const Problem& p, RowState& st, int j0, int nk, const KVTile& t,
                      const Scratch& sc) {
  if constexpr (NV > 0) {
    if (st.nv == NV) return row_key_block<DT, NV>(p, st, j0, nk, t, sc);
    row_key_block_nv<DT, NV - 1>(p, st, j0, nk, t, sc);
  }
}

// A group of row blocks of one (sequence, kv head) against keys [kbeg, kend): each key block is
// read (and converted) once for the whole group, which divides the K / V traffic by the group
// size when a head's K and V outgrow the caches.
template <int DT>
void fwd_group_t(const Problem& p, const Rows* R, int nr, int kbeg, int kend, float* ws,
                 float* const* partials) {
  const int D = p.D, Dv = p.Dv;
  Scratch sc;
  sc.ST = align64(ws);                     // BK x BQ
  sc.MT = sc.ST + size_t(BK) * BQ;         // BK x BQ
  sc.ALPHA = sc.MT + size_t(BK) * BQ;      // BQ
  sc.BM = sc.ALPHA + BQ;                   // BQ
  sc.KS = sc.BM + BQ;                      // BK x D
  sc.VS = sc.KS + size_t(BK) * D;          // BK x Dv
  sc.MU = sc.VS + size_t(BK) * Dv;         // BK
  sc.KSb = reinterpret_cast<uint16_t*>(align64(sc.MU + BK));  // BK x (D + 1) (AMX: padded D)
  float* after = align64(reinterpret_cast<float*>(sc.KSb) +
                         (kBf16Dot ? ((kAmx ? amx_d(p) : D) + 2) * BK / 2 : 0));
  if constexpr (kAmx) {
    sc.VT = reinterpret_cast<uint16_t*>(after);                 // padded Dv x BK
    sc.PB = sc.VT + size_t(amx_dv(p)) * BK;                     // BK / 2 x BQ x 2
    after = align64(reinterpret_cast<float*>(sc.PB + size_t(BK) * BQ));
  }
  float* states_mem = after;
  ATTN_CHECK(nr >= 1 && nr <= kRowGroup, "row blocks per item");
  ATTN_CHECK(states_mem + nr * row_state_floats(p) <= ws + fwd_ws_floats(p), "forward workspace");
  RowState st[kRowGroup];
  int lo = INT_MAX, hi = 0;
  for (int g = 0; g < nr; ++g) {
    row_begin<DT>(p, R[g], kbeg, kend, states_mem + g * row_state_floats(p), st[g]);
    if (st[g].klo < st[g].khi) { lo = imin(lo, st[g].klo); hi = imax(hi, st[g].khi); }
  }
  const int G = p.Hq / p.Hkv, hk = R[0].h[0] / G;
  const Seq& s = st[0].s;
  const int64_t kbase = R[0].b * p.ks[0] + hk * p.ks[1] + s.ko * p.ks[2];
  const int64_t vbase = R[0].b * p.vs[0] + hk * p.vs[1] + s.ko * p.vs[2];
  for (int j0 = lo; j0 < hi; j0 += BK) {
    const int nk = imin(BK, hi - j0);
    const KVTile t = kv_tile<DT>(p, kbase, vbase, j0, nk, sc);
    // blocks whose keys this tile does not touch skip it whole; a block whose keys end inside
    // it (causal / window: the group's tiles cover the union of its blocks' keys) stops there
    for (int g = 0; g < nr; ++g)
      if (j0 < st[g].khi && j0 + nk > st[g].klo)
        row_key_block_nv<DT>(p, st[g], j0, imin(nk, st[g].khi - j0), t, sc);
  }
  for (int g = 0; g < nr; ++g) row_end<DT>(p, st[g], partials ? partials[g] : nullptr);
}

void fwd_rows(const Problem& p, const Rows* R, int nr, int k0, int k1, float* ws,
              float* const* partials) {
  switch (p.dtype) {
    case F32: return fwd_group_t<F32>(p, R, nr, k0, k1, ws, partials);
    case F16: return fwd_group_t<F16>(p, R, nr, k0, k1, ws, partials);
    default: {
      [[maybe_unused]] AmxTiles tiles;  // AMX: this thread's tile configuration for the call
      return fwd_group_t<BF16>(p, R, nr, k0, k1, ws, partials);
    }
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
    store_row_stats(p, R.b, R.h[r], s.qo + R.i[r], M, L);
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
