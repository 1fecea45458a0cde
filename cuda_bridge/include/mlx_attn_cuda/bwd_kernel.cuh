// Backward kernels, FlashAttention-2 structure on mma.sync m16n8k16 (bwd_tile.cuh has the
// tile steps, bwd_traits.h the tiles).  Launched in stream order (bwd_launch.cuh): delta
// kernel, dK/dV, convert (default mode); or dQ kernel, dK/dV (deterministic mode).
//
//   bwd_dq_kernel<false>  the delta kernel (default mode): a CTA per (query tile, query head,
//                       batch entry / sequence) walks the key blocks its queries see and sums
//                       delta = sum_j P dP - dlse from recomputed S, dP tiles (see the kernel
//                       for why not dot(dout, out)); zeroes its rows of dq_accum.
//   bwd_dkdv_kernel     a CTA per (key block, kv head, batch entry / sequence).  K and V stay in
//                       shared memory; the CTA walks every query tile of every query head of
//                       the kv head's GQA group that can see the key block (causal/window
//                       ranges skip the rest), Q / dO / lse / delta streamed (cp.async, double
//                       buffered where shared memory allows).  Per tile: S^T, P^T, dP^T, dS^T
//                       (p_ds_tiles), then dV += P^T dO and dK += dS^T Q in float32 registers:
//                       the GQA sum happens there, K/V are never repeated.  Default mode: also
//                       dQ_partial = dS K, added with float32 atomics to dq_accum.
//   bwd_dq_kernel<true> deterministic mode, launched before the dK/dV kernel: the delta pass,
//                       then a second walk over the same key blocks recomputing S, P, dP, dS
//                       and accumulating dQ += dS K in registers; every dq element is written
//                       once by one thread: the same bits on every run and schedule.
//   bwd_dq_convert_kernel  default mode: dq = dq_accum in the input dtype and dq's strides.
//
// Varlen (params.h): batch strides are 0, pointers add the sequence's first row, lengths and
// tails come from Seq, lse / delta / dq_accum rows from lse_index.  CTAs past their sequence's
// length exit before any barrier.
#pragma once

#include "bwd_tile.cuh"
#include "bwd_traits.h"
#include "params.h"
#include "ptx.h"
#include "tile_io.cuh"

namespace mlx_attn_cuda {

// Device code for sm_80+ (the host pass of nvcc sees empty bodies), or the host emulator.
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800) || defined(MLX_ATTN_CUDA_EMULATE)
#define MA_BWD_DEVICE 1
#else
#define MA_BWD_DEVICE 0
#endif

template <typename T>
__device__ __forceinline__ float ld_f(const T* p) { return to_float(*p); }

// Number of lse rows: [B, Hq, Lq] dense, [Hq, total_q] varlen.
MA_HD int64_t bwd_rows(const FwdParams& f) {
  return f.cu_seqlens_q == nullptr ? (int64_t)f.b * f.hq * f.lq : (int64_t)f.hq * f.total_q;
}

// Element offset (strides sb, sh, sl) of lse row `row`: dense (b, h, i), varlen (h, token).
MA_HD int64_t row_offset(const FwdParams& f, int64_t row, int64_t sb, int64_t sh, int64_t sl) {
  if (f.cu_seqlens_q != nullptr) return (row / f.total_q) * sh + (row % f.total_q) * sl;
  const int64_t bh = row / f.lq;
  return (bh / f.hq) * sb + (bh % f.hq) * sh + (row % f.lq) * sl;
}

// dq = dq_accum (float32) in the input dtype; one warp per lse row.
template <typename T>
__device__ __forceinline__ void bwd_dq_convert_block(const BwdParams& p) {
  const FwdParams& f = p.f;
  const int64_t row = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= bwd_rows(f)) return;
  T* dq = static_cast<T*>(p.dq) + row_offset(f, row, p.dq_sb, p.dq_sh, p.dq_sl);
  const float* acc = p.dq_accum + row * f.d;
  for (int d = 2 * lane; d < f.d; d += 64)
    *reinterpret_cast<uint32_t*>(dq + d) = pack2<T>(acc[d], acc[d + 1]);
}

template <typename T>
__global__ void __launch_bounds__(128) bwd_dq_convert_kernel(const BwdParams p) {
  bwd_dq_convert_block<T>(p);
}

