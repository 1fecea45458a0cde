// Launching the backward kernels for one (dtype, head-dim bucket); each
// src/bwd_hdim<D>_<dtype>.cu instantiates it so the translation units compile in parallel.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "bwd_kernel.cuh"
#include "bwd_traits.h"
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

// Dynamic shared memory above 48 KB must be opted into per kernel (cheap; done every launch,
// since the run_bwd_* entry points do not know the device).
template <class Kernel>
void bwd_allow_smem(Kernel* kernel, size_t smem) {
  if (smem > 48 * 1024)
    throw_if_bwd_error(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
        "cudaFuncSetAttribute(max dynamic shared memory)");
}

// In stream order.  Default mode: the delta kernel (bwd_dq_kernel<false>; it zeroes dq_accum),
// dK/dV with dQ atomics, the dq_accum -> dq conversion.  Deterministic mode: the dQ kernel
// (delta, then dq), dK/dV without atomics.  Without a dq_accum buffer the deterministic path
// runs (the caller asked for atomics but gave no workspace).  Grids are sized by the longest
// sequence (varlen CTAs past their sequence exit at once).
template <typename T, int kHeadDim>
void launch_bwd(const BwdParams& p, cudaStream_t stream) {
  using DkdvTr = typename BwdTraitsFor<T, kHeadDim>::dkdv;
  using DqTr = typename BwdTraitsFor<T, kHeadDim>::dq;
  const FwdParams& f = p.f;
  const bool atomics = !p.deterministic && p.dq_accum != nullptr;
  const unsigned q_ctas = bwd_grid(ceil_div(f.lq, DqTr::kBlockM), (long long)f.b * f.hq, "dQ");
  const unsigned k_ctas = bwd_grid(ceil_div(f.lk, DkdvTr::kBlockN), (long long)f.b * f.hkv,
                                   "dK/dV");
  if (atomics) {
    auto delta = &bwd_dq_kernel<DqTr, false>;
    bwd_allow_smem(delta, DqTr::kDqSmemBytes);
    delta<<<q_ctas, DqTr::kNThreads, DqTr::kDqSmemBytes, stream>>>(p);
    throw_if_bwd_error(cudaGetLastError(), "backward delta kernel launch");
  } else {
    auto dq = &bwd_dq_kernel<DqTr, true>;
    bwd_allow_smem(dq, DqTr::kDqSmemBytes);
    dq<<<q_ctas, DqTr::kNThreads, DqTr::kDqSmemBytes, stream>>>(p);
    throw_if_bwd_error(cudaGetLastError(), "backward dQ kernel launch");
  }

  auto dkdv = &bwd_dkdv_kernel<DkdvTr>;
  bwd_allow_smem(dkdv, DkdvTr::kDkdvSmemBytes);
  dkdv<<<k_ctas, DkdvTr::kNThreads, DkdvTr::kDkdvSmemBytes, stream>>>(p);
  throw_if_bwd_error(cudaGetLastError(), "backward dK/dV kernel launch");

  if (atomics) {
    const long long rows = bwd_rows(f);
    bwd_dq_convert_kernel<T><<<bwd_grid((rows + 3) / 4, 1, "dq conversion"), 128, 0, stream>>>(p);
    throw_if_bwd_error(cudaGetLastError(), "backward dq_accum conversion launch");
  }
}

}  // namespace mlx_attn_cuda

// One per translation unit: defines run_bwd_<tag>_<D>.
#define MA_DEFINE_BWD(T, TAG, D)                                    \
  namespace mlx_attn_cuda {                                        \
  void run_bwd_##TAG##_##D(const BwdParams& p, cudaStream_t s) {   \
    launch_bwd<T, D>(p, s);                                        \
  }                                                                \
  }
