// Launching the backward kernels for one (dtype, head-dim bucket); each
// src/bwd_hdim<D>_<dtype>.cu instantiates it so the translation units compile in parallel.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "bwd_kernel.cuh"
#include "params.h"

namespace mlx_attn_cuda {

inline void throw_if_bwd_error(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("mlx_attn CUDA: ") + what + ": " +
                             cudaGetErrorString(err));
}

inline unsigned bwd_grid(long long blocks_per_head, long long heads, const char* what) {
  const long long n = blocks_per_head * heads;
  if (n > 0x7fffffffLL)
    throw std::runtime_error(std::string("mlx_attn CUDA: too many blocks for one ") + what +
                             " launch");
  return (unsigned)n;
}

// Kernels run in stream order: delta, then dK/dV and dQ (both read delta; independent).
template <typename T, int kHeadDim>
void launch_bwd(const BwdParams& p, cudaStream_t stream) {
  constexpr int DT = kHeadDim / 32;
  const FwdParams& f = p.f;
  const long long rows = (long long)f.b * f.hq * f.lq;
  bwd_delta_kernel<T><<<bwd_grid((rows + 3) / 4, 1, "delta"), 128, 0, stream>>>(p);
  throw_if_bwd_error(cudaGetLastError(), "backward delta kernel launch");
  constexpr int kKeys = kBwdWarps * kBwdKeysPerWarp;
  bwd_dkdv_kernel<T, DT><<<bwd_grid((f.lk + kKeys - 1) / kKeys, (long long)f.b * f.hkv, "dK/dV"),
                           kBwdWarps * 32, 0, stream>>>(p);
  throw_if_bwd_error(cudaGetLastError(), "backward dK/dV kernel launch");
  constexpr int kQueries = kBwdWarps * kBwdQueriesPerWarp;
  bwd_dq_kernel<T, DT><<<bwd_grid((f.lq + kQueries - 1) / kQueries, (long long)f.b * f.hq, "dQ"),
                         kBwdWarps * 32, 0, stream>>>(p);
  throw_if_bwd_error(cudaGetLastError(), "backward dQ kernel launch");
}

}  // namespace mlx_attn_cuda

// One per translation unit: defines run_bwd_<tag>_<D>.
#define MA_DEFINE_BWD(T, TAG, D)                                    \
  namespace mlx_attn_cuda {                                        \
  void run_bwd_##TAG##_##D(const BwdParams& p, cudaStream_t s) {   \
    launch_bwd<T, D>(p, s);                                        \
  }                                                                \
  }