// lse and delta of queries i0 .. i0 + n of head h into shared memory (-inf / 0 past the end).
__device__ __forceinline__ void load_row_stats(const BwdParams& p, const TileAt& at, int n,
                                               float* slse, float* sdelta, int tid, int nthreads) {
  for (int x = tid; x < n; x += nthreads) {
    const int i = at.i0 + x;
    const bool ok = i < at.s.lq;
    const int64_t row = ok ? lse_index(p.f, at.s, at.b, at.h, i) : 0;
    slse[x] = ok ? p.f.lse[row] : -INFINITY;
    sdelta[x] = ok ? p.delta[row] : 0.f;
  }
}

// Kernel bodies are device functions so that the __global__ kernels and the flat-argument
// entry points for MLX (mlx_entries.cuh) run the same code.
template <class Tr>
__device__ __forceinline__ void bwd_dkdv_block(const BwdParams& p) {
#if MA_BWD_DEVICE
  using T = typename Tr::T;
  constexpr int kBM = Tr::kBlockM, kBN = Tr::kBlockN, kD = Tr::kHeadDim, kS = Tr::kStages;
  using KTile = RowTile<T, kBN, kD, Tr::kNThreads>;
  using QTile = RowTile<T, kBM, kD, Tr::kNThreads>;
  using KV = WarpSlice<kBN, kD, Tr::kNWarps>;  // dK, dV: this warp's keys x columns
  using DQ = WarpSlice<kBM, kD, Tr::kNWarps>;  // dQ partial: queries x columns
  const FwdParams& f = p.f;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + kBN * kD;
  T* sQ = sV + kBN * kD;        // [kS][kBM][kD]
  T* sdO = sQ + kS * kBM * kD;  // [kS][kBM][kD]
  T* sP = sdO + kS * kBM * kD;  // P^T  [2][kBN][kBM] (high, low parts)
  T* sdS = sP + 2 * kBN * kBM;  // dS^T [2][kBN][kBM]
  constexpr uint32_t kLoBytes = kBN * kBM * sizeof(T);
  float* slse = reinterpret_cast<float*>(sdS + 2 * kBN * kBM);  // [kS][kBM]
  float* sdelta = slse + kS * kBM;                          // [kS][kBM]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int n_blocks = ceil_div(f.lk, kBN);
  const int n_block = (int)(blockIdx.x % (unsigned)n_blocks);
  const int bh = (int)(blockIdx.x / (unsigned)n_blocks);
  const int b = bh / f.hkv, hk = bh % f.hkv;
  const Seq s = seq_of(f, b);
  const int j0 = n_block * kBN;
  if (j0 >= s.lk) return;  // past this sequence's keys: uniform, before any barrier
  const int j_last = imin(j0 + kBN, s.lk) - 1;

  // Query tiles that can see a key of this block (the same range for every query head).
  const Span qs = queries_seeing(j0, j_last, s.lq, s.lk, f.window_left, f.window_right);
  const int m_lo = qs.lo / kBM;
  const int n_m = qs.hi >= qs.lo ? qs.hi / kBM - m_lo + 1 : 0;
  const int steps = n_m * f.group;  // (query head, query tile) pairs

  load_kv_tile<KTile>(static_cast<const T*>(f.k) + b * f.k_sb + hk * f.k_sh + s.k0 * f.k_sl,
                      f.k_sl, j0, s.lk, f.d, sK, tid);
  load_kv_tile<KTile>(static_cast<const T*>(f.v) + b * f.v_sb + hk * f.v_sh + s.k0 * f.v_sl,
                      f.v_sl, j0, s.lk, f.dv, sV, tid);
  cp_async_commit();

  auto tile_at = [&](int t) {
    TileAt at;
    at.b = b, at.h = hk * f.group + t / n_m, at.s = s;
    at.i0 = (m_lo + t % n_m) * kBM, at.j0 = j0;
    return at;
  };
  // Q, dO (cp.async) and lse, delta (plain loads) of step t into buffer t % kS.
  auto issue = [&](int t) {
    const TileAt at = tile_at(t);
    const int slot = t % kS;
    load_kv_tile<QTile>(static_cast<const T*>(f.q) + b * f.q_sb + at.h * f.q_sh + s.q0 * f.q_sl,
                        f.q_sl, at.i0, s.lq, f.d, sQ + slot * kBM * kD, tid);
    load_kv_tile<QTile>(static_cast<const T*>(p.dout) + b * p.do_sb + at.h * p.do_sh +
                            s.q0 * p.do_sl,
                        p.do_sl, at.i0, s.lq, f.dv, sdO + slot * kBM * kD, tid);
    load_row_stats(p, at, kBM, slse + slot * kBM, sdelta + slot * kBM, tid, Tr::kNThreads);
  };
  if (steps > 0) issue(0);
  cp_async_commit();

  float acc_dk[KV::kMT][KV::kNT][4], acc_dv[KV::kMT][KV::kNT][4];
  zero_frags(acc_dk);
  zero_frags(acc_dv);
  const bool dq_atomics = !p.deterministic && p.dq_accum != nullptr;

  for (int t = 0; t < steps; ++t) {
    const TileAt at = tile_at(t);
    const int slot = t % kS;
    const uint32_t sQs = smem_u32(sQ + slot * kBM * kD), sdOs = smem_u32(sdO + slot * kBM * kD);

    // Tiles of step t have landed; every thread is done with step t - 1's tiles.
    cp_async_wait<0>();
    __syncthreads();
    if constexpr (kS == 2) {
      if (t + 1 < steps) issue(t + 1);  // into the buffer step t - 1 used
      cp_async_commit();
    }

    // S^T = K Q^T, P^T, dP^T = V dO^T, dS^T -> shared memory
    p_ds_tiles<Tr, kBN, kBM, true>(f, at, smem_u32(sK), sQs, smem_u32(sV), sdOs,
                                   slse + slot * kBM, sdelta + slot * kBM, sP, sdS, warp, lane);
    __syncthreads();

    if (KV::active(warp)) {
      // dV += P^T dO ; dK += dS^T Q  (float32, over all query tiles and GQA heads)
      tile_ab<T, kBM / 8, Tr::kChunks, false, kBM / 16>(acc_dv, smem_u32(sP), kLoBytes, sdOs,
                                                        KV::row0(warp), KV::col0(warp), lane);
      tile_ab<T, kBM / 8, Tr::kChunks, false, kBM / 16>(acc_dk, smem_u32(sdS), kLoBytes, sQs,
                                                        KV::row0(warp), KV::col0(warp), lane);
    }
    if (dq_atomics && DQ::active(warp)) {
      // dQ_partial = dS K (dS read transposed from the dS^T tile) -> atomics, 16 columns a go
      const int m0 = DQ::row0(warp);
#pragma unroll 1
      for (int c = 0; c < DQ::kWidth; c += 16) {
        const int n0 = DQ::col0(warp) + c;
        if (n0 >= f.d) break;
        float acc[DQ::kMT][2][4];
        zero_frags(acc);
        tile_ab<T, kBM / 8, Tr::kChunks, true, kBN / 16>(acc, smem_u32(sdS), kLoBytes,
                                                         smem_u32(sK), m0, n0, lane);
        const int g = lane_group(lane), tig = lane_tig(lane);
#pragma unroll
        for (int mi = 0; mi < DQ::kMT; ++mi)
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) {
            const int i = at.i0 + m0 + 16 * mi + g + 8 * hr;
            if (i >= s.lq) continue;
            float* row = p.dq_accum + lse_index(f, s, b, at.h, i) * f.d;
#pragma unroll
            for (int nj = 0; nj < 2; ++nj) {
              const int col = n0 + 8 * nj + 2 * tig;
              if (col >= f.d) continue;
              atomicAdd(row + col, acc[mi][nj][2 * hr]);
              atomicAdd(row + col + 1, acc[mi][nj][2 * hr + 1]);
            }
          }
      }
    }
    if constexpr (kS == 1) {
      __syncthreads();  // every thread is done with the single Q / dO buffer
      if (t + 1 < steps) issue(t + 1);
      cp_async_commit();
    }
  }
  cp_async_wait<0>();  // nothing may be in flight when the CTA exits

  // dK, dV: written once, in the input dtype, with the output strides.
  if (!KV::active(warp)) return;
  T* dk = static_cast<T*>(p.dk) + b * p.dk_sb + hk * p.dk_sh + s.k0 * p.dk_sl;
  T* dv = static_cast<T*>(p.dv) + b * p.dv_sb + hk * p.dv_sh + s.k0 * p.dv_sl;
  const int m0 = KV::row0(warp), n0 = KV::col0(warp);
  store_frags<T>(acc_dk, m0, n0, f.d, lane, [&](int r) {
    return j0 + r < s.lk ? dk + (int64_t)(j0 + r) * p.dk_sl : nullptr;
  });
  store_frags<T>(acc_dv, m0, n0, f.dv, lane, [&](int r) {
    return j0 + r < s.lk ? dv + (int64_t)(j0 + r) * p.dv_sl : nullptr;
  });
