// The scalar pieces of the backward, host+device: the one statement of the per-pair math that
// the tensor-core kernels (bwd_tile.cuh) apply to every element of their S / dP tiles, and
// that host_tests/bwd_check.cpp runs on the CPU against an independent float64 gradient.
//
// For one (query i, key j) pair, with x = q_i . k_j:
//     s   = scale * x;  s = c * tanh(s / c) if softcap c > 0;  s += additive mask   (SPEC 1-3)
//     p   = exp(s - lse_i)  if (i, j) is allowed (bool mask, causal, window, tails), else 0
//     dp  = dout_i . v_j
//     ds  = p * (dp - delta_i) * slope,   delta_i = dout_i . out_i - dlse_i
//           slope = ds/dx = scale * (1 - tanh^2) with softcap (chain rule), scale without
//     dq_i += ds * k_j,   dk_j += ds * q_i,   dv_j += p * dout_i
// (The lse term: d lse_i / d s_ij = p_ij, so an incoming dlse_i adds p * dlse_i to ds, which is
// folded into delta.)
#pragma once

#include <cmath>

#include "blocks.h"
#include "params.h"

namespace mlx_attn_cuda {

// SPEC steps 1-5 for one pair of a sequence with lq queries and lk keys: returns false when the
// pair is removed (then p = 0), else sets s (natural-log domain) and slope = ds/dx.  `keep` is
// the bool mask's value (true without a bool mask), `add` the additive mask's value (0 without).
MA_HD bool pair_score(const FwdParams& f, float x, int i, int j, int lq, int lk, bool keep,
                      float add, float* s, float* slope) {
  if (!keep || i >= lq || !window_allows(i, j, lq, lk, f.window_left, f.window_right))
    return false;
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

// p and ds of one pair from x = q_i . k_j and dp = dout_i . v_j; both 0, whatever dp is, for a
// removed pair and in a row that attends to nothing (lse = -inf: no gradient flows).
MA_HD void pair_grad(const FwdParams& f, float x, float dp, int i, int j, int lq, int lk,
                     bool keep, float add, float lse, float delta, float* p, float* ds) {
  float s, slope;
  if (lse == -INFINITY || !pair_score(f, x, i, j, lq, lk, keep, add, &s, &slope)) {
    *p = 0.f;
    *ds = 0.f;
    return;
  }
  const float pr = pair_prob(s, lse);
  *p = pr;
  *ds = pr * (dp - delta) * slope;
}

}  // namespace mlx_attn_cuda
