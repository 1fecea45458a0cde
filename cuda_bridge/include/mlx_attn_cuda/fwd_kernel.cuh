// The forward kernel (prefill and split-KV decode share it; the tile traits differ).
//
// Grid: x = (query-row block, batch * kv head) flattened, y = KV split.  A CTA owns kBlockM
// packed rows (blocks.h) of one (batch, kv head); warp w owns rows w*kWarpRows .. +kWarpRows,
// i.e. kMTiles m16 tiles.  Per key block of kBlockN keys:
//     S = Q K^T            mma m16n8k16, Q from registers (kQInRegs) or from shared memory,
//                          K^T fragments by ldmatrix from the swizzled K tile
//     S -> s2              explicit scores (softcap / additive mask / scale <= 0), then the
//                          mask, window/causal and key tail only on blocks that need it
//     online softmax       row max / sum in registers, exp2, O rescaled
//     O += P V             P converted in registers to the A operand (layout.h), V fragments
//                          by ldmatrix.trans
// Causal/window: only the key blocks that can hold an allowed key are visited (blocks.h), and
// only blocks crossing an edge are masked element-wise.
//
// Pipeline.  K_t and V_t are separate cp.async groups, issued in the order K_0, V_0, K_1, ...
// ("positions" 2t and 2t+1), into rings of kStages slots each.  Before consuming position q
// the kernel waits until at most kAhead - 1 groups are pending and syncs the CTA; it then
// issues position q + kAhead, whose slot was last used by position q + kAhead - 2*kStages =
// q - 1, already consumed by every thread (that is what the sync guaranteed).  With
// kStages = 1 (kAhead = 1): V_t loads while S_t and its softmax are computed, K_{t+1} while
// P_t V_t is.  With kStages = 2 three loads are in flight.
//
// Split-KV (num_splits > 1): split s visits its share of the key blocks and writes an O
// normalised by its own sum plus its lse (float32 workspace); combine_kernel.cuh merges them.
//
// Fused varlen (p.cu_seqlens_q set; docs/cuda.md "Varlen"): the grid is sized by the longest
// sequence and "batch" b is the sequence.  The CTA reads its Seq and works on a view of p
// (`ps`, blocks.h seq_view) whose lq / lk / rows are the sequence's, so every range, tail and
// causal/window offset below is per sequence; the Q load reads ps.q, the K/V loads and the
// epilogue offset their pointers by the sequence's first rows themselves (see issue() and po:
// fewer registers live across the main loop).  A CTA whose
// query block starts past its sequence exits at once, before any barrier (uniformly: the
// whole CTA).  An empty key range (lk = 0) visits no block and writes zeros and lse -inf.
//
// Epilogue (num_splits == 1): the normalised O tile goes through shared memory (the Q tile's
// space, free after a barrier) and out with 16-byte stores, a row's chunks by consecutive
// threads, instead of 4-byte stores scattered over 8 rows per warp instruction (tile_io.cuh).
#pragma once

#include "blocks.h"
#include "layout.h"
#include "params.h"
#include "ptx.h"
#include "softmax.cuh"
#include "tile_io.cuh"
#include "traits.h"

