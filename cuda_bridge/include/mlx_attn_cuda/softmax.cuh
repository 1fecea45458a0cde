// Scores and the online softmax, on one warp's S accumulator fragments (C layout, layout.h):
// acc[mi][nj][e] is row 16*mi + groupID + 8*(e >> 1) of the warp's rows and key column
// 8*nj + 2*tig + (e & 1) of the key block.  Each thread holds 2 rows per m16 tile; a row's
// values are spread over the 4 threads of a quad, reduced with shuffles.
//
// Scores live in the base-2 domain: the softmax uses exp2, and s2 = s * log2(e).
//   * Fast path (no softcap, no additive mask, scale > 0): the raw dot products stay in acc and
//     the row max is taken on them; scale * log2(e) is folded into one FFMA per element
//     inside the exp2 (valid because the scale is positive, so it preserves the max).
//   * Explicit path: acc is first turned into s2 = SPEC steps 1-3 (scale, softcap, additive
//     mask) times log2(e), and the multiplier is 1.
#pragma once

#include <cmath>

#include "blocks.h"
#include "params.h"
#include "ptx.h"

namespace mlx_attn_cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

template <int kMTiles, int kNTiles>
__device__ __forceinline__ void zero_acc(float (&acc)[kMTiles][kNTiles][4]) {
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
    for (int nj = 0; nj < kNTiles; ++nj)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][nj][e] = 0.f;
}

// SPEC steps 1-2 for the explicit path: s2 = softcap ? c*tanh(s*scale/c) : s*scale, times log2 e.
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void explicit_scores(const FwdParams& p,
                                                float (&acc)[kMTiles][kNTiles][4]) {
  if (p.softcap > 0.f) {
    const float in = p.scale / p.softcap, out = p.softcap * kLog2e;
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
      for (int nj = 0; nj < kNTiles; ++nj)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mi][nj][e] = tanhf(acc[mi][nj][e] * in) * out;
  } else {
#pragma unroll
    for (int mi = 0; mi < kMTiles; ++mi)
#pragma unroll
      for (int nj = 0; nj < kNTiles; ++nj)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mi][nj][e] *= p.scale_log2;
  }
}

// Adds (or applies, for bool) the mask row at `mp` (already offset to key col0 of this row) to
// the thread's elements of one row: columns col0 + 8 * nj + c at element offsets
// (8 * nj + c) * m_sk.  Columns at or past `ncols` (= lk - col0: the key tail of the last
// block) are not read (they would be past the mask's end); the caller sets them to -inf.
template <typename M, int kNTiles, int kMTiles>
__device__ __forceinline__ void add_mask_row(float (&acc)[kMTiles][kNTiles][4], int mi, int hr,
                                             const M* mp, int64_t m_sk, int ncols) {
#pragma unroll
  for (int nj = 0; nj < kNTiles; ++nj) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      if (8 * nj + c >= ncols) continue;
      const M m = mp[(int64_t)(8 * nj + c) * m_sk];
      float& x = acc[mi][nj][2 * hr + c];
      if constexpr (sizeof(M) == 1) {
        if (!m) x = -INFINITY;
      } else if constexpr (sizeof(M) == 4) {
        x += m * kLog2e;
      } else {
        x += to_float(m) * kLog2e;
      }
    }
  }
}

