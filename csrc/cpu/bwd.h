// Backward kernel for one ISA (FlashAttention-2 style): for a range of keys of one (sequence,
// kv head), loop over the query rows of every head in its group, recompute P from the saved lse,
// and accumulate dK, dV in a tile and dQ in a float32 accumulator owned by the caller.
//
// Five products, each in its natural layout for `gemm` (r = query row in the lanes):
//   S^T  = K Q^T          dP^T = V dO^T          (keys down, rows across)
//   dV  += P^T dO         dK  += dS^T Q          (keys down, head dim across)
//   dQ  += dS K                                   (rows down, head dim across)
#pragma once
#include "fwd.h"

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

inline int padw(int d) { return int(round_up(d, W)); }

// keys per backward tile: larger than the forward's so that packing a query block (q, dO and
// their transposes) is amortised over more keys
constexpr int BKB = 4 * BK;

size_t bwd_ws_floats(const Problem& p) {
  const size_t Dp = padw(p.D), Dvp = padw(p.Dv);
  return size_t(p.D + p.Dv) * BQ + size_t(BQ) * (Dp + Dvp) + size_t(4) * BKB * BQ + BKB +
         size_t(2) * BKB * (Dp + Dvp) + 4 * BQ + 64;
}
int bwd_dp(const Problem& p) { return padw(p.D); }

template <int DT, int NV>
void bwd_block(const Problem& p, const Seq& s, int b, int h, int i0, int n, int j0, int nk,
               float* ws, float* Kp, float* Vp, float* dK, float* dV, float* dQ) {
  const int D = p.D, Dv = p.Dv, Dp = padw(D), Dvp = padw(Dv);
  const int off = s.Lk - s.Lq;
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

  const bool cap = p.softcap > 0;
  const float qmul = cap ? p.scale / p.softcap : p.scale * kLog2e;
  for (int r = 0; r < BQ; ++r) {
    if (r < n) {
      const int i = s.qo + i0 + r;
      const int64_t qb = b * p.qs[0] + h * p.qs[1] + i * p.qs[2];
      const int64_t gb = b * p.dos[0] + h * p.dos[1] + i * p.dos[2];
      const int64_t ob = b * p.os[0] + h * p.os[1] + i * p.os[2];
      convert_row<DT>(Qp + r * Dp, p.q, qb, p.qs[3], D, 1.0f);
      convert_row<DT>(dOp + r * Dvp, p.dout, gb, p.dos[3], Dv, 1.0f);
      for (int d = D; d < Dp; ++d) Qp[r * Dp + d] = 0.0f;
      for (int e = Dv; e < Dvp; ++e) dOp[r * Dvp + e] = 0.0f;
      for (int d = 0; d < D; ++d) QT[d * BQ + r] = Qp[r * Dp + d] * qmul;
      float delta = 0.0f;
      for (int e = 0; e < Dv; ++e) {
        dOT[e * BQ + r] = dOp[r * Dvp + e];
        delta += dOp[r * Dvp + e] * load_o<DT>(p, ob + e * p.os[3]);
      }
      if (p.dlse) delta -= p.dlse[b * p.dls[0] + h * p.dls[1] + i * p.dls[2]];
      DELTA[r] = delta;
      const float lse = p.lse[b * p.ls[0] + h * p.ls[1] + i * p.ls[2]];
      LSE2[r] = lse == kNegInf ? INFINITY : lse * kLog2e;
    } else {
      for (int d = 0; d < Dp; ++d) Qp[r * Dp + d] = 0.0f;
      for (int e = 0; e < Dvp; ++e) dOp[r * Dvp + e] = 0.0f;
      for (int d = 0; d < D; ++d) QT[d * BQ + r] = 0.0f;
      for (int e = 0; e < Dv; ++e) dOT[e * BQ + r] = 0.0f;
      DELTA[r] = 0.0f;
      LSE2[r] = INFINITY;
    }
  }
  Rows R;
  R.b = b; R.n = n;
  for (int r = 0; r < n; ++r) { R.h[r] = h; R.i[r] = i0 + r; }
  Bounds bd;
  row_bounds(p, R, off, bd);
  const bool full = bd.lo_max <= j0 && j0 + nk - 1 <= bd.hi_min;
  int64_t mrow[BQ];
  bool uniform = true;
  if (p.mask_kind != MASK_NONE) {
    for (int r = 0; r < n; ++r) mrow[r] = b * p.ms[0] + h * p.ms[1] + (i0 + r) * p.ms[2];
    uniform = load_mask_tile(p, mrow, n, j0, nk, MT, MU);
  }

  gemm<OVERWRITE>(nk, NV, ST, BQ, Kp, Dp, 1, QT, BQ, D);
  if (cap) {
    for (int j = 0; j < nk; ++j)
      for (int v = 0; v < NV; ++v) {
        vf t = tanhv(loadv(ST + j * BQ + v * W));
        storev(TT + j * BQ + v * W, t);
        storev(ST + j * BQ + v * W, t * (p.softcap * kLog2e));
      }
  }
  {
    // mask and window (softcap already applied above)
    Problem q = p;
    q.softcap = 0.0f;
    vf bm[NV];
    for (int v = 0; v < NV; ++v) bm[v] = splat(kNegInf);
    score_tile<NV>(q, ST, nk, j0, full, bd, MT, uniform, MU, bm);
  }
  vf lse2[NV], delta[NV];
  for (int v = 0; v < NV; ++v) { lse2[v] = loadv(LSE2 + v * W); delta[v] = loadv(DELTA + v * W); }
  gemm<OVERWRITE>(nk, NV, DPT, BQ, Vp, Dvp, 1, dOT, BQ, Dv);
  for (int j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) {
      const int o = j * BQ + v * W;
      vf pr = exp2v(loadv(ST + o) - lse2[v]);
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
  const int off = s.Lk - s.Lq;
  float* Kp = ws + size_t(p.D + p.Dv) * BQ + size_t(BQ) * (Dp + Dvp) + size_t(4) * BKB * BQ + BKB +
              4 * BQ;
  float* Vp = Kp + size_t(BKB) * Dp;
  float* dK = Vp + size_t(BKB) * Dvp;
  float* dV = dK + size_t(BKB) * Dp;
  const int64_t kbase = kr.b * p.ks[0] + kr.hk * p.ks[1] + s.ko * p.ks[2];
  const int64_t vbase = kr.b * p.vs[0] + kr.hk * p.vs[1] + s.ko * p.vs[2];
  const int nv_all = imin(NVMAX, (s.Lq + W - 1) / W);
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
    // query rows that can see a key of this block
    int ilo = 0, ihi = s.Lq;
    if (p.wr >= 0) ilo = imax(ilo, j0 - off - p.wr);
    if (p.wl >= 0) ihi = imin(ihi, j0 + nk - 1 - off + p.wl + 1);
    for (int g = 0; g < G; ++g) {
      const int h = kr.hk * G + g;
      float* dQ = kr.dq_acc + size_t(g) * s.Lq * Dp;
      for (int i0 = ilo; i0 < ihi; i0 += BQ) {
        const int n = imin(BQ, ihi - i0);
        const int nv = (n + W - 1) / W;
        (void)nv_all;
        float* dq_rows = dQ + size_t(i0) * Dp;
#define ATTN_BWD_CASE(NVC) \
  case NVC: bwd_block<DT, NVC>(p, s, kr.b, h, i0, n, j0, nk, ws, Kp, Vp, dK, dV, dq_rows); break;
        switch (nv) {
          ATTN_BWD_CASE(1)
#if ATTN_NV >= 2
          ATTN_BWD_CASE(2)
#endif
#if ATTN_NV >= 3
          ATTN_BWD_CASE(3)
#endif
#if ATTN_NV >= 4
          ATTN_BWD_CASE(4)
#endif
          default: break;
        }
#undef ATTN_BWD_CASE
      }
    }
    const int64_t dkb = kr.b * p.dks[0] + kr.hk * p.dks[1] + s.ko * p.dks[2];
    const int64_t dvb = kr.b * p.dvs[0] + kr.hk * p.dvs[1] + s.ko * p.dvs[2];
    for (int j = 0; j < nk; ++j) {
      for (int d = 0; d < D; ++d)
        from_f32<DT>(p.dk, dkb + (j0 + j) * p.dks[2] + d * p.dks[3], dK[j * Dp + d] * p.scale);
      for (int e = 0; e < Dv; ++e)
        from_f32<DT>(p.dv, dvb + (j0 + j) * p.dvs[2] + e * p.dvs[3], dV[j * Dvp + e]);
    }
  }
}

