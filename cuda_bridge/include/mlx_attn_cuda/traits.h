// Tile configurations per head-dim bucket.
//
// Chosen without a GPU: from FlashAttention 2's sm80/sm90 choices (flash_fwd_launch_template.h,
// run_mha_fwd_hdim*), the register and shared-memory budgets below, and ptxas.  Timing on
// A100/H100 (benchmarks/bench_cuda.py) may still move them: kBlockN in {32, 64, 128}, 4 vs 8
// warps, kStages 1 vs 2, Q in registers vs re-read from shared memory, causal and not.
//
// Per-thread registers (the accumulators dominate).  A warp owns kBlockM / kNWarps rows =
// kMTiles m16 tiles, so per thread
//     O accumulator  kMTiles * kHeadDim / 2      floats
//     S accumulator  kMTiles * kBlockN / 2       floats
//     Q in registers kMTiles * kHeadDim / 4      32-bit regs (if kQInRegs)
// Shared memory is (kBlockM + 2 * kStages * kBlockN) * kHeadDim * 2 bytes.  sm86/sm89 allow
// 99 KB per CTA (100 KB per SM), sm80 163 KB, sm90 227 KB; every config fits in 99 KB, so one
// binary serves all of them.  At 255 registers x 128 threads an SM holds 2 CTAs of 4 warps; a
// config at <= 48 KB keeps both on sm86 too.
//
// Spills (tests/test_cuda_ptxas.py fails on any, every bucket, sm_80 and sm_90, nvcc 13.0).
// Our kernel does not fit FA2's widest tiles: with 2 m16 tiles per warp, an S tile 128 keys
// wide (S = 128 floats: FA2's D=32/64 choice) or O + S = 128 + 64 floats (FA2's D=128 choice
// on A100/H100) spill, whatever the code around them (ptxas runs out at 255).  The prefill
// configs of D=32/64/128 below still compile spill-free under -maxrregcount 232 (kernel without
// __launch_bounds__) on both archs, some room for another compiler; D=96/192/256 only at 255.
//
// Prefill (kPrefill); O, S, Q: registers per thread as counted above.
//   D    tile     warps  Q     stages  O + S (+ Q)    smem   FA2 on sm80/sm90
//   32   128x64   4      regs  2       32 + 64 + 16   24 KB  128x128 w4
//   64   128x64   4      smem  2       64 + 64        48 KB  128x128 w4 (128x64 with dropout)
//   96   128x64   4      smem  1       96 + 64        48 KB  128x64 w4
//   128  128x32   4      smem  1       128 + 32       48 KB  128x64 w4 (sm86: 128x32 / 64x64)
//   192  128x64   8      regs  1       96 + 32 + 48   96 KB  128x64 w8
//   256  64x64    4      smem  1       128 + 32       96 KB  128x64 w8 (A100), 64x64 w4 (H100)
// Why ours differ:
//   32, 64: 128-key tiles (S = 128) spill; 64 keys per step halve S.  D=32 keeps Q in registers
//     (16 regs, saves re-reading Q from smem every key block); D=64 does not (32 regs: no room
//     left under -maxrregcount 232 on sm_90).  A second K/V stage costs no occupancy at
//     <= 48 KB, so both prefetch three tiles ahead.
//   128: O + S = 128 + 64 spills on sm_90 (sm_80 only just fits); 128x32 is FA2's sm86
//     non-causal and dropout tile, 48 KB keeps 2 CTAs/SM on sm86.  Its cost: one O rescale
//     (128 FMULs) and two barriers per 32 keys instead of per 64.  A second stage (64 KB) would
//     leave one CTA per SM on sm86.
//   256: FA2's 128x64 needs 128 KB (> 99 KB); 64x64 is its H100 choice.
// 8 warps halve the rows per warp and so double each warp's K/V shared-memory reads per FLOP
// (FA2: 18% slower at D=64, 28% at D=128): used only at D=192, where 4 warps cannot hold O.
//
// Decode / split-KV (kDecode): 64-row tiles (4 warps x 16 rows), since Lq * G is small there;
// the kernel is memory bound, so the key tile and the pipeline depth matter, not the MMA shape
// (FA2's split-KV: 64 x 256 / 128 / 64 for D <= 64 / <= 128 / more).
//   32, 64 : 64 x 128, 2 stages (hdim 64: 72 KB)
//   96, 128: 64 x 64,  2 stages (hdim 128: 80 KB)
//   192, 256: 64 x 64, 1 stage (hdim 256: 96 KB)
#pragma once

#include <cstddef>

namespace mlx_attn_cuda {

template <typename T_, int kHeadDim_, int kBlockM_, int kBlockN_, int kNWarps_, int kStages_,
          bool kQInRegs_>
struct FwdTraits {
  using T = T_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockM = kBlockM_;
  static constexpr int kBlockN = kBlockN_;
  static constexpr int kNWarps = kNWarps_;
  static constexpr int kNThreads = kNWarps * 32;
  static constexpr int kStages = kStages_;
  static constexpr bool kQInRegs = kQInRegs_;

