// CPU self-check of the backward kernels' block logic and per-pair formulas (no GPU needed).
//
// Emulates the block structure of bwd_dkdv_kernel and bwd_dq_kernel (bwd_kernel.cuh) on the
// host with the very functions they call (rules.h queries_seeing / keys_seen for the tiles a
// CTA visits, bwd_math.h pair_grad per pair) and their tiles (bwd_traits.h, D=64 bucket: key
// blocks, query tiles, GQA heads summed in the kernel's order; dQ both by the dQ kernel's walk
// and as the dK/dV kernel's atomics add it), in float, and compares dq, dk, dv with a direct
// double-precision gradient of the SPEC
// written independently here (all pairs visited, softmax backward as p * (dp - sum p dp),
// causal and window from the SPEC's inequalities).  Random problems cover causal, windows,
// softcap, bool and additive masks (with fully masked rows), GQA, Lq != Lk, a dlse input, and
// window sides up to INT32_MAX (as unbounded).
// Prints "OK <n> problems" and exits 0, or the first mismatch and exits 1.
#include <climits>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "mlx_attn_cuda/bwd_math.h"
#include "mlx_attn_cuda/bwd_traits.h"

using namespace mlx_attn_cuda;
using namespace mlx_attn_common;  // MASK_NONE / MASK_BOOL / MASK_ADD, shared with the kernels

struct Problem {
  int B, Hq, Hkv, Lq, Lk, D, Dv, wl, wr, mask_kind;
  bool causal;
  float scale, softcap;
  std::vector<double> q, k, v, dout, dlse, mask;  // bhld; mask [B, Hq, Lq, Lk]
};

static bool allowed_spec(const Problem& P, int i, int j) {
  const long long c = (long long)i + P.Lk - P.Lq;  // 64-bit: sides go up to INT32_MAX
  if (P.causal && j > c) return false;
  if (P.wl >= 0 && j < c - P.wl) return false;
  if (P.wr >= 0 && j > c + P.wr) return false;
  return true;
}

