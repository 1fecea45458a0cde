// The backward's tile steps, shared by the dK/dV and the dQ kernel (bwd_kernel.cuh): one
// statement each of S = Q K^T, P, dP = dO V^T and dS on a pair of shared-memory tiles, and of
// the two accumulating products (dV += P^T dO, dK += dS^T Q, dQ += dS K).
//
// Orientation.  The dK/dV kernel computes the transposed tiles S^T = K Q^T and dP^T = V dO^T
// (rows = its keys, columns = the streamed queries); the dQ kernel S = Q K^T and dP = dO V^T.
// Both are "A B^T" of two row-major [rows][D] tiles (p_ds_tiles below), so one function serves
// both with a flag that says which index is the key.  P (or P^T) and dS (or dS^T) are then
// written to shared memory in the input dtype (a high and a low part each, split_pair), and the
// products read them with ldmatrix:
//   dV += P^T dO    A = P^T [key][query] tile, plain ldmatrix;   B = dO [query][d], .trans
//   dK += dS^T Q    A = dS^T tile, plain;                          B = Q [query][d], .trans
//   dQ += dS K      A = dS: the dS^T tile through ldmatrix.trans (dK/dV kernel, atomics) or
//                   the dS tile plainly (dQ kernel);               B = K [key][d], .trans
// Why stage P/dS in shared memory instead of reusing the C fragments as A operands (as the
// forward does for P V): the warp that computes a 16-row slice of S^T would then have to own
// the full dK/dV rows of those keys (the A operand must hold all of a k16 step), i.e. every
// warp 16 keys x the whole D for dK and dV (D = 256: 256 floats per thread), and dQ = dS K needs
// dS in the other orientation anyway.  Staging lets the products be split over the warps by
// (row tile, column slice) independently of the S split (WarpSlice, bwd_traits.h), at the
// cost of 4 x BN x BM x 2 bytes of shared memory (P and dS, high and low parts) and one
// barrier per step.
#pragma once

#include "bwd_math.h"
#include "bwd_traits.h"
#include "layout.h"
#include "params.h"
#include "ptx.h"
#include "tile_io.cuh"

namespace mlx_attn_cuda {

// The shape load_kv_tile (tile_io.cuh) needs to copy kRows rows of a [.][kHeadDim] tensor
// slice into a swizzled [kRows][kHeadDim] tile with kThreads threads.
template <typename T_, int kRows, int kHeadDim, int kThreads>
struct RowTile {
  using T = T_;
  static constexpr int kBlockN = kRows;
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kNThreads = kThreads;
};

// Where one step's tiles sit in the problem: batch entry / sequence, query head, the sequence,
// and the first query / key of the tiles.
struct TileAt {
  int b, h;
  Seq s;
  int i0, j0;
};

// The mask's (keep, add) for one pair (b, h, i, j).
__device__ __forceinline__ void mask_at(const FwdParams& f, int b, int h, int i, int j, bool* keep,
                                        float* add) {
  *keep = true;
  *add = 0.f;
  if (f.mask_type == kMaskNone) return;
  const int64_t off = b * f.m_sb + h * f.m_sh + (int64_t)i * f.m_sq + (int64_t)j * f.m_sk;
  switch (f.mask_type) {
    case kMaskBool: *keep = static_cast<const uint8_t*>(f.mask)[off] != 0; break;
    case kMaskF32: *add = static_cast<const float*>(f.mask)[off]; break;
    case kMaskF16: *add = to_float(static_cast<const __half*>(f.mask)[off]); break;
    default: *add = to_float(static_cast<const __nv_bfloat16*>(f.mask)[off]); break;
  }
}

// layout.h's SplitOffset with a runtime chunk base c0 (even: a warp's column slice) folded into
// the per-lane offsets: at(row, cc) is the element offset of (lane_row + row, lane_chunk + c0 +
// cc) for row a multiple of 8 and cc even and known at compile time, so the variant index is a
// constant (a runtime index put SplitOffset's array in local memory).  Valid because the
// swizzle changes only the chunk bits under kMask: adding a multiple of kMask + 1 chunks to
// (c0 + (cc & kMask)) moves the offset by exactly that many chunks.
template <int kChunks>
struct BaseOffset {
  static constexpr int kMask = SplitOffset<kChunks>::kMask;
  static constexpr int kVariants = SplitOffset<kChunks>::kVariants;
  int off[kVariants];
  __device__ __forceinline__ void init(int lane_row, int lane_chunk, int c0) {
#pragma unroll
    for (int j = 0; j < kVariants; ++j)
      off[j] = lane_row * (kChunks * 8) + swizzle_chunk<kChunks>(lane_row, c0 + 2 * j + lane_chunk) * 8;
  }
  __device__ __forceinline__ int at(int const_row, int const_chunk) const {
    return off[(const_chunk & kMask) >> 1] + const_row * (kChunks * 8) + (const_chunk & ~kMask) * 8;
  }
};

template <int kMT, int kNT>
__device__ __forceinline__ void zero_frags(float (&acc)[kMT][kNT][4]) {
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int nj = 0; nj < kNT; ++nj)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][nj][e] = 0.f;
}

