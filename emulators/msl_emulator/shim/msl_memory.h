// MSL emulator shim: bounds-checked device/constant pointers, threadgroup
// variables, barriers and atomics.
#pragma once
#include "msl_abi.h"
#include "msl_types.h"

namespace msl_emu {

template <class T> struct dptr;

// Read-only checked pointer (`const device T*` / `constant T*`). It is also the
// base of the mutable dptr<T>, so templates taking `const device T*` deduce T
// from a mutable pointer just like raw pointers do.
template <class T> struct dptr<const T> {
  const T* p;
  const char* lo;
  const char* hi;
  const simt_buffer* buf;

  dptr() : p(nullptr), lo(nullptr), hi(nullptr), buf(nullptr) {}
  dptr(decltype(nullptr)) : dptr() {}
  explicit dptr(const simt_buffer* b) : p((const T*)b->ptr), lo(b->lo), hi(b->hi), buf(b) {}
  dptr(const T* p_, const char* lo_, const char* hi_, const simt_buffer* b_)
      : p(p_), lo(lo_), hi(hi_), buf(b_) {}
  template <size_t N>  // program-scope `constant T name[N]` arrays
  dptr(const T (&arr)[N]) : p(arr), lo((const char*)arr), hi((const char*)(arr + N)), buf(nullptr) {}
  // pointer casts: (const device float4*)p, static_cast<...>(p)
  template <class U> explicit dptr(const dptr<U>& o)
      : p((const T*)(const void*)o.p), lo(o.lo), hi(o.hi), buf(o.buf) {}

  const T* check(const T* q) const {
    const char* c = (const char*)q;
    if (__builtin_expect(c < lo || c + sizeof(T) > hi || (uintptr_t)c % alignof(T) != 0, 0)) fail(q);
    return q;
  }
  __attribute__((noinline, noreturn)) void fail(const T* q) const {
    const char* c = (const char*)q;
    if (lo == nullptr && hi == nullptr) simt_rt_fail("dereference of a null device/constant pointer");
    if (c < lo || c + sizeof(T) > hi) simt_rt_oob(buf, lo, hi, q, (int)sizeof(T), 1);
    simt_rt_misaligned(buf, q, (int)alignof(T));
  }
  const T& operator[](ptrdiff_t i) const { return *check(p + i); }
  const T& operator*() const { return *check(p); }
  const T* operator->() const { return check(p); }
  explicit operator bool() const { return p != nullptr; }

  dptr operator+(ptrdiff_t i) const { return dptr(p + i, lo, hi, buf); }
  dptr operator-(ptrdiff_t i) const { return dptr(p - i, lo, hi, buf); }
  friend dptr operator+(ptrdiff_t i, const dptr& d) { return d + i; }
  ptrdiff_t operator-(const dptr& o) const { return p - o.p; }
  dptr& operator+=(ptrdiff_t i) { p += i; return *this; }
  dptr& operator-=(ptrdiff_t i) { p -= i; return *this; }
  dptr& operator++() { ++p; return *this; }
  dptr& operator--() { --p; return *this; }
  dptr operator++(int) { dptr t = *this; ++p; return t; }
  dptr operator--(int) { dptr t = *this; --p; return t; }
  bool operator==(const dptr& o) const { return p == o.p; }
  bool operator!=(const dptr& o) const { return p != o.p; }
  bool operator<(const dptr& o) const { return p < o.p; }
  bool operator>(const dptr& o) const { return p > o.p; }
  bool operator<=(const dptr& o) const { return p <= o.p; }
  bool operator>=(const dptr& o) const { return p >= o.p; }
  bool operator==(decltype(nullptr)) const { return p == nullptr; }
  bool operator!=(decltype(nullptr)) const { return p != nullptr; }
};

// Mutable checked pointer (`device T*`).
template <class T> struct dptr : dptr<const T> {
  typedef dptr<const T> base;
  dptr() = default;
  dptr(decltype(nullptr)) : base() {}
  explicit dptr(const simt_buffer* b) : base(b) {}
  dptr(T* p_, const char* lo_, const char* hi_, const simt_buffer* b_) : base(p_, lo_, hi_, b_) {}
  template <class U> explicit dptr(const dptr<U>& o) : base(o) {}

  T* check(const T* q) const {
    const char* c = (const char*)q;
    if (__builtin_expect(c < this->lo || c + sizeof(T) > this->hi || (uintptr_t)c % alignof(T) != 0, 0)) failw(q);
    return const_cast<T*>(q);
  }
  __attribute__((noinline, noreturn)) void failw(const T* q) const {
    const char* c = (const char*)q;
    if (this->lo == nullptr && this->hi == nullptr) simt_rt_fail("dereference of a null device pointer");
    if (c < this->lo || c + sizeof(T) > this->hi) simt_rt_oob(this->buf, this->lo, this->hi, q, (int)sizeof(T), 0);
    simt_rt_misaligned(this->buf, q, (int)alignof(T));
  }
  T& operator[](ptrdiff_t i) const { return *check(this->p + i); }
  T& operator*() const { return *check(this->p); }
  T* operator->() const { return check(this->p); }

  dptr operator+(ptrdiff_t i) const { return dptr(const_cast<T*>(this->p + i), this->lo, this->hi, this->buf); }
  dptr operator-(ptrdiff_t i) const { return dptr(const_cast<T*>(this->p - i), this->lo, this->hi, this->buf); }
  friend dptr operator+(ptrdiff_t i, const dptr& d) { return d + i; }
  ptrdiff_t operator-(const base& o) const { return this->p - o.p; }
  dptr& operator+=(ptrdiff_t i) { this->p += i; return *this; }
  dptr& operator-=(ptrdiff_t i) { this->p -= i; return *this; }
  dptr& operator++() { ++this->p; return *this; }
  dptr& operator--() { --this->p; return *this; }
  dptr operator++(int) { dptr t = *this; ++this->p; return t; }
  dptr operator--(int) { dptr t = *this; --this->p; return t; }
};

// Element access used by library code taking either checked or raw pointers.
template <class T> inline T* elem_ptr(T* p, ptrdiff_t i) { return p + i; }
template <class T> inline T* elem_ptr(const dptr<T>& p, ptrdiff_t i) { return &p[i]; }
template <class T> inline const T* elem_ptr(const dptr<const T>& p, ptrdiff_t i) { return &p[i]; }

// `threadgroup T name[N]...;` in kernel code becomes a reference to storage
// shared by the whole threadgroup (see translate.py).
template <class A> inline A& tg_var(int slot, const char* name) {
  return *reinterpret_cast<A*>(simt_rt_shared_alloc(slot, sizeof(A), alignof(A), name));
}

template <class T> struct ident { typedef T type; };

}  // namespace msl_emu

