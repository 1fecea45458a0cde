// Threads, shared memory and rows per CTA of every kernel, as plain numbers read from the
// traits tables, for launchers that cannot see the traits: the MLX launcher
// (src/mlx_attn/backends/cuda/mlx_launch.py, through the bridge's launch_dims()) starts the
// flat-argument entry points of mlx_entries.cuh with them.  The element type only sizes shared
// memory, and fp16 and bf16 are both 2 bytes, so one table serves both dtypes.
#pragma once

#include "api.h"
#include "bwd_traits.h"
#include "combine_kernel.cuh"
#include "traits.h"

namespace mlx_attn_cuda {

template <int D>
LaunchDims launch_dims_of() {
  using P = typename TraitsFor<unsigned short, D, kPrefill>::type;
  using Dc = typename TraitsFor<unsigned short, D, kDecode>::type;
  using Dkdv = typename BwdTraitsFor<unsigned short, D>::dkdv;
  using Dq = typename BwdTraitsFor<unsigned short, D>::dq;
  LaunchDims r;
  r.prefill = {P::kBlockM, P::kNThreads, (int)P::kSmemBytes};
  r.decode = {Dc::kBlockM, Dc::kNThreads, (int)Dc::kSmemBytes};
  r.combine = {kCombineRowsPerCta, 32 * kCombineRowsPerCta, 0};
  r.bwd_dq = {Dq::kBlockM, Dq::kNThreads, (int)Dq::kDqSmemBytes};
  r.bwd_dkdv = {Dkdv::kBlockN, Dkdv::kNThreads, (int)Dkdv::kDkdvSmemBytes};
  r.bwd_convert = {4, 128, 0};  // bwd_dq_convert_block: one warp per row, 4 warps
  return r;
}

// All zeros for a bucket that is not one of 32..256.
inline LaunchDims launch_dims_table(int bucket) {
  switch (bucket) {
    case 32: return launch_dims_of<32>();
    case 64: return launch_dims_of<64>();
    case 96: return launch_dims_of<96>();
    case 128: return launch_dims_of<128>();
    case 192: return launch_dims_of<192>();
    case 256: return launch_dims_of<256>();
    default: return LaunchDims{};
  }
}

}  // namespace mlx_attn_cuda
