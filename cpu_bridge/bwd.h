// Backward kernel for one ISA (FlashAttention-2 style): for a range of keys of one (sequence,
// kv head), loop over the query rows of every head in its group, recompute P from the saved lse,
// and accumulate dK, dV in a tile and dQ in a float32 accumulator owned by the caller.
//
// Five products, each in its natural layout for `gemm` (r = query row in the lanes):
//   S^T  = K Q^T          dP^T = V dO^T          (keys down, rows across)
//   dV  += P^T dO         dK  += dS^T Q          (keys down, head dim across)
//   dQ  += dS K                                   (rows down, head dim across)
#pragma once
#include <type_traits>

#include "fwd.h"

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

// f(std::integral_constant<int, nv>) for a run-time nv in 1..NVMAX
template <class F, int NV = NVMAX>
inline void with_nv(int nv, F&& f) {
  if constexpr (NV > 0) {
    if (nv == NV) return f(std::integral_constant<int, NV>{});
    with_nv<F, NV - 1>(nv, static_cast<F&&>(f));
  }
}

// keys per backward tile: larger than the forward's so that packing a query block (q, dO and
// their transposes) is amortised over more keys
// (256 on every ISA: the AMX forward's longer key blocks do not change it)
constexpr int BKB = 256;

#ifdef ATTN_BF16DOT  // bf16 problems take the dot-product path of bwd_bf16.h
constexpr bool kBf16DotBackward = true;
size_t bwd_bf16_ws_floats(const Problem& p);
void bwd_keys_bf16(const Problem& p, const KeyRange& kr, float* ws);
#else
constexpr bool kBf16DotBackward = false;
#endif

size_t bwd_ws_floats(const Problem& p) {
  const size_t Dp = padw(p.D), Dvp = padw(p.Dv);
  const size_t f32 = size_t(p.D + p.Dv) * BQ + size_t(BQ) * (Dp + Dvp) + size_t(4) * BKB * BQ +
                     BKB + size_t(2) * BKB * (Dp + Dvp) + 4 * BQ + 64;
#ifdef ATTN_BF16DOT
  return imax(f32, bwd_bf16_ws_floats(p));
#else
  return f32;
#endif
}

// The dq accumulator of one (sequence, kv head) with Lq query rows: G groups of round_up(Lq, BQ)
// rows x Dp, rows either in order (float32 path) or, on the bf16 dot-product path, transposed per
// block of BQ rows ([Dp][BQ] per block). The driver allocates dq_acc_layout(p, max Lq).floats;
// the kernels space the groups by dq_acc_layout(p, s.Lq).group_stride (never larger).
DqAccLayout dq_acc_layout(const Problem& p, int Lq) {
  DqAccLayout l;
  l.group_stride = size_t(round_up(imax(Lq, 0), BQ)) * padw(p.D);
  l.floats = l.group_stride * size_t(p.Hq / p.Hkv);
  return l;
}
inline size_t dq_group_stride(const Problem& p, const Seq& s) {
  return dq_acc_layout(p, s.Lq).group_stride;
}

// delta = rowsum(dO * O) - dlse of query row i (absolute), from its float32 dO row, and what P is
// recomputed from, P = exp2((S - m2) - logl): the row's softmax statistics (p.stats), or its lse
// in log2 units with logl = 0 (m2 = +inf for a row without keys, so that its P is 0).
template <int DT>
inline void row_delta_lse(const Problem& p, int b, int h, int64_t i, const float* dorow,
                          float* delta, float* lse2, float* logl) {
  const int64_t ob = b * p.os[0] + h * p.os[1] + i * p.os[2];
  float acc = 0.0f;
  for (int e = 0; e < p.Dv; ++e) acc += dorow[e] * load_o<DT>(p, ob + e * p.os[3]);
  if (p.dlse) acc -= p.dlse[b * p.dls[0] + h * p.dls[1] + i * p.dls[2]];
  *delta = acc;
  if (p.stats) {
    const float* st = p.stats + b * p.ss[0] + h * p.ss[1] + i * p.ss[2];
    *lse2 = st[0];
    *logl = st[1];
    return;
  }
  const float lse = p.lse[b * p.ls[0] + h * p.ls[1] + i * p.ls[2]];
  *lse2 = lse == kNegInf ? INFINITY : lse * kLog2e;
  *logl = 0.0f;
}

