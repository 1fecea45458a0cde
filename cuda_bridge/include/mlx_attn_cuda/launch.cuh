// Launching one tile configuration; each src/fwd_hdim<D>_<dtype>.cu instantiates it for one
// (head dim, dtype) so the translation units compile in parallel.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "combine_kernel.cuh"
#include "fwd_kernel.cuh"
#include "params.h"
#include "traits.h"

namespace mlx_attn_cuda {

inline void throw_if_cuda_error(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("mlx_attn CUDA: ") + what + ": " +
                             cudaGetErrorString(err));
}

constexpr int kMaxDevices = 64;

template <class Tr>
void launch_fwd_traits(const FwdParams& p, int device, cudaStream_t stream) {
  auto kernel = &fwd_kernel<Tr>;
  constexpr size_t smem = Tr::kSmemBytes;
  if constexpr (smem > 48 * 1024) {
    // Opting in to more than 48 KB of dynamic shared memory, once per device.
    static bool done[kMaxDevices] = {};
    if (device < 0 || device >= kMaxDevices || !done[device]) {
      throw_if_cuda_error(
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
          "cudaFuncSetAttribute(max dynamic shared memory)");
      if (device >= 0 && device < kMaxDevices) done[device] = true;
    }
  }
  if (p.cu_seqlens_q != nullptr && (p.num_splits != 1 || p.mask_type != kMaskNone))
    throw std::runtime_error("mlx_attn CUDA: varlen takes num_splits == 1 and no mask");
  // Varlen: p.rows and p.lq are the longest sequence's, p.b the number of sequences; CTAs past
  // their sequence's rows exit at once (fwd_kernel.cuh).
  const long long m_blocks = ceil_div(p.rows, Tr::kBlockM);
  const long long ctas = m_blocks * p.b * p.hkv;
  if (ctas > 0x7fffffffLL)
    throw std::runtime_error("mlx_attn CUDA: too many query blocks for one launch");
  dim3 grid((unsigned)ctas, (unsigned)p.num_splits, 1);
  kernel<<<grid, Tr::kNThreads, smem, stream>>>(p);
  throw_if_cuda_error(cudaGetLastError(), "forward kernel launch");
  if (p.num_splits > 1) {
    const long long rows = (long long)p.b * p.hq * p.lq;
    const long long blocks = (rows + kCombineRowsPerCta - 1) / kCombineRowsPerCta;
    combine_kernel<typename Tr::T><<<(unsigned)blocks, 32 * kCombineRowsPerCta, 0, stream>>>(p);
    throw_if_cuda_error(cudaGetLastError(), "split-KV combine kernel launch");
  }
}

template <typename T, int kHeadDim>
void launch_fwd(const FwdParams& p, int config, int device, cudaStream_t stream) {
  if (config == kPrefill) {
    if (p.num_splits != 1)
      throw std::runtime_error("mlx_attn CUDA: the prefill configuration takes num_splits == 1");
    launch_fwd_traits<typename TraitsFor<T, kHeadDim, kPrefill>::type>(p, device, stream);
  } else {
    launch_fwd_traits<typename TraitsFor<T, kHeadDim, kDecode>::type>(p, device, stream);
  }
}

}  // namespace mlx_attn_cuda

// One per translation unit: defines run_fwd_<tag>_<D>.
#define MA_DEFINE_FWD(T, TAG, D)                                                         \
  namespace mlx_attn_cuda {                                                             \
  void run_fwd_##TAG##_##D(const FwdParams& p, int config, int device, cudaStream_t s) { \
    launch_fwd<T, D>(p, config, device, s);                                             \
  }                                                                                     \
  }
