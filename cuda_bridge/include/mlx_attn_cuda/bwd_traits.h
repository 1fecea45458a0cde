// Tile configurations of the backward kernels per head-dim bucket (bwd_kernel.cuh).
//
// Two kernel shapes stream tiles (kStages = how many buffers the streamed tiles get):
//   dK/dV  a CTA owns kBlockN keys (K, V resident) and streams kBlockM-query tiles of Q, dO
//   dQ     a CTA owns kBlockM queries (Q, dO resident) and streams kBlockN-key tiles of K, V:
//          the delta kernel (default mode) and the deterministic dQ kernel
// Shared memory (b16 elements unless stated, D = the bucket; Dv is padded to it; P and dS are
// staged as a high and a low b16 part each, see bwd_tile.cuh):
//   dK/dV  K, V [BN][D] + Q, dO [S][BM][D] + P^T, dS^T [2][BN][BM] + lse, delta [S][BM] f32
//   dQ     Q, dO [BM][D] + K, V [S][BN][D] + dS [2][BM][BN] + lse, delta, row sums [.][BM] f32
// Every config fits sm86/sm89's 99 KB (101376 bytes; static_asserts below), so one binary
// serves sm80..sm90.  Float32 accumulators held per thread over the whole CTA: dK + dV
// = BN * 2D / (32 W), dQ = BM * D / (32 W); one step's S and dP tiles add (rows * cols) /
// (32 W) each.  ptxas (tests/test_cuda_ptxas.py, nvcc 13.0): no spills in any bucket on sm_80
// or sm_90; registers: dK/dV 177-250, dQ 156-221, delta 101-164, no local memory.
//
//   D    dK/dV BNxBM  W  S  smem      dK+dV/thr  dQ BMxBN  W  S  smem      dQ/thr
//   32   64x64        4  2  57.0 KB   32         64x64     4  2  40.75 KB  16
//   64   64x64        4  2  81.0 KB   64         64x64     4  2  64.75 KB  32
//   96   64x64        4  1  80.5 KB   96         64x64     4  2  88.75 KB  48
//   128  64x64        8  1  96.5 KB   64         64x64     8  1  81.0 KB   32
//   192  64x32        8  1  88.25 KB  96         64x32     8  1  81.0 KB   48
//   256  32x32        8  1  72.25 KB  64         32x32     8  1  68.5 KB   32
// FlashAttention 2 (flash_bwd_launch_template.h, sm80; one kernel with dQ atomics, BM x BN):
//   D=32 128x128 w8; 64: 128x128 w8 (>= 144 KB smem) else 64x128 w8; 96: 64x128 w8;
//   128: 64x128 w8 (A100), 64x64 w8 (sm86); 192: 64x64 w8; 256: 64x64 w8 (A100/H100),
//   64x32 w8 with V in registers (sm86, 99 KB).
// Why ours differ:
//   * 64 keys per CTA up to D=192 (FA2: 128 at D <= 128): our P^T / dS^T staging (hi + lo
//     parts: 4 x BN x BM x 2 bytes) grows with BN, and at 99 KB a 128-key D=64 CTA would leave
//     no room for a second Q/dO buffer.  64x64 is FA2's own sm86 choice at D=128.
//   * 4 warps at D <= 96 (small accumulators), 8 from D=128 so dK + dV stay <= 96 floats per
//     thread (FA2: 8 warps everywhere; 4 warps at D=128 would hold 128).
//   * D=192/256 stream 32-query (256: 32-key) tiles: FA2's 64x64 needs more than 99 KB with
//     our staging; its sm86 answer (V in registers, 64x32) costs registers instead.
//   * A second buffer (S=2) where it fits 99 KB (D <= 64, and the D=96 dQ kernel), as FA2
//     double-buffers on A100 only.
// Timing on a GPU (benchmarks) may still move these.
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

// Every bucket fits sm86/sm89's 99 KB of shared memory per CTA.
template <int D>
constexpr bool bwd_fits_sm86() {
  using Tr = BwdTraitsFor<unsigned short, D>;
  return Tr::dkdv::kDkdvSmemBytes <= 101376 && Tr::dq::kDqSmemBytes <= 101376;
}
static_assert(bwd_fits_sm86<32>() && bwd_fits_sm86<64>() && bwd_fits_sm86<96>() &&
                  bwd_fits_sm86<128>() && bwd_fits_sm86<192>() && bwd_fits_sm86<256>(),
              "a backward tile exceeds 99 KB of shared memory");

}  // namespace mlx_attn_cuda
