// MSL emulator shim: SIMD-group and quad-group functions, simdgroup_matrix.
// Every function here is a collective: the calling fiber deposits its value,
// waits until every live lane of its simdgroup has reached the same call, then
// computes its own result from all lanes' values.
#pragma once
#include "msl_math.h"
#include "msl_memory.h"

namespace msl_emu {

template <class T> struct simd_view {
  const unsigned char* d;
  uint32_t active;
  int lane;
  bool on(int l) const { return l >= 0 && l < SIMT_WARP && ((active >> l) & 1u); }
  T get(int l) const { T v; __builtin_memcpy((void*)&v, d + l * SIMT_SLOT_BYTES, sizeof(T)); return v; }
};

template <class T> inline simd_view<T> xchg(const T& v, int op, int line, const char* file) {
  static_assert(sizeof(T) <= SIMT_SLOT_BYTES, "value too large for a SIMD-group function");
  static_assert(std::is_trivially_copyable<T>::value, "SIMD-group functions need trivially copyable values");
  simd_view<T> s;
  s.d = simt_rt_exchange(&v, (int)sizeof(T), op, line, file, &s.active, &s.lane);
  return s;
}

// Value read from an inactive lane: undefined on the GPU; all bits set here
// (NaN for floating types, -1 for signed integers).
template <class T> inline T poison() { T v; __builtin_memset((void*)&v, 0xFF, sizeof(T)); return v; }

template <class T> inline T read_lane(const simd_view<T>& s, int l) { return s.on(l) ? s.get(l) : poison<T>(); }

// Butterfly reduction over `width`-lane groups (32 for simd_*, 4 for quad_*);
// inactive lanes contribute nothing.
template <class T, class F> inline T reduce(const simd_view<T>& s, int width, F f) {
  int base = s.lane & ~(width - 1);
  T v[SIMT_WARP];
  bool on[SIMT_WARP];
  for (int l = 0; l < width; ++l) { on[l] = s.on(base + l); if (on[l]) v[l] = s.get(base + l); }
  for (int off = width / 2; off >= 1; off >>= 1) {
    T nv[SIMT_WARP];
    bool non[SIMT_WARP];
    for (int l = 0; l < width; ++l) {
      int o = l ^ off;
      if (on[l] && on[o]) nv[l] = (l < o) ? f(v[l], v[o]) : f(v[o], v[l]);
      else if (on[l]) nv[l] = v[l];
      else if (on[o]) nv[l] = v[o];
      non[l] = on[l] || on[o];
    }
    for (int l = 0; l < width; ++l) { v[l] = nv[l]; on[l] = non[l]; }
  }
  return v[s.lane - base];
}

template <class T, class F> inline T prefix(const simd_view<T>& s, bool inclusive, T identity, F f) {
  T acc = identity;
  for (int l = 0; l < s.lane; ++l) if (s.on(l)) acc = f(acc, s.get(l));
  return inclusive ? f(acc, s.get(s.lane)) : acc;
}

inline void lane_coord(int lane, int& row, int& col) {
  int qid = lane / 4;
  row = (qid & 4) + (lane / 2) % 4;
  col = (qid & 2) * 2 + (lane % 2) * 2;
}

}  // namespace msl_emu

namespace metal {

#define MSL_LINE int line = __builtin_LINE(), const char* file = __builtin_FILE()
#define MSL_OP(n) MSL_OP_##n

template <class T> inline T simd_sum(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(simd_sum), line, file), 32, [](T a, T b) { return T(a + b); }); }
template <class T> inline T simd_product(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(simd_product), line, file), 32, [](T a, T b) { return T(a * b); }); }
template <class T> inline T simd_max(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(simd_max), line, file), 32, [](T a, T b) { return T(max(a, b)); }); }
template <class T> inline T simd_min(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(simd_min), line, file), 32, [](T a, T b) { return T(min(a, b)); }); }
template <class T> inline T simd_and(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(simd_and), line, file), 32, [](T a, T b) { return T(a & b); }); }
template <class T> inline T simd_or(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(simd_or), line, file), 32, [](T a, T b) { return T(a | b); }); }
template <class T> inline T simd_xor(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(simd_xor), line, file), 32, [](T a, T b) { return T(a ^ b); }); }

