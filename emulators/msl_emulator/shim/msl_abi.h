// MSL emulator: the C ABI between compiled kernels, the fiber runtime and Python.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define MSL_ABI_VERSION 1
#define MSL_SIMD_WIDTH 32
#define MSL_SIMD_SLOT_BYTES 64  // largest value a lane can exchange in one SIMD op

// Collective operations, in the order of their op codes (names for messages).
#define MSL_SIMD_OPS(X)                                                          \
  X(simdgroup_barrier) X(simd_sum) X(simd_product) X(simd_min) X(simd_max)        \
  X(simd_and) X(simd_or) X(simd_xor) X(simd_prefix_inclusive_sum)                \
  X(simd_prefix_exclusive_sum) X(simd_prefix_inclusive_product)                  \
  X(simd_prefix_exclusive_product) X(simd_shuffle) X(simd_shuffle_xor)           \
  X(simd_shuffle_down) X(simd_shuffle_up) X(simd_shuffle_rotate_down)            \
  X(simd_shuffle_rotate_up) X(simd_shuffle_and_fill_down) X(simd_shuffle_and_fill_up) \
  X(simd_broadcast) X(simd_broadcast_first) X(simd_all) X(simd_any) X(simd_ballot) \
  X(simd_is_first) X(quad_shuffle) X(quad_shuffle_xor) X(quad_shuffle_down)      \
  X(quad_shuffle_up) X(quad_broadcast) X(quad_sum) X(quad_product) X(quad_min)   \
  X(quad_max) X(simdgroup_load) X(simdgroup_store) X(simdgroup_multiply_accumulate)

enum msl_simd_op {
#define MSL_OP_ENUM(n) MSL_OP_##n,
  MSL_SIMD_OPS(MSL_OP_ENUM)
#undef MSL_OP_ENUM
  MSL_OP_COUNT
};

extern "C" {

// Per-thread builtin values, filled in by the runtime before a thread starts.
struct msl_thread_info {
  uint32_t thread_position_in_grid[3];
  uint32_t thread_position_in_threadgroup[3];
  uint32_t threadgroup_position_in_grid[3];
  uint32_t threads_per_threadgroup[3];
  uint32_t dispatch_threads_per_threadgroup[3];
  uint32_t threads_per_grid[3];
  uint32_t threadgroups_per_grid[3];
  uint32_t grid_origin[3];
  uint32_t grid_size[3];
  uint32_t thread_index_in_threadgroup;
  uint32_t thread_index_in_simdgroup;
  uint32_t simdgroup_index_in_threadgroup;
  uint32_t simdgroups_per_threadgroup;
  uint32_t dispatch_simdgroups_per_threadgroup;
  uint32_t thread_index_in_quadgroup;
  uint32_t quadgroup_index_in_threadgroup;
  uint32_t quadgroups_per_threadgroup;
  uint32_t dispatch_quadgroups_per_threadgroup;
  uint32_t thread_execution_width;
  uint32_t threads_per_simdgroup;
};

// One kernel argument buffer. `ptr` is what the kernel parameter points at;
// [lo, hi) is the memory it may touch (bounds for checked device pointers).
struct msl_buffer {
  void* ptr;
  char* lo;
  char* hi;
  const char* name;  // parameter name, for messages
  const char* type;  // element type as written in the signature, for messages
  int32_t is_const;  // 1 for inputs and their shape/strides/ndim
  int32_t elem_size;
};

typedef void (*msl_kernel_fn)(const msl_thread_info* info, const msl_buffer* bufs);

struct msl_launch {
  msl_kernel_fn fn;
  const msl_buffer* bufs;
  int32_t nbufs;
  uint32_t grid[3];        // total threads (dispatchThreads semantics)
  uint32_t threadgroup[3]; // threads per threadgroup (already clamped to grid)
  int32_t nworkers;        // OS threads running threadgroups
  int32_t schedule;        // 0 forward, 1 reverse, 2 random order of fibers
  uint64_t seed;
  int32_t tg_mem_limit;    // bytes (32768 on Apple GPUs)
  int32_t stack_kb;        // per-fiber stack
  int32_t max_threads;     // per threadgroup (1024)
  const char* kernel_name;
  char* err;
  int32_t errlen;
};

int msl_rt_launch(const msl_launch* launch);
int msl_rt_abi_version(void);

// ---- called from kernel code (always from inside a fiber)
void* msl_rt_tg_alloc(int slot, size_t size, size_t align, const char* name);
// Collective exchange among the lanes of the caller's simdgroup. Returns the
// slots of all 32 lanes (stride MSL_SIMD_SLOT_BYTES); *active gets the mask of
// lanes that took part, *lane the caller's lane.
const unsigned char* msl_rt_simd_exchange(const void* value, int nbytes, int op, int line, const char* file,
                                          uint32_t* active, int* lane);
void msl_rt_threadgroup_barrier(int line, const char* file);
int msl_rt_lane(void);
__attribute__((noreturn)) void msl_rt_fail(const char* what);
__attribute__((noreturn)) void msl_rt_oob(const msl_buffer* buf, const void* lo, const void* hi,
                                          const void* addr, int nbytes, int is_const);
__attribute__((noreturn)) void msl_rt_misaligned(const msl_buffer* buf, const void* addr, int align);
}
