// Backward pass of bf16 problems on CPUs with AVX512-BF16: the algorithm of bwd.h with its five
// products as bf16 dot products (gemm_bf16.h), float32 accumulation.
//
// q, k, v and dO are bf16 already, so S = Q K^T and dP = dO V^T take two exact products per
// instruction (twice the float32 rate). P and dS are float32 results: rounding them to bf16 (as
// FlashAttention 2 does on GPUs) costs more accuracy than the SPEC's criterion allows, so the three
// products that read them take each as a pair (hi, lo) of bf16s against a duplicated bf16 operand
// (one exact float32-rate product, ~16 significant bits of P and dS).
//
// Products (r = query row, j = key, d / e = head dims):
//   S^T[j][r]   = K . Q^T     A = K rows                 B = Q^T, pairs over d
//   dP^T[j][r]  = V . dO^T    A = V rows                 B = dO^T, pairs over e
//   dV[j][e]   += P^T . dO    A = (P_hi, P_lo) per r     B = (dO, dO) per r
//   dK[j][d]   += dS^T . Q    A = (dS_hi, dS_lo) per r   B = (Q, Q) per r
//   dQ^T[d][r] += K^T . dS    A = (K, K) per j           B = (dS_hi, dS_lo) per j
// so dq accumulates transposed, per block of BQ rows (bwd_dq reads it back that way).
//
// With AMX (isa_avx512amx.cpp) the same five products, in the same layouts, run on tiles
// (gemm_amx.h): the layouts above are already the tiles' A rows and B pairs. Tiles take whole
// 16-row and 32-element blocks, so the head dims that are a product's k (S, dP) are padded to
// 32 (kdim), the pairs past a block's rows or keys are zeroed, and C rows up to 16 past M land in
// rows of the buffers that are never read.
#pragma once
#include <initializer_list>
#include <vector>

#include "bwd.h"
#include "gemm_bf16.h"

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

// Per-thread buffers, carved from the float workspace in 64-byte aligned pieces.
// The head dim of K / V and q / dO where it is the k of a product (S, dP): AMX tiles take 32.
inline int kdim(int d) { return kAmx ? round_up(d, kAmxK) : padw(d); }

struct Bf16Ws {
  uint16_t *Kb, *Vb;         // key block: K [BKB][Dk], V [BKB][Dvk]
  uint16_t *KTd;             // (K, K) pairs: [Dp][BKB][2]
  float *dK, *dV;            // [BKB][Dp], [BKB][Dvp]
  uint16_t *QTv, *dOTv;      // query block: Q^T [Dp/2][BQ][2], dO^T [Dvp/2][BQ][2]
  uint16_t *Qd, *dOd;        // (Q, Q) pairs [BQ][Dp][2], (dO, dO) pairs [BQ][Dvp][2]
  float *ST, *DPT, *TT, *MT, *MU;  // scores / P, dP / dS, tanh, mask tile, uniform mask
  uint16_t *Ps, *dSs;        // (hi, lo) pairs of P^T and dS^T: [BKB][BQ][2]
  float *LSE2, *LOGL, *DELTA, *dO32;
};

// Hands out 64-byte aligned pieces of a workspace; base == nullptr only measures.
struct Carver {
  char* base;
  size_t off = 0;
  template <class T> T* take(size_t n) {
    T* r = base ? reinterpret_cast<T*>(base + off) : nullptr;
    off += (n * sizeof(T) + 63) / 64 * 64;
    return r;
  }
};

inline Bf16Ws carve_bf16_ws(const Problem& p, char* base, size_t* used) {
  const size_t Dp = padw(p.D), Dvp = padw(p.Dv);
  Carver c{base};
  Bf16Ws w;
  w.Kb = c.take<uint16_t>(BKB * kdim(p.D));
  w.Vb = c.take<uint16_t>(BKB * kdim(p.Dv));
  w.KTd = c.take<uint16_t>(Dp * BKB * 2);
  w.dK = c.take<float>(BKB * Dp);
  w.dV = c.take<float>(BKB * Dvp);
  w.QTv = c.take<uint16_t>(kdim(p.D) * BQ);
  w.dOTv = c.take<uint16_t>(kdim(p.Dv) * BQ);
  w.Qd = c.take<uint16_t>(BQ * Dp * 2);
  w.dOd = c.take<uint16_t>(BQ * Dvp * 2);
  for (float** t : {&w.ST, &w.DPT, &w.TT, &w.MT}) *t = c.take<float>(BKB * BQ);
  w.MU = c.take<float>(BKB);
  for (uint16_t** t : {&w.Ps, &w.dSs}) *t = c.take<uint16_t>(BKB * BQ * 2);
  w.LSE2 = c.take<float>(BQ);
  w.LOGL = c.take<float>(BQ);
  w.DELTA = c.take<float>(BQ);
  w.dO32 = c.take<float>(Dvp);
  *used = c.off;
  return w;
}

