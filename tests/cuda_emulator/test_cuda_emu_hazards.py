"""Hazards the CUDA emulator reports, on small CUDA kernels: each message names the kernel, the
source line and the offending thread (blockIdx / threadIdx)."""
import re

import numpy as np
import pytest

from cuda_emulator import CudaEmulatorError, DeviceArray, compile_source, emulator_options

SOURCE = r"""#include <cuda_runtime.h>
#include "mlx_attn_cuda/ptx.h"
using namespace mlx_attn_cuda;

__global__ void divergent_barrier(float* out) {
  if (threadIdx.x < 16) __syncthreads();  // @divergent_barrier
  out[threadIdx.x] = 1.f;
}
__global__ void divergent_shfl(float* out) {
  float x = threadIdx.x;
  if (threadIdx.x < 16) x = __shfl_xor_sync(0xffffffffu, x, 1);  // @divergent_shfl
  out[threadIdx.x] = x;
}
__global__ void partial_mma(float* out) {
  float d[4] = {0, 0, 0, 0};
  const uint32_t a[4] = {0, 0, 0, 0};
  if (threadIdx.x != 5) mma_16816<__half>(d, a, 0u, 0u);  // @partial_mma
  out[threadIdx.x] = d[0];
}
__global__ void oob_read(const float* a, float* out, int n) {
  out[threadIdx.x] = a[threadIdx.x + n];  // @oob_read
}
__global__ void oob_write(float* out, int n) {
  out[threadIdx.x + n] = 1.f;  // @oob_write
}
__global__ void shared_overflow(float* out) {
  __shared__ float s[32];
  s[threadIdx.x + 1] = 1.f;  // @shared_overflow
  __syncthreads();
  out[threadIdx.x] = s[threadIdx.x];
}
__global__ void ldmatrix_outside(float* out) {
  __shared__ uint16_t t[256];
  uint32_t r[4];
  ldsm_x4(smem_u32(t) + 512 + 16 * (threadIdx.x % 8), r[0], r[1], r[2], r[3]);  // @ldmatrix_outside
  out[threadIdx.x] = r[0];
}
__global__ void cvta_of_global(const float* g, float* out) {
  out[0] = (float)__cvta_generic_to_shared(g);  // @cvta_of_global
}
__global__ void dynamic_smem(float* out) {
  extern __shared__ float dyn[];
  dyn[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = dyn[31 - threadIdx.x];
}
__global__ void static_and_dynamic(float* out) {
  __shared__ float big[16384];  // @static_and_dynamic
  extern __shared__ float dyn[];
  big[threadIdx.x] = dyn[threadIdx.x] = 1.f;
  out[threadIdx.x] = big[threadIdx.x];
}
__global__ void missing_wait(const float* src, float* out) {
  __shared__ float s[128];
  cp_async_16(smem_u32(s) + 16 * threadIdx.x, src + 4 * threadIdx.x, true);
  cp_async_commit();
  __syncthreads();  // the cp_async_wait<0>() before it is missing
  out[threadIdx.x] = s[127 - threadIdx.x];
}
__global__ void exit_in_flight(const float* src, float* out) {
  __shared__ float s[128];
  cp_async_16(smem_u32(s) + 16 * threadIdx.x, src + 4 * threadIdx.x, true);
  cp_async_commit();
  out[threadIdx.x] = 0.f;
}
template <bool kBarrier>
__global__ void neighbour(float* out) {
  __shared__ float s[64];
  s[threadIdx.x] = threadIdx.x;
  if (kBarrier) __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 33) % 64];
}

extern "C" {
void run_divergent_barrier(float* out) { divergent_barrier<<<2, 32>>>(out); }
void run_divergent_shfl(float* out) { divergent_shfl<<<1, 32>>>(out); }
void run_partial_mma(float* out) { partial_mma<<<1, 32>>>(out); }
void run_oob_read(const float* a, float* out, int n) { oob_read<<<1, 32>>>(a, out, n); }
void run_oob_write(float* out, int n) { oob_write<<<1, 32>>>(out, n); }
void run_shared_overflow(float* out) { shared_overflow<<<1, 32>>>(out); }
void run_ldmatrix_outside(float* out) { ldmatrix_outside<<<1, 32>>>(out); }
void run_cvta_of_global(const float* g, float* out) { cvta_of_global<<<1, 1>>>(g, out); }
int run_dynamic(float* out, int bytes, int optin) {
  if (optin) {
    cudaError_t e = cudaFuncSetAttribute(dynamic_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    if (e != cudaSuccess) return (int)e;
  }
  dynamic_smem<<<1, 32, bytes>>>(out);
  return (int)cudaGetLastError();
}
void run_static_and_dynamic(float* out, int bytes) {
  cudaFuncSetAttribute(static_and_dynamic, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  static_and_dynamic<<<1, 32, bytes>>>(out);
}
void run_missing_wait(const float* src, float* out) { missing_wait<<<1, 32>>>(src, out); }
void run_exit_in_flight(const float* src, float* out) { exit_in_flight<<<1, 32>>>(src, out); }
void run_neighbour(float* out, int barrier) {
  if (barrier) neighbour<true><<<1, 64>>>(out);
  else neighbour<false><<<1, 64>>>(out);
}
}
"""


def line_of(tag: str) -> int:
    return next(i for i, line in enumerate(SOURCE.splitlines(), 1) if line.rstrip().endswith("@" + tag))