template <class T> inline T simd_prefix_inclusive_sum(T x, MSL_LINE) {
  return msl_emu::prefix(msl_emu::xchg(x, MSL_OP(simd_prefix_inclusive_sum), line, file), true, T(0), [](T a, T b) { return T(a + b); }); }
template <class T> inline T simd_prefix_exclusive_sum(T x, MSL_LINE) {
  return msl_emu::prefix(msl_emu::xchg(x, MSL_OP(simd_prefix_exclusive_sum), line, file), false, T(0), [](T a, T b) { return T(a + b); }); }
template <class T> inline T simd_prefix_inclusive_product(T x, MSL_LINE) {
  return msl_emu::prefix(msl_emu::xchg(x, MSL_OP(simd_prefix_inclusive_product), line, file), true, T(1), [](T a, T b) { return T(a * b); }); }
template <class T> inline T simd_prefix_exclusive_product(T x, MSL_LINE) {
  return msl_emu::prefix(msl_emu::xchg(x, MSL_OP(simd_prefix_exclusive_product), line, file), false, T(1), [](T a, T b) { return T(a * b); }); }

template <class T> inline T simd_shuffle(T x, ushort src, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_shuffle), line, file); return msl_emu::read_lane(s, src); }
template <class T> inline T simd_broadcast(T x, ushort src, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_broadcast), line, file); return msl_emu::read_lane(s, src); }
template <class T> inline T simd_shuffle_xor(T x, ushort mask, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_shuffle_xor), line, file); return msl_emu::read_lane(s, s.lane ^ mask); }
// The upper `delta` lanes keep their own value (no wrap-around), as specified.
template <class T> inline T simd_shuffle_down(T x, ushort delta, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_shuffle_down), line, file);
  int src = s.lane + delta; return src >= SIMT_WARP ? x : msl_emu::read_lane(s, src); }
template <class T> inline T simd_shuffle_up(T x, ushort delta, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_shuffle_up), line, file);
  int src = s.lane - (int)delta; return src < 0 ? x : msl_emu::read_lane(s, src); }
template <class T> inline T simd_shuffle_rotate_down(T x, ushort delta, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_shuffle_rotate_down), line, file);
  return msl_emu::read_lane(s, (s.lane + delta) % SIMT_WARP); }
template <class T> inline T simd_shuffle_rotate_up(T x, ushort delta, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_shuffle_rotate_up), line, file);
  return msl_emu::read_lane(s, ((s.lane - (int)delta) % SIMT_WARP + SIMT_WARP) % SIMT_WARP); }
template <class T> inline T simd_shuffle_and_fill_down(T x, T fill, ushort delta, MSL_LINE) {
  struct P { T a, b; } p{x, fill};
  auto s = msl_emu::xchg(p, MSL_OP(simd_shuffle_and_fill_down), line, file);
  int src = s.lane + delta;
  P q = msl_emu::read_lane(s, src % SIMT_WARP);
  return src < SIMT_WARP ? q.a : q.b; }
template <class T> inline T simd_shuffle_and_fill_up(T x, T fill, ushort delta, MSL_LINE) {
  struct P { T a, b; } p{x, fill};
  auto s = msl_emu::xchg(p, MSL_OP(simd_shuffle_and_fill_up), line, file);
  int src = s.lane - (int)delta;
  P q = msl_emu::read_lane(s, (src + SIMT_WARP) % SIMT_WARP);
  return src >= 0 ? q.a : q.b; }
template <class T> inline T simd_broadcast_first(T x, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(simd_broadcast_first), line, file);
  return s.get(__builtin_ctz(s.active)); }

struct simd_vote {
  typedef uint64_t vote_t;
  vote_t v, mask;
  explicit simd_vote(vote_t v_ = 0, vote_t m = 0) : v(v_), mask(m) {}
  explicit operator vote_t() const { return v; }
  bool all() const { return v == mask; }
  bool any() const { return v != 0; }
};
inline simd_vote simd_ballot(bool c, MSL_LINE) {
  auto s = msl_emu::xchg(c, MSL_OP(simd_ballot), line, file);
  uint64_t v = 0; for (int l = 0; l < SIMT_WARP; ++l) if (s.on(l) && s.get(l)) v |= 1ull << l;
  return simd_vote(v, s.active); }
