// Tile configurations per head-dim bucket.
//
// PROVISIONAL: these were chosen without a GPU to measure on (the session that wrote them had
// none).  They start from FlashAttention 2's published sm80 choices and from register and
// shared-memory budgets computed by hand, and must be re-measured on A100/H100 with
// benchmarks/bench_cuda.py before they are called final.  What to measure per head dim:
// kBlockM in {64, 128}, kBlockN in {32, 64, 128}, 4 vs 8 warps, kStages 1 vs 2, Q in
// registers vs re-read from shared memory, causal and non-causal, L = 1k..16k.
//
// Spills: tests/test_cuda_ptxas.py compiles instances with `ptxas -v` (as the CMake option
// MLX_ATTN_CUDA_PTXAS_VERBOSE does) and fails on spills.  With nvcc 13.0 the D=64 prefill tiles
// (128x128) spill on sm_80/sm_90 and the D=128 prefill on sm_90; 128x64 for D=64 (either option
// below) compiles spill-free: a candidate once it is timed on a GPU.
//
// Per-thread register budget (the accumulators dominate): a warp owns kBlockM / kNWarps rows
// = kMTiles m16 tiles, so per thread
//     O accumulator  kMTiles * kHeadDim / 2      floats
//     S accumulator  kMTiles * kBlockN / 2       floats
//     Q in registers kMTiles * kHeadDim / 4      32-bit regs (if kQInRegs)
// and shared memory is (kBlockM + 2 * kStages * kBlockN) * kHeadDim * 2 bytes.  sm86/sm89 allow
// 99 KB of shared memory per CTA, sm80 163 KB, sm90 227 KB: every prefill config fits in 99 KB
// so one binary serves all of them.
//
// Prefill (kPrefill), chosen per bucket:
//   32 : 128 x 128, 4 warps, Q in regs, 2 stages.  O 32 + S 128 + Q 16 regs; 40 KB smem.
//        Tiny head dim: large key tiles amortise the softmax; smem is cheap so double-buffer.
//   64 : 128 x 128, 4 warps, Q in smem, 1 stage.  O 64 + S 128; 48 KB.  FA2's choice.  The
//        alternative to measure: 128 x 64, Q in registers, 2 stages (O 64 + S 64 + Q 32).
//   96 : 128 x 64, 4 warps, Q in smem, 1 stage.  O 96 + S 64 (Q in regs would add 48 and risk
//        spills); 48 KB -> 2+ CTAs/SM on every arch.  (FA2: 128 x 64 on sm80/90.)
//   128: 128 x 64, 4 warps, Q in smem, 1 stage.  O 128 + S 64; 64 KB -> 2 CTAs/SM on sm80
//        (3 on sm90).  This is FA2's sm80/sm90 choice, the one that reaches ~FA2 throughput.
//   192: 128 x 64, 8 warps, Q in regs, 1 stage.  16 rows per warp: O 96 + S 32 + Q 48; 96 KB
//        (just under sm86/89's 99 KB).
//   256: 64 x 64, 4 warps, Q in smem, 1 stage.  O 128 + S 32; 96 KB.  FA2 uses 128 x 64 with
//        8 warps (128 KB) where the smem allows (sm80, sm90): measure that as a second config.
//
// Decode / split-KV (kDecode): 64-row tiles (4 warps x 16 rows), since Lq * G is small there;
// the kernel is memory bound, so the key tile and the pipeline depth matter, not the MMA shape.
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
  static constexpr size_t kSmemBytes =
      (size_t)(kQElems + 2 * kStages * kKVElems) * sizeof(T);
  // Occupancy hint for __launch_bounds__: lets ptxas use up to 255 registers per thread.
  static constexpr int kMinBlocks = 1;

  static_assert(kBlockM % (16 * kNWarps) == 0, "each warp owns whole m16 tiles");
  static_assert(kBlockN % 16 == 0, "key tile is a whole number of k16 steps");
  static_assert(kHeadDim % 32 == 0, "head dim bucket is a multiple of 32");
  static_assert(kStages == 1 || kStages == 2, "1 or 2 K/V stages");
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
MA_TRAITS(32,  0, 128, 128, 4, 2, true)
MA_TRAITS(64,  0, 128, 128, 4, 1, false)
MA_TRAITS(96,  0, 128, 64,  4, 1, false)
MA_TRAITS(128, 0, 128, 64,  4, 1, false)
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

// Tile sizes as plain numbers for the host planner (must match the table above).
struct TileSizes {
  int prefill_m, prefill_n, decode_m, decode_n;
};

inline TileSizes tile_sizes(int head_dim_bucket) {
  switch (head_dim_bucket) {
    case 32: return {128, 128, 64, 128};
    case 64: return {128, 128, 64, 128};
    case 96: return {128, 64, 64, 64};
    case 128: return {128, 64, 64, 64};
    case 192: return {128, 64, 64, 64};
    default: return {64, 64, 64, 64};
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
