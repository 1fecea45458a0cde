// MSL emulator shim: metal:: math (also metal::fast:: and metal::precise::),
// integer and geometric functions, select/all/any.
// float functions use the C library (usually within 1 ulp); half and bfloat
// versions compute in float and round the result once.
#pragma once
#include "msl_types.h"

namespace metal {

#define MSL_FOR_FLOATS(M) M(float) M(half) M(bfloat)

// ---- unary float functions: NAME(x) = EXPR, with x promoted to float
#define MSL_UNARY(NAME, EXPR)                                                   \
  inline float NAME(float x) { return EXPR; }                                   \
  inline half NAME(half hx) { float x = (float)hx; return half(EXPR); }         \
  inline bfloat NAME(bfloat hx) { float x = (float)hx; return bfloat(EXPR); }   \
  template <class T, int N> inline vec<T, N> NAME(const vec<T, N>& v) {         \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(v._v[i]); return r; }

#define MSL_UNARY_SET                                                      \
  MSL_UNARY(exp, __builtin_expf(x)) MSL_UNARY(exp2, __builtin_exp2f(x))   \
  MSL_UNARY(exp10, __builtin_powf(10.0f, x)) MSL_UNARY(log, __builtin_logf(x)) \
  MSL_UNARY(log2, __builtin_log2f(x)) MSL_UNARY(log10, __builtin_log10f(x)) \
  MSL_UNARY(sqrt, __builtin_sqrtf(x)) MSL_UNARY(rsqrt, 1.0f / __builtin_sqrtf(x)) \
  MSL_UNARY(sin, __builtin_sinf(x)) MSL_UNARY(cos, __builtin_cosf(x))     \
  MSL_UNARY(tan, __builtin_tanf(x)) MSL_UNARY(asin, __builtin_asinf(x))   \
  MSL_UNARY(acos, __builtin_acosf(x)) MSL_UNARY(atan, __builtin_atanf(x)) \
  MSL_UNARY(sinh, __builtin_sinhf(x)) MSL_UNARY(cosh, __builtin_coshf(x)) \
  MSL_UNARY(tanh, __builtin_tanhf(x)) MSL_UNARY(asinh, __builtin_asinhf(x)) \
  MSL_UNARY(acosh, __builtin_acoshf(x)) MSL_UNARY(atanh, __builtin_atanhf(x)) \
  MSL_UNARY(floor, __builtin_floorf(x)) MSL_UNARY(ceil, __builtin_ceilf(x)) \
  MSL_UNARY(round, __builtin_roundf(x)) MSL_UNARY(rint, __builtin_rintf(x)) \
  MSL_UNARY(trunc, __builtin_truncf(x)) MSL_UNARY(fabs, __builtin_fabsf(x)) \
  MSL_UNARY(fract, __builtin_fminf(x - __builtin_floorf(x), 0x1.fffffep-1f)) \
  MSL_UNARY(saturate, __builtin_fminf(__builtin_fmaxf(x, 0.0f), 1.0f))    \
  MSL_UNARY(sign, (x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : (x != x ? 0.0f : x))))  \
  MSL_UNARY(log1p, __builtin_log1pf(x)) MSL_UNARY(expm1, __builtin_expm1f(x))

// ---- binary float functions
#define MSL_BINARY(NAME, EXPR)                                                          \
  inline float NAME(float x, float y) { return EXPR; }                                  \
  inline half NAME(half hx, half hy) { float x = (float)hx, y = (float)hy; return half(EXPR); }       \
  inline bfloat NAME(bfloat hx, bfloat hy) { float x = (float)hx, y = (float)hy; return bfloat(EXPR); } \
  template <class T, int N> inline vec<T, N> NAME(const vec<T, N>& a, const vec<T, N>& b) { \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i], b._v[i]); return r; } \
  template <class T, int N> inline vec<T, N> NAME(const vec<T, N>& a, T b) {             \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i], b); return r; }

#define MSL_BINARY_SET                                                        \
  MSL_BINARY(pow, __builtin_powf(x, y)) MSL_BINARY(powr, __builtin_powf(x, y)) \
  MSL_BINARY(fmax, __builtin_fmaxf(x, y)) MSL_BINARY(fmin, __builtin_fminf(x, y)) \
  MSL_BINARY(fmod, __builtin_fmodf(x, y)) MSL_BINARY(atan2, __builtin_atan2f(x, y)) \
  MSL_BINARY(copysign, __builtin_copysignf(x, y)) MSL_BINARY(fdim, __builtin_fdimf(x, y)) \
  MSL_BINARY(step, (y < x ? 0.0f : 1.0f)) MSL_BINARY(divide, x / y)      \
  MSL_BINARY(hypot, __builtin_hypotf(x, y))

