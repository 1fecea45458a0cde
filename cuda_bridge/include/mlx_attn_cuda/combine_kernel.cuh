// Split-KV combine: out[row] = sum_s exp(lse_s - lse) * O_s[row], lse = log sum_s exp(lse_s).
// One warp per output row (b, h, i); 4 rows per 128-thread CTA.  The per-split weights are
// computed once per row into shared memory.  A split that saw no allowed key has lse_s = -inf
// and weight 0; a row with no allowed key at all gets zeros and lse -inf.  A NaN lse_s (NaN in
// the row's scores) makes lse and the whole output row NaN: the max is max_nan, not fmaxf,
// which would drop it and, when every split is NaN, return an empty row (SPEC: NaN propagates).
// The scalar rules (max_nan, combined_lse, split_weight) are in blocks.h, where the host
// self-check (host_tests/layout_check.cpp) runs them too.
#pragma once

#include "blocks.h"
#include "params.h"
#include "ptx.h"

namespace mlx_attn_cuda {

constexpr int kMaxSplits = 128;
constexpr int kCombineRowsPerCta = 4;

__device__ __forceinline__ float warp_max_nan(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = max_nan(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

template <typename T>
__device__ __forceinline__ void combine_block(const FwdParams& p) {
  __shared__ float weight[kCombineRowsPerCta][kMaxSplits];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t total = (int64_t)p.b * p.hq * p.lq;
  const int64_t row = (int64_t)blockIdx.x * kCombineRowsPerCta + warp;
  if (row >= total) return;  // whole warp; no CTA-wide barrier below
  const int i = (int)(row % p.lq);
  const int64_t bh = row / p.lq;
  const int h = (int)(bh % p.hq), b = (int)(bh / p.hq);
  const int S = p.num_splits;
  float* w = weight[warp];

  float mx = -INFINITY;
  for (int s = lane; s < S; s += 32) {
    const float l = p.lse_accum[(int64_t)s * total + row];
    w[s] = l;
    mx = max_nan(mx, l);
  }
  mx = warp_max_nan(mx);
  __syncwarp();
  float sum = 0.f;
  if (mx != -INFINITY)
    for (int s = lane; s < S; s += 32) sum += expf(w[s] - mx);
  sum = warp_sum(sum);  // all lanes: the shuffles need the whole warp
  const float lse = combined_lse(mx, sum);
  __syncwarp();
  for (int s = lane; s < S; s += 32) w[s] = split_weight(w[s], lse);
  __syncwarp();

  T* orow = static_cast<T*>(p.out) + b * p.o_sb + h * p.o_sh + (int64_t)i * p.o_sl;
  for (int col = 2 * lane; col < p.dv; col += 64) {
    float x = 0.f, y = 0.f;
    for (int s = 0; s < S; ++s) {
      const float2 o =
          *reinterpret_cast<const float2*>(p.o_accum + ((int64_t)s * total + row) * p.dv + col);
      x = fmaf(w[s], o.x, x);
      y = fmaf(w[s], o.y, y);
    }
    *reinterpret_cast<uint32_t*>(orow + col) = pack2<T>(x, y);
  }
  if (lane == 0) p.lse[row] = lse;
}

template <typename T>
__global__ void __launch_bounds__(32 * kCombineRowsPerCta) combine_kernel(const FwdParams p) {
  combine_block<T>(p);
}

}  // namespace mlx_attn_cuda