// acc[mi][nj] += A[m0 + 16 mi ..][:] . B[n0 + 8 nj ..][:]^T over kKSteps k16 steps, A and B
// row-major swizzled [.][kChunks * 8] tiles (A as the forward's Q, B as its K).
template <typename T, int kChunks, int kKSteps, int kMT, int kNT>
__device__ __forceinline__ void tile_abT(float (&acc)[kMT][kNT][4], uint32_t sA, uint32_t sB, int m0,
                                         int n0, int lane) {
  SplitOffset<kChunks> oa, ob;
  oa.init(ldsm_a_row(lane), ldsm_a_lane_chunk(lane));
  ob.init(ldsm_k_row(lane), ldsm_k_lane_chunk(lane));
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk) {
    uint32_t a[kMT][4];
#pragma unroll
    for (int mi = 0; mi < kMT; ++mi)
      ldsm_x4(sA + oa.at(m0 + 16 * mi, 2 * kk) * (int)sizeof(T), a[mi][0], a[mi][1], a[mi][2],
              a[mi][3]);
#pragma unroll
    for (int nj = 0; nj < kNT; nj += 2) {
      uint32_t bb[4];
      ldsm_x4(sB + ob.at(n0 + 8 * nj, 2 * kk) * (int)sizeof(T), bb[0], bb[1], bb[2], bb[3]);
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        mma_16816<T>(acc[mi][nj], a[mi], bb[0], bb[1]);
        mma_16816<T>(acc[mi][nj + 1], a[mi], bb[2], bb[3]);
      }
    }
  }
}

// acc[mi][nj] += A[m0 + 16 mi ..][:] . B[:][n0 + 8 nj ..] over kKSteps k16 steps.  B is a
// row-major [k][n] tile (kBChunks chunks per row) read with ldmatrix.trans (as the forward's V).
// A is a row-major [m][k] tile (kAChunks per row), or with kATrans a [k][m] tile read with
// ldmatrix.trans (its quarters in the order of the forward's K^T operand, see layout.h).
// A is the sum of two tiles, its high part at sA and its low part at sA + a_lo_bytes (see
// split_pair): acc += A_hi B, then acc += A_lo B.
template <typename T, int kAChunks, int kBChunks, bool kATrans, int kKSteps, int kMT, int kNT>
__device__ __forceinline__ void tile_ab(float (&acc)[kMT][kNT][4], uint32_t sA, uint32_t a_lo_bytes,
                                        uint32_t sB, int m0, int n0, int lane) {
  // A: rows m0.. at k-step kk (plain), or the [k][m] tile at chunk m0 / 8.. (.trans)
  BaseOffset<kAChunks> oa;
  if constexpr (kATrans)
    oa.init(ldsm_k_row(lane), ldsm_k_lane_chunk(lane), m0 / 8);
  else
    oa.init(ldsm_a_row(lane) + m0, ldsm_a_lane_chunk(lane), 0);
  BaseOffset<kBChunks> ob;  // B: the [k][n] tile at chunk n0 / 8..
  ob.init(ldsm_v_row(lane), ldsm_v_lane_chunk(lane), n0 / 8);
#pragma unroll
  for (int kk = 0; kk < kKSteps; ++kk) {
    uint32_t a[2][kMT][4];
#pragma unroll
    for (int part = 0; part < 2; ++part)
#pragma unroll
      for (int mi = 0; mi < kMT; ++mi) {
        const uint32_t base = sA + part * a_lo_bytes;
        if constexpr (kATrans)
          ldsm_x4_trans(base + oa.at(16 * kk, 2 * mi) * (int)sizeof(T), a[part][mi][0],
                        a[part][mi][1], a[part][mi][2], a[part][mi][3]);
        else
          ldsm_x4(base + oa.at(16 * mi, 2 * kk) * (int)sizeof(T), a[part][mi][0],
                  a[part][mi][1], a[part][mi][2], a[part][mi][3]);
      }
#pragma unroll
    for (int nj = 0; nj < kNT; nj += 2) {
      uint32_t bb[4];
      ldsm_x4_trans(sB + ob.at(16 * kk, nj) * (int)sizeof(T), bb[0], bb[1], bb[2], bb[3]);
#pragma unroll
      for (int part = 0; part < 2; ++part)
#pragma unroll
        for (int mi = 0; mi < kMT; ++mi) {
          mma_16816<T>(acc[mi][nj], a[part][mi], bb[0], bb[1]);
          mma_16816<T>(acc[mi][nj + 1], a[part][mi], bb[2], bb[3]);
        }
    }
  }
}

