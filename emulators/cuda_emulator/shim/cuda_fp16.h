// CUDA emulator stand-in for <cuda_fp16.h>: __half, __half2 and the conversions the kernels use.
#pragma once
#include "cuda_emu.h"
#include "cuda_emu_half.h"

struct __align__(2) __half : cuda_emu::Half16<__half, cuda_emu::float_to_half_bits, cuda_emu::half_bits_to_float> {
  using Half16::Half16;
  __half() = default;
};
template <> struct cuda_emu::is_half16<__half> : std::true_type {};

struct __align__(4) __half2 {
  __half x, y;  // x in the low 16 bits
  __half2() = default;
  __half2(__half a, __half b) : x(a), y(b) {}
};

typedef __half half;
typedef __half2 half2;

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return cuda_emu::half_bits_to_float(h.__x); }
inline __half2 __floats2half2_rn(float lo, float hi) { return __half2(__half(lo), __half(hi)); }
inline __half2 __float2half2_rn(float f) { return __half2(__half(f), __half(f)); }
inline __half2 __halves2half2(__half lo, __half hi) { return __half2(lo, hi); }
inline float2 __half22float2(__half2 h) { return make_float2(__half2float(h.x), __half2float(h.y)); }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __ushort_as_half(unsigned short u) { return __half::from_bits(u); }
inline __half __short_as_half(short u) { return __half::from_bits((uint16_t)u); }
inline bool __hisnan(__half h) { return (h.__x & 0x7FFF) > 0x7C00; }
inline int __hisinf(__half h) { return (h.__x & 0x7FFF) == 0x7C00 ? ((h.__x & 0x8000) ? -1 : 1) : 0; }
inline __half __hadd(__half a, __half b) { return a + b; }
inline __half __hsub(__half a, __half b) { return a - b; }
inline __half __hmul(__half a, __half b) { return a * b; }
inline __half __hdiv(__half a, __half b) { return a / b; }
inline __half __hneg(__half a) { return -a; }
// fma rounds once: the float fma of two halves is exact before the final rounding to half
inline __half __hfma(__half a, __half b, __half c) { return __half(fmaf(float(a), float(b), float(c))); }
inline __half __hmax(__half a, __half b) { return __half(fmaxf(float(a), float(b))); }
inline __half __hmin(__half a, __half b) { return __half(fminf(float(a), float(b))); }
