// SIMT runtime: the C ABI shared by the emulators' front ends (MSL, CUDA), the fiber runtime
// (simt_runtime.cpp) and Python. Every GPU thread of a block is a cooperative fiber; fibers
// switch only at barriers and warp/SIMD-group collectives; blocks run on a few OS threads.
#pragma once
#include <stddef.h>
#include <stdint.h>

#define SIMT_ABI_VERSION 1
#define SIMT_WARP 32           // lanes per warp (CUDA) / SIMD group (Metal)
#define SIMT_SLOT_BYTES 64     // largest value a lane can exchange in one collective

extern "C" {

// Per-thread position, filled in by the runtime before a thread starts. Named as in MSL; a
// CUDA front end reads threadIdx = thread_position_in_threadgroup, blockIdx =
// threadgroup_position_in_grid, blockDim = threads_per_threadgroup, gridDim =
// threadgroups_per_grid.
struct simt_thread_info {
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

// One kernel argument buffer. `ptr` is what the kernel parameter points at; [lo, hi) is the
// memory it may touch (bounds for checked pointers).
struct simt_buffer {
  void* ptr;
  char* lo;
  char* hi;
  const char* name;  // parameter name, for messages
  const char* type;  // element type as written in the signature, for messages
  int32_t is_const;  // 1 for inputs
  int32_t elem_size;
};

// A kernel thread's entry point: its position, the launch's buffers and the front end's
// argument block (`simt_launch.args`, e.g. a CUDA kernel's parameter struct).
typedef void (*simt_kernel_fn)(const simt_thread_info* info, const simt_buffer* bufs, void* args);

enum simt_dialect { SIMT_MSL = 0, SIMT_CUDA = 1 };  // how messages name threads and memory

struct simt_launch {
  simt_kernel_fn fn;
  const simt_buffer* bufs;
  int32_t nbufs;
  void* args;
  uint32_t grid[3];        // total threads (MSL dispatchThreads semantics; CUDA: blocks * blockDim)
  uint32_t threadgroup[3]; // threads per block (already clamped to grid)
  int32_t nworkers;        // OS threads running blocks
  int32_t schedule;        // 0 forward, 1 reverse, 2 random order of fibers
  uint64_t seed;
  int32_t tg_mem_limit;    // bytes of block-shared memory (Apple: 32768; CUDA: per architecture)
  int32_t stack_kb;        // per-fiber stack
  int32_t max_threads;     // per block (1024)
  int32_t dialect;         // simt_dialect
  const char* kernel_name;
  const char* const* op_names;  // names of the front end's collective op codes, for messages
  int32_t n_op_names;
  void (*thread_exit)(void* state);  // called with a thread's state slot when it ends (may be null)
  char* err;
  int32_t errlen;
};

int simt_rt_launch(const simt_launch* launch);
int simt_rt_abi_version(void);

// ---- called from kernel code (always from inside a fiber)
// Block-shared variable number `slot` (the same slot gets the same memory in every thread of
// the block): static __shared__ / threadgroup arrays, and a CUDA launch's dynamic shared memory.
void* simt_rt_shared_alloc(int slot, size_t size, size_t align, const char* name);
// The block's shared arena: base address and bytes allocated so far (for address-space
// conversions and bounds checks of raw shared addresses).
unsigned char* simt_rt_shared_arena(size_t* used);
// Collective exchange among the lanes of the caller's warp: every live lane contributes
// `nbytes` of `value`; returns the slots of all 32 lanes (stride SIMT_SLOT_BYTES); *active gets
// the mask of lanes that took part (lanes waiting at the same call site with the same op),
// *lane the caller's lane.
const unsigned char* simt_rt_exchange(const void* value, int nbytes, int op, int line,
                                      const char* file, uint32_t* active, int* lane);
// Block-wide barrier (threadgroup_barrier / __syncthreads): every live thread of the block
// must reach the same one.
void simt_rt_barrier(int line, const char* file);
int simt_rt_lane(void);
const simt_thread_info* simt_rt_thread(void);  // the calling thread's position
void** simt_rt_thread_state(void);             // a per-thread pointer the front end may use
__attribute__((noreturn)) void simt_rt_fail(const char* what);
__attribute__((noreturn)) void simt_rt_oob(const simt_buffer* buf, const void* lo, const void* hi,
                                           const void* addr, int nbytes, int is_const);
__attribute__((noreturn)) void simt_rt_misaligned(const simt_buffer* buf, const void* addr, int align);
}
