// CUDA emulator: __half and __nv_bfloat16 (+ the 2-vectors) as 16-bit storage types whose
// arithmetic is done in float and rounded to nearest even, as the GPU's f16/bf16 instructions
// round. Conversions from float round to nearest even, overflow gives inf, and NaN becomes the
// canonical NaN 0x7FFF (what cvt.rn.f16.f32 / cvt.rn.bf16.f32 produce).
#pragma once
#include <stdint.h>
#include <string.h>

#include <type_traits>

namespace cuda_emu {

inline float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
inline uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

inline uint16_t float_to_half_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return 0x7FFF;                   // NaN
  if (a >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  // rounds to >= 65520: inf
  if (a < 0x38800000u) {                                 // below 2^-14: subnormal half (or 0)
    if (a < 0x33000000u) return (uint16_t)sign;          // below 2^-25: rounds to 0
    const uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;
    const int shift = 126 - (int)e;                      // 14..24: value = m * 2^(e - 150)
    const uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    return (uint16_t)(sign | (q + (rem > half || (rem == half && (q & 1)))));
  }
  // normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits
  const uint32_t r = a - 0x38000000u;
  const uint32_t q = r >> 13, rem = r & 0x1FFFu;
  return (uint16_t)(sign | (q + (rem > 0x1000u || (rem == 0x1000u && (q & 1)))));
}

inline float half_bits_to_float_slow(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return bits_float(sign | 0x7F800000u | (m << 13));
  if (e != 0) return bits_float(sign | ((e + 112) << 23) | (m << 13));
  if (m == 0) return bits_float(sign);
  return (sign ? -1.f : 1.f) * (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
}

// half -> float through a table: the mma emulation converts 64 values per lane per call.
struct HalfTable {
  float v[65536];
  HalfTable() { for (uint32_t i = 0; i < 65536; ++i) v[i] = half_bits_to_float_slow((uint16_t)i); }
};
inline const HalfTable& half_table() { static const HalfTable t; return t; }
inline float half_bits_to_float(uint16_t h) { return half_table().v[h]; }

inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FFF;   // NaN
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);  // RNE; overflow carries into inf
}
inline float bf16_bits_to_float(uint16_t b) { return bits_float((uint32_t)b << 16); }

// The common shape of __half and __nv_bfloat16: 16 bits, float arithmetic, rounded results.
template <class Self, uint16_t (*kFrom)(float), float (*kTo)(uint16_t)>
struct Half16 {
  uint16_t __x;
  Half16() = default;
  Half16(float f) : __x(kFrom(f)) {}
  Half16(double f) : __x(kFrom((float)f)) {}
  Half16(int i) : __x(kFrom((float)i)) {}
  Half16(unsigned i) : __x(kFrom((float)i)) {}
  Half16(long long i) : __x(kFrom((float)i)) {}
  operator float() const { return kTo(__x); }
  static Self from_bits(uint16_t b) { Self s; s.__x = b; return s; }
  Self& self() { return *static_cast<Self*>(this); }
  Self& operator+=(Self b) { return self() = Self(float(self()) + float(b)); }
  Self& operator-=(Self b) { return self() = Self(float(self()) - float(b)); }
  Self& operator*=(Self b) { return self() = Self(float(self()) * float(b)); }
  Self& operator/=(Self b) { return self() = Self(float(self()) / float(b)); }
};

// Operators as constrained templates (found by ADL through the base class): a mixed
// expression such as h * 2.0f then uses float arithmetic instead of being ambiguous between
// the two implicit conversions.
template <class S> struct is_half16 : std::false_type {};
template <class S> using if_half16 = typename std::enable_if<is_half16<S>::value, S>::type;
template <class S> using if_half16_bool = typename std::enable_if<is_half16<S>::value, bool>::type;
template <class S> if_half16<S> operator+(S a, S b) { return S(float(a) + float(b)); }
template <class S> if_half16<S> operator-(S a, S b) { return S(float(a) - float(b)); }
template <class S> if_half16<S> operator*(S a, S b) { return S(float(a) * float(b)); }
template <class S> if_half16<S> operator/(S a, S b) { return S(float(a) / float(b)); }
template <class S> if_half16<S> operator-(S a) { return S::from_bits((uint16_t)(a.__x ^ 0x8000u)); }
template <class S> if_half16_bool<S> operator==(S a, S b) { return float(a) == float(b); }
template <class S> if_half16_bool<S> operator!=(S a, S b) { return float(a) != float(b); }
template <class S> if_half16_bool<S> operator<(S a, S b) { return float(a) < float(b); }
template <class S> if_half16_bool<S> operator>(S a, S b) { return float(a) > float(b); }
template <class S> if_half16_bool<S> operator<=(S a, S b) { return float(a) <= float(b); }
template <class S> if_half16_bool<S> operator>=(S a, S b) { return float(a) >= float(b); }

}  // namespace cuda_emu