  static constexpr int kWarpRows = kBlockM / kNWarps;  // rows owned by one warp
  static constexpr int kMTiles = kWarpRows / 16;       // m16 tiles per warp
  static constexpr int kNTiles = kBlockN / 8;          // n8 tiles of S
  static constexpr int kKSteps = kHeadDim / 16;        // k16 steps of Q K^T
  static constexpr int kDTiles = kHeadDim / 8;         // n8 tiles of O
  static constexpr int kPSteps = kBlockN / 16;         // k16 steps of P V
  static constexpr int kChunks = kHeadDim / 8;         // 16-byte chunks per smem row
  // Pipeline look-ahead in K/V tile loads (K_t and V_t are separate loads, each ring has
  // kStages slots): see the schedule in fwd_kernel.cuh.
  static constexpr int kAhead = 2 * kStages - 1;

  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kKVElems = kBlockN * kHeadDim;
  // The epilogue stages the normalised O tile (kBlockM x kHeadDim in T, the Q tile's swizzled
  // layout) in the Q tile's space once the main loop is done with it (fwd_kernel.cuh), so that
  // out is written with coalesced 16-byte stores at no extra shared memory or occupancy.
  static constexpr int kOElems = kBlockM * kHeadDim;
  static constexpr size_t kSmemBytes =
      (size_t)(kQElems + 2 * kStages * kKVElems) * sizeof(T);
  // Occupancy hint for __launch_bounds__: lets ptxas use up to 255 registers per thread.
  static constexpr int kMinBlocks = 1;

  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole m16 tiles");
  static_assert(kBlockN % 16 == 0, "key tile is a whole number of k16 steps");
  static_assert(kHeadDim % 32 == 0, "head dim bucket is a multiple of 32");
  static_assert(kStages == 1 || kStages == 2, "1 or 2 K/V stages");
  static_assert(kOElems <= kQElems, "the staged O tile reuses the Q tile's shared memory");
};

// Tile configuration per (dtype, head-dim bucket, config); see the table above.
template <typename T, int kHeadDim, int kConfig>
struct TraitsFor;

#define MA_TRAITS(D, CFG, BM, BN, W, S, QREG) \
  template <typename T>                       \
  struct TraitsFor<T, D, CFG> {               \
    using type = FwdTraits<T, D, BM, BN, W, S, QREG>; \
  };

// prefill:  D    cfg     BM   BN   W  S  Q in regs
MA_TRAITS(32,  0, 128, 64,  4, 2, true)
MA_TRAITS(64,  0, 128, 64,  4, 2, false)
MA_TRAITS(96,  0, 128, 64,  4, 1, false)
MA_TRAITS(128, 0, 128, 32,  4, 1, false)
MA_TRAITS(192, 0, 128, 64,  8, 1, true)
MA_TRAITS(256, 0, 64,  64,  4, 1, false)
// decode / split-KV
MA_TRAITS(32,  1, 64, 128, 4, 2, true)
MA_TRAITS(64,  1, 64, 128, 4, 2, true)
MA_TRAITS(96,  1, 64, 64,  4, 2, true)
MA_TRAITS(128, 1, 64, 64,  4, 2, true)
MA_TRAITS(192, 1, 64, 64,  4, 1, false)
MA_TRAITS(256, 1, 64, 64,  4, 1, false)
#undef MA_TRAITS

// Tile sizes as plain numbers for the host planner, read from the table above (the element
// type only sizes shared memory).  Other values get D=256's (callers check the
// head dim first; never a zero tile to divide by).
struct TileSizes {
  int prefill_m, prefill_n, decode_m, decode_n;
};

template <int kHeadDim>
constexpr TileSizes tile_sizes_of() {
  using P = typename TraitsFor<unsigned short, kHeadDim, 0>::type;
  using D = typename TraitsFor<unsigned short, kHeadDim, 1>::type;
  return {P::kBlockM, P::kBlockN, D::kBlockM, D::kBlockN};
}

constexpr TileSizes tile_sizes(int head_dim_bucket) {
  switch (head_dim_bucket) {
    case 32: return tile_sizes_of<32>();
    case 64: return tile_sizes_of<64>();
    case 96: return tile_sizes_of<96>();
    case 128: return tile_sizes_of<128>();
    case 192: return tile_sizes_of<192>();
    case 256: return tile_sizes_of<256>();
    default: return tile_sizes_of<256>();
  }
}

// The smallest bucket >= max(D, Dv), or 0 if none (D, Dv <= 256).
inline int head_dim_bucket(int d, int dv) {
  const int m = d > dv ? d : dv;
  const int buckets[] = {32, 64, 96, 128, 192, 256};
  for (int b : buckets)
    if (m <= b) return b;
  return 0;
}

}  // namespace mlx_attn_cuda
