// Global -> shared tile loads (cp.async, predicated with zero fill) and the ldmatrix reads of
// the MMA operands.  Address maps come from layout.h.
#pragma once

#include "layout.h"
#include "params.h"
#include "ptx.h"

namespace mlx_attn_cuda {

// Q rows r0 .. r0 + kBlockM of the packed rows (row r = query r / G of head hk * G + r % G,
// see blocks.h) into the swizzled tile sQ.  Rows past p.rows and columns past p.d are zero.
// Done once per CTA, so a rolled loop (fewer live registers) is fine.
template <class Tr>
__device__ __forceinline__ void load_q_tile(const FwdParams& p, typename Tr::T* sQ, int b, int hk,
                                            int r0, int tid) {
  using T = typename Tr::T;
  constexpr int kTotal = Tr::kBlockM * Tr::kChunks;
  const T* q = static_cast<const T*>(p.q);
  const uint32_t s_base = smem_u32(sQ);
#pragma unroll 1
  for (int idx = tid; idx < kTotal; idx += Tr::kNThreads) {
    const int row = idx / Tr::kChunks, c = idx % Tr::kChunks;
    const int r = r0 + row;
    const bool valid = r < p.rows && c * 8 < p.d;
    const T* src = q;
    if (valid) {
      const int i = r / p.group, h = hk * p.group + r % p.group;
      src = q + b * p.q_sb + h * p.q_sh + (int64_t)i * p.q_sl + c * 8;
    }
    cp_async_16(s_base + tile_offset<Tr::kChunks>(row, c) * (int)sizeof(T), src, valid);
  }
}

// Keys n0 .. n0 + kBlockN of one (batch, kv head) K or V slice (base already offset) into a
// swizzled tile.  Keys past lk and columns past `cols` are zero, so no garbage (NaN) from
// shared memory can reach the MMAs.
// When kNThreads is a multiple of kChunks, a thread always copies the same chunk column c of
// rows row0 + it * kRowStep: one running global pointer, and the swizzle (row mod 8) is
// the same for every it when kRowStep % 8 == 0, so ptxas needs few registers for addresses.
template <class Tr>
__device__ __forceinline__ void load_kv_tile(const typename Tr::T* base, int64_t row_stride,
                                             int n0, int lk, int cols, typename Tr::T* sTile,
                                             int tid) {
  using T = typename Tr::T;
  const uint32_t s_base = smem_u32(sTile);
  if constexpr (Tr::kNThreads % Tr::kChunks == 0) {
    constexpr int kRowStep = Tr::kNThreads / Tr::kChunks;
    constexpr int kIters = (Tr::kBlockN + kRowStep - 1) / kRowStep;
    const int c = tid % Tr::kChunks, row0 = tid / Tr::kChunks;
    const bool col_ok = c * 8 < cols;
    const T* src = base + (int64_t)(n0 + row0) * row_stride + c * 8;
    const int64_t step = (int64_t)kRowStep * row_stride;
#pragma unroll
    for (int it = 0; it < kIters; ++it) {
      const int row = row0 + it * kRowStep;
      if (Tr::kBlockN % kRowStep == 0 || row < Tr::kBlockN) {
        const bool valid = col_ok && n0 + row < lk;
        cp_async_16(s_base + tile_offset<Tr::kChunks>(row, c) * (int)sizeof(T),
                    valid ? src : base, valid);
      }
      src += step;
    }
  } else {
    constexpr int kTotal = Tr::kBlockN * Tr::kChunks;
#pragma unroll 1
    for (int idx = tid; idx < kTotal; idx += Tr::kNThreads) {
      const int row = idx / Tr::kChunks, c = idx % Tr::kChunks;
      const int key = n0 + row;
      const bool valid = key < lk && c * 8 < cols;
      const T* src = valid ? base + (int64_t)key * row_stride + c * 8 : base;
      cp_async_16(s_base + tile_offset<Tr::kChunks>(row, c) * (int)sizeof(T), src, valid);
    }
  }
}

// ---- the forward epilogue: O through shared memory ------------------------------------
// The O tile is staged in the swizzled [kBlockM][kHeadDim] layout of the Q tile (whose space it
// takes), then written with 16-byte stores: consecutive threads take consecutive chunks of a
// row, so a warp writes whole rows (D=128: 256 contiguous bytes) instead of 4-byte pieces of 8
// rows.  The swizzle keeps both sides free of bank conflicts: the 8 rows a warp stages at once
// (lane_group) fall in 8 different chunk columns.

// One normalised row of the thread's C fragments (acc[dj][2 * hr + {0, 1}] are columns
// 8 * dj + 2 * tig + {0, 1}) into tile row `row` of sO, in T.
template <class Tr>
__device__ __forceinline__ void stage_o_row(typename Tr::T* sO, int row, int tig,
                                            const float (&acc)[Tr::kDTiles][4], int hr,
                                            float inv) {
  using T = typename Tr::T;
#pragma unroll
  for (int dj = 0; dj < Tr::kDTiles; ++dj)
    *reinterpret_cast<uint32_t*>(sO + tile_offset<Tr::kChunks>(row, dj) + 2 * tig) =
        pack2<T>(acc[dj][2 * hr] * inv, acc[dj][2 * hr + 1] * inv);
}

// The staged tile's rows r0 .. r0 + kBlockM of (batch b, kv head hk) into p.out (p: the
// CTA's view, blocks.h seq_view): rows past p.rows and chunks past p.dv are not written.  Out's
// strides are multiples of 8 elements and its base 16-byte aligned (binding.cpp), so every
// chunk is one aligned 16-byte store.  Rolled (once per CTA; registers stay free).
template <class Tr>
__device__ __forceinline__ void store_o_tile(const FwdParams& p, const typename Tr::T* sO, int b,
                                             int hk, int r0, int tid) {
  using T = typename Tr::T;
  constexpr int kTotal = Tr::kBlockM * Tr::kChunks;
  T* out = static_cast<T*>(p.out);
#pragma unroll 1
  for (int idx = tid; idx < kTotal; idx += Tr::kNThreads) {
    const int row = idx / Tr::kChunks, c = idx % Tr::kChunks;
    const int r = r0 + row;
    if (r >= p.rows || c * 8 >= p.dv) continue;
    const int i = r / p.group, h = hk * p.group + r % p.group;
    T* dst = out + b * p.o_sb + h * p.o_sh + (int64_t)i * p.o_sl + c * 8;
    *reinterpret_cast<uint4*>(dst) =
        *reinterpret_cast<const uint4*>(sO + tile_offset<Tr::kChunks>(row, c));
  }
}

// Per-lane ldmatrix offsets of the three operands (layout.h: SplitOffset).
template <class Tr>
struct LdsmOffsets {
  SplitOffset<Tr::kChunks> q, k, v;
  __device__ __forceinline__ void init(int lane) {
    q.init(ldsm_a_row(lane), ldsm_a_lane_chunk(lane));
    k.init(ldsm_k_row(lane), ldsm_k_lane_chunk(lane));
    v.init(ldsm_v_row(lane), ldsm_v_lane_chunk(lane));
  }
};

// A fragment (16x16) of Q for the m16 tile at tile row row0 (a multiple of 16), k-step kk.
// sQ_row0 = shared address of sQ plus row0 rows.
template <class Tr>
__device__ __forceinline__ void ldsm_q_frag(uint32_t sQ_row0, const LdsmOffsets<Tr>& o, int kk,
                                            uint32_t (&a)[4]) {
  const uint32_t addr = sQ_row0 + o.q.at(0, 2 * kk) * (int)sizeof(typename Tr::T);
  ldsm_x4(addr, a[0], a[1], a[2], a[3]);
}

// B fragments of K^T for the two n8 tiles of keys nj*8 .. nj*8+15 (nj even), k-step kk.
template <class Tr>
__device__ __forceinline__ void ldsm_k_frags(uint32_t sK, const LdsmOffsets<Tr>& o, int nj,
                                             int kk, uint32_t (&b)[4]) {
  const uint32_t addr = sK + o.k.at(nj * 8, 2 * kk) * (int)sizeof(typename Tr::T);
  ldsm_x4(addr, b[0], b[1], b[2], b[3]);
}

// B fragments of V for keys kk*16 .. kk*16+15 and the two n8 dv tiles dj, dj + 1 (dj even).
template <class Tr>
__device__ __forceinline__ void ldsm_v_frags(uint32_t sV, const LdsmOffsets<Tr>& o, int kk,
                                             int dj, uint32_t (&b)[4]) {
  const uint32_t addr = sV + o.v.at(kk * 16, dj) * (int)sizeof(typename Tr::T);
  ldsm_x4_trans(addr, b[0], b[1], b[2], b[3]);
}

}  // namespace mlx_attn_cuda