namespace mlx_attn_cuda {

// The kernel body, a device function so that fwd_kernel below and the flat-argument entry
// points for MLX (mlx_entries.cuh) run the same code.
template <class Tr>
__device__ __forceinline__ void fwd_block(const FwdParams& p) {
// Device code for sm_80+ (the host pass of nvcc sees an empty body), or the host emulator.
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(MLX_ATTN_CUDA_EMULATE)
  using T = typename Tr::T;
  constexpr int kBM = Tr::kBlockM, kBN = Tr::kBlockN;
  constexpr int kMT = Tr::kMTiles, kNT = Tr::kNTiles, kDT = Tr::kDTiles;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + Tr::kQElems;
  T* sV = sK + Tr::kStages * Tr::kKVElems;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m_blocks = ceil_div(p.rows, kBM);  // varlen: of the longest sequence
  // Heaviest query blocks first (causal: the last rows see the most keys).
  const int m_block = m_blocks - 1 - (int)(blockIdx.x % (unsigned)m_blocks);
  const int bh = (int)(blockIdx.x / (unsigned)m_blocks);
  const int b = bh / p.hkv, hk = bh % p.hkv;
  const int split = blockIdx.y;
  const int r0 = m_block * kBM;

  // The CTA's batch entry / sequence: ps is p with the sequence's pointers and lengths (dense:
  // the same values as p).  Varlen: a query block past the sequence's rows has nothing to do.
  const Seq seq = seq_of(p, b);
  if (r0 >= seq.lq * p.group) return;  // whole CTA, before any barrier; never taken dense
  const FwdParams ps = seq_view<T>(p, seq);

  const int warp_row0 = warp * Tr::kWarpRows;
  // Warps whose rows are all past the end (decode: Lq * G < 64) skip the math but still load
  // and synchronise with the others.
  const bool warp_active = r0 + warp_row0 < ps.rows;

  const BlockRange range = split_blocks(key_blocks(ps, r0, kBM, kBN), split, p.num_splits);
  const int nblk = range.end > range.begin ? range.end - range.begin : 0;
  const int npos = 2 * nblk;

  // Tile loads recompute their addresses from opaque() copies of the indices, so that no
  // per-thread address is pinned in a register across the main loop (see ptx.h: opaque).
  auto issue = [&](int pos) {
    const int t = pos >> 1, slot = t % Tr::kStages;
    const int n0 = (range.begin + t) * kBN;
    const int bb = opaque(b), hh = opaque(hk), th = opaque(tid);
    // The sequence's first key row (dense: 0), re-read per tile (an L1 hit) rather than kept
    // live across the main loop: D=192 spilled with it (or with 64-bit ps.k / ps.v) in registers.
    const int64_t k0 = p.cu_seqlens_k != nullptr ? p.cu_seqlens_k[bb] : 0;
    if (pos & 1)
      load_kv_tile<Tr>(static_cast<const T*>(p.v) + bb * p.v_sb + hh * p.v_sh + k0 * p.v_sl,
                       p.v_sl, n0, ps.lk, p.dv, sV + slot * Tr::kKVElems, th);
    else
      load_kv_tile<Tr>(static_cast<const T*>(p.k) + bb * p.k_sb + hh * p.k_sh + k0 * p.k_sl,
                       p.k_sl, n0, ps.lk, p.d, sK + slot * Tr::kKVElems, th);
  };

  load_q_tile<Tr>(ps, sQ, b, hk, r0, tid);
  cp_async_commit();
#pragma unroll
  for (int pos = 0; pos < Tr::kAhead; ++pos) {
    if (pos < npos) issue(pos);
    cp_async_commit();  // possibly empty: keeps the group count uniform
  }

  // The thread's first row (packed, blocks.h); its rows are row0 + 16 * mi + 8 * hr.
  const int thread_row0 = r0 + warp_row0 + lane_group(lane);

  float acc_o[kMT][kDT][4];
  zero_acc(acc_o);
  float row_max[kMT][2], row_sum[kMT][2];
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      row_max[mi][hr] = -INFINITY;
      row_sum[mi][hr] = 0.f;
    }

  const bool explicit_path = p.softcap > 0.f || p.mask_type >= kMaskF32 || !(p.scale > 0.f);
  const float mul = explicit_path ? 1.f : p.scale_log2;

  // Q fragments in registers: wait for the Q group only (kAhead groups were committed after it).
  LdsmOffsets<Tr> lo;
  lo.init(lane);
  const uint32_t sQ_warp = smem_u32(sQ) + warp_row0 * Tr::kHeadDim * (int)sizeof(T);
  constexpr uint32_t kMTileBytes = 16 * Tr::kHeadDim * sizeof(T);
  uint32_t q_frag[Tr::kQInRegs ? kMT : 1][Tr::kQInRegs ? Tr::kKSteps : 1][4];
  if constexpr (Tr::kQInRegs) {
    cp_async_wait<Tr::kAhead>();
    __syncthreads();
    if (warp_active) {
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
        for (int kk = 0; kk < Tr::kKSteps; ++kk)
          ldsm_q_frag<Tr>(sQ_warp + mi * kMTileBytes, lo, kk, q_frag[mi][kk]);
    }
  }