// Causal / window bounds and the mask tile of one (query block, key block).
struct TileMasking {
  Bounds bd;
  bool full = true, uniform = true;
};
inline TileMasking tile_masking(const Problem& p, const Seq& s, int b, int h, int i0, int n, int j0,
                                int nk, float* MT, float* MU) {
  TileMasking t;
  Rows R;
  R.b = b; R.n = n;
  for (int r = 0; r < n; ++r) { R.h[r] = h; R.i[r] = i0 + r; }
  row_bounds(p, R, s.Lk - s.Lq, t.bd);
  t.full = t.bd.lo_max <= j0 && j0 + nk - 1 <= t.bd.hi_min;
  if (p.mask_kind != MASK_NONE) {
    int64_t mrow[BQ];
    for (int r = 0; r < n; ++r) mrow[r] = b * p.ms[0] + h * p.ms[1] + (i0 + r) * p.ms[2];
    t.uniform = load_mask_tile(p, mrow, n, j0, nk, MT, MU);
  }
  return t;
}

// Softcap (keeping tanh for the gradient), then mask and window, on nk rows of scores S^T.
template <int NV>
inline void score_tile_bwd(const Problem& p, float* ST, float* TT, int nk, int j0,
                           const TileMasking& tm, const float* MT, const float* MU) {
  if (p.softcap > 0) {
    for (int j = 0; j < nk; ++j)
      for (int v = 0; v < NV; ++v) {
        vf t = tanhv(loadv(ST + j * BQ + v * W));
        storev(TT + j * BQ + v * W, t);
        storev(ST + j * BQ + v * W, t * (p.softcap * kLog2e));
      }
  }
  Problem q = p;
  q.softcap = 0.0f;
  vf bm[NV];
  for (int v = 0; v < NV; ++v) bm[v] = splat(kNegInf);
  score_tile<NV>(q, ST, nk, j0, tm.full, tm.bd, MT, tm.uniform, MU, bm);
}

// Query rows [ilo, ihi) that can see a key of [j0, j0 + nk).
inline void rows_seeing(const Problem& p, const Seq& s, int j0, int nk, int* ilo, int* ihi) {
  const Span rows = queries_seeing(j0, j0 + nk - 1, s.Lq, s.Lk, p.wl, p.wr);
  *ilo = rows.lo; *ihi = rows.hi + 1;
}

// dK (scaled) and dV of a key block from their float32 tiles (row strides Dp, Dvp).
template <int DT>
inline void store_dk_dv(const Problem& p, const Seq& s, const KeyRange& kr, int j0, int nk,
                        const float* dK, const float* dV) {
  const int Dp = padw(p.D), Dvp = padw(p.Dv);
  const int64_t dkb = kr.b * p.dks[0] + kr.hk * p.dks[1] + s.ko * p.dks[2];
  const int64_t dvb = kr.b * p.dvs[0] + kr.hk * p.dvs[1] + s.ko * p.dvs[2];
  for (int j = 0; j < nk; ++j) {
    for (int d = 0; d < p.D; ++d)
      from_f32<DT>(p.dk, dkb + (j0 + j) * p.dks[2] + d * p.dks[3], dK[j * Dp + d] * p.scale);
    for (int e = 0; e < p.Dv; ++e)
      from_f32<DT>(p.dv, dvb + (j0 + j) * p.dvs[2] + e * p.dvs[3], dV[j * Dvp + e]);
  }
}