int main() {
  std::mt19937 rng(7);
  auto uni = [&](int a, int b) { return std::uniform_int_distribution<int>(a, b)(rng); };
  std::normal_distribution<double> normal(0.0, 1.0);
  const int trials = 300;
  for (int trial = 0; trial < trials; ++trial) {
    Problem P;
    P.B = uni(1, 2), P.Hkv = uni(1, 2), P.Hq = P.Hkv * uni(1, 3);
    P.Lq = uni(1, 40), P.Lk = uni(1, 40), P.D = 8 * uni(1, 5), P.Dv = 8 * uni(1, 5);
    P.causal = uni(0, 1), P.wl = uni(0, 2) ? -1 : uni(0, 10), P.wr = uni(0, 2) ? -1 : uni(0, 10);
    if (uni(0, 5) == 0) P.wl = INT_MAX - uni(0, 1);  // a huge side is unbounded (no overflow)
    if (uni(0, 5) == 0) P.wr = INT_MAX - uni(0, 1);
    P.mask_kind = uni(0, 2), P.scale = 0.3f, P.softcap = uni(0, 1) ? 0.f : 2.f;
    auto fill = [&](std::vector<double>& x, size_t n) {
      x.resize(n);
      for (auto& e : x) e = (double)(float)normal(rng);
    };
    fill(P.q, (size_t)P.B * P.Hq * P.Lq * P.D);
    fill(P.k, (size_t)P.B * P.Hkv * P.Lk * P.D);
    fill(P.v, (size_t)P.B * P.Hkv * P.Lk * P.Dv);
    fill(P.dout, (size_t)P.B * P.Hq * P.Lq * P.Dv);
    fill(P.dlse, (size_t)P.B * P.Hq * P.Lq);
    P.mask.resize((size_t)P.B * P.Hq * P.Lq * P.Lk);
    for (auto& m : P.mask) m = P.mask_kind == MASK_BOOL ? (double)(uni(0, 4) != 0) : (double)(float)normal(rng);
    if (P.mask_kind == MASK_BOOL && P.Lq > 1)  // a fully masked row
      for (int j = 0; j < P.Lk; ++j) P.mask[(size_t)(0 * P.Lq + 0) * P.Lk + j] = 0.0;

    const int G = P.Hq / P.Hkv;
    auto Q = [&](int b, int h, int i, int d) { return P.q[(((size_t)b * P.Hq + h) * P.Lq + i) * P.D + d]; };
    auto K = [&](int b, int h, int j, int d) { return P.k[(((size_t)b * P.Hkv + h) * P.Lk + j) * P.D + d]; };
    auto V = [&](int b, int h, int j, int d) { return P.v[(((size_t)b * P.Hkv + h) * P.Lk + j) * P.Dv + d]; };
    auto DO = [&](int b, int h, int i, int d) { return P.dout[(((size_t)b * P.Hq + h) * P.Lq + i) * P.Dv + d]; };
    auto M = [&](int b, int h, int i, int j) { return P.mask[(((size_t)b * P.Hq + h) * P.Lq + i) * P.Lk + j]; };

    // ---- double reference ------------------------------------------------------------------
    std::vector<double> rdq(P.q.size(), 0), rdk(P.k.size(), 0), rdv(P.v.size(), 0);
    std::vector<float> lse_f(P.dlse.size()), delta_f(P.dlse.size());
    for (int b = 0; b < P.B; ++b)
      for (int h = 0; h < P.Hq; ++h) {
        const int hk = h / G;
        for (int i = 0; i < P.Lq; ++i) {
          std::vector<double> s(P.Lk), t(P.Lk, 0), p(P.Lk, 0), dp(P.Lk, 0);
          std::vector<bool> keep(P.Lk);
          double mx = -INFINITY;
          for (int j = 0; j < P.Lk; ++j) {
            double x = 0;
            for (int d = 0; d < P.D; ++d) x += Q(b, h, i, d) * K(b, hk, j, d);
            x *= P.scale;
            if (P.softcap > 0) { t[j] = std::tanh(x / P.softcap); x = P.softcap * t[j]; }
            keep[j] = allowed_spec(P, i, j) && !(P.mask_kind == MASK_BOOL && M(b, h, i, j) == 0);
            if (P.mask_kind == MASK_ADD) x += M(b, h, i, j);
            s[j] = x;
            if (keep[j]) mx = std::max(mx, x);
          }
          double sum = 0;
          for (int j = 0; j < P.Lk; ++j) sum += keep[j] ? std::exp(s[j] - mx) : 0.0;
          const size_t row = ((size_t)b * P.Hq + h) * P.Lq + i;
          lse_f[row] = sum > 0 ? (float)(std::log(sum) + mx) : -INFINITY;
          double pdp = 0, dot_oo = 0;
          for (int j = 0; j < P.Lk; ++j) {
            p[j] = sum > 0 && keep[j] ? std::exp(s[j] - mx) / sum : 0.0;
            for (int d = 0; d < P.Dv; ++d) dp[j] += DO(b, h, i, d) * V(b, hk, j, d);
            pdp += p[j] * dp[j];
          }
          for (int d = 0; d < P.Dv; ++d) {
            double o = 0;
            for (int j = 0; j < P.Lk; ++j) o += p[j] * V(b, hk, j, d);
            dot_oo += o * DO(b, h, i, d);
          }
          delta_f[row] = (float)(dot_oo - P.dlse[row]);
          for (int j = 0; j < P.Lk; ++j) {
            // out gets dout, lse gets dlse: ds = p * (dp - sum p dp) + p * dlse
            double ds = p[j] * (dp[j] - pdp) + p[j] * P.dlse[row];
            if (P.softcap > 0) ds *= 1 - t[j] * t[j];
            ds *= P.scale;
            for (int d = 0; d < P.D; ++d) {
              rdq[row * P.D + d] += ds * K(b, hk, j, d);
              rdk[(((size_t)b * P.Hkv + hk) * P.Lk + j) * P.D + d] += ds * Q(b, h, i, d);
            }
            for (int d = 0; d < P.Dv; ++d)
              rdv[(((size_t)b * P.Hkv + hk) * P.Lk + j) * P.Dv + d] += p[j] * DO(b, h, i, d);
          }
        }
      }

    // ---- emulation of the kernels --------------------------------------------------------
    FwdParams f;
    f.b = P.B, f.hq = P.Hq, f.hkv = P.Hkv, f.group = G, f.lq = P.Lq, f.lk = P.Lk;
    f.d = P.D, f.dv = P.Dv, f.scale = P.scale, f.softcap = P.softcap;
    f.window_left = P.wl, f.window_right = fold_causal(P.causal, P.wr);
    // The pair formulas of the kernels, on float dot products (the kernels' tensor-core sums).
    auto grad = [&](int b, int h, int i, int j, float* p, float* ds) {
      const int hk = h / G;
      const size_t row = ((size_t)b * P.Hq + h) * P.Lq + i;
      float x = 0, dp = 0;
      for (int d = 0; d < P.D; ++d) x += (float)Q(b, h, i, d) * (float)K(b, hk, j, d);
      for (int d = 0; d < P.Dv; ++d) dp += (float)DO(b, h, i, d) * (float)V(b, hk, j, d);
      const bool keep = !(P.mask_kind == MASK_BOOL && M(b, h, i, j) == 0);
      const float add = P.mask_kind == MASK_ADD ? (float)M(b, h, i, j) : 0.f;
      pair_grad(f, x, dp, i, j, P.Lq, P.Lk, keep, add, lse_f[row], delta_f[row], p, ds);
    };
    std::vector<double> edq(P.q.size(), 0), edk(P.k.size(), 0), edv(P.v.size(), 0),
        adq(P.q.size(), 0);  // adq: the dK/dV kernel's dq atomics (default mode)
    // dK/dV kernel: a CTA per key block of BN; query tiles of BM that can see the block
    // (queries_seeing), every query head of the group, in the kernel's order.
    using Tr = BwdTraitsFor<unsigned short, 64>::dkdv;
    const int BN = Tr::kBlockN, BM = Tr::kBlockM;
    for (int b = 0; b < P.B; ++b)
      for (int hk = 0; hk < P.Hkv; ++hk)
        for (int j0 = 0; j0 < P.Lk; j0 += BN) {
          const int j_last = imin(j0 + BN, P.Lk) - 1;
          const Span qs = queries_seeing(j0, j_last, P.Lq, P.Lk, f.window_left, f.window_right);
          const int m_lo = qs.lo / BM, m_hi = qs.hi >= qs.lo ? qs.hi / BM : m_lo - 1;
          std::vector<float> dk((size_t)BN * P.D, 0.f), dv((size_t)BN * P.Dv, 0.f);
          for (int h = hk * G; h < (hk + 1) * G; ++h)
            for (int m = m_lo; m <= m_hi; ++m)
              for (int i = m * BM; i < imin((m + 1) * BM, P.Lq); ++i)
                for (int j = j0; j <= j_last; ++j) {
                  float pr, ds;
                  grad(b, h, i, j, &pr, &ds);
                  for (int d = 0; d < P.Dv; ++d) dv[(size_t)(j - j0) * P.Dv + d] += pr * (float)DO(b, h, i, d);
                  for (int d = 0; d < P.D; ++d) {
                    dk[(size_t)(j - j0) * P.D + d] += ds * (float)Q(b, h, i, d);
                    adq[(((size_t)b * P.Hq + h) * P.Lq + i) * P.D + d] += ds * (float)K(b, hk, j, d);
                  }
                }
          for (int j = j0; j <= j_last; ++j) {
            for (int d = 0; d < P.D; ++d) edk[(((size_t)b * P.Hkv + hk) * P.Lk + j) * P.D + d] = dk[(size_t)(j - j0) * P.D + d];
            for (int d = 0; d < P.Dv; ++d) edv[(((size_t)b * P.Hkv + hk) * P.Lk + j) * P.Dv + d] = dv[(size_t)(j - j0) * P.Dv + d];
          }
        }
    // dQ kernel (deterministic mode): a CTA per query tile of BM, the key blocks of BN it sees.
    using QTr = BwdTraitsFor<unsigned short, 64>::dq;
    for (int b = 0; b < P.B; ++b)
      for (int h = 0; h < P.Hq; ++h)
        for (int i0 = 0; i0 < P.Lq; i0 += QTr::kBlockM) {
          const int i_last = imin(i0 + QTr::kBlockM, P.Lq) - 1;
          const Span ks = keys_seen(i0, i_last, P.Lq, P.Lk, f.window_left, f.window_right);
          const int n_lo = ks.lo / QTr::kBlockN, n_hi = ks.hi >= ks.lo ? ks.hi / QTr::kBlockN : n_lo - 1;
          for (int i = i0; i <= i_last; ++i) {
            std::vector<float> dq(P.D, 0.f);
            for (int n = n_lo; n <= n_hi; ++n)
              for (int j = n * QTr::kBlockN; j < imin((n + 1) * QTr::kBlockN, P.Lk); ++j) {
                float pr, ds;
                grad(b, h, i, j, &pr, &ds);
                for (int d = 0; d < P.D; ++d) dq[d] += ds * (float)K(b, h / G, j, d);
              }
            for (int d = 0; d < P.D; ++d) edq[(((size_t)b * P.Hq + h) * P.Lq + i) * P.D + d] = dq[d];
          }
        }

    auto compare = [&](const char* name, const std::vector<double>& got,
                       const std::vector<double>& want) {
      double scale = 1.0;
      for (double w : want) scale = std::max(scale, std::fabs(w));
      for (size_t n = 0; n < got.size(); ++n)
        if (!(std::fabs(got[n] - want[n]) <= 2e-4 * scale)) {
          std::printf("trial %d: %s[%zu] = %g, want %g (B=%d Hq=%d Hkv=%d Lq=%d Lk=%d D=%d Dv=%d "
                      "causal=%d window=(%d,%d) mask=%d softcap=%g)\n",
                      trial, name, n, got[n], want[n], P.B, P.Hq, P.Hkv, P.Lq, P.Lk, P.D, P.Dv,
                      (int)P.causal, P.wl, P.wr, P.mask_kind, P.softcap);
          return false;
        }
      return true;
    };
    if (!compare("dq", edq, rdq) || !compare("dq (atomics)", adq, rdq) || !compare("dk", edk, rdk) ||
        !compare("dv", edv, rdv))
      return 1;
  }
  std::printf("OK %d problems\n", trials);
  return 0;
}
