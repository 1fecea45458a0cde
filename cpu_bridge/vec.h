// Vector primitives for one ISA, written with GCC/Clang vector extensions.
//
// Included only by the per-ISA translation units (isa_*.cpp), each of which defines ATTN_W (lanes
// per vector) and ATTN_NS (a namespace unique to that TU) and is compiled with its own -m flags.
// Everything here has internal linkage so no code built for one ISA can leak into another TU.
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(ATTN_NEON)  // isa_neon.cpp: the arm64 kernels written with NEON intrinsics
#if !defined(__aarch64__)
#error "ATTN_NEON needs an AArch64 target"
#endif
#include <arm_neon.h>
#endif

#include "attn.h"

#if !defined(ATTN_W) || !defined(ATTN_NS)
#error "define ATTN_W and ATTN_NS before including vec.h"
#endif

namespace mlx_attn_cpu {
namespace ATTN_NS {
namespace {

constexpr int W = ATTN_W;
typedef float vf __attribute__((vector_size(W * 4)));
typedef int32_t vi __attribute__((vector_size(W * 4)));
typedef uint32_t vu __attribute__((vector_size(W * 4)));

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -INFINITY;

inline vf loadv(const float* p) { vf v; std::memcpy(&v, p, sizeof v); return v; }
inline void storev(float* p, vf v) { std::memcpy(p, &v, sizeof v); }
inline vf splat(float x) { vf v = {}; return v + x; }
inline vi splati(int32_t x) { vi v = {}; return v + x; }
inline vi iota() { vi v; for (int i = 0; i < W; ++i) v[i] = i; return v; }
inline vf vmax(vf a, vf b) { return a > b ? a : b; }   // NaN in a is dropped, as max-reduction
inline vf vmin(vf a, vf b) { return a < b ? a : b; }
inline vf sel(vi m, vf a, vf b) { return m ? a : b; }
// acc + s * b, the micro-kernels' one operation: NEON's fmla by element (no broadcast register)
#if defined(ATTN_NEON)
inline vf fma_bcast(vf acc, float s, vf b) {
  return (vf)vfmaq_n_f32((float32x4_t)acc, (float32x4_t)b, s);
}
#else
inline vf fma_bcast(vf acc, float s, vf b) { return acc + s * b; }  // FMA by -ffp-contract
#endif

// 2^x with ~1e-7 relative error; exactly 0 for x < -125 (and -inf); NaN stays NaN.
// The polynomial is 2^f on [-0.5, 0.5]; the integer part goes into the exponent bits.
inline vf exp2_poly(vf f) {
  vf p = splat(0.00015337577497120947f);
  p = p * f + 0.0013399859890341759f;
  p = p * f + 0.009618519805371761f;
  p = p * f + 0.05550329014658928f;
  p = p * f + 0.24022646248340607f;
  p = p * f + 0.6931471824645996f;
  return p * f + 1.0f;
}
#if defined(__AVX512F__) && ATTN_W == 16
// AVX-512: vscalefps applies 2^n with IEEE underflow to 0 and overflow to inf, which spares the
// clamps, compares and bit arithmetic of the portable version (this is the softmax's hot loop).
// max(-200, x) keeps NaN (vmaxps returns its second operand when either is NaN) and maps -inf
// to a finite argument whose result underflows to exactly 0.
inline vf exp2v(vf x) {
  const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-200.0f), (__m512)x);
  const __m512 n = _mm512_roundscale_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const vf p = exp2_poly((vf)_mm512_sub_ps(xc, n));
  return (vf)_mm512_scalef_ps((__m512)p, n);
}
#elif defined(ATTN_NEON)
// NEON: frintn rounds to the nearest integer, so x - n stays in [-0.5, 0.5] with no magic-number
// trick; the integer part is converted and added to the exponent bits. Same limits as below:
// 0 under -125 (and for -inf), x clamped to 127, NaN through (fmin keeps NaN, fcvtzs gives 0).
inline vf exp2v(vf x) {
  const float32x4_t xv = (float32x4_t)x;
  const uint32x4_t under = vcltq_f32(xv, vdupq_n_f32(-125.0f));
  const float32x4_t xc = vminq_f32(xv, vdupq_n_f32(127.0f));
  const float32x4_t n = vrndnq_f32(xc);
  const float32x4_t p = (float32x4_t)exp2_poly((vf)vsubq_f32(xc, n));
  const int32x4_t bits = vaddq_s32(vreinterpretq_s32_f32(p), vshlq_n_s32(vcvtq_s32_f32(n), 23));
  return (vf)vbslq_f32(under, vdupq_n_f32(0.0f), vreinterpretq_f32_s32(bits));
}
#else
inline vf exp2v(vf x) {
  vi under = x < -125.0f;
  x = x > 127.0f ? splat(127.0f) : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  vf t = x + magic;
  vf n = t - magic;
  vf p = exp2_poly(x - n);          // x - n in [-0.5, 0.5]
  vu ni = (vu)t - (vu)splat(magic);
  vu bits = (vu)p + (ni << 23);
  return under ? splat(0.0f) : (vf)bits;
}
#endif

// tanh with ~2e-7 absolute error.
inline vf tanhv(vf y) {
  const vu sign = (vu)splati(int32_t(0x80000000u));
  vu yb = (vu)y;
  vf a = (vf)(yb & ~sign);
  a = a > 9.0f ? splat(9.0f) : a;
  vf t = exp2v(a * (-2.0f * kLog2e));
  vf r = (1.0f - t) / (1.0f + t);
  return (vf)((vu)r | (yb & sign));
}

// ---- scalar conversions (not hot: used when packing tiles and writing outputs) ----
inline float bf16_to_f32(uint16_t h) { uint32_t u = uint32_t(h) << 16; float f; std::memcpy(&f, &u, 4); return f; }
inline uint16_t f32_to_bf16(float f) {
  uint32_t u; std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);
  } else if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do { man <<= 1; ++e; } while (!(man & 0x400u));
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else {
    u = sign | ((exp + 112) << 23) | (man << 13);
  }
  float f; std::memcpy(&f, &u, 4); return f;
}
inline uint16_t f32_to_f16(float f) {
  uint32_t u; std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);           // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);          // overflow (rounds to inf)
  if (a < 0x38800000u) {                                           // subnormal or zero in f16
    float af; std::memcpy(&af, &a, 4);
    float scaled = af * 16777216.0f;                               // * 2^24: units of 2^-24
    uint32_t m = uint32_t(std::nearbyint(scaled));                 // round half to even
    return uint16_t(sign | m);
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u);                      // round to nearest even
  return uint16_t(sign | ((r - 0x38000000u) >> 13));
}