template <int DT, int NV>
void bwd_block(const Problem& p, const Seq& s, int b, int h, int i0, int n, int j0, int nk,
               float* ws, float* Kp, float* Vp, float* dK, float* dV, float* dQ) {
  const int D = p.D, Dv = p.Dv, Dp = padw(D), Dvp = padw(Dv);
  float* QT = ws;                          // D x BQ (scaled)
  float* dOT = QT + size_t(D) * BQ;        // Dv x BQ
  float* Qp = dOT + size_t(Dv) * BQ;       // BQ x Dp
  float* dOp = Qp + size_t(BQ) * Dp;       // BQ x Dvp
  float* ST = dOp + size_t(BQ) * Dvp;      // BKB x BQ: scores, then P
  float* DPT = ST + size_t(BKB) * BQ;       // BKB x BQ: dP, then dS
  float* TT = DPT + size_t(BKB) * BQ;       // BKB x BQ: tanh (softcap)
  float* MT = TT + size_t(BKB) * BQ;        // BKB x BQ: mask tile
  float* MU = MT + size_t(BKB) * BQ;        // BKB
  float* LSE2 = MU + BKB;                   // BQ
  float* DELTA = LSE2 + BQ;                // BQ
  float* LOGL = DELTA + BQ;                // BQ

  const bool cap = p.softcap > 0;
  const float qmul = q_multiplier(p);
  for (int r = 0; r < BQ; ++r) {
    if (r < n) {
      const int i = s.qo + i0 + r;
      const int64_t qb = b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
      const int64_t gb = b * p.dos[0] + h * p.dos[1] + i * p.dos[2];
      convert_row<DT>(Qp + r * Dp, p.q, qb, p.qs[3], D, 1.0f);
      convert_row<DT>(dOp + r * Dvp, p.dout, gb, p.dos[3], Dv, 1.0f);
      for (int d = D; d < Dp; ++d) Qp[r * Dp + d] = 0.0f;
      for (int e = Dv; e < Dvp; ++e) dOp[r * Dvp + e] = 0.0f;
      for (int d = 0; d < D; ++d) QT[d * BQ + r] = Qp[r * Dp + d] * qmul;
      for (int e = 0; e < Dv; ++e) dOT[e * BQ + r] = dOp[r * Dvp + e];
      row_delta_lse<DT>(p, b, h, i, dOp + r * Dvp, DELTA + r, LSE2 + r, LOGL + r);
    } else {
      for (int d = 0; d < Dp; ++d) Qp[r * Dp + d] = 0.0f;
      for (int e = 0; e < Dvp; ++e) dOp[r * Dvp + e] = 0.0f;
      for (int d = 0; d < D; ++d) QT[d * BQ + r] = 0.0f;
      for (int e = 0; e < Dv; ++e) dOT[e * BQ + r] = 0.0f;
      DELTA[r] = 0.0f;
      LSE2[r] = INFINITY;
      LOGL[r] = 0.0f;
    }
  }
  const TileMasking tm = tile_masking(p, s, b, h, i0, n, j0, nk, MT, MU);
  gemm<OVERWRITE>(nk, NV, ST, BQ, Kp, Dp, 1, QT, BQ, D);
  score_tile_bwd<NV>(p, ST, TT, nk, j0, tm, MT, MU);
  vf lse2[NV], logl[NV], delta[NV];
  for (int v = 0; v < NV; ++v) {
    lse2[v] = loadv(LSE2 + v * W); logl[v] = loadv(LOGL + v * W); delta[v] = loadv(DELTA + v * W);
  }
  gemm<OVERWRITE>(nk, NV, DPT, BQ, Vp, Dvp, 1, dOT, BQ, Dv);
  for (int j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) {
      const int o = j * BQ + v * W;
      vf pr = exp2v((loadv(ST + o) - lse2[v]) - logl[v]);  // S - m2 first: exact near m2
      storev(ST + o, pr);
      vf ds = pr * (loadv(DPT + o) - delta[v]);
      if (cap) { vf t = loadv(TT + o); ds = ds * (1.0f - t * t); }
      storev(DPT + o, ds);
    }
  gemm<ACCUMULATE>(nk, Dvp / W, dV, Dvp, ST, BQ, 1, dOp, Dvp, n);
  gemm<ACCUMULATE>(nk, Dp / W, dK, Dp, DPT, BQ, 1, Qp, Dp, n);
  gemm<ACCUMULATE>(n, Dp / W, dQ, Dp, DPT, 1, BQ, Kp, Dp, nk);
}