inline bool simd_all(bool c, MSL_LINE) {
  auto s = msl_emu::xchg(c, MSL_OP(simd_all), line, file);
  for (int l = 0; l < SIMT_WARP; ++l) if (s.on(l) && !s.get(l)) return false; return true; }
inline bool simd_any(bool c, MSL_LINE) {
  auto s = msl_emu::xchg(c, MSL_OP(simd_any), line, file);
  for (int l = 0; l < SIMT_WARP; ++l) if (s.on(l) && s.get(l)) return true; return false; }
inline bool simd_is_first(MSL_LINE) {
  auto s = msl_emu::xchg(0, MSL_OP(simd_is_first), line, file); return s.lane == __builtin_ctz(s.active); }

// ---- quad-group functions (4 consecutive lanes)
template <class T> inline T quad_shuffle(T x, ushort q, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(quad_shuffle), line, file); return msl_emu::read_lane(s, (s.lane & ~3) + (q & 3)); }
template <class T> inline T quad_broadcast(T x, ushort q, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(quad_broadcast), line, file); return msl_emu::read_lane(s, (s.lane & ~3) + (q & 3)); }
template <class T> inline T quad_shuffle_xor(T x, ushort m, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(quad_shuffle_xor), line, file); return msl_emu::read_lane(s, (s.lane & ~3) | ((s.lane ^ m) & 3)); }
template <class T> inline T quad_shuffle_down(T x, ushort d, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(quad_shuffle_down), line, file);
  int q = (s.lane & 3) + d; return q >= 4 ? x : msl_emu::read_lane(s, (s.lane & ~3) + q); }
template <class T> inline T quad_shuffle_up(T x, ushort d, MSL_LINE) {
  auto s = msl_emu::xchg(x, MSL_OP(quad_shuffle_up), line, file);
  int q = (s.lane & 3) - (int)d; return q < 0 ? x : msl_emu::read_lane(s, (s.lane & ~3) + q); }
template <class T> inline T quad_sum(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(quad_sum), line, file), 4, [](T a, T b) { return T(a + b); }); }
template <class T> inline T quad_product(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(quad_product), line, file), 4, [](T a, T b) { return T(a * b); }); }
template <class T> inline T quad_max(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(quad_max), line, file), 4, [](T a, T b) { return T(max(a, b)); }); }
template <class T> inline T quad_min(T x, MSL_LINE) {
  return msl_emu::reduce(msl_emu::xchg(x, MSL_OP(quad_min), line, file), 4, [](T a, T b) { return T(min(a, b)); }); }

// ---------------------------------------------------------------- simdgroup_matrix
// Lane l holds row (l/4 & 4) + (l/2) % 4, columns (l/4 & 2)*2 + (l%2)*2 and +1.
template <class T, int Cols, int Rows> struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "the emulator supports 8x8 simdgroup matrices only");
  typedef T value_type;
  vec<T, 2> _e;
  simdgroup_matrix() = default;
  // Diagonal matrix with `d` on the diagonal (MSL constructor semantics).
  simdgroup_matrix(T d) {
    int r, c; msl_emu::lane_coord(simt_rt_lane(), r, c);
    _e = vec<T, 2>(r == c ? d : T(0), r == c + 1 ? d : T(0));
  }
  vec<T, 2>& thread_elements() { return _e; }
  const vec<T, 2>& thread_elements() const { return _e; }
};
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;

template <class T, int C, int R> inline simdgroup_matrix<T, C, R> make_filled_simdgroup_matrix(const T v) {
  simdgroup_matrix<T, C, R> m; m._e = vec<T, 2>(v, v); return m; }

namespace detail {
inline void check_origin(const vec<ulong, 2>& o, bool transpose) {
  if (transpose && (o.x != 0 || o.y != 0))
    simt_rt_fail("simdgroup_load/store with transpose_matrix=true and a non-zero matrix_origin is not "
                "emulated (offset the pointer instead)");
}
}  // namespace detail

