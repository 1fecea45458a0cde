// Tile configurations of the backward kernels per head-dim bucket (bwd_kernel.cuh).
//
// Two kernels stream tiles (kStages = how many buffers the streamed tiles get):
//   dK/dV  a CTA owns kBlockN keys (K, V resident) and streams kBlockM-query tiles of Q, dO
//   dQ     a CTA owns kBlockM queries (Q, dO resident) and streams kBlockN-key tiles of K, V
//          (deterministic mode only; the default mode adds dQ with atomics in the dK/dV kernel)
// Shared memory (b16 elements unless stated, D = the bucket; Dv is padded to it):
//   dK/dV  K, V [BN][D] + Q, dO [S][BM][D] + P^T, dS^T [2][BN][BM] + lse, delta [S][BM] f32
//   dQ     Q, dO [BM][D] + K, V [S][BN][D] + dS [2][BM][BN] + lse, delta, row sums [.][BM] f32
// Every config fits sm86/sm89's 99 KB (101376 bytes), so one binary serves sm80..sm90.
// Accumulators per thread (float32, held over the whole CTA): dK/dV  BN * 2D / (32 W),
// dQ kernel  BM * D / (32 W); the S and dP tiles of one step add (rows * cols) / (32 W) each.
//
//   D    dK/dV BNxBM  W  S  smem     dK+dV/thr   dQ BMxBN  W  S  smem     dQ/thr
//   32   64x64        4  2  49.0 KB   32         64x64     4  2  24.5 KB  16
//   64   64x64        4  2  65.0 KB   64         64x64     4  2  56.5 KB  32
//   96   64x64        4  2  89.0 KB   96         64x64     4  2  80.5 KB  48
//   128  64x64        8  1  80.5 KB   64         64x64     8  1  72.5 KB  32
//   192  64x32        8  1  80.25 KB  96         64x32     8  1  76.5 KB  48
//   256  32x32        8  1  68.25 KB  64         32x32     8  1  66.25 KB 32
// FlashAttention 2 (flash_bwd_launch_template.h, sm80; one kernel with dQ atomics, BM x BN):
//   D<=32 128x128 w8; 64: 128x128 w8 (>= 144 KB smem) else 64x128 w8; 96: 64x128 w8;
//   128: 64x128 w8 (A100), 64x64 w8 (sm86); 192: 64x64 w8; 256: 64x64 w8 (A100/H100),
//   64x32 w8 with V in registers (sm86, 99 KB).
// Why ours differ:
//   * We keep 64 keys per CTA up to D=192 (FA2 uses 128 below D=128): the P^T and dS^T tiles
//     staged in shared memory grow with BN * BM, and at 99 KB the 128-key version of D=64/96
//     leaves no room for a second Q/dO stage.  64x64 is FA2's own sm86 choice at D=128.
//   * 4 warps at D <= 96 (the accumulators are small), 8 from D=128 so dK + dV stay at <= 96
//     floats per thread (FA2: 8 warps everywhere; with 4 warps D=128 would hold 128).
//   * D=192/256 stream 32-query (256: also 32-key) tiles: at 99 KB FA2's 64x64 needs 104+ KB
//     with our staged P/dS; its sm86 answer (V in registers, 64x32) costs registers instead.
//   * Double buffering (S=2) where it fits in 99 KB (D <= 96), as FA2 does on A100 only.
// Timing on a GPU (benchmarks) may still move these; the ptxas test checks no bucket spills.
#pragma once

#include <cstddef>

#include "params.h"  // MA_HD: host+device, so host_tests/bwd_check.cpp reads the tiles too