size_t bwd_bf16_ws_floats(const Problem& p) {
  size_t used = 0;
  carve_bf16_ws(p, nullptr, &used);
  return used / sizeof(float) + 16;  // + 16: the workspace itself is only 64-byte aligned
}

// One bf16 operand (q or dO) of a query block in the two layouts its products read:
// T[d/2][r][2] (pairs over the head dim, all `lanes` lanes) and Dup[r][d][2] (each element twice,
// rows < n; AMX: rows up to `lanes`, zero past n). Zeros pad head dims past D (T: to kdim(D)) and
// lanes past n. `at` is row 0's first element.
inline void pack_operand(const uint16_t* at, int64_t rs, int64_t ds, int D, int n, int lanes,
                         uint16_t* T, uint16_t* Dup) {
  const int Dp = padw(D), Dk = kdim(D);
  if (kAmx && n < lanes) std::memset(Dup + size_t(n) * Dp * 2, 0, sizeof(uint16_t) * (lanes - n) * Dp * 2);
  if (ds == 1 && D % 2 == 0 && rs > 0 && rs * BQ < (int64_t(1) << 30)) {
    // T: one 16-row gather of 32-bit words (a pair over d) per pair and row group
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(int32_t(rs)));
    for (int r0 = 0; r0 < lanes; r0 += W) {
      const int live = imax(0, imin(W, n - r0));
      const __mmask16 m = __mmask16((1u << live) - 1);
      for (int t = 0; t < Dk / 2; ++t) {
        __m512i x = _mm512_setzero_si512();
        if (2 * t < D && live) x = _mm512_mask_i32gather_epi32(x, m, rows, at + r0 * rs + 2 * t, 2);
        _mm512_storeu_si512(T + t * 2 * BQ + 2 * r0, x);
      }
    }
    // Dup: 32 elements -> two vectors of duplicated pairs
    const __m512i lo = _mm512_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8,
                                        7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    for (int r = 0; r < n; ++r)
      for (int d0 = 0; d0 < Dp; d0 += 2 * W) {
        const int cnt = imax(0, imin(2 * W, D - d0));
        const __mmask32 m = cnt == 32 ? ~__mmask32(0) : __mmask32((1u << cnt) - 1);
        const __m512i x = _mm512_maskz_loadu_epi16(m, at + r * rs + d0);
        _mm512_storeu_si512(Dup + (size_t(r) * Dp + d0) * 2, _mm512_permutexvar_epi16(lo, x));
        if (Dp - d0 > W)
          _mm512_storeu_si512(Dup + (size_t(r) * Dp + d0) * 2 + 2 * W, _mm512_permutexvar_epi16(hi, x));
      }
    return;
  }
  for (int r = 0; r < lanes; ++r)
    for (int d = 0; d < imax(Dp, Dk); ++d) {
      const uint16_t x = r < n && d < D ? at[r * rs + d * ds] : 0;
      if (d < Dk) T[(d >> 1) * 2 * BQ + 2 * r + (d & 1)] = x;
      if (r < n && d < Dp) Dup[(r * Dp + d) * 2] = Dup[(r * Dp + d) * 2 + 1] = x;
    }
}

constexpr int kRowStats = 3;  // per query row: delta, m2, logl

// q and dO of a query block in their product layouts, and the rows' delta and lse (log2 units)
// from `stats` (delta, m2, logl per query row of head h, precomputed by bwd_keys_bf16).
inline void pack_query_block(const Problem& p, const Seq& s, int b, int h, int i0, int n, int lanes,
                             const float* stats, const Bf16Ws& w) {
  const int64_t i = s.qo + i0;
  pack_operand(static_cast<const uint16_t*>(p.q) + b * p.qs[0] + h * p.qs[1] + i * p.qs[2],
               p.qs[2], p.qs[3], p.D, n, lanes, w.QTv, w.Qd);
  pack_operand(static_cast<const uint16_t*>(p.dout) + b * p.dos[0] + h * p.dos[1] + i * p.dos[2],
               p.dos[2], p.dos[3], p.Dv, n, lanes, w.dOTv, w.dOd);
  for (int r = 0; r < lanes; ++r) {
    w.DELTA[r] = r < n ? stats[kRowStats * (i0 + r)] : 0.0f;
    w.LSE2[r] = r < n ? stats[kRowStats * (i0 + r) + 1] : INFINITY;
    w.LOGL[r] = r < n ? stats[kRowStats * (i0 + r) + 2] : 0.0f;
  }
}