namespace metal {

enum class mem_flags : unsigned {
  mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4,
  mem_threadgroup_imageblock = 8, mem_object_data = 16
};
inline mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags((unsigned)a | (unsigned)b); }

inline void threadgroup_barrier(mem_flags, int line = __builtin_LINE(), const char* file = __builtin_FILE()) {
  simt_rt_barrier(line, file);
}
inline void simdgroup_barrier(mem_flags, int line = __builtin_LINE(), const char* file = __builtin_FILE()) {
  uint32_t active; int lane;
  simt_rt_exchange(nullptr, 0, MSL_OP_simdgroup_barrier, line, file, &active, &lane);
}

// ---------------------------------------------------------------- atomics
enum memory_order {
  memory_order_relaxed, memory_order_acquire, memory_order_release,
  memory_order_acq_rel, memory_order_seq_cst
};
inline void atomic_thread_fence(mem_flags, memory_order, int = 0) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <class T> struct alignas(sizeof(T)) atomic { T __v; };
typedef atomic<int> atomic_int;
typedef atomic<uint> atomic_uint;
typedef atomic<bool> atomic_bool;
typedef atomic<float> atomic_float;
typedef atomic<ulong> atomic_ulong;
typedef atomic<long> atomic_long;

template <class T> inline T atomic_load_explicit(const atomic<T>* o, memory_order) {
  T r; __atomic_load(const_cast<T*>(&o->__v), &r, __ATOMIC_SEQ_CST); return r; }
