// MSL emulator shim: scalar types, half/bfloat, vectors, numeric_limits, as_type.
// Part of msl_emulator. Compiled as C++17 by g++/clang.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <type_traits>

typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;
typedef signed char msl_schar;

namespace metal {

// ---------------------------------------------------------------- half/bfloat
namespace detail {
inline uint32_t f2u(float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; }
inline float u2f(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }

// IEEE binary32 -> binary16, round to nearest even, NaN stays NaN, overflow -> inf.
inline uint16_t f32_to_f16(float f) {
  uint32_t x = f2u(f);
  uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u)  // inf or NaN (NaN payload truncated, kept quiet)
    return (uint16_t)(sign | (x > 0x7F800000u ? (0x7E00u | ((x >> 13) & 0x3FFu)) : 0x7C00u));
  if (x >= 0x477FF000u) return (uint16_t)(sign | 0x7C00u);  // >= 65520 rounds to inf
  if (x < 0x38800000u) {  // below 2^-14: subnormal half (or zero)
    // 0.5f has an ulp of 2^-24 (the half subnormal step): the float add rounds RNE.
    float t = u2f(x) + 0.5f;
    return (uint16_t)(sign | (f2u(t) - 0x3F000000u));
  }
  uint32_t odd = (x >> 13) & 1u;
  x += 0xC8000FFFu + odd;  // rebias exponent (127 -> 15) and round to nearest even
  return (uint16_t)(sign | (x >> 13));
}

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  if (e == 0x1F) return u2f(sign | 0x7F800000u | (m << 13));
  if (e == 0) {
    float v = (float)m * 5.9604644775390625e-8f;  // m * 2^-24, exact
    return u2f(sign | f2u(v));
  }
  return u2f(sign | ((e + 112u) << 23) | (m << 13));
}

// binary32 -> bfloat16, round to nearest even, NaN stays (quiet) NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f2u(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x0040u);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return (uint16_t)(x >> 16);
}
inline float bf16_to_f32(uint16_t b) { return u2f((uint32_t)b << 16); }
}  // namespace detail

struct bfloat;

// 16-bit IEEE half. Every arithmetic operation on two halves is computed in
// float (exact for one op) and rounded back to half, as on the GPU.
struct half {
  uint16_t bits;
  half() = default;
  half(float f) : bits(detail::f32_to_f16(f)) {}
  half(double d) : bits(detail::f32_to_f16((float)d)) {}
  template <class I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0>
  half(I i) : bits(detail::f32_to_f16((float)i)) {}
  inline explicit half(bfloat b);
  operator float() const { return detail::f16_to_f32(bits); }
  static half from_bits(uint16_t b) { half h; h.bits = b; return h; }
};

struct bfloat {
  uint16_t bits;
  bfloat() = default;
  bfloat(float f) : bits(detail::f32_to_bf16(f)) {}
  bfloat(double d) : bits(detail::f32_to_bf16((float)d)) {}
  template <class I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0>
  bfloat(I i) : bits(detail::f32_to_bf16((float)i)) {}
  explicit bfloat(half h) : bits(detail::f32_to_bf16((float)h)) {}
  operator float() const { return detail::bf16_to_f32(bits); }
  static bfloat from_bits(uint16_t b) { bfloat h; h.bits = b; return h; }
};
inline half::half(bfloat b) : bits(detail::f32_to_f16((float)b)) {}

template <class T> struct is_half_like : std::false_type {};
template <> struct is_half_like<half> : std::true_type {};
template <> struct is_half_like<bfloat> : std::true_type {};

// H op H -> H ; H op float -> float ; H op integer -> H ; H op double -> float
#define MSL_HALF_OPS(H)                                                             \
  inline H operator+(H a) { return a; }                                             \
  inline H operator-(H a) { return H::from_bits((uint16_t)(a.bits ^ 0x8000u)); }    \
  MSL_HALF_BINOP(H, +) MSL_HALF_BINOP(H, -) MSL_HALF_BINOP(H, *) MSL_HALF_BINOP(H, /) \
  MSL_HALF_CMP(H, ==) MSL_HALF_CMP(H, !=) MSL_HALF_CMP(H, <) MSL_HALF_CMP(H, >)      \
  MSL_HALF_CMP(H, <=) MSL_HALF_CMP(H, >=)                                           \
  inline H& operator++(H& a) { return a = H((float)a + 1.0f); }                     \
  inline H& operator--(H& a) { return a = H((float)a - 1.0f); }                     \
  inline H operator++(H& a, int) { H t = a; ++a; return t; }                        \
  inline H operator--(H& a, int) { H t = a; --a; return t; }

