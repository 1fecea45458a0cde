// The scalar pieces of the backward, host+device so that host_tests/bwd_check.cpp runs exactly
// these functions in a CPU emulation of the backward kernels (no GPU needed).
//
// For one (query i, key j) pair, with x = q_i . k_j:
//     s   = scale * x;  s = c * tanh(s / c) if softcap c > 0;  s += additive mask   (SPEC 1-3)
//     p   = exp(s - lse_i)  if (i, j) is allowed (bool mask, causal, window), else 0
//     dp  = dout_i . v_j
//     ds  = p * (dp - delta_i),   delta_i = dout_i . out_i - dlse_i
//     dx  = ds * ds/dx,           ds/dx = scale * (1 - tanh^2) with softcap, scale without
//     dq_i += dx * k_j,   dk_j += dx * q_i,   dv_j += p * dout_i
// (The lse term: d lse_i / d s_ij = p_ij, so an incoming dlse_i adds p * dlse_i to ds, which is
// folded into delta.)
#pragma once

#include <cmath>

#include "blocks.h"
#include "params.h"

namespace mlx_attn_cuda {

// Queries [lo, hi] that may attend to some key of [j_first, j_last] (window carries causal;
// mlx_attn_common::queries_seeing on this launch's sizes and window).
MA_HD void bwd_query_range(const FwdParams& f, int j_first, int j_last, int* lo, int* hi) {
  const Span s = queries_seeing(j_first, j_last, f.lq, f.lk, f.window_left, f.window_right);
  *lo = s.lo;
  *hi = s.hi;
}

// Keys [lo, hi] that some query of [i_first, i_last] may attend to (keys_seen).
MA_HD void bwd_key_range(const FwdParams& f, int i_first, int i_last, int* lo, int* hi) {
  const Span s = keys_seen(i_first, i_last, f.lq, f.lk, f.window_left, f.window_right);
  *lo = s.lo;
  *hi = s.hi;
}

// SPEC steps 1-5 for one pair: returns false when the pair is removed (then p = 0), else sets
// s (natural-log domain) and slope = ds/dx.  `keep` is the bool mask's value (true without a
// bool mask), `add` the additive mask's value (0 without one).
MA_HD bool pair_score(const FwdParams& f, float x, int i, int j, bool keep, float add, float* s,
                      float* slope) {
  if (!keep || !window_allows(i, j, f.lq, f.lk, f.window_left, f.window_right)) return false;
  float v = f.scale * x;
  float d = f.scale;
  if (f.softcap > 0.f) {
    const float t = tanhf(v / f.softcap);
    v = f.softcap * t;
    d = f.scale * (1.f - t * t);
  }
  v += add;
  if (v == -INFINITY) return false;
  *s = v;
  *slope = d;
  return true;
}

// p = exp(s - lse) for an allowed pair; a row whose lse is -inf has no allowed pair at all.  A
// NaN s or lse (NaN in the row) gives NaN, which then reaches dq, dk, dv (SPEC: NaN propagates).
MA_HD float pair_prob(float s, float lse) { return lse == -INFINITY ? 0.f : expf(s - lse); }

// Tile shapes of the backward kernels (4 warps per CTA; see bwd_kernel.cuh).
constexpr int kBwdWarps = 4;
constexpr int kBwdKeysPerWarp = 4;     // dK/dV kernel: a CTA owns 16 keys
constexpr int kBwdQueriesPerWarp = 4;  // dQ kernel: a CTA owns 16 queries

}  // namespace mlx_attn_cuda
