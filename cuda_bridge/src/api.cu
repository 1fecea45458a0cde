// Host side of the kernel library: device queries, planning, dispatch on (dtype, head dim).
#include <cuda_runtime.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "mlx_attn_cuda/api.h"
#include "mlx_attn_cuda/blocks.h"
#include "mlx_attn_cuda/fwd_kernel.cuh"
#include "mlx_attn_cuda/launch_dims.cuh"
#include "mlx_attn_cuda/traits.h"

#ifndef MLX_ATTN_CUDA_ARCHS
#define MLX_ATTN_CUDA_ARCHS "unknown"
#endif

// MA_FOR_EACH_HDIM(X) expands X(D) for every head-dim bucket compiled into this build.
#if MLX_ATTN_HDIM_32
#define MA_HDIM_32(X) X(32)
#else
#define MA_HDIM_32(X)
#endif
#if MLX_ATTN_HDIM_64
#define MA_HDIM_64(X) X(64)
#else
#define MA_HDIM_64(X)
#endif
#if MLX_ATTN_HDIM_96
#define MA_HDIM_96(X) X(96)
#else
#define MA_HDIM_96(X)
#endif
#if MLX_ATTN_HDIM_128
#define MA_HDIM_128(X) X(128)
#else
#define MA_HDIM_128(X)
#endif
#if MLX_ATTN_HDIM_192
#define MA_HDIM_192(X) X(192)
#else
#define MA_HDIM_192(X)
#endif
#if MLX_ATTN_HDIM_256
#define MA_HDIM_256(X) X(256)
#else
#define MA_HDIM_256(X)
#endif
#define MA_FOR_EACH_HDIM(X) \
  MA_HDIM_32(X) MA_HDIM_64(X) MA_HDIM_96(X) MA_HDIM_128(X) MA_HDIM_192(X) MA_HDIM_256(X)

namespace mlx_attn_cuda {

// Defined by src/fwd_hdim<D>_<dtype>.cu and src/bwd_hdim<D>_<dtype>.cu (only for the head dims compiled in).
#define MA_DECLARE(D)                                                                   \
  void run_fwd_fp16_##D(const FwdParams&, int, int, cudaStream_t);                     \
  void run_fwd_bf16_##D(const FwdParams&, int, int, cudaStream_t);                     \
  void run_bwd_fp16_##D(const BwdParams&, cudaStream_t);                               \
  void run_bwd_bf16_##D(const BwdParams&, cudaStream_t);
MA_FOR_EACH_HDIM(MA_DECLARE)
#undef MA_DECLARE

// The planner's numbers must be the traits' numbers (tile_sizes reads them from the traits
// table; this checks the kernels' own element types and the config constants).
template <typename T, int D>
constexpr bool tiles_match() {
  using P = typename TraitsFor<T, D, kPrefill>::type;
  using Dc = typename TraitsFor<T, D, kDecode>::type;
  constexpr TileSizes t = tile_sizes(D);
  return t.prefill_m == P::kBlockM && t.prefill_n == P::kBlockN && t.decode_m == Dc::kBlockM &&
         t.decode_n == Dc::kBlockN;
}
#define MA_CHECK_TILES(D)                                                   \
  static_assert(tiles_match<__half, D>() && tiles_match<__nv_bfloat16, D>(), \
                "planner tile sizes differ from traits.h (D=" #D ")");
MA_CHECK_TILES(32)
MA_CHECK_TILES(64)
MA_CHECK_TILES(96)
MA_CHECK_TILES(128)
MA_CHECK_TILES(192)
MA_CHECK_TILES(256)
#undef MA_CHECK_TILES

__global__ void probe_kernel() {}

int device_count(std::string* error) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (error) *error = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky-less error state
    return 0;
  }
  if (n == 0 && error) *error = "cudaGetDeviceCount returned 0 devices";
  return n;
}

namespace {

// Device properties, queried once per device: cudaGetDeviceProperties fills the whole struct
// (microseconds to milliseconds), and every fwd/bwd call checks the capability and the planner
// reads the SM count.  Only successes are kept (a failing device is asked again next time).
// A mutex guards the table: calls may come from several threads (free-threaded Python, C++).
std::mutex g_props_mutex;
std::unordered_map<int, DeviceInfo> g_props;

}  // namespace

bool device_info(int device, DeviceInfo* info, std::string* error) {
  {
    std::lock_guard<std::mutex> lock(g_props_mutex);
    const auto it = g_props.find(device);
    if (it != g_props.end()) {
      *info = it->second;
      return true;
    }
  }
  // Queried outside the lock (a slow call must not serialise other devices' lookups); two
  // threads may both query a new device once, and store the same value.
  cudaDeviceProp prop;
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    if (error) *error = cudaGetErrorString(err);
    cudaGetLastError();
    return false;
  }
  DeviceInfo got;
  got.major = prop.major;
  got.minor = prop.minor;
  got.sms = prop.multiProcessorCount;
  got.smem_optin = (int)prop.sharedMemPerBlockOptin;
  got.name = prop.name;
  {
    std::lock_guard<std::mutex> lock(g_props_mutex);
    g_props.emplace(device, got);
  }
  *info = got;
  return true;
}