#define MSL_HALF_BINOP(H, OP)                                                          \
  inline H operator OP(H a, H b) { return H((float)a OP (float)b); }                   \
  inline float operator OP(H a, float b) { return (float)a OP b; }                     \
  inline float operator OP(float a, H b) { return a OP (float)b; }                     \
  inline float operator OP(H a, double b) { return (float)a OP (float)b; }             \
  inline float operator OP(double a, H b) { return (float)a OP (float)b; }             \
  template <class I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0> \
  inline H operator OP(H a, I b) { return a OP H(b); }                                 \
  template <class I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0> \
  inline H operator OP(I a, H b) { return H(a) OP b; }                                 \
  inline H& operator OP##=(H& a, H b) { return a = a OP b; }                           \
  inline H& operator OP##=(H& a, float b) { return a = H((float)a OP b); }             \
  inline H& operator OP##=(H& a, double b) { return a = H((float)a OP (float)b); }     \
  template <class I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0> \
  inline H& operator OP##=(H& a, I b) { return a = a OP H(b); }                        \
  inline float& operator OP##=(float& a, H b) { return a = a OP (float)b; }

#define MSL_HALF_CMP(H, OP)                                                            \
  inline bool operator OP(H a, H b) { return (float)a OP (float)b; }                   \
  inline bool operator OP(H a, float b) { return (float)a OP b; }                      \
  inline bool operator OP(float a, H b) { return a OP (float)b; }                      \
  inline bool operator OP(H a, double b) { return (float)a OP (float)b; }              \
  inline bool operator OP(double a, H b) { return (float)a OP (float)b; }              \
  template <class I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0> \
  inline bool operator OP(H a, I b) { return (float)a OP (float)b; }                   \
  template <class I, typename std::enable_if<std::is_integral<I>::value, int>::type = 0> \
  inline bool operator OP(I a, H b) { return (float)a OP (float)b; }

MSL_HALF_OPS(half)
MSL_HALF_OPS(bfloat)

// MSL's usual arithmetic conversions between half/bfloat and the other scalar
// types, as the binary operators above apply them: H op float -> float,
// H op double -> float (MSL has no double), H op integer (and bool) -> H.
// `type` is void where no such rule applies (same types, vectors, half vs bfloat).
namespace detail {
template <class A, class B, class = void> struct half_arith_common { typedef void type; };
template <class H, class O>
struct half_arith_common<H, O, typename std::enable_if<is_half_like<H>::value && !is_half_like<O>::value>::type> {
  typedef typename std::conditional<
      std::is_floating_point<O>::value, float,
      typename std::conditional<std::is_integral<O>::value, H, void>::type>::type type;
};
template <class O, class H>
struct half_arith_common<O, H, typename std::enable_if<!is_half_like<O>::value && is_half_like<H>::value>::type>
    : half_arith_common<H, O> {};
}  // namespace detail

// ---------------------------------------------------------------- vectors
template <class T> struct is_scalar_like
    : std::integral_constant<bool, std::is_arithmetic<T>::value || is_half_like<T>::value> {};

template <class T, int N> struct vec;

template <class T, int N> struct vec_base;
template <class T> struct vec_base<T, 2> {
  union { struct { T x, y; }; struct { T r, g; }; T _v[2]; };
};
template <class T> struct vec_base<T, 3> {
  union { struct { T x, y, z; }; struct { T r, g, b; }; T _v[4]; };  // sizeof == 4 elements
};
template <class T> struct vec_base<T, 4> {
  union { struct { T x, y, z, w; }; struct { T r, g, b, a; }; T _v[4]; };
};

template <class T> struct vec_count { static constexpr int value = 1; };
template <class T, int N> struct vec_count<vec<T, N>> { static constexpr int value = N; };
template <class... A> struct count_all { static constexpr int value = 0; };
template <class A, class... R> struct count_all<A, R...> {
  static constexpr int value = vec_count<typename std::decay<A>::type>::value + count_all<R...>::value;
};