template <int DT>
void bwd_keys_t(const Problem& p, const KeyRange& kr, float* ws) {
  const int D = p.D, Dv = p.Dv, Dp = padw(D), Dvp = padw(Dv), G = p.Hq / p.Hkv;
  const Seq s = seq_of(p, kr.b);
  float* Kp = ws + size_t(p.D + p.Dv) * BQ + size_t(BQ) * (Dp + Dvp) + size_t(4) * BKB * BQ + BKB +
              4 * BQ;
  float* Vp = Kp + size_t(BKB) * Dp;
  float* dK = Vp + size_t(BKB) * Dvp;
  float* dV = dK + size_t(BKB) * Dp;
  ATTN_CHECK(dV + size_t(BKB) * Dvp <= ws + bwd_ws_floats(p), "backward workspace");
  ATTN_CHECK(size_t(G) * dq_group_stride(p, s) <= kr.dq_acc_floats, "dq accumulator size");
  const int64_t kbase = kr.b * p.ks[0] + kr.hk * p.ks[1] + s.ko * p.ks[2];
  const int64_t vbase = kr.b * p.vs[0] + kr.hk * p.vs[1] + s.ko * p.vs[2];
  for (int j0 = kr.k0; j0 < kr.k1; j0 += BKB) {
    const int nk = imin(BKB, kr.k1 - j0);
    for (int j = 0; j < nk; ++j) {
      convert_row<DT>(Kp + j * Dp, p.k, kbase + (j0 + j) * p.ks[2], p.ks[3], D, 1.0f);
      convert_row<DT>(Vp + j * Dvp, p.v, vbase + (j0 + j) * p.vs[2], p.vs[3], Dv, 1.0f);
      for (int d = D; d < Dp; ++d) Kp[j * Dp + d] = 0.0f;
      for (int e = Dv; e < Dvp; ++e) Vp[j * Dvp + e] = 0.0f;
    }
    for (size_t t = 0; t < size_t(nk) * Dp; ++t) dK[t] = 0.0f;
    for (size_t t = 0; t < size_t(nk) * Dvp; ++t) dV[t] = 0.0f;
    int ilo, ihi;
    rows_seeing(p, s, j0, nk, &ilo, &ihi);
    for (int g = 0; g < G; ++g) {
      const int h = kr.hk * G + g;
      float* dQ = kr.dq_acc + g * dq_group_stride(p, s);
      for (int i0 = ilo; i0 < ihi; i0 += BQ) {
        const int n = imin(BQ, ihi - i0);
        ATTN_CHECK(size_t(dQ - kr.dq_acc) + size_t(i0 + n) * Dp <= kr.dq_acc_floats,
                   "dq accumulator block");
        with_nv((n + W - 1) / W, [&](auto nv) {
          bwd_block<DT, decltype(nv)::value>(p, s, kr.b, h, i0, n, j0, nk, ws, Kp, Vp, dK, dV,
                                             dQ + size_t(i0) * Dp);
        });
      }
    }
    store_dk_dv<DT>(p, s, kr, j0, nk, dK, dV);
  }
}

void bwd_keys(const Problem& p, const KeyRange& kr, float* ws) {
  switch (p.dtype) {
    case F32: return bwd_keys_t<F32>(p, kr, ws);
    case F16: return bwd_keys_t<F16>(p, kr, ws);
    default:
#ifdef ATTN_BF16DOT
      return bwd_keys_bf16(p, kr, ws);
#else
      return bwd_keys_t<BF16>(p, kr, ws);
#endif
  }
}

// Sum the dq accumulators, scale, write dq. TRANSPOSED: blocks of BQ rows stored [Dp][BQ].
template <int DT, bool TRANSPOSED>
void bwd_dq_t(const Problem& p, int b, int hk, const float* acc, int nacc, size_t stride) {
  const int G = p.Hq / p.Hkv, Dp = padw(p.D);
  const Seq s = seq_of(p, b);
  const size_t gs = dq_group_stride(p, s);
  for (int g = 0; g < G; ++g) {
    const int h = hk * G + g;
    for (int i = 0; i < s.Lq; ++i) {
      const int64_t base = b * p.dqs[0] + h * p.dqs[1] + (s.qo + i) * p.dqs[2];
      const size_t blk = g * gs + size_t(i / BQ) * BQ * Dp;
      for (int d = 0; d < p.D; ++d) {
        const size_t at = TRANSPOSED ? blk + size_t(d) * BQ + i % BQ : g * gs + size_t(i) * Dp + d;
        float x = 0.0f;
        for (int t = 0; t < nacc; ++t) x += acc[t * stride + at];
        from_f32<DT>(p.dq, base + d * p.dqs[3], x * p.scale);
      }
    }
  }
}

void bwd_dq(const Problem& p, int b, int hk, const float* acc, int nacc, size_t stride) {
  switch (p.dtype) {
    case F32: return bwd_dq_t<F32, false>(p, b, hk, acc, nacc, stride);
    case F16: return bwd_dq_t<F16, false>(p, b, hk, acc, nacc, stride);
    default: return bwd_dq_t<BF16, kBf16DotBackward>(p, b, hk, acc, nacc, stride);
  }
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
