// CUDA emulator: what device code sees from the language and the runtime, on the SIMT fiber
// runtime (emulators/simt_runtime/simt_abi.h). Every CUDA thread is a fiber; fibers switch at
// __syncthreads and at warp collectives only. Included by the stand-ins for <cuda_runtime.h>,
// <cuda_fp16.h> and <cuda_bf16.h>; the emulator's front end (frontend.py) has already rewritten
// `__shared__` declarations and `<<<...>>>` launches into the calls declared here.
#pragma once
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <mutex>
#include <type_traits>

#include "simt_abi.h"

// ---- execution-space keywords: all code is host code here
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
#define __constant__
#define __managed__
// A `__shared__` declaration the front end did not rewrite (e.g. several declarators in one
// statement, or a declaration split over lines) must not compile silently as a private array.
#define __shared__ __shared___declaration_form_not_supported_by_the_cuda_emulator
#define warpSize 32

// ---- vector types
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(16) uint4 { unsigned x, y, z, w; };
struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return uint2{x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

namespace cuda_emu {

// Collective op codes: the runtime groups lanes by (op, call site); names for its messages.
#define CUDA_EMU_OPS(X)                                                                      \
  X(__syncwarp) X(__shfl_sync) X(__shfl_up_sync) X(__shfl_down_sync) X(__shfl_xor_sync)     \
  X(__ballot_sync) X(__any_sync) X(__all_sync) X(__activemask) X(__reduce_sync)            \
  X(ldmatrix_x4) X(ldmatrix_x4_trans) X(mma_m16n8k16_f16) X(mma_m16n8k16_bf16)
enum Op {
#define CUDA_EMU_OP_ENUM(n) OP##n,
  CUDA_EMU_OPS(CUDA_EMU_OP_ENUM)
#undef CUDA_EMU_OP_ENUM
  OP_COUNT
};
inline const char* const* op_names() {
  static const char* const names[] = {
#define CUDA_EMU_OP_NAME(n) #n,
      CUDA_EMU_OPS(CUDA_EMU_OP_NAME)
#undef CUDA_EMU_OP_NAME
  };
  return names;
}

// ---- call sites. The runtime names a site by the text after the file name's last dot (the
// MSL front end's "source line N"), so every file is interned as "cuda.@F<n>@", and the
// launcher's error path replaces the marker by the file's base name (cuda_runtime.h).
struct FileTable {
  static constexpr int kMax = 256;
  std::atomic<const char*> key[kMax];  // the __FILE__ pointer seen first
  char marker[kMax][24];
  const char* name[kMax];  // base name, for messages
  const char* path[kMax];
  std::atomic<int> n{0};
  std::mutex m;
};
inline FileTable& files() { static FileTable t; return t; }

inline const char* site_file(const char* file) {
  FileTable& t = files();
  const int n = t.n.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (t.key[i].load(std::memory_order_relaxed) == file) return t.marker[i];
  std::lock_guard<std::mutex> g(t.m);
  const int cur = t.n.load();
  int same = -1;  // the same file named through another pointer: a second key, the same marker
  for (int i = 0; i < cur; ++i) {
    if (t.key[i].load() == file) return t.marker[i];
    if (same < 0 && strcmp(t.path[i], file) == 0) same = i;
  }
  if (cur >= FileTable::kMax) return same >= 0 ? t.marker[same] : "cuda.@F?@";
  const char* slash = strrchr(file, '/');
  t.path[cur] = file;
  t.name[cur] = slash ? slash + 1 : file;
  snprintf(t.marker[cur], sizeof t.marker[cur], "cuda.@F%d@", same >= 0 ? same : cur);
  t.key[cur].store(file);
  t.n.store(cur + 1, std::memory_order_release);
  return t.marker[cur];
}
inline const char* base_name(const char* file) {
  const char* slash = file ? strrchr(file, '/') : nullptr;
  return slash ? slash + 1 : (file ? file : "?");
}

// Fails the calling thread with a hazard (the runtime adds the kernel and thread position).
__attribute__((noreturn, format(printf, 1, 2))) inline void fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  simt_rt_fail(buf);
}

inline uint3 as_uint3(const uint32_t* v) { return uint3{v[0], v[1], v[2]}; }

inline void syncthreads(int line, const char* file) { simt_rt_barrier(line, site_file(file)); }

// ---- warp collectives: one exchange per call; every lane reads what it needs from the 32 slots
template <class T> struct Lanes {
  const unsigned char* d;
  uint32_t active;
  int lane;
  bool on(int l) const { return l >= 0 && l < SIMT_WARP && ((active >> l) & 1u); }
  T get(int l) const { T v; memcpy((void*)&v, d + l * SIMT_SLOT_BYTES, sizeof(T)); return v; }
};

template <class T> inline Lanes<T> exchange(const T& v, int op, int line, const char* file) {
  static_assert(sizeof(T) <= SIMT_SLOT_BYTES, "value too large for a warp collective");
  Lanes<T> s;
  s.d = simt_rt_exchange(&v, (int)sizeof(T), op, line, site_file(file), &s.active, &s.lane);
  return s;
}

// The lanes that exist in the caller's warp (a partial last warp has fewer than 32).
inline uint32_t warp_lanes() {
  const simt_thread_info* t = simt_rt_thread();
  const uint32_t n = t->threads_per_threadgroup[0] * t->threads_per_threadgroup[1] * t->threads_per_threadgroup[2];
  const uint32_t first = t->simdgroup_index_in_threadgroup * SIMT_WARP;
  const uint32_t count = n - first < SIMT_WARP ? n - first : SIMT_WARP;
  return count == 32 ? 0xFFFFFFFFu : ((1u << count) - 1);
}

inline void lane_list(uint32_t m, char* out, size_t n) {
  size_t k = 0;
  out[0] = 0;
  for (int l = 0; l < 32 && k + 8 < n; ++l)
    if ((m >> l) & 1u) k += (size_t)snprintf(out + k, n - k, k ? ",%d" : "%d", l);
}

// A `_sync` collective: every lane named in `mask` must take part (reach the same call), the
// caller must be in it, and the mask may name only lanes that exist.
inline void check_mask(const char* what, uint32_t mask, uint32_t active, int lane, int line, const char* file) {
  if (!(mask & ~active) && ((mask >> lane) & 1u)) return;  // every named lane took part
  char list[160];
  if (!((mask >> lane) & 1u))
    fail("%s with mask 0x%08x (%s line %d): the calling lane %d is not in the mask", what, mask,
         base_name(file), line, lane);
  const uint32_t exist = warp_lanes();
  if (mask & ~exist) {
    lane_list(mask & ~exist, list, sizeof list);
    fail("%s with mask 0x%08x (%s line %d) names lanes [%s] that do not exist in this warp (the block "
         "has fewer threads)", what, mask, base_name(file), line, list);
  }
  if (mask & ~active) {
    lane_list(mask & ~active, list, sizeof list);
    fail("%s with mask 0x%08x (%s line %d): lanes [%s] are in the mask but did not take part (they "
         "returned or wait at another call: divergent warp collective, a deadlock or undefined on the GPU)",
         what, mask, base_name(file), line, list);
  }
}

// A value read from a lane that did not take part: undefined on the GPU, all bits set here.
template <class T> inline T poison() { T v; memset((void*)&v, 0xFF, sizeof(T)); return v; }

enum ShflMode { SHFL_IDX, SHFL_UP, SHFL_DOWN, SHFL_BFLY };
constexpr const char* kShflNames[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync"};

// shfl.sync semantics (PTX ISA): lanes form segments of `width`; a source outside the caller's
// segment (or outside the warp) returns the caller's own value.
template <class T>
inline T shfl(int line, const char* file, ShflMode mode, unsigned mask, T var, int b, int width = 32) {
  const int op = OP__shfl_sync + (int)mode;
  Lanes<T> s = exchange(var, op, line, file);
  check_mask(kShflNames[mode], mask, s.active, s.lane, line, file);
  if (width <= 0 || width > 32 || (width & (width - 1)))
    fail("%s (%s line %d): width %d is not a power of two in [1, 32]", kShflNames[mode], base_name(file), line, width);
  const int seg = ~(width - 1) & 31, lane = s.lane;
  const int max_lane = (lane & seg) | ((mode == SHFL_UP ? 0 : 31) & ~seg), min_lane = lane & seg;
  int j;
  bool ok;
  switch (mode) {
    case SHFL_UP: j = lane - b; ok = j >= max_lane; break;
    case SHFL_DOWN: j = lane + b; ok = j <= max_lane; break;
    case SHFL_BFLY: j = lane ^ b; ok = j <= max_lane; break;
    default: j = min_lane | (b & ~seg & 31); ok = j <= max_lane; break;
  }
  if (!ok) j = lane;
  return s.on(j) ? s.get(j) : poison<T>();
}

inline void syncwarp(int line, const char* file, unsigned mask) {
  Lanes<char> s = exchange(char(0), OP__syncwarp, line, file);
  check_mask("__syncwarp", mask, s.active, s.lane, line, file);
}
struct SyncWarp {  // __syncwarp() and __syncwarp(mask) through one macro
  int line;
  const char* file;
  void operator()(unsigned mask = 0xFFFFFFFFu) const { syncwarp(line, file, mask); }
};

enum VoteMode { VOTE_BALLOT, VOTE_ANY, VOTE_ALL };
inline unsigned vote(int line, const char* file, VoteMode mode, unsigned mask, int pred) {
  static const char* names[] = {"__ballot_sync", "__any_sync", "__all_sync"};
  Lanes<int> s = exchange(pred, OP__ballot_sync + (int)mode, line, file);
  check_mask(names[mode], mask, s.active, s.lane, line, file);
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if (((mask >> l) & 1u) && s.get(l)) ballot |= 1u << l;
  if (mode == VOTE_BALLOT) return ballot;
  if (mode == VOTE_ANY) return ballot != 0;
  return ballot == mask;
}

inline unsigned activemask(int line, const char* file) {
  return exchange(char(0), OP__activemask, line, file).active;
}

enum ReduceMode { RED_ADD, RED_MIN, RED_MAX, RED_AND, RED_OR, RED_XOR };
template <class T> inline T reduce(int line, const char* file, ReduceMode mode, unsigned mask, T v) {
  Lanes<T> s = exchange(v, OP__reduce_sync, line, file);
  check_mask("__reduce_*_sync", mask, s.active, s.lane, line, file);
  bool first = true;
  T acc = 0;
  for (int l = 0; l < 32; ++l) {
    if (!((mask >> l) & 1u)) continue;
    const T x = s.get(l);
    if (first) { acc = x; first = false; continue; }
    switch (mode) {
      case RED_ADD: acc += x; break;
      case RED_MIN: acc = x < acc ? x : acc; break;
      case RED_MAX: acc = x > acc ? x : acc; break;
      case RED_AND: acc &= x; break;
      case RED_OR: acc |= x; break;
      default: acc ^= x; break;
    }
  }
  return acc;
}

// ---- shared memory. The front end turns `__shared__ T name[N]...;` in a function into
// `auto& name = *cuda_emu::shared_var<T[N]...>(slot, "name");` (one slot per declaration) and
// `extern __shared__ T name[];` into a pointer to the launch's dynamic shared memory (slot 0).
inline size_t& dynamic_smem_bytes() { static thread_local size_t n = 0; return n; }

template <class A, size_t kAlign = 0> inline A* shared_var(int slot, const char* name) {
  constexpr size_t a = alignof(A) > kAlign ? alignof(A) : kAlign;
  return static_cast<A*>(simt_rt_shared_alloc(slot, sizeof(A), a < 16 ? 16 : a, name));
}
template <class T> inline T* dynamic_shared(size_t align, const char* name) {
  const size_t n = dynamic_smem_bytes();
  if (n == 0) return static_cast<T*>(nullptr);
  return static_cast<T*>(simt_rt_shared_alloc(0, n, align < 16 ? 16 : align, name));
}

// The shared window of the caller's block: shared addresses are byte offsets into the arena.
inline unsigned char* shared_window(size_t* used) { return simt_rt_shared_arena(used); }

inline uint32_t cvta_to_shared(const void* p, int line, const char* file) {
  size_t used;
  unsigned char* base = shared_window(&used);
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (c < base || c > base + used)
    fail("__cvta_generic_to_shared(%p) (%s line %d): the address is not in the block's shared memory "
         "(%zu bytes allocated at %p)", p, base_name(file), line, used, (void*)base);
  return (uint32_t)(c - base);
}

// A raw shared address [addr, addr + n) used by ldmatrix / cp.async: inside the block's shared
// memory and aligned.
inline unsigned char* shared_ptr(uint32_t addr, int n, int align, const char* what, int line, const char* file) {
  size_t used;
  unsigned char* base = shared_window(&used);
  if ((uint64_t)addr + (uint64_t)n > used)
    fail("%s (%s line %d): shared address %u + %d bytes is outside the block's shared memory (%zu bytes "
         "allocated)", what, base_name(file), line, addr, n, used);
  if (addr % (uint32_t)align)
    fail("%s (%s line %d): shared address %u is not %d-byte aligned", what, base_name(file), line, addr, align);
  return base + addr;
}

}  // namespace cuda_emu

// ---- built-in variables
#define threadIdx (::cuda_emu::as_uint3(::simt_rt_thread()->thread_position_in_threadgroup))
#define blockIdx (::cuda_emu::as_uint3(::simt_rt_thread()->threadgroup_position_in_grid))
#define blockDim (::cuda_emu::as_uint3(::simt_rt_thread()->threads_per_threadgroup))
#define gridDim (::cuda_emu::as_uint3(::simt_rt_thread()->threadgroups_per_grid))

// ---- synchronisation and warp intrinsics (macros, so that messages name the calling line)
#define CUDA_EMU_SITE __LINE__, __FILE__
#define __syncthreads() ::cuda_emu::syncthreads(CUDA_EMU_SITE)
#define __syncwarp(...) ::cuda_emu::SyncWarp{CUDA_EMU_SITE}(__VA_ARGS__)
#define __shfl_sync(...) ::cuda_emu::shfl(CUDA_EMU_SITE, ::cuda_emu::SHFL_IDX, __VA_ARGS__)
#define __shfl_up_sync(...) ::cuda_emu::shfl(CUDA_EMU_SITE, ::cuda_emu::SHFL_UP, __VA_ARGS__)
#define __shfl_down_sync(...) ::cuda_emu::shfl(CUDA_EMU_SITE, ::cuda_emu::SHFL_DOWN, __VA_ARGS__)
#define __shfl_xor_sync(...) ::cuda_emu::shfl(CUDA_EMU_SITE, ::cuda_emu::SHFL_BFLY, __VA_ARGS__)
#define __ballot_sync(mask, p) ::cuda_emu::vote(CUDA_EMU_SITE, ::cuda_emu::VOTE_BALLOT, mask, p)
#define __any_sync(mask, p) ((int)::cuda_emu::vote(CUDA_EMU_SITE, ::cuda_emu::VOTE_ANY, mask, p))
#define __all_sync(mask, p) ((int)::cuda_emu::vote(CUDA_EMU_SITE, ::cuda_emu::VOTE_ALL, mask, p))
#define __activemask() ::cuda_emu::activemask(CUDA_EMU_SITE)
#define __reduce_add_sync(mask, v) ::cuda_emu::reduce(CUDA_EMU_SITE, ::cuda_emu::RED_ADD, mask, v)
#define __reduce_min_sync(mask, v) ::cuda_emu::reduce(CUDA_EMU_SITE, ::cuda_emu::RED_MIN, mask, v)
#define __reduce_max_sync(mask, v) ::cuda_emu::reduce(CUDA_EMU_SITE, ::cuda_emu::RED_MAX, mask, v)
#define __reduce_and_sync(mask, v) ::cuda_emu::reduce(CUDA_EMU_SITE, ::cuda_emu::RED_AND, mask, v)
#define __reduce_or_sync(mask, v) ::cuda_emu::reduce(CUDA_EMU_SITE, ::cuda_emu::RED_OR, mask, v)
#define __reduce_xor_sync(mask, v) ::cuda_emu::reduce(CUDA_EMU_SITE, ::cuda_emu::RED_XOR, mask, v)
// Fences: fibers interleave only at synchronisation points, so memory is always coherent.
#define __threadfence() ((void)0)
#define __threadfence_block() ((void)0)
#define __cvta_generic_to_shared(p) ((size_t)::cuda_emu::cvta_to_shared((p), CUDA_EMU_SITE))

// ---- math: the host C library in float (IEEE); fast-math intrinsics are their exact versions
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return exp10f(x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float rsqrtf(float x) { return 1.f / sqrtf(x); }
inline float __saturatef(float x) { return x != x ? 0.f : (x < 0.f ? 0.f : (x > 1.f ? 1.f : x)); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
template <class T> inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---- atomics (blocks run on several OS threads)
template <class T> inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline float atomicAdd(float* p, float v) {
  float old = *p, want;
  do { want = old + v; } while (!__atomic_compare_exchange(p, &old, &want, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
  return old;
}
template <class T> inline T atomicMax(T* p, T v) {
  T old = *p;
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
template <class T> inline T atomicMin(T* p, T v) {
  T old = *p;
  while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
template <class T> inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicCAS(T* p, T cmp, T v) {
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return cmp;
}