// x rounded to T, as float.
template <typename T>
__device__ __forceinline__ float round_to(float x) {
  const uint32_t two = pack2<T>(x, 0.f);
  return to_float(*reinterpret_cast<const T*>(&two));
}

// Two adjacent columns (c, c + 1; c even) of row r of a swizzled [.][kChunks * 8] tile, split in
// a high part (x rounded to T, at `tile`) and a low part (the rest x - hi rounded to T, at
// tile + lo_elems): hi + lo carries twice T's mantissa, so the products over P and dS lose no
// more than float32 math does (a single T rounding of P and dS made dq / dk / dv up to ~3x
// less accurate than the float32 math path, outside the SPEC's 2x).  inf / NaN: lo = 0 / NaN.
template <typename T, int kChunks>
__device__ __forceinline__ void split_pair(T* tile, int lo_elems, int r, int c, float x0,
                                           float x1) {
  const int off = tile_offset<kChunks>(r, c / 8) + c % 8;
  const float h0 = round_to<T>(x0), h1 = round_to<T>(x1);
  const float l0 = isinf(h0) ? 0.f : x0 - h0, l1 = isinf(h1) ? 0.f : x1 - h1;
  *reinterpret_cast<uint32_t*>(tile + off) = pack2<T>(h0, h1);
  *reinterpret_cast<uint32_t*>(tile + lo_elems + off) = pack2<T>(l0, l1);
}

// One step's S, P, dP and dS from the tiles in shared memory, this warp's share (WarpSlice):
//   kKeyRows (dK/dV kernel): rows = kRows keys of sK / sV, columns = kCols queries of sQ / sdO;
//                            sA = sK, sB = sQ, sA2 = sV, sB2 = sdO (S^T, dP^T).
//   otherwise (dQ / delta):  rows = queries, columns = keys; sA = sQ, sB = sK, sA2 = sdO,
//                            sB2 = sV.
// lse / delta of the tile's queries come from shared memory (indexed by the local query;
// sdelta null: delta = 0, for the pass that computes delta).  Hands each thread's pairs of
// adjacent columns to per_pair(mi, hr, r, c, p[2], ds[2], dp[2]) (r, c: tile row / column).
template <class Tr, int kRows, int kCols, bool kKeyRows, class PerPair>
__device__ __forceinline__ void tile_p_ds(const FwdParams& f, const TileAt& at, uint32_t sA,
                                          uint32_t sB, uint32_t sA2, uint32_t sB2,
                                          const float* slse, const float* sdelta, int warp,
                                          int lane, PerPair per_pair) {
  using T = typename Tr::T;
  using WS = WarpSlice<kRows, kCols, Tr::kNWarps>;
  constexpr int kMT = WS::kMT, kNT = WS::kNT, kKSteps = Tr::kHeadDim / 16;
  if (!WS::active(warp)) return;
  const int m0 = WS::row0(warp), n0 = WS::col0(warp);

  // S = A B^T (scores before scale), dP = A2 B2^T
  float acc_s[kMT][kNT][4], acc_dp[kMT][kNT][4];
  zero_frags(acc_s);
  zero_frags(acc_dp);
  tile_abT<T, Tr::kChunks, kKSteps>(acc_s, sA, sB, m0, n0, lane);
  tile_abT<T, Tr::kChunks, kKSteps>(acc_dp, sA2, sB2, m0, n0, lane);

  const int g = lane_group(lane), tig = lane_tig(lane);
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi) {
#pragma unroll
    for (int nj = 0; nj < kNT; ++nj) {
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        const int r = m0 + 16 * mi + g + 8 * hr, c = n0 + 8 * nj + 2 * tig;
        float pv[2], dsv[2], dpv[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int qloc = kKeyRows ? c + e : r;  // the query's index in the tile
          const int i = at.i0 + qloc, j = at.j0 + (kKeyRows ? r : c + e);
          // P = exp(scaled, capped, masked S - lse) on allowed pairs; dS = P (dP - delta) slope
          bool keep = true;
          float add = 0.f;
          if (i < at.s.lq && j < at.s.lk) mask_at(f, at.b, at.h, i, j, &keep, &add);
          dpv[e] = acc_dp[mi][nj][2 * hr + e];
          pair_grad(f, acc_s[mi][nj][2 * hr + e], dpv[e], i, j, at.s.lq, at.s.lk, keep, add,
                    slse[qloc], sdelta != nullptr ? sdelta[qloc] : 0.f, &pv[e], &dsv[e]);
        }
        per_pair(mi, hr, r, c, pv, dsv, dpv);
      }
    }
  }
}