  for (int t = 0; t < nblk; ++t) {
    const int n = range.begin + t, slot = t % Tr::kStages;
    const uint32_t sKs = smem_u32(sK + slot * Tr::kKVElems);
    const uint32_t sVs = smem_u32(sV + slot * Tr::kKVElems);

    // ---- K_t (position 2t) ------------------------------------------------------------
    cp_async_wait<Tr::kAhead - 1>();
    __syncthreads();
    if (2 * t + Tr::kAhead < npos) issue(2 * t + Tr::kAhead);
    cp_async_commit();

    float acc_s[kMT][kNT][4];
    if (warp_active) {
      zero_acc(acc_s);
#pragma unroll
      for (int kk = 0; kk < Tr::kKSteps; ++kk) {
        uint32_t a_smem[Tr::kQInRegs ? 1 : kMT][4];
        if constexpr (!Tr::kQInRegs) {
#pragma unroll
          for (int mi = 0; mi < kMT; ++mi)
            ldsm_q_frag<Tr>(sQ_warp + mi * kMTileBytes, lo, kk, a_smem[mi]);
        }
#pragma unroll
        for (int nj = 0; nj < kNT; nj += 2) {
          uint32_t bk[4];
          ldsm_k_frags<Tr>(sKs, lo, nj, kk, bk);
#pragma unroll
          for (int mi = 0; mi < kMT; ++mi) {
            if constexpr (Tr::kQInRegs) {
              mma_16816<T>(acc_s[mi][nj], q_frag[mi][kk], bk[0], bk[1]);
              mma_16816<T>(acc_s[mi][nj + 1], q_frag[mi][kk], bk[2], bk[3]);
            } else {
              mma_16816<T>(acc_s[mi][nj], a_smem[mi], bk[0], bk[1]);
              mma_16816<T>(acc_s[mi][nj + 1], a_smem[mi], bk[2], bk[3]);
            }
          }
        }
      }
      if (explicit_path) explicit_scores(p, acc_s);
      if (block_needs_mask(ps, r0, kBM, n, kBN))
        apply_mask(ps, acc_s, n * kBN, lane, b, hk, thread_row0);
      softmax_step(acc_s, acc_o, row_max, row_sum, mul);
    }

    // ---- V_t (position 2t + 1) --------------------------------------------------------
    cp_async_wait<Tr::kAhead - 1>();
    __syncthreads();
    if (2 * t + 1 + Tr::kAhead < npos) issue(2 * t + 1 + Tr::kAhead);
    cp_async_commit();

    if (warp_active) {
#pragma unroll
      for (int kk = 0; kk < Tr::kPSteps; ++kk) {
        uint32_t a[kMT][4];
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
#pragma unroll
          for (int reg = 0; reg < 4; ++reg) {
            const int tile = p_tile_of_a_reg(kk, reg);
            a[mi][reg] = pack2<T>(acc_s[mi][tile][p_elem_of_a_reg(reg, 0)],
                                  acc_s[mi][tile][p_elem_of_a_reg(reg, 1)]);
          }
        }
#pragma unroll
        for (int dj = 0; dj < kDT; dj += 2) {
          uint32_t bv[4];
          ldsm_v_frags<Tr>(sVs, lo, kk, dj, bv);
#pragma unroll
          for (int mi = 0; mi < kMT; ++mi) {
            mma_16816<T>(acc_o[mi][dj], a[mi], bv[0], bv[1]);
            mma_16816<T>(acc_o[mi][dj + 1], a[mi], bv[2], bv[3]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // nothing may be in flight when the CTA exits

  // ---- epilogue: normalise, store O (and lse) or the split's partial results ------------
  const int tig = lane_tig(lane);
  if (p.num_splits == 1) {
    // Every warp is done reading sQ (and no copy into it is pending): the O tile may take its
    // place.  All warps reach both barriers; inactive ones only help with the stores.
    __syncthreads();
    // The sequence again (an L1 hit), rather than its offsets kept live across the main loop.
    const Seq seq_o = seq_of(p, opaque(b));
    const FwdParams po = seq_view<T>(p, seq_o);
    if (warp_active) {
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          float lse;
          const float inv = finish_row(row_max[mi][hr], row_sum[mi][hr], mul, lse);
          const int row = warp_row0 + lane_group(lane) + 16 * mi + 8 * hr;  // in the tile
          stage_o_row<Tr>(sQ, row, tig, acc_o[mi], hr, inv);
          const int r = r0 + row;
          if (tig == 0 && r < po.rows) {
            const int i = r / p.group, h = hk * p.group + r % p.group;
            p.lse[lse_index(p, seq_o, b, h, i)] = lse;
          }
        }
      }
    }
    __syncthreads();
    store_o_tile<Tr>(po, sQ, b, hk, r0, tid);
    return;
  }

  if (!warp_active) return;
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float lse;
      const float inv = finish_row(row_max[mi][hr], row_sum[mi][hr], mul, lse);
      const int r = thread_row0 + 16 * mi + 8 * hr;
      if (r >= p.rows) continue;
      const int i = r / p.group, h = hk * p.group + r % p.group;
      const int64_t row = (((int64_t)split * p.b + b) * p.hq + h) * p.lq + i;
      float* orow = p.o_accum + row * p.dv;
#pragma unroll
      for (int dj = 0; dj < kDT; ++dj) {
        const int col = dj * 8 + 2 * tig;
        if (col < p.dv)
          *reinterpret_cast<float2*>(orow + col) =
              make_float2(acc_o[mi][dj][2 * hr] * inv, acc_o[mi][dj][2 * hr + 1] * inv);
      }
      if (tig == 0) p.lse_accum[row] = lse;
    }
  }
#endif
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kNThreads, Tr::kMinBlocks) fwd_kernel(const FwdParams p) {
  fwd_block<Tr>(p);
}

}  // namespace mlx_attn_cuda