// ---- ternary float functions
#define MSL_TERNARY(NAME, EXPR)                                                          \
  inline float NAME(float x, float y, float z) { return EXPR; }                          \
  inline half NAME(half hx, half hy, half hz) {                                          \
    float x = (float)hx, y = (float)hy, z = (float)hz; return half(EXPR); }              \
  inline bfloat NAME(bfloat hx, bfloat hy, bfloat hz) {                                  \
    float x = (float)hx, y = (float)hy, z = (float)hz; return bfloat(EXPR); }            \
  template <class T, int N>                                                              \
  inline vec<T, N> NAME(const vec<T, N>& a, const vec<T, N>& b, const vec<T, N>& c) {    \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i], b._v[i], c._v[i]); return r; } \
  template <class T, int N> inline vec<T, N> NAME(const vec<T, N>& a, const vec<T, N>& b, T c) { \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i], b._v[i], c); return r; } \
  template <class T, int N> inline vec<T, N> NAME(const vec<T, N>& a, T b, T c) {        \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i], b, c); return r; }

#define MSL_TERNARY_SET                                                       \
  MSL_TERNARY(fma, __builtin_fmaf(x, y, z)) MSL_TERNARY(mad, x * y + z)   \
  MSL_TERNARY(mix, x + (y - x) * z)                                       \
  MSL_TERNARY(smoothstep, ([](float e0, float e1, float v) {              \
    float t = __builtin_fminf(__builtin_fmaxf((v - e0) / (e1 - e0), 0.0f), 1.0f); \
    return t * t * (3.0f - 2.0f * t); })(x, y, z))

MSL_UNARY_SET MSL_BINARY_SET MSL_TERNARY_SET

// abs/min/max/clamp exist for floats and integers. min/max on floats follow
// fmin/fmax (a NaN operand yields the other operand).
#define MSL_FLOAT_MINMAX(T)                                                    \
  inline T abs(T x) { return fabs(x); }                                        \
  inline T max(T x, T y) { return fmax(x, y); }                                \
  inline T min(T x, T y) { return fmin(x, y); }                                \
  inline T clamp(T x, T lo, T hi) { return fmin(fmax(x, lo), hi); }
MSL_FOR_FLOATS(MSL_FLOAT_MINMAX)
#undef MSL_FLOAT_MINMAX

#define MSL_INT_FUNCS(T)                                                       \
  inline T max(T x, T y) { return x > y ? x : y; }                             \
  inline T min(T x, T y) { return x < y ? x : y; }                             \
  inline T clamp(T x, T lo, T hi) { return min(max(x, lo), hi); }              \
  inline T abs(T x) { return x < 0 ? T(-x) : x; }                              \
  inline T absdiff(T x, T y) { return x > y ? T(x - y) : T(y - x); }           \
  inline T popcount(T x) { return (T)__builtin_popcountll((unsigned long long)(typename std::make_unsigned<T>::type)x); } \
  inline T clz(T x) { typedef typename std::make_unsigned<T>::type U; U u = (U)x; \
    return u == 0 ? T(sizeof(T) * 8) : T(__builtin_clzll((unsigned long long)u) - (64 - 8 * (int)sizeof(T))); } \
  inline T ctz(T x) { typedef typename std::make_unsigned<T>::type U; U u = (U)x; \
    return u == 0 ? T(sizeof(T) * 8) : T(__builtin_ctzll((unsigned long long)u)); }
MSL_INT_FUNCS(char) MSL_INT_FUNCS(msl_schar) MSL_INT_FUNCS(uchar) MSL_INT_FUNCS(short)
MSL_INT_FUNCS(ushort) MSL_INT_FUNCS(int) MSL_INT_FUNCS(uint) MSL_INT_FUNCS(long) MSL_INT_FUNCS(ulong)
#undef MSL_INT_FUNCS

#define MSL_VEC_MAP2(NAME)                                                                  \
  template <class T, int N> inline vec<T, N> NAME(const vec<T, N>& a, const vec<T, N>& b) { \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i], b._v[i]); return r; } \
  template <class T, int N> inline vec<T, N> NAME(const vec<T, N>& a, T b) {             \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i], b); return r; }
MSL_VEC_MAP2(max) MSL_VEC_MAP2(min) MSL_VEC_MAP2(absdiff)
#undef MSL_VEC_MAP2
template <class T, int N> inline vec<T, N> abs(const vec<T, N>& a) {
  vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = abs(a._v[i]); return r; }