@pytest.fixture(scope="module")
def mod():
    return compile_source(SOURCE, "hazards.cu")


def out(n=64):
    return DeviceArray((n,), np.float32, name="out")


def raises(mod, fn, *args, kernel, line=None, thread=True, match=None) -> str:
    with pytest.raises(CudaEmulatorError) as info:
        mod.call(fn, *args)
    msg = str(info.value)
    assert f"kernel '{kernel}" in msg, msg
    if line is not None:
        assert f"hazards.cu line {line}" in msg, msg
    if thread:
        assert re.search(r"blockIdx=\(\d+,\d+,\d+\) threadIdx=\(\d+,\d+,\d+\)", msg), msg
    if match:
        assert re.search(match, msg), msg
    return msg


def test_barrier_in_divergent_code(mod):
    raises(mod, "run_divergent_barrier", out(), kernel="divergent_barrier", line=line_of("divergent_barrier"),
           match="__syncthreads")


def test_warp_collectives_with_lanes_missing(mod):
    msg = raises(mod, "run_divergent_shfl", out(), kernel="divergent_shfl", line=line_of("divergent_shfl"),
                 match=r"__shfl_xor_sync with mask 0xffffffff")
    assert "lanes [16,17," in msg
    raises(mod, "run_partial_mma", out(), kernel="partial_mma", line=line_of("partial_mma"),
           match=r"mma.m16n8k16 \(f16\) .* needs all 32 lanes .* lanes \[5\]")


def test_out_of_bounds_global_read_and_write(mod):
    a = DeviceArray.from_numpy(np.ones(40, np.float32), "a")
    raises(mod, "run_oob_read", a, out(), 9, kernel="oob_read", line=line_of("oob_read"),
           match=r"0 bytes past the end of device buffer 'a' \(160 bytes")
    o = out(40)
    raises(mod, "run_oob_write", o, 9, kernel="oob_write", line=line_of("oob_write"),
           match=r"past the end of device buffer 'out'")
    mod.call("run_oob_write", o, 8)  # up to the last element: in bounds
    assert (o.numpy()[8:] == 1).all()


def test_shared_memory_outside_the_arena(mod):
    raises(mod, "run_shared_overflow", out(), kernel="shared_overflow",
           match=r"out-of-bounds write to shared memory past the end of __shared__ array 's'")
    raises(mod, "run_ldmatrix_outside", out(), kernel="ldmatrix_outside", line=line_of("ldmatrix_outside"),
           match=r"ldmatrix.x4 .*outside the block's shared memory")
    raises(mod, "run_cvta_of_global", DeviceArray.from_numpy(np.ones(4, np.float32), "g"), out(),
           kernel="cvta_of_global", line=line_of("cvta_of_global"), match="not in the block's shared memory")


def test_dynamic_shared_memory_limits_per_architecture(mod):
    o = out(32)
    assert mod.call("run_dynamic", o, 32 * 4, 0) == 0
    np.testing.assert_array_equal(o.numpy(), np.arange(31, -1, -1))
    # above 48 KB only with the opt-in attribute, and never above the architecture's limit
    raises(mod, "run_dynamic", o, 60 * 1024, 0, kernel="dynamic_smem", thread=False,
           match="cudaFuncAttributeMaxDynamicSharedMemorySize")
    assert mod.call("run_dynamic", o, 60 * 1024, 1) == 0
    with emulator_options(arch="sm_86"):
        raises(mod, "run_dynamic", o, 100 * 1024, 1, kernel="dynamic_smem", thread=False, match="sm_86 allows")
    with emulator_options(arch="sm_90"):
        assert mod.call("run_dynamic", o, 200 * 1024, 1) == 0
        raises(mod, "run_dynamic", o, 228 * 1024, 1, kernel="dynamic_smem", thread=False, match="sm_90 allows")
    # static + dynamic: 64 KB + 40 KB is over sm_86's 99 KB
    with emulator_options(arch="sm_86"):
        raises(mod, "run_static_and_dynamic", o, 40 * 1024, kernel="static_and_dynamic",
               match=r"shared memory exceeds the 101376-byte limit.*'big' 65536 B")
    with emulator_options(arch="sm_80"):
        mod.call("run_static_and_dynamic", o, 40 * 1024)


def test_reading_a_cp_async_destination_before_its_wait_gives_nan(mod):
    src = DeviceArray.from_numpy(np.arange(128, dtype=np.float32), "src")
    o = out(32)
    with pytest.raises(CudaEmulatorError, match="in flight"):  # and it never waits at all
        mod.call("run_missing_wait", src, o)
    assert np.isnan(o.numpy()).all()
    raises(mod, "run_exit_in_flight", src, o, kernel="exit_in_flight",
           match="exited with 1 cp.async copies still in flight")


def test_races_change_results_across_schedules(mod):
    results = {}
    for barrier in (0, 1):
        for schedule in ("forward", "reverse", "random"):
            o = out(64)
            with emulator_options(schedule=schedule, seed=3):
                mod.call("run_neighbour", o, barrier)
            results[barrier, schedule] = o.copy_to_host()
    want = (np.arange(64) + 33) % 64
    for schedule in ("forward", "reverse", "random"):
        np.testing.assert_array_equal(results[1, schedule], want)
    racy = [results[0, s] for s in ("forward", "reverse", "random")]
    assert any(not np.array_equal(racy[0], r, equal_nan=True) for r in racy[1:])
