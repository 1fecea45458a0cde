// Thin inline-PTX wrappers: cp.async, ldmatrix, mma.sync m16n8k16, ex2, packing.  sm_80+.
//
// Under the host CUDA emulator (emulators/cuda_emulator, which defines MLX_ATTN_CUDA_EMULATE)
// each wrapper runs its instruction's PTX semantics on the CPU (the emulator's cuda_emu_ptx.h)
// instead of the asm, and takes its caller's source line for the emulator's hazard messages.
// nvcc compiles exactly the asm below.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstdint>

#if defined(MLX_ATTN_CUDA_EMULATE)
#include "cuda_emu_ptx.h"
#define MA_SITE , int site_line = __builtin_LINE(), const char* site_file = __builtin_FILE()
#define MA_SITE_DEF , int site_line, const char* site_file
#else
#define MA_SITE
#define MA_SITE_DEF
#endif

namespace mlx_attn_cuda {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy that bypasses L1 (.cg); src_bytes = 0 zero-fills the 16 bytes
// without reading global memory (used for rows/columns outside the tensor).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid MA_SITE) {
  const int src_bytes = valid ? 16 : 0;
#if defined(MLX_ATTN_CUDA_EMULATE)
  cuda_emu::cp_async_cg_16(dst, src, src_bytes, site_line, site_file);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(MLX_ATTN_CUDA_EMULATE)
  cuda_emu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Wait until at most N of this thread's most recent commit groups are still pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(MLX_ATTN_CUDA_EMULATE)
  cuda_emu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                        uint32_t& r3 MA_SITE) {
#if defined(MLX_ATTN_CUDA_EMULATE)
  uint32_t r[4];
  cuda_emu::ldmatrix_x4(false, addr, r, site_line, site_file);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
#endif
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1,
                                              uint32_t& r2, uint32_t& r3 MA_SITE) {
#if defined(MLX_ATTN_CUDA_EMULATE)
  uint32_t r[4];
  cuda_emu::ldmatrix_x4(true, addr, r, site_line, site_file);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
#endif
}

// d += a * b for one m16n8k16 tile with float32 accumulation.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1 MA_SITE);

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4],
                                                  uint32_t b0, uint32_t b1 MA_SITE_DEF) {
#if defined(MLX_ATTN_CUDA_EMULATE)
  cuda_emu::mma_m16n8k16<false>(d, a, b0, b1, site_line, site_file);
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                         uint32_t b0, uint32_t b1 MA_SITE_DEF) {
#if defined(MLX_ATTN_CUDA_EMULATE)
  cuda_emu::mma_m16n8k16<true>(d, a, b0, b1, site_line, site_file);
#else
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Two floats -> one .b32 holding two 16-bit values, `lo` (the lower column) in the low half.
template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);

template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}

// 2^x (ex2.approx.ftz: ~2 ulp; ex2(-inf) = +0).
__device__ __forceinline__ float exp2_approx(float x) {
#if defined(MLX_ATTN_CUDA_EMULATE)
  return cuda_emu::ex2_approx_ftz(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
}

// Returns x, but the compiler cannot see through it: values derived from the result are
// computed where they are used instead of being hoisted out of the main loop (which would pin
// registers for the whole kernel: ptxas then spills the accumulators).
__device__ __forceinline__ int opaque(int x) {
  asm volatile("" : "+r"(x));
  return x;
}

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return x;
}

__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}

}  // namespace mlx_attn_cuda