// delta, m2 and logl of every query row of (b, head h), kRowStats floats per row
inline void row_stats(const Problem& p, const Seq& s, int b, int h, float* dO32, float* stats) {
  const uint16_t* g16 = static_cast<const uint16_t*>(p.dout);
  for (int i = 0; i < s.Lq; ++i) {
    const int64_t row = s.qo + i;
    const int64_t gb = b * p.dos[0] + h * p.dos[1] + row * p.dos[2];
    for (int e = 0; e < p.Dv; ++e) dO32[e] = bf16_to_f32(g16[gb + e * p.dos[3]]);
    float* at = stats + kRowStats * i;
    row_delta_lse<BF16>(p, b, h, row, dO32, at, at + 1, at + 2);
  }
}

// C (M x NVt*W) (+)= A . B on the bf16 dot products, or on AMX tiles (whole 16-row / 32-element
// blocks; the caller has zero-padded the k past 2 * K2 and made the rows past M writable).
template <int MODE>
inline void product_bf16(int M, int NVt, float* C, int64_t ldc, const uint16_t* A, int64_t sam,
                         const uint16_t* B, int64_t ldb, int K2) {
  if constexpr (kAmx) {
    if (M > 0 && K2 > 0)
      return amx_gemm<MODE == ACCUMULATE>(round_up(M, 16), NVt * W, round_up(2 * K2, kAmxK), C,
                                          ldc, A, sam, B, ldb);
  }
  gemm_bf16<MODE>(M, NVt, C, ldc, A, sam, B, ldb, K2);
}

template <int NV>
void bwd_block_bf16(const Problem& p, const Seq& s, int b, int h, int i0, int n, int j0, int nk,
                    const float* stats, const Bf16Ws& w, float* dQT) {
  const int D = p.D, Dp = padw(D), Dvp = padw(p.Dv), Dk = kdim(D), Dvk = kdim(p.Dv);
  pack_query_block(p, s, b, h, i0, n, NV * W, stats, w);
  const TileMasking tm = tile_masking(p, s, b, h, i0, n, j0, nk, w.MT, w.MU);

  // S^T = K Q^T, then into log2 units (the float32 path folds this scale into q; here q stays
  // exact in bf16)
  product_bf16<OVERWRITE>(nk, NV, w.ST, BQ, w.Kb, Dk, w.QTv, 2 * BQ, Dk / 2);
  const float qmul = q_multiplier(p);
  for (int j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) storev(w.ST + j * BQ + v * W, loadv(w.ST + j * BQ + v * W) * qmul);
  score_tile_bwd<NV>(p, w.ST, w.TT, nk, j0, tm, w.MT, w.MU);

  // dP^T = V dO^T; P = exp2(S - lse); dS = P (dP - delta) [* (1 - tanh^2)]
  product_bf16<OVERWRITE>(nk, NV, w.DPT, BQ, w.Vb, Dvk, w.dOTv, 2 * BQ, Dvk / 2);
  vf lse2[NV], logl[NV], delta[NV];
  for (int v = 0; v < NV; ++v) {
    lse2[v] = loadv(w.LSE2 + v * W); logl[v] = loadv(w.LOGL + v * W); delta[v] = loadv(w.DELTA + v * W);
  }
  const bool cap = p.softcap > 0;
  for (int j = 0; j < nk; ++j)
    for (int v = 0; v < NV; ++v) {
      const int o = j * BQ + v * W;
      vf pr = exp2v((loadv(w.ST + o) - lse2[v]) - logl[v]);
      vf ds = pr * (loadv(w.DPT + o) - delta[v]);
      if (cap) { vf t = loadv(w.TT + o); ds = ds * (1.0f - t * t); }
      store_split_pairs(w.Ps + 2 * o, (__m512)pr);
      store_split_pairs(w.dSs + 2 * o, (__m512)ds);
    }

  // AMX: k runs over the NV * W lanes (P and dS are 0 past n, the Dup rows zeroed) and over the
  // keys padded to 16 (KTd and dS^T zeroed past nk by the caller)
  const int rows = kAmx ? NV * W : n;
  product_bf16<ACCUMULATE>(nk, Dvp / W, w.dV, Dvp, w.Ps, 2 * BQ, w.dOd, 2 * Dvp, rows);
  product_bf16<ACCUMULATE>(nk, Dp / W, w.dK, Dp, w.dSs, 2 * BQ, w.Qd, 2 * Dp, rows);
  if constexpr (kAmx)
    std::memset(w.dSs + size_t(nk) * 2 * BQ, 0, sizeof(uint16_t) * (round_up(nk, 16) - nk) * 2 * BQ);
  product_bf16<ACCUMULATE>(D, NV, dQT, BQ, w.KTd, 2 * BKB, w.dSs, 2 * BQ, nk);
}