void bwd_keys(const Problem& p, const KeyRange& kr, float* ws) {
  switch (p.dtype) {
    case F32: return bwd_keys_t<F32>(p, kr, ws);
    case F16: return bwd_keys_t<F16>(p, kr, ws);
    default: return bwd_keys_t<BF16>(p, kr, ws);
  }
}

template <int DT>
void bwd_dq_t(const Problem& p, int b, int hk, const float* acc, int nacc, size_t stride) {
  const int G = p.Hq / p.Hkv, Dp = padw(p.D);
  const Seq s = seq_of(p, b);
  for (int g = 0; g < G; ++g) {
    const int h = hk * G + g;
    for (int i = 0; i < s.Lq; ++i) {
      const size_t row = (size_t(g) * s.Lq + i) * Dp;
      const int64_t base = b * p.dqs[0] + h * p.dqs[1] + (s.qo + i) * p.dqs[2];
      for (int d = 0; d < p.D; ++d) {
        float x = 0.0f;
        for (int t = 0; t < nacc; ++t) x += acc[t * stride + row + d];
        from_f32<DT>(p.dq, base + d * p.dqs[3], x * p.scale);
      }
    }
  }
}

void bwd_dq(const Problem& p, int b, int hk, const float* acc, int nacc, size_t stride) {
  switch (p.dtype) {
    case F32: return bwd_dq_t<F32>(p, b, hk, acc, nacc, stride);
    case F16: return bwd_dq_t<F16>(p, b, hk, acc, nacc, stride);
    default: return bwd_dq_t<BF16>(p, b, hk, acc, nacc, stride);
  }
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