// Element (r, c) of the loaded matrix is src[(origin.y + r) * epr + origin.x + c],
// or src[c * epr + r] when transposed.
template <class T, int C, int R, class P>
inline void simdgroup_load(simdgroup_matrix<T, C, R>& d, P src, ulong elements_per_row = C,
                           vec<ulong, 2> matrix_origin = vec<ulong, 2>(0ul), bool transpose_matrix = false,
                           MSL_LINE) {
  auto s = msl_emu::xchg(0, MSL_OP(simdgroup_load), line, file);
  detail::check_origin(matrix_origin, transpose_matrix);
  int r, c; msl_emu::lane_coord(s.lane, r, c);
  long base = (long)(matrix_origin.y * elements_per_row + matrix_origin.x);
  for (int j = 0; j < 2; ++j) {
    long idx = transpose_matrix ? (long)((c + j) * elements_per_row + r) : (long)(r * elements_per_row + c + j);
    d._e[j] = T(*msl_emu::elem_ptr(src, base + idx));
  }
}

template <class T, int C, int R, class P>
inline void simdgroup_store(const simdgroup_matrix<T, C, R>& a, P dst, ulong elements_per_row = C,
                            vec<ulong, 2> matrix_origin = vec<ulong, 2>(0ul), bool transpose_matrix = false,
                            MSL_LINE) {
  auto s = msl_emu::xchg(0, MSL_OP(simdgroup_store), line, file);
  detail::check_origin(matrix_origin, transpose_matrix);
  int r, c; msl_emu::lane_coord(s.lane, r, c);
  long base = (long)(matrix_origin.y * elements_per_row + matrix_origin.x);
  for (int j = 0; j < 2; ++j) {
    long idx = transpose_matrix ? (long)((c + j) * elements_per_row + r) : (long)(r * elements_per_row + c + j);
    auto* q = msl_emu::elem_ptr(dst, base + idx);
    *q = typename std::remove_reference<decltype(*q)>::type(a._e[j]);
  }
}

// D = A * B + C. Products and sums are formed in float (fma chain over k,
// starting from C), then rounded once to D's element type.
template <class TD, class TA, class TB, class TC>
inline void simdgroup_multiply_accumulate(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                                          const simdgroup_matrix<TB, 8, 8>& b, const simdgroup_matrix<TC, 8, 8>& c,
                                          MSL_LINE) {
  struct P { vec<TA, 2> a; vec<TB, 2> b; vec<TC, 2> c; } p{a._e, b._e, c._e};
  auto s = msl_emu::xchg(p, MSL_OP(simdgroup_multiply_accumulate), line, file);
  if (s.active != 0xFFFFFFFFu) simt_rt_fail("simdgroup_multiply_accumulate needs all 32 lanes of the simdgroup");
  float A[8][8], B[8][8], Cm[8][8];
  for (int l = 0; l < SIMT_WARP; ++l) {
    P q = s.get(l); int r, col; msl_emu::lane_coord(l, r, col);
    for (int j = 0; j < 2; ++j) { A[r][col + j] = (float)q.a[j]; B[r][col + j] = (float)q.b[j]; Cm[r][col + j] = (float)q.c[j]; }
  }
  int r, col; msl_emu::lane_coord(s.lane, r, col);
  vec<TD, 2> out;
  for (int j = 0; j < 2; ++j) {
    float acc = Cm[r][col + j];
    for (int k = 0; k < 8; ++k) acc = __builtin_fmaf(A[r][k], B[k][col + j], acc);
    out[j] = TD(acc);
  }
  d._e = out;
}
template <class TD, class TA, class TB>
inline void simdgroup_multiply(simdgroup_matrix<TD, 8, 8>& d, const simdgroup_matrix<TA, 8, 8>& a,
                               const simdgroup_matrix<TB, 8, 8>& b, MSL_LINE) {
  simdgroup_matrix<TD, 8, 8> z = make_filled_simdgroup_matrix<TD, 8, 8>(TD(0));
  simdgroup_multiply_accumulate(d, a, b, z, line, file);
}

#undef MSL_LINE
#undef MSL_OP
}  // namespace metal
