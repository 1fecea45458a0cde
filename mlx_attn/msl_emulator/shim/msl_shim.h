// MSL emulator shim: everything a translated kernel sees before its own source.
// Mirrors what MLX prepends to a custom kernel (metal_stdlib, `using namespace
// metal;` and a small part of MLX's kernels/utils.h).
#pragma once
#include "msl_simd.h"

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
