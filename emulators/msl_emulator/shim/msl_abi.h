// MSL emulator: the MSL front end's part of the ABI (its collective op codes) on top of the
// SIMT runtime's C ABI (emulators/simt_runtime/simt_abi.h: thread positions, buffers, launch,
// barriers, warp exchange), which the CUDA emulator shares.
#pragma once
#include "simt_abi.h"

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
