// Shared-memory layout and the lane <-> fragment index maps of mma.sync.m16n8k16 and
// ldmatrix.  Everything the kernel uses to compute an address or to know which element a
// register holds is here, host+device, so that host_tests/layout_check.cpp can emulate ldmatrix
// and mma on the CPU and check that every map is what the PTX ISA says.
//
// ---- mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 (PTX ISA, "Matrix
// fragments for mma.m16n8k16 with floating point type").  In a warp, lane l has
//     groupID = l >> 2   (0..7)        threadID_in_group = l % 4   (0..3)
// A (16x16, row-major, 4 x .b32 regs, two 16-bit elements each, low half = lower column):
//     reg 0: row groupID,     cols 2*tig + {0,1}
//     reg 1: row groupID + 8, cols 2*tig + {0,1}
//     reg 2: row groupID,     cols 2*tig + 8 + {0,1}
//     reg 3: row groupID + 8, cols 2*tig + 8 + {0,1}
// B (16x8, "col": K x N, 2 x .b32 regs, low half = lower k):
//     reg 0: k = 2*tig + {0,1},     n = groupID
//     reg 1: k = 2*tig + 8 + {0,1}, n = groupID
// C/D (16x8 f32, 4 floats):
//     c0, c1: row groupID,     cols 2*tig + {0,1}
//     c2, c3: row groupID + 8, cols 2*tig + {0,1}
//
// ---- ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16: four 8x8 b16 matrices; lanes
// 8*i .. 8*i+7 give the addresses of rows 0..7 of matrix i (16 contiguous bytes each).  Lane l
// receives in register i, from matrix i:
//     no .trans: elements (row l/4, cols 2*(l%4) + {0,1})
//     .trans:    elements (rows 2*(l%4) + {0,1}, col l/4)
// So a non-transposed load of the four 8x8 quarters of a row-major 16x16 tile, ordered
// (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15),
// yields exactly the A fragment above.  For B = K^T (K stored [key][d], d contiguous): B(k, n)
// = K[n][k], so a non-transposed 8x8 matrix with rows = keys n and cols = k gives lane l the
// pair k = 2*tig + {0,1} at n = groupID: a B register.  For B = V (V stored [key][dv]):
// B(k, n) = V[k][n] needs two keys at one dv column, i.e. the .trans load of a matrix with rows
// = keys and cols = dv.
//
// ---- Shared-memory tiles: [rows][kHeadDim] b16 elements, a row split into kChunks = kHeadDim/8
// chunks of 16 bytes; chunk c of row r is stored at chunk swizzle(r, c) of that row.  An
// ldmatrix phase reads one 16-byte chunk c from 8 consecutive rows; the swizzle places them in
// 8 different 16-byte bank groups (checked on the host for every head dim):
//   * kChunks % 8 == 0 (row pitch a multiple of 128 bytes): c ^ (r & 7).
//   * kChunks % 8 == 4 (head dim 32: 64-byte pitch; 96: 192-byte pitch): two consecutive rows
//     start 64 bytes apart modulo 128, so bit 2 of the bank group comes from r & 1 and the low
//     two bits from c ^ ((r >> 1) & 3).
// The swizzle only changes the low 2 or 3 bits of c, so it stays inside the row.
#pragma once

#include "params.h"

namespace mlx_attn_cuda {

template <int kChunks>
MA_HD int swizzle_chunk(int row, int chunk) {
  static_assert(kChunks % 4 == 0, "head dim must be a multiple of 32");
  if constexpr (kChunks % 8 == 0) {
    return chunk ^ (row & 7);
  } else {
    return chunk ^ ((row >> 1) & 3);
  }
}

// Element offset of (row, chunk) in a [rows][kChunks * 8] swizzled tile.
template <int kChunks>
MA_HD int tile_offset(int row, int chunk) {
  return row * (kChunks * 8) + swizzle_chunk<kChunks>(row, chunk) * 8;
}

// The same offset split into a per-lane part and a compile-time part, so that the kernel keeps
// only a few registers per operand instead of one address per (k-step, tile) (ptxas hoists
// those out of the main loop and spills).  Valid when the compile-time row offset is a multiple
// of 8 (row mod 8, which the swizzle reads, is then the lane's) and the compile-time chunk is
// even (the lane adds 0 or 1).  Writing chunk = cc + lc (cc even, lc in {0,1}) and M = 7 or 3:
//     swizzle(row, cc + lc) = (cc & ~M) + ((cc & M) ^ X),   X = lc ^ s(row), s = the row bits
// so only (M + 1) / 2 lane-dependent values exist: off[j] = ((2j) ^ X) for j = (cc & M) / 2.
template <int kChunks>
struct SplitOffset {
  static constexpr int kMask = (kChunks % 8 == 0) ? 7 : 3;
  static constexpr int kVariants = (kMask + 1) / 2;
  int off[kVariants];  // elements: lane_row * pitch + ((2j) ^ X) * 8