template <int DT> inline float to_f32(const void* base, int64_t i) {
  if constexpr (DT == F32) return static_cast<const float*>(base)[i];
  else if constexpr (DT == BF16) return bf16_to_f32(static_cast<const uint16_t*>(base)[i]);
  else return f16_to_f32(static_cast<const uint16_t*>(base)[i]);
}
template <int DT> inline void from_f32(void* base, int64_t i, float x) {
  if constexpr (DT == F32) static_cast<float*>(base)[i] = x;
  else if constexpr (DT == BF16) static_cast<uint16_t*>(base)[i] = f32_to_bf16(x);
  else static_cast<uint16_t*>(base)[i] = f32_to_f16(x);
}
// the output o (float32 when p.out_f32, else the problem's dtype)
template <int DT> inline void store_o(const Problem& p, int64_t i, float x) {
  if (p.out_f32) static_cast<float*>(p.o)[i] = x;
  else from_f32<DT>(p.o, i, x);
}
template <int DT> inline float load_o(const Problem& p, int64_t i) {
  return p.out_f32 ? static_cast<const float*>(p.o)[i] : to_f32<DT>(p.o, i);
}
// n contiguous-or-strided elements to float32, multiplied by `mul`
template <int DT> inline void convert_row(float* dst, const void* src, int64_t off, int64_t stride,
                                          int n, float mul) {
  if (stride == 1) {
#if defined(ATTN_NEON)
    // whole vectors in registers: fcvtl widens fp16, ushll by 16 puts bf16 in the high half
    if constexpr (DT != F32) {
      const uint16_t* s = static_cast<const uint16_t*>(src) + off;
      int i = 0;
      for (; i + 4 <= n; i += 4) {
        const uint16x4_t h = vld1_u16(s + i);
        const float32x4_t f = DT == F16 ? vcvt_f32_f16(vreinterpret_f16_u16(h))
                                        : vreinterpretq_f32_u32(vshll_n_u16(h, 16));
        vst1q_f32(dst + i, vmulq_n_f32(f, mul));
      }
      for (; i < n; ++i) dst[i] = to_f32<DT>(s, i) * mul;
      return;
    }
#endif
    if constexpr (DT == F32) {
      const float* s = static_cast<const float*>(src) + off;
      for (int i = 0; i < n; ++i) dst[i] = s[i] * mul;
    } else if constexpr (DT == BF16) {
      const uint16_t* s = static_cast<const uint16_t*>(src) + off;
      for (int i = 0; i < n; ++i) {
        uint32_t u = uint32_t(s[i]) << 16; float f; std::memcpy(&f, &u, 4); dst[i] = f * mul;
      }
    } else {
      for (int i = 0; i < n; ++i) dst[i] = to_f32<DT>(src, off + i) * mul;
    }
  } else {
    for (int i = 0; i < n; ++i) dst[i] = to_f32<DT>(src, off + i * stride) * mul;
  }
}

inline float mask_value(int type, const void* m, int64_t i) {
  switch (type) {
    case MT_BOOL: return static_cast<const uint8_t*>(m)[i] ? 0.0f : kNegInf;
    case MT_F32: return static_cast<const float*>(m)[i];
    case MT_F16: return f16_to_f32(static_cast<const uint16_t*>(m)[i]);
    default: return bf16_to_f32(static_cast<const uint16_t*>(m)[i]);
  }
}

// A mask value in the kernels' log2 units. A finite value stays finite, saturating at +-FLT_MAX:
// finfo(float32).min * log2(e) would overflow to -inf, which would remove the key (SPEC: only
// -inf removes one; a row of finfo.min is a softmax over its finite scores).
inline float mask_log2(int type, const void* m, int64_t i) {
  const float v = mask_value(type, m, i);
  const float w = v * kLog2e;
  return (std::isinf(w) && !std::isinf(v)) ? std::copysign(FLT_MAX, v) : w;
}

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
template <class T> inline T imin(T a, T b) { return a < b ? a : b; }
template <class T> inline T imax(T a, T b) { return a > b ? a : b; }

}  // namespace
}  // namespace ATTN_NS
}  // namespace mlx_attn_cpu