#endif
}

template <class Tr>
__global__ void __launch_bounds__(Tr::kNThreads, 1) bwd_dkdv_kernel(const BwdParams p) {
  bwd_dkdv_block<Tr>(p);
}

// The delta pass and the deterministic dQ: a CTA per (query tile, query head, batch entry /
// sequence) with Q, dO and lse resident, walking the key blocks its queries can see.
//   pass 1  delta = sum_j P_ij dP_ij - dlse (float32, from the recomputed S and dP tiles; fixed
//           reduction order), into shared memory and p.delta.  In the default mode this
//           kernel is the "delta kernel" (kWithDq = false) and also zeroes the tile's
//           dq_accum rows.
//   pass 2  (kWithDq, deterministic mode) the same key blocks again: dS, dQ += dS K in float32
//           registers, dq written once.
// Why not delta = dot(dout, out) - dlse (FlashAttention 2's preprocessing, one cheap SIMT pass):
// out is stored rounded to fp16 / bf16, and delta inherits that rounding (a relative 2^-9 in
// bf16) in every dS of the row: dq / dk were then up to 2-3x less accurate than the float32
// math path, which computes the sum from P and dP as here (SPEC criterion: at most 2x).  The
// price is the S and dP products once more (2 of the backward's 5 GEMMs).
template <class Tr, bool kWithDq>
__device__ __forceinline__ void bwd_dq_block(const BwdParams& p) {
#if MA_BWD_DEVICE
  using T = typename Tr::T;
  constexpr int kBM = Tr::kBlockM, kBN = Tr::kBlockN, kD = Tr::kHeadDim, kS = Tr::kStages;
  using KTile = RowTile<T, kBN, kD, Tr::kNThreads>;
  using QTile = RowTile<T, kBM, kD, Tr::kNThreads>;
  using DQ = WarpSlice<kBM, kD, Tr::kNWarps>;   // dQ: queries x columns
  using SP = WarpSlice<kBM, kBN, Tr::kNWarps>;  // S, P, dP: queries x keys
  const FwdParams& f = p.f;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sdO = sQ + kBM * kD;
  T* sK = sdO + kBM * kD;       // [kS][kBN][kD]
  T* sV = sK + kS * kBN * kD;   // [kS][kBN][kD]
  T* sdS = sV + kS * kBN * kD;  // [2][kBM][kBN] (high, low parts)
  constexpr uint32_t kLoBytes = kBM * kBN * sizeof(T);
  float* slse = reinterpret_cast<float*>(sdS + 2 * kBM * kBN);  // [kBM]
  float* sdelta = slse + kBM;                                    // [kBM]
  float* spart = sdelta + kBM;                                   // [SP::kSlices][kBM]

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int m_blocks = ceil_div(f.lq, kBM);
  const int m_block = (int)(blockIdx.x % (unsigned)m_blocks);
  const int bh = (int)(blockIdx.x / (unsigned)m_blocks);
  const int b = bh / f.hq, h = bh % f.hq, hk = h / f.group;
  const Seq s = seq_of(f, b);
  TileAt at;
  at.b = b, at.h = h, at.s = s, at.i0 = m_block * kBM, at.j0 = 0;
  if (at.i0 >= s.lq) return;  // past this sequence's queries: uniform, before any barrier
  const int i_last = imin(at.i0 + kBM, s.lq) - 1;

  // Key blocks that some query of this tile may see.
  const Span ks = keys_seen(at.i0, i_last, s.lq, s.lk, f.window_left, f.window_right);
  const int n_lo = ks.lo / kBN;
  const int n_n = (s.lk > 0 && ks.hi >= ks.lo) ? ks.hi / kBN - n_lo + 1 : 0;
  const int steps = (kWithDq ? 2 : 1) * n_n;  // pass 1, then pass 2 over the same blocks

  load_kv_tile<QTile>(static_cast<const T*>(f.q) + b * f.q_sb + h * f.q_sh + s.q0 * f.q_sl, f.q_sl,
                      at.i0, s.lq, f.d, sQ, tid);
  load_kv_tile<QTile>(static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh + s.q0 * p.do_sl,
                      p.do_sl, at.i0, s.lq, f.dv, sdO, tid);
  for (int x = tid; x < kBM; x += Tr::kNThreads) {
    const int i = at.i0 + x;
    slse[x] = i < s.lq ? f.lse[lse_index(f, s, b, h, i)] : -INFINITY;
  }
  if (!kWithDq && !p.deterministic && p.dq_accum != nullptr) {  // zero this tile's dq_accum rows
    for (int x = tid; x < (i_last - at.i0 + 1) * f.d; x += Tr::kNThreads)
      p.dq_accum[lse_index(f, s, b, h, at.i0 + x / f.d) * f.d + x % f.d] = 0.f;
  }
  cp_async_commit();
  const T* kbase = static_cast<const T*>(f.k) + b * f.k_sb + hk * f.k_sh + s.k0 * f.k_sl;
  const T* vbase = static_cast<const T*>(f.v) + b * f.v_sb + hk * f.v_sh + s.k0 * f.v_sl;
  auto issue = [&](int t) {  // K, V of key block n_lo + t % n_n into buffer t % kS
    const int slot = t % kS, n0 = (n_lo + t % n_n) * kBN;
    load_kv_tile<KTile>(kbase, f.k_sl, n0, s.lk, f.d, sK + slot * kBN * kD, tid);
    load_kv_tile<KTile>(vbase, f.v_sl, n0, s.lk, f.dv, sV + slot * kBN * kD, tid);
  };
  if (steps > 0) issue(0);
  cp_async_commit();

  // delta = (sum of the warps' row sums, slice by slice in order) - dlse, in sdelta and p.delta.
  float rowsum[SP::kMT][2] = {};
  auto finish_delta = [&]() {
    if (SP::active(warp)) {
#pragma unroll
      for (int mi = 0; mi < SP::kMT; ++mi)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
          const float sum = quad_sum(rowsum[mi][hr]);  // the row's 4 threads, fixed order
          if (lane_tig(lane) == 0)
            spart[(warp / SP::kRowTiles % SP::kSlices) * kBM + SP::row0(warp) + 16 * mi +
                  lane_group(lane) + 8 * hr] = sum;
        }
    }
    __syncthreads();
    for (int x = tid; x < kBM; x += Tr::kNThreads) {
      float sum = 0.f;
      for (int sl = 0; sl < SP::kSlices; ++sl) sum += spart[sl * kBM + x];
      const int i = at.i0 + x;
      if (i < s.lq) {
        const int64_t row = lse_index(f, s, b, h, i);
        sdelta[x] = sum - (p.dlse ? p.dlse[row] : 0.f);
        p.delta[row] = sdelta[x];
      } else {
        sdelta[x] = 0.f;
      }
    }
    __syncthreads();
  };

  float acc_dq[kWithDq ? DQ::kMT : 1][kWithDq ? DQ::kNT : 2][4];
  zero_frags(acc_dq);
  for (int t = 0; t < steps; ++t) {
    const int slot = t % kS;
    const uint32_t sKs = smem_u32(sK + slot * kBN * kD), sVs = smem_u32(sV + slot * kBN * kD);
    at.j0 = (n_lo + t % n_n) * kBN;

    // Tiles of step t have landed; every thread is done with step t - 1's tiles.
    cp_async_wait<0>();
    __syncthreads();
    if constexpr (kS == 2) {
      if (t + 1 < steps) issue(t + 1);
      cp_async_commit();
    }

    if (t < n_n) {
      // pass 1: S, P, dP -> sum_j P dP per row
      p_dp_rowsums<Tr, kBM, kBN>(f, at, smem_u32(sQ), sKs, smem_u32(sdO), sVs, slse, rowsum, warp,
                                 lane);
    } else if constexpr (kWithDq) {
      if (t == n_n) finish_delta();
      // pass 2: S, P, dP, dS -> shared memory; dQ += dS K (float32 registers, fixed order)
      p_ds_tiles<Tr, kBM, kBN, false>(f, at, smem_u32(sQ), sKs, smem_u32(sdO), sVs, slse, sdelta,
                                      nullptr, sdS, warp, lane);
      __syncthreads();
      if (DQ::active(warp))
        tile_ab<T, kBN / 8, Tr::kChunks, false, kBN / 16>(acc_dq, smem_u32(sdS), kLoBytes, sKs,
                                                          DQ::row0(warp), DQ::col0(warp), lane);
    }
    if constexpr (kS == 1) {
      __syncthreads();  // every thread is done with the single K / V buffer
      if (t + 1 < steps) issue(t + 1);
      cp_async_commit();
    }
  }
  cp_async_wait<0>();
  if (!kWithDq || n_n == 0) finish_delta();  // (with dQ and keys: done between the passes)

  if constexpr (kWithDq) {
    if (!DQ::active(warp)) return;
    T* dq = static_cast<T*>(p.dq) + b * p.dq_sb + h * p.dq_sh + s.q0 * p.dq_sl;
    store_frags<T>(acc_dq, DQ::row0(warp), DQ::col0(warp), f.d, lane, [&](int r) {
      return at.i0 + r < s.lq ? dq + (int64_t)(at.i0 + r) * p.dq_sl : nullptr;
    });
  }
#endif
}

template <class Tr, bool kWithDq>
__global__ void __launch_bounds__(Tr::kNThreads, 1) bwd_dq_kernel(const BwdParams p) {
  bwd_dq_block<Tr, kWithDq>(p);
}

}  // namespace mlx_attn_cuda