// Read-write view used for a swizzle on the left of an assignment (v.xy = ...).
template <class V, int... I> struct swizzle_ref {
  V& v;
  typedef vec<typename V::value_type, (int)sizeof...(I)> R;
  operator R() const { return R(v._v[I]...); }
  swizzle_ref& operator=(const R& o) { int k = 0; int idx[] = {I...}; for (int i : idx) v._v[i] = o._v[k++]; return *this; }
  swizzle_ref& operator=(const swizzle_ref& o) { return *this = R(o); }
#define MSL_SWZ_CMP(OP) swizzle_ref& operator OP##=(const R& o) { return *this = R(*this) OP o; }
  MSL_SWZ_CMP(+) MSL_SWZ_CMP(-) MSL_SWZ_CMP(*) MSL_SWZ_CMP(/)
#undef MSL_SWZ_CMP
};

template <class T, int N>
struct alignas(sizeof(T) * (N == 3 ? 4 : N)) vec : vec_base<T, N> {
  typedef T value_type;
  static constexpr int size = N;
  vec() = default;
  template <class U, typename std::enable_if<is_scalar_like<U>::value, int>::type = 0>
  vec(U s) { for (int i = 0; i < N; ++i) this->_v[i] = T(s); }
  template <class A0, class A1, class... R,
            typename std::enable_if<count_all<A0, A1, R...>::value == N, int>::type = 0>
  vec(A0 a0, A1 a1, R... r) { int k = 0; put(k, a0); put(k, a1); int d[] = {0, (put(k, r), 0)...}; (void)d; }
  template <class U, typename std::enable_if<!std::is_same<U, T>::value, int>::type = 0>
  explicit vec(const vec<U, N>& o) { for (int i = 0; i < N; ++i) this->_v[i] = T(o._v[i]); }

  T& operator[](int i) { return this->_v[i]; }
  const T& operator[](int i) const { return this->_v[i]; }
  template <int... I> vec<T, (int)sizeof...(I)> _sw() const { return vec<T, (int)sizeof...(I)>(this->_v[I]...); }
  template <int... I> swizzle_ref<vec, I...> _swref() { return swizzle_ref<vec, I...>{*this}; }

 private:
  template <class U> void put(int& k, U s) { this->_v[k++] = T(s); }
  template <class U, int M> void put(int& k, const vec<U, M>& v) { for (int i = 0; i < M; ++i) this->_v[k++] = T(v._v[i]); }
};

#define MSL_VEC_BINOP(OP)                                                                  \
  template <class T, int N> inline vec<T, N> operator OP(const vec<T, N>& a, const vec<T, N>& b) { \
    vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = T(a._v[i] OP b._v[i]); return r; }        \
  template <class T, int N, class U, typename std::enable_if<is_scalar_like<U>::value, int>::type = 0> \
  inline vec<T, N> operator OP(const vec<T, N>& a, U b) { return a OP vec<T, N>(T(b)); }        \
  template <class T, int N, class U, typename std::enable_if<is_scalar_like<U>::value, int>::type = 0> \
  inline vec<T, N> operator OP(U a, const vec<T, N>& b) { return vec<T, N>(T(a)) OP b; }        \
  template <class T, int N> inline vec<T, N>& operator OP##=(vec<T, N>& a, const vec<T, N>& b) { return a = a OP b; } \
  template <class T, int N, class U, typename std::enable_if<is_scalar_like<U>::value, int>::type = 0> \
  inline vec<T, N>& operator OP##=(vec<T, N>& a, U b) { return a = a OP vec<T, N>(T(b)); }
MSL_VEC_BINOP(+) MSL_VEC_BINOP(-) MSL_VEC_BINOP(*) MSL_VEC_BINOP(/) MSL_VEC_BINOP(%)
MSL_VEC_BINOP(&) MSL_VEC_BINOP(|) MSL_VEC_BINOP(^) MSL_VEC_BINOP(<<) MSL_VEC_BINOP(>>)
#undef MSL_VEC_BINOP

#define MSL_VEC_CMP(OP)                                                                    \
  template <class T, int N> inline vec<bool, N> operator OP(const vec<T, N>& a, const vec<T, N>& b) { \
    vec<bool, N> r; for (int i = 0; i < N; ++i) r._v[i] = a._v[i] OP b._v[i]; return r; }         \
  template <class T, int N, class U, typename std::enable_if<is_scalar_like<U>::value, int>::type = 0> \
  inline vec<bool, N> operator OP(const vec<T, N>& a, U b) { return a OP vec<T, N>(T(b)); }      \
  template <class T, int N, class U, typename std::enable_if<is_scalar_like<U>::value, int>::type = 0> \
  inline vec<bool, N> operator OP(U a, const vec<T, N>& b) { return vec<T, N>(T(a)) OP b; }