// SPEC steps 3-5 on a block that needs per-element work: the mask tensor (bool removes,
// additive is added, in the base-2 domain), then causal/window and the key tail (-inf).
// row0_in: packed row (blocks.h) of the thread's first row; its rows are row0 + 16*mi + 8*hr.
// Everything per row is derived here, behind opaque(), so that none of it is hoisted out of
// the main loop and kept live in registers (ptxas would then spill the accumulators).
template <int kMTiles, int kNTiles>
__device__ __forceinline__ void apply_mask(const FwdParams& p, float (&acc)[kMTiles][kNTiles][4],
                                           int n0, int lane, int b, int hk, int row0_in) {
  const int row0 = opaque(row0_in);
  const int col0 = n0 + 2 * lane_tig(lane);
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int r = row0 + 16 * mi + 8 * hr;
      const int i = r / p.group;
      if (p.mask_type != kMaskNone && r < p.rows) {
        const int h = hk * p.group + (r - i * p.group);
        const int64_t off = b * p.m_sb + h * p.m_sh + (int64_t)i * p.m_sq + col0 * p.m_sk;
        const int ncols = p.lk - col0;
        switch (p.mask_type) {
          case kMaskBool:
            add_mask_row(acc, mi, hr, static_cast<const uint8_t*>(p.mask) + off, p.m_sk, ncols);
            break;
          case kMaskF32:
            add_mask_row(acc, mi, hr, static_cast<const float*>(p.mask) + off, p.m_sk, ncols);
            break;
          case kMaskF16:
            add_mask_row(acc, mi, hr, static_cast<const __half*>(p.mask) + off, p.m_sk, ncols);
            break;
          default:
            add_mask_row(acc, mi, hr, static_cast<const __nv_bfloat16*>(p.mask) + off, p.m_sk, ncols);
            break;
        }
      }
      // Allowed keys of query i: lo <= j <= hi (window_allows as an interval).
      const Span keys = keys_seen(i, i, p.lq, p.lk, p.window_left, p.window_right);
      const int lo_rel = keys.lo - col0, hi_rel = keys.hi - col0;
#pragma unroll
      for (int nj = 0; nj < kNTiles; ++nj) {
#pragma unroll
        for (int cc = 0; cc < 2; ++cc) {
          const int jr = 8 * nj + cc;
          if (jr < lo_rel || jr > hi_rel) acc[mi][nj][2 * hr + cc] = -INFINITY;
        }
      }
    }
  }
}

// One online-softmax step: update the row max, rescale the O accumulator and the running sum,
// and overwrite acc with p = exp2(s2 - max2).  `mul` is scale*log2(e) (fast path) or 1.
// NaN: fmaxf leaves a NaN score out of the max, but its exp2 is NaN, so the row sum and P V are
// NaN from then on (NaN * corr stays NaN) and finish_row writes lse NaN: the row propagates NaN
// without a NaN-aware max in the hot loop.  The split-KV combine needs one (combine_kernel.cuh).
template <int kMTiles, int kNTiles, int kDTiles>
__device__ __forceinline__ void softmax_step(float (&acc)[kMTiles][kNTiles][4],
                                             float (&acc_o)[kMTiles][kDTiles][4],
                                             float (&row_max)[kMTiles][2],
                                             float (&row_sum)[kMTiles][2], float mul) {
#pragma unroll
  for (int mi = 0; mi < kMTiles; ++mi) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float mx = row_max[mi][hr];
#pragma unroll
      for (int nj = 0; nj < kNTiles; ++nj)
        mx = fmaxf(mx, fmaxf(acc[mi][nj][2 * hr], acc[mi][nj][2 * hr + 1]));
      mx = quad_max(mx);
      // A row with nothing allowed so far keeps max -inf; offset 0 keeps exp2(-inf) = 0 and
      // avoids (-inf) - (-inf).
      const float mx2 = (mx == -INFINITY) ? 0.f : mx * mul;
      const float corr = exp2_approx(row_max[mi][hr] * mul - mx2);
      row_max[mi][hr] = mx;
      row_sum[mi][hr] *= corr;
#pragma unroll
      for (int dj = 0; dj < kDTiles; ++dj) {
        acc_o[mi][dj][2 * hr] *= corr;
        acc_o[mi][dj][2 * hr + 1] *= corr;
      }
      float s = 0.f;
#pragma unroll
      for (int nj = 0; nj < kNTiles; ++nj) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float pe = exp2_approx(fmaf(acc[mi][nj][2 * hr + c], mul, -mx2));
          acc[mi][nj][2 * hr + c] = pe;
          s += pe;
        }
      }
      row_sum[mi][hr] += s;
    }
  }
}

// Final normalisation of one row: returns 1/sum (1 when the row is empty or NaN, whose O is
// then 0 or NaN already) and writes the natural-log lse (-inf for an empty row).
__device__ __forceinline__ float finish_row(float row_max, float thread_sum, float mul,
                                            float& lse) {
  const float sum = quad_sum(thread_sum);
  if (sum == 0.f) {
    lse = -INFINITY;
    return 1.f;
  }
  if (sum != sum) {
    lse = sum;
    return 1.f;
  }
  const float mx2 = (row_max == -INFINITY) ? 0.f : row_max * mul;
  lse = mx2 * kLn2 + logf(sum);
  return 1.f / sum;
}

}  // namespace mlx_attn_cuda
