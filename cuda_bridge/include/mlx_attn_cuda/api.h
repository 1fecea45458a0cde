// The host interface of the kernel library, included by the nanobind binding (plain C++: no
// CUDA headers, so the binding compiles with the host compiler).
#pragma once

#include <string>
#include <vector>

#include "params.h"

namespace mlx_attn_cuda {

struct DeviceInfo {
  int major = 0, minor = 0;      // compute capability
  int sms = 0;                   // multiprocessors
  int smem_optin = 0;            // max dynamic shared memory per block (opt-in), bytes
  std::string name;
};

// Number of CUDA devices, or 0 with `error` set (no driver, no device, ...).  Never throws.
int device_count(std::string* error);

// Properties of `device`; returns false with `error` set if it cannot be queried.
bool device_info(int device, DeviceInfo* info, std::string* error);

// Empty if the library has a kernel image this device can run (checked with
// cudaFuncGetAttributes), else the CUDA error text.
std::string kernel_image_error(int device);

// Head-dim buckets compiled in (a reduced build may omit some), and the CUDA architectures.
std::vector<int> built_head_dims();
std::string built_archs();

// Tile configuration and KV split count for this problem on `device` (p: shapes, windows).
struct PlanResult {
  int config = 0;
  int num_splits = 1;
};
PlanResult plan(const FwdParams& p, int device);
// The same for a fused varlen launch (p.b sequences, p.lq / p.lk / p.rows the longest's):
// blocks.h make_plan_varlen, always one split.
PlanResult plan_varlen(const FwdParams& p, int device);

// Threads, dynamic shared memory and rows per CTA of each kernel (launch_dims.cuh), for the
// MLX launcher, which starts the flat-argument entry points (mlx_entries.cuh) itself.
struct KernelDims {
  int rows = 0;     // query rows (keys for dK/dV, lse rows for the conversion) per CTA
  int threads = 0;  // threads per CTA
  int smem = 0;     // dynamic shared memory, bytes
};

struct LaunchDims {
  KernelDims prefill, decode, combine;      // forward: launch.cuh launch_fwd_traits
  KernelDims bwd_dq, bwd_dkdv, bwd_convert;  // backward: bwd_launch.cuh launch_bwd
};
// Zeros for a bucket that is not one of 32..256.
LaunchDims launch_dims(int bucket);

// Launch on `stream` (a cudaStream_t as an integer; 0 = the legacy default stream) of
// `device`.  p must be fully checked (binding.cpp; varlen: binding_varlen.cpp, p.cu_seqlens_q/k
// set, num_splits 1, no mask).  Throws std::runtime_error on a CUDA error
// or an unsupported head dim / configuration.
void run_fwd(FwdParams& p, int dtype, int config, int device, uintptr_t stream);

// The backward (delta, dK/dV, dQ kernels) on `stream`; p checked by binding.cpp.  Writes
// p.delta, p.dq, p.dk, p.dv.  p.deterministic / p.dq_accum select the dQ mode (params.h); the
// kernels read p.f.cu_seqlens_q/k themselves (fused varlen).
void run_bwd(BwdParams& p, int dtype, int device, uintptr_t stream);

}  // namespace mlx_attn_cuda