MSL_VEC_CMP(==) MSL_VEC_CMP(!=) MSL_VEC_CMP(<) MSL_VEC_CMP(>) MSL_VEC_CMP(<=) MSL_VEC_CMP(>=)
MSL_VEC_CMP(&&) MSL_VEC_CMP(||)
#undef MSL_VEC_CMP

template <class T, int N> inline vec<T, N> operator-(const vec<T, N>& a) {
  vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = T(-a._v[i]); return r; }
template <class T, int N> inline vec<T, N> operator+(const vec<T, N>& a) { return a; }
template <class T, int N> inline vec<T, N> operator~(const vec<T, N>& a) {
  vec<T, N> r; for (int i = 0; i < N; ++i) r._v[i] = T(~a._v[i]); return r; }
template <class T, int N> inline vec<bool, N> operator!(const vec<T, N>& a) {
  vec<bool, N> r; for (int i = 0; i < N; ++i) r._v[i] = !a._v[i]; return r; }
template <class T, int N> inline vec<T, N>& operator++(vec<T, N>& a) { return a += T(1); }
template <class T, int N> inline vec<T, N>& operator--(vec<T, N>& a) { return a -= T(1); }

// packed vectors: element alignment only, no padding (packed_float3 is 12 bytes).
template <class T, int N> struct packed_vec {
  union { struct { T x, y, z, w; }; T _v[N]; };  // only the first N members are valid
  packed_vec() = default;
  packed_vec(const vec<T, N>& v) { for (int i = 0; i < N; ++i) _v[i] = v._v[i]; }
  template <class... A, typename std::enable_if<sizeof...(A) == N, int>::type = 0>
  packed_vec(A... a) : packed_vec(vec<T, N>(a...)) {}
  operator vec<T, N>() const { vec<T, N> v; for (int i = 0; i < N; ++i) v._v[i] = _v[i]; return v; }
  T& operator[](int i) { return _v[i]; }
  const T& operator[](int i) const { return _v[i]; }
};

#define MSL_VEC_TYPEDEFS(T, NAME)                                             \
  typedef vec<T, 2> NAME##2; typedef vec<T, 3> NAME##3; typedef vec<T, 4> NAME##4; \
  typedef packed_vec<T, 2> packed_##NAME##2; typedef packed_vec<T, 3> packed_##NAME##3; \
  typedef packed_vec<T, 4> packed_##NAME##4;
MSL_VEC_TYPEDEFS(float, float) MSL_VEC_TYPEDEFS(half, half) MSL_VEC_TYPEDEFS(bfloat, bfloat)
MSL_VEC_TYPEDEFS(int, int) MSL_VEC_TYPEDEFS(uint, uint) MSL_VEC_TYPEDEFS(short, short)
MSL_VEC_TYPEDEFS(ushort, ushort) MSL_VEC_TYPEDEFS(char, char) MSL_VEC_TYPEDEFS(uchar, uchar)
MSL_VEC_TYPEDEFS(long, long) MSL_VEC_TYPEDEFS(ulong, ulong) MSL_VEC_TYPEDEFS(bool, bool)
#undef MSL_VEC_TYPEDEFS

// ---------------------------------------------------------------- limits, as_type
template <class T> struct numeric_limits;
#define MSL_INT_LIMITS(T, LO, HI)                                     \
  template <> struct numeric_limits<T> {                              \
    static constexpr bool is_specialized = true, is_signed = (LO) != 0; \
    static constexpr T min() { return LO; } static constexpr T lowest() { return LO; } \
    static constexpr T max() { return HI; } };