void bwd_keys_bf16(const Problem& p, const KeyRange& kr, float* ws) {
  const int D = p.D, Dv = p.Dv, Dp = padw(D), Dvp = padw(Dv), G = p.Hq / p.Hkv;
  const Seq s = seq_of(p, kr.b);
  size_t used = 0;
  char* base = reinterpret_cast<char*>(ws);
  base += (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
  const Bf16Ws w = carve_bf16_ws(p, base, &used);
  [[maybe_unused]] AmxTiles tiles;  // AMX: this thread's tile configuration for the call
  ATTN_CHECK(base + used <= reinterpret_cast<char*>(ws + bwd_ws_floats(p)), "bf16 backward workspace");
  ATTN_CHECK(size_t(G) * dq_group_stride(p, s) <= kr.dq_acc_floats, "dq accumulator size");
  const uint16_t* k16 = static_cast<const uint16_t*>(p.k);
  const uint16_t* v16 = static_cast<const uint16_t*>(p.v);
  const int64_t kbase = kr.b * p.ks[0] + kr.hk * p.ks[1] + s.ko * p.ks[2];
  const int64_t vbase = kr.b * p.vs[0] + kr.hk * p.vs[1] + s.ko * p.vs[2];
  // delta and lse of every query row of the group, once rather than per key block
  std::vector<float> stats(size_t(kRowStats) * G * s.Lq);
  for (int g = 0; g < G; ++g)
    row_stats(p, s, kr.b, kr.hk * G + g, w.dO32, stats.data() + size_t(kRowStats) * g * s.Lq);
  for (int j0 = kr.k0; j0 < kr.k1; j0 += BKB) {
    const int nk = imin(BKB, kr.k1 - j0);
    const int Dk = kdim(D), Dvk = kdim(Dv);
    for (int j = 0; j < nk; ++j) {
      for (int d = 0; d < imax(Dp, Dk); ++d) {
        const uint16_t x = d < D ? k16[kbase + (j0 + j) * p.ks[2] + d * p.ks[3]] : 0;
        if (d < Dk) w.Kb[j * Dk + d] = x;
        if (d < Dp) w.KTd[(d * BKB + j) * 2] = w.KTd[(d * BKB + j) * 2 + 1] = x;
      }
      for (int e = 0; e < Dvk; ++e)
        w.Vb[j * Dvk + e] = e < Dv ? v16[vbase + (j0 + j) * p.vs[2] + e * p.vs[3]] : 0;
    }
    if constexpr (kAmx)  // the pairs of keys nk .. 16-padded: k of the dQ product
      for (int d = 0; d < Dp; ++d)
        std::memset(w.KTd + (size_t(d) * BKB + nk) * 2, 0, sizeof(uint16_t) * (round_up(nk, 16) - nk) * 2);
    std::memset(w.dK, 0, sizeof(float) * nk * Dp);
    std::memset(w.dV, 0, sizeof(float) * nk * Dvp);
    int ilo, ihi;
    rows_seeing(p, s, j0, nk, &ilo, &ihi);
    for (int g = 0; g < G; ++g) {
      const int h = kr.hk * G + g;
      float* dQ = kr.dq_acc + g * dq_group_stride(p, s);
      // blocks start at multiples of BQ so that dq's transposed blocks line up with bwd_dq's
      for (int i0 = ilo / BQ * BQ; i0 < ihi; i0 += BQ) {
        const int n = imin(BQ, s.Lq - i0);
        // a whole transposed block of BQ rows, whatever n
        ATTN_CHECK(size_t(dQ - kr.dq_acc) + size_t(i0 + BQ) * Dp <= kr.dq_acc_floats,
                   "dq accumulator block");
        with_nv((n + W - 1) / W, [&](auto nv) {
          bwd_block_bf16<decltype(nv)::value>(p, s, kr.b, h, i0, n, j0, nk,
                                              stats.data() + size_t(kRowStats) * g * s.Lq, w,
                                              dQ + size_t(i0) * Dp);
        });
      }
    }
    store_dk_dv<BF16>(p, s, kr, j0, nk, w.dK, w.dV);
  }
}

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