template <class T, int N> inline vec<T, N> clamp(const vec<T, N>& x, const vec<T, N>& lo, const vec<T, N>& hi) {
  vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = clamp(x._v[i], lo._v[i], hi._v[i]); return r; }
template <class T, int N> inline vec<T, N> clamp(const vec<T, N>& x, T lo, T hi) {
  vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = clamp(x._v[i], lo, hi); return r; }

// ---- classification
#define MSL_CLASSIFY(T)                                                         \
  inline bool isnan(T x) { return __builtin_isnan((float)x); }                  \
  inline bool isinf(T x) { return __builtin_isinf((float)x); }                  \
  inline bool isfinite(T x) { return __builtin_isfinite((float)x); }            \
  inline bool isnormal(T x) { return __builtin_isnormal((float)x); }            \
  inline bool signbit(T x) { return __builtin_signbit((float)x); }
MSL_FOR_FLOATS(MSL_CLASSIFY)
#undef MSL_CLASSIFY
#define MSL_VCLASSIFY(NAME)                                                      \
  template <class T, int N> inline vec<bool, N> NAME(const vec<T, N>& a) {       \
    vec<bool, N> r; for (int i = 0; i < N; ++i) r._v[i] = NAME(a._v[i]); return r; }
MSL_VCLASSIFY(isnan) MSL_VCLASSIFY(isinf) MSL_VCLASSIFY(isfinite) MSL_VCLASSIFY(signbit)
#undef MSL_VCLASSIFY

// ---- geometric
template <class T, int N> inline T dot(const vec<T, N>& a, const vec<T, N>& b) {
  float s = 0.0f; for (int i = 0; i < N; ++i) s += (float)a._v[i] * (float)b._v[i]; return T(s); }
template <class T, int N> inline T length_squared(const vec<T, N>& a) { return dot(a, a); }
template <class T, int N> inline T length(const vec<T, N>& a) { return T(__builtin_sqrtf((float)dot(a, a))); }
template <class T, int N> inline T distance(const vec<T, N>& a, const vec<T, N>& b) { return length(a - b); }
template <class T, int N> inline vec<T, N> normalize(const vec<T, N>& a) { return a * rsqrt(dot(a, a)); }
template <class T> inline vec<T, 3> cross(const vec<T, 3>& a, const vec<T, 3>& b) {
  return vec<T, 3>(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x); }

// ---- relational
template <int N> inline bool all(const vec<bool, N>& v) { for (int i = 0; i < N; ++i) if (!v._v[i]) return false; return true; }
template <int N> inline bool any(const vec<bool, N>& v) { for (int i = 0; i < N; ++i) if (v._v[i]) return true; return false; }
inline bool all(bool b) { return b; }
inline bool any(bool b) { return b; }
template <class T, typename std::enable_if<is_scalar_like<T>::value, int>::type = 0>
inline T select(T a, T b, bool c) { return c ? b : a; }
template <class T, int N> inline vec<T, N> select(const vec<T, N>& a, const vec<T, N>& b, const vec<bool, N>& c) {
  vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = c._v[i] ? b._v[i] : a._v[i]; return r; }
template <class T, int N> inline vec<T, N> select(const vec<T, N>& a, const vec<T, N>& b, bool c) { return c ? b : a; }

// ---- fast:: and precise:: variants (computed identically here)
#define MSL_REEXPORT                                                                     \
  using metal::exp; using metal::exp2; using metal::exp10; using metal::log; using metal::log2; \
  using metal::log10; using metal::sqrt; using metal::rsqrt; using metal::sin; using metal::cos; \
  using metal::tan; using metal::asin; using metal::acos; using metal::atan; using metal::sinh; \
  using metal::cosh; using metal::tanh; using metal::pow; using metal::powr; using metal::fmax; \
  using metal::fmin; using metal::max; using metal::min; using metal::clamp; using metal::divide; \
  using metal::fabs; using metal::abs; using metal::floor; using metal::ceil; using metal::round; \
  using metal::rint; using metal::trunc; using metal::fract; using metal::saturate; using metal::atan2; \
  using metal::fmod; using metal::normalize; using metal::length; using metal::distance; using metal::dot; \
  using metal::fma; using metal::mix; using metal::step; using metal::smoothstep; using metal::copysign; \
  using metal::hypot; using metal::sign;
namespace fast { MSL_REEXPORT }
namespace precise { MSL_REEXPORT }
#undef MSL_REEXPORT

}  // namespace metal
