// MSL emulator shim: everything a translated kernel sees before its own source.
// Mirrors what MLX prepends to a custom kernel (metal_stdlib, `using namespace
// metal;` and a small part of MLX's kernels/utils.h).
#pragma once
#include "msl_simd.h"

// ---- MSL's predefined constants (float, and the common half ones)
#ifndef INFINITY
#define INFINITY (__builtin_inff())
#endif
#ifndef NAN
#define NAN (__builtin_nanf(""))
#endif
#ifndef HUGE_VALF
#define HUGE_VALF (__builtin_inff())
#endif
#define MAXFLOAT __FLT_MAX__
#define FLT_MAX __FLT_MAX__
#define FLT_MIN __FLT_MIN__
#define FLT_EPSILON __FLT_EPSILON__
#define HALF_MAX (::metal::half::from_bits(0x7BFF))
#define HALF_MIN (::metal::half::from_bits(0x0400))
#define HALF_EPSILON (::metal::half::from_bits(0x1400))
#define M_E_F 2.71828182845904523536f
#define M_LOG2E_F 1.44269504088896340736f
#define M_LOG10E_F 0.434294481903251827651f
#define M_LN2_F 0.693147180559945309417f
#define M_LN10_F 2.30258509299404568402f
#define M_PI_F 3.14159265358979323846f
#define M_PI_2_F 1.57079632679489661923f
#define M_PI_4_F 0.785398163397448309616f
#define M_1_PI_F 0.318309886183790671538f
#define M_2_PI_F 0.636619772367581343076f
#define M_2_SQRTPI_F 1.12837916709551257390f
#define M_SQRT2_F 1.41421356237309504880f
#define M_SQRT1_2_F 0.707106781186547524401f

#define METAL_FUNC inline
#define MTL_CONST

namespace metal { namespace simdgroup {} }
using namespace metal;

// ---- the part of MLX's kernels/utils.h that custom kernels commonly use
typedef half float16_t;
typedef bfloat bfloat16_t;

template <typename U> struct Limits {
  static constexpr U max = metal::numeric_limits<U>::max();
  static constexpr U min = metal::numeric_limits<U>::min();
  static constexpr U finite_max = metal::numeric_limits<U>::max();
  static constexpr U finite_min = metal::numeric_limits<U>::min();
};
#define MSL_FLOAT_LIMITS(T)                                                       \
  template <> struct Limits<T> {                                                  \
    static inline const T max = metal::numeric_limits<T>::infinity();             \
    static inline const T min = -metal::numeric_limits<T>::infinity();            \
    static inline const T finite_max = metal::numeric_limits<T>::max();           \
    static inline const T finite_min = -metal::numeric_limits<T>::max();          \
  };
MSL_FLOAT_LIMITS(float) MSL_FLOAT_LIMITS(half) MSL_FLOAT_LIMITS(bfloat)
#undef MSL_FLOAT_LIMITS
template <> struct Limits<bool> { static constexpr bool max = true, min = false; };

template <typename IdxT = int64_t>
inline IdxT elem_to_loc(IdxT elem, msl_emu::dptr<const int> shape, msl_emu::dptr<const int64_t> strides, int ndim) {
  IdxT loc = 0;
  for (int i = ndim - 1; i >= 0 && elem > 0; --i) {
    loc += (elem % shape[i]) * IdxT(strides[i]);
    elem /= shape[i];
  }
  return loc;
}
template <typename IdxT = int64_t>
inline IdxT elem_to_loc(uint3 elem, msl_emu::dptr<const int> shape, msl_emu::dptr<const int64_t> strides, int ndim) {
  IdxT loc = elem.x * IdxT(strides[ndim - 1]) + elem.y * IdxT(strides[ndim - 2]);
  for (int d = ndim - 3; d >= 0; --d) {
    loc += (elem.z % shape[d]) * IdxT(strides[d]);
    elem.z /= shape[d];
  }
  return loc;
}
template <typename T, typename U> inline T ceildiv(T N, U M) { return (N + M - 1) / M; }
