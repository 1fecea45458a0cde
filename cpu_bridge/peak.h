// This machine's fp32 FMA peak, per ISA: a loop of independent FMA chains held in registers (no
// memory traffic), which the binding's fma_peak runs on all threads so that benchmarks can
// report each kernel's throughput as a fraction of the limit.
#pragma once
#include <cstdint>

namespace mlx_attn_cpu {

// Independent accumulator chains: at least FMA latency x FMA pipes (4 x 2 on Zen 4 and recent
// Intel cores), and with the two operands still within AVX2's 16 registers.
constexpr int kPeakChains = 12;

// iters x kPeakChains vector FMAs of the ISA's width; returns the floating-point operations done
// (2 per lane per FMA) and stores a value depending on every one in *sink.
double fma_loop_generic(int64_t iters, float* sink);
double fma_loop_avx2(int64_t iters, float* sink);
double fma_loop_avx512(int64_t iters, float* sink);
double fma_loop_avx512bf16(int64_t iters, float* sink);
double fma_loop_avx512amx(int64_t iters, float* sink);
double fma_loop_neon(int64_t iters, float* sink);      // AArch64 builds only
double fma_loop_neonbf16(int64_t iters, float* sink);  // AArch64 builds only

// Whether this CPU runs `isa` ("generic", "avx2", "avx512", "avx512bf16", "avx512amx", "neon",
// "neonbf16"):
// driver.cpp.
bool isa_supported(const char* isa);

}  // namespace mlx_attn_cpu

#ifdef ATTN_NS  // the definition, in each isa_*.cpp (its own -m flags)
#define ATTN_PEAK_FN2(ns) fma_loop_##ns
#define ATTN_PEAK_FN(ns) ATTN_PEAK_FN2(ns)
namespace mlx_attn_cpu {
double ATTN_PEAK_FN(ATTN_NS)(int64_t iters, float* sink) {
  using namespace ATTN_NS;
  // x <- x * a + b converges to b / (1 - a) = 1: no overflow, no subnormals, however long
  const vf a = splat(0.999f), b = splat(0.001f);
  vf acc[kPeakChains];
#pragma GCC unroll 16
  for (int c = 0; c < kPeakChains; ++c) acc[c] = splat(0.5f + 0.01f * c);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kPeakChains; ++c) acc[c] = acc[c] * a + b;  // one FMA (-ffp-contract)
  }
  vf s = splat(0.0f);
  for (int c = 0; c < kPeakChains; ++c) s += acc[c];
  float t = 0.0f;
  for (int i = 0; i < W; ++i) t += s[i];
  *sink = t;
  return 2.0 * W * kPeakChains * double(iters);
}
}  // namespace mlx_attn_cpu
#endif