MSL_INT_LIMITS(bool, false, true)
MSL_INT_LIMITS(char, -128, 127) MSL_INT_LIMITS(msl_schar, -128, 127) MSL_INT_LIMITS(uchar, 0, 255)
MSL_INT_LIMITS(short, -32768, 32767) MSL_INT_LIMITS(ushort, 0, 65535)
MSL_INT_LIMITS(int, -2147483647 - 1, 2147483647) MSL_INT_LIMITS(uint, 0u, 4294967295u)
MSL_INT_LIMITS(long, -9223372036854775807L - 1, 9223372036854775807L)
MSL_INT_LIMITS(ulong, 0ul, 18446744073709551615ul)
MSL_INT_LIMITS(long long, -9223372036854775807LL - 1, 9223372036854775807LL)
MSL_INT_LIMITS(unsigned long long, 0ull, 18446744073709551615ull)
#undef MSL_INT_LIMITS
template <> struct numeric_limits<float> {
  static constexpr bool is_specialized = true, is_signed = true, has_infinity = true;
  static constexpr float min() { return __FLT_MIN__; }
  static constexpr float max() { return __FLT_MAX__; }
  static constexpr float lowest() { return -__FLT_MAX__; }
  static constexpr float epsilon() { return __FLT_EPSILON__; }
  static constexpr float infinity() { return __builtin_inff(); }
  static constexpr float quiet_NaN() { return __builtin_nanf(""); }
  static constexpr float denorm_min() { return __FLT_DENORM_MIN__; }
};
#define MSL_HALF_LIMITS(H, MIN, MAX, EPS, INF, NAN_, DEN)                     \
  template <> struct numeric_limits<H> {                                      \
    static constexpr bool is_specialized = true, is_signed = true, has_infinity = true; \
    static H min() { return H::from_bits(MIN); } static H max() { return H::from_bits(MAX); } \
    static H lowest() { return H::from_bits((uint16_t)(MAX | 0x8000)); }       \
    static H epsilon() { return H::from_bits(EPS); } static H infinity() { return H::from_bits(INF); } \
    static H quiet_NaN() { return H::from_bits(NAN_); } static H denorm_min() { return H::from_bits(DEN); } };
MSL_HALF_LIMITS(half, 0x0400, 0x7BFF, 0x1400, 0x7C00, 0x7E00, 0x0001)
MSL_HALF_LIMITS(bfloat, 0x0080, 0x7F7F, 0x3C00, 0x7F80, 0x7FC0, 0x0001)
#undef MSL_HALF_LIMITS

template <class To, class From> inline To as_type(const From& f) {
  static_assert(sizeof(To) == sizeof(From), "as_type: sizes differ");
  To t; __builtin_memcpy((void*)&t, (const void*)&f, sizeof(To)); return t;
}

}  // namespace metal

// ---------------------------------------------------------------- ?: operands
// C++ cannot give `c ? half_value : float_value` MSL's meaning with a class
// type `half`: when one operand has class type and each operand converts
// implicitly to the other's type (half(float) and operator float(), both of
// which MSL's `half h = 1.0f;` / `float f = h;` need), [expr.cond]/4 makes the
// expression ill-formed, whatever other conversions half has. The translator
// therefore writes every `c ? a : b` as
//   c ? static_cast<typename cond_of<decltype((a))>::template vs<decltype((b))>::type>(a)
//     : static_cast<typename cond_of<decltype((b))>::template vs<decltype((a))>::type>(b)
// (no top-level comma, so it may sit in a macro argument). The cast type is
// MSL's common type when half_arith_common has a rule for the two types (half
// vs float -> float, half vs int -> half), otherwise the operand's own type and
// value category, so every other conditional keeps its C++ type, value category
// and evaluation (one operand).
namespace msl_emu {
template <class T> T cond_make() noexcept;  // only in unevaluated operands
template <class T> using cond_bare = typename std::remove_cv<typename std::remove_reference<T>::type>::type;
template <class Self, class Other> struct cond_arm {
  typedef typename ::metal::detail::half_arith_common<cond_bare<Self>, cond_bare<Other>>::type common;
  typedef typename std::conditional<std::is_void<common>::value, Self, common>::type type;
};
template <class Self, class Other> using cond_t = typename cond_arm<Self, Other>::type;
// Type and value category of the rewritten conditional (the translator needs
// it for a conditional nested in an operand, inside decltype).
template <class X, class Y>
using cond_result_t = decltype(true ? cond_make<cond_t<X, Y>>() : cond_make<cond_t<Y, X>>());
template <class Self> struct cond_of {
  template <class Other> struct vs { typedef cond_t<Self, Other> type; };
  template <class Other> struct result { typedef cond_result_t<Self, Other> type; };
};
}  // namespace msl_emu