template <class T> inline void atomic_store_explicit(atomic<T>* o, typename msl_emu::ident<T>::type v, memory_order) {
  __atomic_store(&o->__v, &v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomic_exchange_explicit(atomic<T>* o, typename msl_emu::ident<T>::type v, memory_order) {
  T r; __atomic_exchange(&o->__v, &v, &r, __ATOMIC_SEQ_CST); return r; }
template <class T> inline bool atomic_compare_exchange_weak_explicit(
    atomic<T>* o, T* expected, typename msl_emu::ident<T>::type desired, memory_order, memory_order) {
  return __atomic_compare_exchange(&o->__v, expected, &desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); }
template <class T> inline bool atomic_compare_exchange_strong_explicit(
    atomic<T>* o, T* expected, typename msl_emu::ident<T>::type desired, memory_order s, memory_order f) {
  return atomic_compare_exchange_weak_explicit(o, expected, desired, s, f); }

namespace detail {
template <class T, class F> inline T atomic_rmw(atomic<T>* o, F f) {
  T old; __atomic_load(&o->__v, &old, __ATOMIC_SEQ_CST);
  T nv = f(old);
  while (!__atomic_compare_exchange(&o->__v, &old, &nv, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) nv = f(old);
  return old;
}
}  // namespace detail

#define MSL_ATOMIC_RMW(NAME, EXPR)                                                          \
  template <class T> inline T atomic_fetch_##NAME##_explicit(atomic<T>* o, typename msl_emu::ident<T>::type v, memory_order) { \
    return detail::atomic_rmw(o, [v](T a) { return (T)(EXPR); }); }                        \
  template <class T> inline T atomic_fetch_##NAME##_explicit(const msl_emu::dptr<atomic<T>>& o, typename msl_emu::ident<T>::type v, memory_order m) { \
    return atomic_fetch_##NAME##_explicit(&o[0], v, m); }
MSL_ATOMIC_RMW(add, a + v) MSL_ATOMIC_RMW(sub, a - v) MSL_ATOMIC_RMW(min, (v < a ? v : a))
MSL_ATOMIC_RMW(max, (v > a ? v : a)) MSL_ATOMIC_RMW(and, a & v) MSL_ATOMIC_RMW(or, a | v)
MSL_ATOMIC_RMW(xor, a ^ v)
#undef MSL_ATOMIC_RMW

template <class T> inline T atomic_load_explicit(const msl_emu::dptr<atomic<T>>& o, memory_order m) {
  return atomic_load_explicit(&o[0], m); }
template <class T> inline T atomic_load_explicit(const msl_emu::dptr<const atomic<T>>& o, memory_order m) {
  return atomic_load_explicit(&o[0], m); }
template <class T> inline void atomic_store_explicit(const msl_emu::dptr<atomic<T>>& o, typename msl_emu::ident<T>::type v, memory_order m) {
  atomic_store_explicit(&o[0], v, m); }
template <class T> inline T atomic_exchange_explicit(const msl_emu::dptr<atomic<T>>& o, typename msl_emu::ident<T>::type v, memory_order m) {
  return atomic_exchange_explicit(&o[0], v, m); }
template <class T> inline bool atomic_compare_exchange_weak_explicit(
    const msl_emu::dptr<atomic<T>>& o, T* e, typename msl_emu::ident<T>::type d, memory_order s, memory_order f) {
  return atomic_compare_exchange_weak_explicit(&o[0], e, d, s, f); }

}  // namespace metal