  MA_HD void init(int lane_row, int lane_chunk) {
    const int x = lane_chunk ^ (swizzle_chunk<kChunks>(lane_row, 0));
    for (int j = 0; j < kVariants; ++j) off[j] = lane_row * (kChunks * 8) + ((2 * j) ^ x) * 8;
  }
  // Offset of (lane_row + const_row, lane_chunk + const_chunk).
  MA_HD int at(int const_row, int const_chunk) const {
    return off[(const_chunk & kMask) >> 1] + const_row * (kChunks * 8) +
           (const_chunk & ~kMask) * 8;
  }
};

// ---- mma fragment ownership (see the table above) ---------------------------------------
MA_HD int lane_group(int lane) { return lane >> 2; }
MA_HD int lane_tig(int lane) { return lane & 3; }

// A (16x16): register reg (0..3), half h (0 = low 16 bits, 1 = high).
MA_HD int frag_a_row(int lane, int reg, int) { return lane_group(lane) + 8 * (reg & 1); }
MA_HD int frag_a_col(int lane, int reg, int h) { return 2 * lane_tig(lane) + h + 8 * (reg >> 1); }
// B (16x8): register reg (0..1), half h.
MA_HD int frag_b_k(int lane, int reg, int h) { return 2 * lane_tig(lane) + h + 8 * reg; }
MA_HD int frag_b_n(int lane, int, int) { return lane_group(lane); }
// C (16x8 f32): element e (0..3).
MA_HD int frag_c_row(int lane, int e) { return lane_group(lane) + 8 * (e >> 1); }
MA_HD int frag_c_col(int lane, int e) { return 2 * lane_tig(lane) + (e & 1); }

// ---- ldmatrix lane addresses --------------------------------------------------------------
// Which row (within the 16-row slab) and which 16-byte chunk lane `lane` points at.

// A operand from a row-major [m][k] tile, the 16x16 block at k-step kk: matrices ordered
// (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) -> regs 0..3.
MA_HD int ldsm_a_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
MA_HD int ldsm_a_lane_chunk(int lane) { return lane >> 4; }
MA_HD int ldsm_a_chunk(int lane, int kk) { return 2 * kk + ldsm_a_lane_chunk(lane); }

// B operand = K^T from a [key][d] tile, two n8 tiles (keys n0..n0+15) at k-step kk: matrices
// (keys 0-7, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 0-7), (keys 8-15, d 8-15) ->
// regs {0,1} = B of the first n8 tile, regs {2,3} = B of the second.
MA_HD int ldsm_k_row(int lane) { return (lane & 7) + (lane >> 4) * 8; }
MA_HD int ldsm_k_lane_chunk(int lane) { return (lane >> 3) & 1; }
MA_HD int ldsm_k_chunk(int lane, int kk) { return 2 * kk + ldsm_k_lane_chunk(lane); }

// B operand = V from a [key][dv] tile with .trans, keys 16*kk .. 16*kk+15 and two n8 tiles of
// dv (chunks dj, dj + 1): matrices (keys 0-7, dv tile dj), (keys 8-15, dj), (keys 0-7, dj+1),
// (keys 8-15, dj+1) -> regs {0,1} = B of dv tile dj, regs {2,3} = B of dv tile dj + 1.
MA_HD int ldsm_v_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
MA_HD int ldsm_v_lane_chunk(int lane) { return lane >> 4; }
MA_HD int ldsm_v_chunk(int lane, int dj) { return dj + ldsm_v_lane_chunk(lane); }

// ---- P (C fragments of S) reused as the A operand of P V -----------------------------------
// The A fragment of k-step kk (keys 16*kk .. 16*kk+15) is made of the C fragments of S n8 tiles
// 2*kk and 2*kk + 1: A reg 0 = (c0, c1) of tile 2kk, reg 1 = (c2, c3) of tile 2kk, reg 2 =
// (c0, c1) of tile 2kk+1, reg 3 = (c2, c3) of tile 2kk+1.  (Row groupID / groupID+8 and columns
// 2*tig + {0,1} (+8) agree between the two tables above.)
MA_HD int p_tile_of_a_reg(int kk, int reg) { return 2 * kk + (reg >> 1); }
MA_HD int p_elem_of_a_reg(int reg, int h) { return 2 * (reg & 1) + h; }

}  // namespace mlx_attn_cuda