std::string kernel_image_error(int device) {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
  cudaError_t err = cudaSetDevice(device);
  if (err == cudaSuccess) {
    cudaFuncAttributes attr;
    // The probe is compiled for the same architectures as every kernel of the library.
    err = cudaFuncGetAttributes(&attr, (const void*)&probe_kernel);
  }
  if (previous >= 0) cudaSetDevice(previous);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return std::string(cudaGetErrorString(err)) + " (built for CUDA architectures " +
           MLX_ATTN_CUDA_ARCHS + ")";
  }
  return "";
}

std::vector<int> built_head_dims() {
  std::vector<int> dims;
#if MLX_ATTN_HDIM_32
  dims.push_back(32);
#endif
#if MLX_ATTN_HDIM_64
  dims.push_back(64);
#endif
#if MLX_ATTN_HDIM_96
  dims.push_back(96);
#endif
#if MLX_ATTN_HDIM_128
  dims.push_back(128);
#endif
#if MLX_ATTN_HDIM_192
  dims.push_back(192);
#endif
#if MLX_ATTN_HDIM_256
  dims.push_back(256);
#endif
  return dims;
}

std::string built_archs() { return MLX_ATTN_CUDA_ARCHS; }

LaunchDims launch_dims(int bucket) { return launch_dims_table(bucket); }

namespace {

// Number of SMs of `device`, from the cached properties (device_info).
int sm_count(int device) {
  DeviceInfo info;
  if (device_info(device, &info, nullptr) && info.sms > 0) return info.sms;
  return 108;  // planning only; an A100's count is a harmless default
}

void set_device(int device) {
  int current = -1;
  if (cudaGetDevice(&current) != cudaSuccess || current != device) {
    const cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess)
      throw std::runtime_error(std::string("mlx_attn CUDA: cudaSetDevice(") +
                               std::to_string(device) + "): " + cudaGetErrorString(err));
  }
}

}  // namespace

PlanResult plan(const FwdParams& p, int device) {
  const int bucket = head_dim_bucket(p.d, p.dv);
  const TileSizes t = tile_sizes(bucket);
  const Plan pl = make_plan(p, sm_count(device), t.prefill_m, t.decode_m, t.decode_n);
  PlanResult r;
  r.config = pl.config;
  r.num_splits = pl.num_splits;
  return r;
}

PlanResult plan_varlen(const FwdParams& p, int device) {
  const TileSizes t = tile_sizes(head_dim_bucket(p.d, p.dv));
  const Plan pl = make_plan_varlen(p, sm_count(device), t.prefill_m, t.decode_m);
  PlanResult r;
  r.config = pl.config;
  r.num_splits = pl.num_splits;
  return r;
}

void run_fwd(FwdParams& p, int dtype, int config, int device, uintptr_t stream_int) {
  set_device(device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_int);
  const int bucket = head_dim_bucket(p.d, p.dv);
  const bool bf16 = dtype == kBFloat16;
#define MA_CASE(D)                                                     \
  case D:                                                              \
    if (bf16)                                                          \
      run_fwd_bf16_##D(p, config, device, stream);                     \
    else                                                               \
      run_fwd_fp16_##D(p, config, device, stream);                     \
    return;
  switch (bucket) {
    MA_FOR_EACH_HDIM(MA_CASE)
    default:
      break;
  }
#undef MA_CASE
  throw std::runtime_error("mlx_attn CUDA: head dim bucket " + std::to_string(bucket) +
                           " (D=" + std::to_string(p.d) + ", Dv=" + std::to_string(p.dv) +
                           ") is not compiled into this build");
}

void run_bwd(BwdParams& p, int dtype, int device, uintptr_t stream_int) {
  set_device(device);
  cudaStream_t stream = reinterpret_cast<cudaStream_t>(stream_int);
  const int bucket = head_dim_bucket(p.f.d, p.f.dv);
  const bool bf16 = dtype == kBFloat16;
#define MA_CASE(D)                         \
  case D:                                  \
    if (bf16)                              \
      run_bwd_bf16_##D(p, stream);         \
    else                                   \
      run_bwd_fp16_##D(p, stream);         \
    return;
  switch (bucket) {
    MA_FOR_EACH_HDIM(MA_CASE)
    default:
      break;
  }
#undef MA_CASE
  throw std::runtime_error("mlx_attn CUDA: backward head dim bucket " + std::to_string(bucket) +
                           " is not compiled into this build");
}

}  // namespace mlx_attn_cuda