// P and dS of one step (tile_p_ds) into shared memory, each as a [kRows][kCols] high part
// followed by its low part (split_pair); sP may be null (the dQ kernel needs only dS).
template <class Tr, int kRows, int kCols, bool kKeyRows>
__device__ __forceinline__ void p_ds_tiles(const FwdParams& f, const TileAt& at, uint32_t sA,
                                           uint32_t sB, uint32_t sA2, uint32_t sB2,
                                           const float* slse, const float* sdelta,
                                           typename Tr::T* sP, typename Tr::T* sdS, int warp,
                                           int lane) {
  using T = typename Tr::T;
  tile_p_ds<Tr, kRows, kCols, kKeyRows>(
      f, at, sA, sB, sA2, sB2, slse, sdelta, warp, lane,
      [&](int, int, int r, int c, const float(&pv)[2], const float(&dsv)[2], const float(&)[2]) {
        if (sP != nullptr) split_pair<T, kCols / 8>(sP, kRows * kCols, r, c, pv[0], pv[1]);
        split_pair<T, kCols / 8>(sdS, kRows * kCols, r, c, dsv[0], dsv[1]);
      });
}

// delta's partial row sums sum_j P_ij dP_ij over one step's keys (tile_p_ds, query rows):
// rows[mi][hr] is the thread's row m0 + 16 mi + groupID + 8 hr, over its columns.
template <class Tr, int kRows, int kCols, int kMT>
__device__ __forceinline__ void p_dp_rowsums(const FwdParams& f, const TileAt& at, uint32_t sQ,
                                             uint32_t sK, uint32_t sdO, uint32_t sV,
                                             const float* slse, float (&rows)[kMT][2], int warp,
                                             int lane) {
  tile_p_ds<Tr, kRows, kCols, false>(
      f, at, sQ, sK, sdO, sV, slse, nullptr, warp, lane,
      [&](int mi, int hr, int, int, const float(&pv)[2], const float(&)[2], const float(&dpv)[2]) {
        rows[mi][hr] += pv[0] * dpv[0] + pv[1] * dpv[1];
      });
}

// Stores this warp's share of a [rows][cols] float accumulator tile (rows from row0, columns
// < ncols) as the input dtype into rows `row_ptr(r)` (null for rows to skip).
template <typename T, int kMT, int kNT, class RowPtr>
__device__ __forceinline__ void store_frags(const float (&acc)[kMT][kNT][4], int m0, int n0,
                                            int ncols, int lane, RowPtr row_ptr) {
  const int g = lane_group(lane), tig = lane_tig(lane);
#pragma unroll
  for (int mi = 0; mi < kMT; ++mi)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      T* row = row_ptr(m0 + 16 * mi + g + 8 * hr);
      if (row == nullptr) continue;
#pragma unroll
      for (int nj = 0; nj < kNT; ++nj) {
        const int c = n0 + 8 * nj + 2 * tig;
        if (c < ncols)
          *reinterpret_cast<uint32_t*>(row + c) =
              pack2<T>(acc[mi][nj][2 * hr], acc[mi][nj][2 * hr + 1]);
      }
    }
}

}  // namespace mlx_attn_cuda