namespace mlx_attn_cuda {

constexpr int bwd_cmin(int a, int b) { return a < b ? a : b; }

// How kWarps warps share a [kRows][kCols] tile of C fragments: whole m16 row tiles, and when
// there are more warps than row tiles, column slices (multiples of 16) of those.  Warps past
// kActive have no share (they still meet at the barriers).
template <int kRows, int kCols, int kWarps>
struct WarpSlice {
  static constexpr int kRowTiles = kRows / 16;
  static constexpr bool kByRows = kRowTiles >= kWarps;
  static constexpr int kMT = kByRows ? kRowTiles / kWarps : 1;  // m16 tiles per warp
  static constexpr int slices_for(int want) {
    int s = want;
    while (s > 1 && kCols % (16 * s) != 0) --s;
    return s;
  }
  static constexpr int kSlices = kByRows ? 1 : slices_for(bwd_cmin(kWarps / kRowTiles, kCols / 16));
  static constexpr int kActive = kByRows ? kWarps : kRowTiles * kSlices;
  static constexpr int kWidth = kCols / kSlices;  // columns per warp
  static constexpr int kNT = kWidth / 8;          // n8 tiles per warp
  MA_HD static bool active(int w) { return w < kActive; }
  MA_HD static int row0(int w) {
    return kByRows ? w * kMT * 16 : (w % kRowTiles) * 16;
  }
  MA_HD static int col0(int w) { return kByRows ? 0 : (w / kRowTiles) * kWidth; }

  static_assert(kRows % 16 == 0 && kCols % 16 == 0, "whole m16 / k16 tiles");
  static_assert(!kByRows || kRowTiles % kWarps == 0, "row tiles split evenly");
  static_assert(kWidth % 16 == 0, "column slices are pairs of n8 tiles");
};

template <typename T_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_, int kStages_>
struct BwdTraits {
  using T = T_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;  // queries per tile
  static constexpr int kBlockN = kBlockN_;  // keys per tile
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kStages = kStages_;  // buffers of the streamed tiles
  static constexpr int kChunks = kHeadDim / 8;

  static constexpr size_t kDkdvSmemBytes =
      (size_t)(2 * kBlockN * kHeadDim + 2 * kStages * kBlockM * kHeadDim + 4 * kBlockN * kBlockM) *
          sizeof(T) +
      2 * kStages * kBlockM * sizeof(float);
  static constexpr size_t kDqSmemBytes =
      (size_t)(2 * kBlockM * kHeadDim + 2 * kStages * kBlockN * kHeadDim + 2 * kBlockM * kBlockN) *
          sizeof(T) +
      (2 + WarpSlice<kBlockM, kBlockN, kNWarps>::kSlices) * kBlockM * sizeof(float);

  static_assert(kBlockM % 32 == 0 && kBlockN % 32 == 0, "tiles of 32 rows (swizzle, k16 steps)");
  static_assert(kStages == 1 || kStages == 2, "1 or 2 buffers");
  static_assert(kHeadDim % 32 == 0, "head dim bucket is a multiple of 32");
};

// (dK/dV kernel traits, dQ kernel traits) per (dtype, bucket): the table above.
template <typename T, int kHeadDim>
struct BwdTraitsFor;

#define MA_BWD_TRAITS(D, BN, BM, W, S, QBM, QBN, QW, QS)    \
  template <typename T>                                     \
  struct BwdTraitsFor<T, D> {                               \
    using dkdv = BwdTraits<T, D, BM, BN, W, S>;             \
    using dq = BwdTraits<T, D, QBM, QBN, QW, QS>;           \
  };

//            D    dK/dV: BN  BM  W  S   dQ: BM  BN  W  S
MA_BWD_TRAITS(32,         64, 64, 4, 2,      64, 64, 4, 2)
MA_BWD_TRAITS(64,         64, 64, 4, 2,      64, 64, 4, 2)
MA_BWD_TRAITS(96,         64, 64, 4, 1,      64, 64, 4, 2)
MA_BWD_TRAITS(128,        64, 64, 8, 1,      64, 64, 8, 1)
MA_BWD_TRAITS(192,        64, 32, 8, 1,      64, 32, 8, 1)
MA_BWD_TRAITS(256,        32, 32, 8, 1,      32, 32, 8, 1)
#undef MA_BWD_TRAITS

}  // namespace mlx_attn_cuda
