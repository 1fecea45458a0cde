// CUDA emulator stand-in for <cuda_bf16.h>: __nv_bfloat16, __nv_bfloat162 and conversions.
#pragma once
#include "cuda_emu.h"
#include "cuda_emu_half.h"

struct __align__(2) __nv_bfloat16
    : cuda_emu::Half16<__nv_bfloat16, cuda_emu::float_to_bf16_bits, cuda_emu::bf16_bits_to_float> {
  using Half16::Half16;
  __nv_bfloat16() = default;
};
template <> struct cuda_emu::is_half16<__nv_bfloat16> : std::true_type {};

struct __align__(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;  // x in the low 16 bits
  __nv_bfloat162() = default;
  __nv_bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) : x(a), y(b) {}
};

typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;

inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 h) { return cuda_emu::bf16_bits_to_float(h.__x); }
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
  return __nv_bfloat162(__nv_bfloat16(lo), __nv_bfloat16(hi));
}
inline __nv_bfloat162 __float2bfloat162_rn(float f) { return __nv_bfloat162(__nv_bfloat16(f), __nv_bfloat16(f)); }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 lo, __nv_bfloat16 hi) { return __nv_bfloat162(lo, hi); }
inline float2 __bfloat1622float2(__nv_bfloat162 h) {
  return make_float2(__bfloat162float(h.x), __bfloat162float(h.y));
}
inline float __low2float(__nv_bfloat162 h) { return __bfloat162float(h.x); }
inline float __high2float(__nv_bfloat162 h) { return __bfloat162float(h.y); }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16::from_bits(u); }
inline bool __hisnan(__nv_bfloat16 h) { return (h.__x & 0x7FFF) > 0x7F80; }
