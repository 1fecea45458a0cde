// Backward kernels (FlashAttention-2 structure, correctness-first arithmetic).
//
//   bwd_delta_kernel   one warp per row: delta = dot(dout, out) - dlse            (float32)
//   bwd_dkdv_kernel    a CTA per (16-key block, kv head, batch); each warp owns 4 keys and
//                      keeps their K, V and the dK, dV accumulators in registers, and walks
//                      over every query of the G query heads sharing the kv head that can
//                      see its keys (causal/window ranges skip the rest): GQA sums happen in
//                      registers in a fixed order, K/V are never repeated.
//   bwd_dq_kernel      a CTA per (16-query block, query head, batch); each warp owns 4 queries
//                      and walks over the keys they can see.
// P is recomputed from the saved lse (bwd_math.h has the per-pair formulas).  dQ is a separate
// pass rather than float atomics, so every output element is written once by one thread and
// the result is bitwise reproducible: "deterministic" costs nothing here.
//
// The arithmetic is SIMT float32 (a lane owns head-dim elements d = lane + 32 t, dot products
// are warp shuffles), not mma.sync: this version was written without a GPU to test on, so it
// favours code that is easy to check over speed.  The tensor-core version (S^T = K Q^T in the
// C layout, P^T / dS^T as A operands, dO and Q through ldmatrix.trans) is the next step.
#pragma once

#include "bwd_math.h"
#include "params.h"
#include "ptx.h"

namespace mlx_attn_cuda {

template <typename T>
__device__ __forceinline__ float ld_f(const T* p) { return to_float(*p); }
template <>
__device__ __forceinline__ float ld_f<float>(const float* p) { return *p; }

template <typename T>
__device__ __forceinline__ T from_f(float x);
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

__device__ __forceinline__ float warp_allsum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Loads elements d = lane + 32 t (t < DT, d < n) of a row, 0 elsewhere.
template <typename T, int DT>
__device__ __forceinline__ void load_row(const T* row, int n, int lane, float (&x)[DT]) {
#pragma unroll
  for (int t = 0; t < DT; ++t) {
    const int d = lane + 32 * t;
    x[t] = d < n ? ld_f(row + d) : 0.f;
  }
}

template <typename T, int DT>
__device__ __forceinline__ void store_row(T* row, int n, int lane, const float (&x)[DT]) {
#pragma unroll
  for (int t = 0; t < DT; ++t) {
    const int d = lane + 32 * t;
    if (d < n) row[d] = from_f<T>(x[t]);
  }
}

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

// delta[row] = dot(dout[row], out[row]) - dlse[row]; one warp per (b, h, i) row.
template <typename T>
__global__ void __launch_bounds__(128) bwd_delta_kernel(const BwdParams p) {
  const FwdParams& f = p.f;
  const int64_t total = (int64_t)f.b * f.hq * f.lq;
  const int64_t row = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= total) return;
  const int i = (int)(row % f.lq);
  const int64_t bh = row / f.lq;
  const int h = (int)(bh % f.hq), b = (int)(bh / f.hq);
  const T* o = static_cast<const T*>(f.out) + b * f.o_sb + h * f.o_sh + (int64_t)i * f.o_sl;
  const T* g = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh + (int64_t)i * p.do_sl;
  float acc = 0.f;
  for (int d = lane; d < f.dv; d += 32) acc = fmaf(ld_f(o + d), ld_f(g + d), acc);
  acc = warp_allsum(acc);
  if (lane == 0) p.delta[row] = acc - (p.dlse ? p.dlse[row] : 0.f);
}

// dK, dV for 16 keys of one (batch, kv head).  DT = head-dim bucket / 32.
template <typename T, int DT>
__global__ void __launch_bounds__(kBwdWarps * 32) bwd_dkdv_kernel(const BwdParams p) {
  constexpr int KPW = kBwdKeysPerWarp, kKeys = kBwdWarps * KPW;
  const FwdParams& f = p.f;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nblk = (f.lk + kKeys - 1) / kKeys;
  const int blk = (int)(blockIdx.x % (unsigned)nblk);
  const int bh = (int)(blockIdx.x / (unsigned)nblk);
  const int b = bh / f.hkv, hk = bh % f.hkv;
  const int j0 = blk * kKeys + warp * KPW;  // this warp's first key
  if (j0 >= f.lk) return;                   // no barrier in this kernel
  const int j_last = imin(j0 + KPW, f.lk) - 1;

  const T* kb = static_cast<const T*>(f.k) + b * f.k_sb + hk * f.k_sh;
  const T* vb = static_cast<const T*>(f.v) + b * f.v_sb + hk * f.v_sh;
  float kr[KPW][DT], vr[KPW][DT], dk[KPW][DT], dv[KPW][DT];
#pragma unroll
  for (int kj = 0; kj < KPW; ++kj) {
    const bool ok = j0 + kj < f.lk;
    load_row<T, DT>(kb + (int64_t)(j0 + kj) * f.k_sl, ok ? f.d : 0, lane, kr[kj]);
    load_row<T, DT>(vb + (int64_t)(j0 + kj) * f.v_sl, ok ? f.dv : 0, lane, vr[kj]);
#pragma unroll
    for (int t = 0; t < DT; ++t) dk[kj][t] = dv[kj][t] = 0.f;
  }

  int i_lo, i_hi;
  bwd_query_range(f, j0, j_last, &i_lo, &i_hi);
  for (int h = hk * f.group; h < (hk + 1) * f.group; ++h) {
    const int64_t row0 = ((int64_t)b * f.hq + h) * f.lq;
    const T* qb = static_cast<const T*>(f.q) + b * f.q_sb + h * f.q_sh;
    const T* gb = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh;
    for (int i = i_lo; i <= i_hi; ++i) {
      const float lse = f.lse[row0 + i];
      if (lse == -INFINITY) continue;  // the row attends to nothing: no gradient flows
      const float delta = p.delta[row0 + i];
      float qv[DT], gv[DT];
      load_row<T, DT>(qb + (int64_t)i * f.q_sl, f.d, lane, qv);
      load_row<T, DT>(gb + (int64_t)i * p.do_sl, f.dv, lane, gv);
#pragma unroll
      for (int kj = 0; kj < KPW; ++kj) {
        float x = 0.f, dp = 0.f;
#pragma unroll
        for (int t = 0; t < DT; ++t) {
          x = fmaf(qv[t], kr[kj][t], x);
          dp = fmaf(gv[t], vr[kj][t], dp);
        }
        x = warp_allsum(x);
        dp = warp_allsum(dp);
        const int j = j0 + kj;
        if (j >= f.lk) continue;  // uniform over the warp, after the shuffles
        bool keep;
        float add, s, slope;
        mask_at(f, b, h, i, j, &keep, &add);
        if (!pair_score(f, x, i, j, keep, add, &s, &slope)) continue;
        const float pr = pair_prob(s, lse);
        const float dx = pr * (dp - delta) * slope;
#pragma unroll
        for (int t = 0; t < DT; ++t) {
          dv[kj][t] = fmaf(pr, gv[t], dv[kj][t]);
          dk[kj][t] = fmaf(dx, qv[t], dk[kj][t]);
        }
      }
    }
  }

  T* dkb = static_cast<T*>(p.dk) + b * p.dk_sb + hk * p.dk_sh;
  T* dvb = static_cast<T*>(p.dv) + b * p.dv_sb + hk * p.dv_sh;
#pragma unroll
  for (int kj = 0; kj < KPW; ++kj) {
    if (j0 + kj >= f.lk) continue;
    store_row<T, DT>(dkb + (int64_t)(j0 + kj) * p.dk_sl, f.d, lane, dk[kj]);
    store_row<T, DT>(dvb + (int64_t)(j0 + kj) * p.dv_sl, f.dv, lane, dv[kj]);
  }
}

// dQ for 16 queries of one (batch, query head).  DT = head-dim bucket / 32.
template <typename T, int DT>
__global__ void __launch_bounds__(kBwdWarps * 32) bwd_dq_kernel(const BwdParams p) {
  constexpr int QPW = kBwdQueriesPerWarp, kQueries = kBwdWarps * QPW;
  const FwdParams& f = p.f;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int nblk = (f.lq + kQueries - 1) / kQueries;
  const int blk = (int)(blockIdx.x % (unsigned)nblk);
  const int bh = (int)(blockIdx.x / (unsigned)nblk);
  const int b = bh / f.hq, h = bh % f.hq, hk = h / f.group;
  const int i0 = blk * kQueries + warp * QPW;
  if (i0 >= f.lq) return;
  const int i_last = imin(i0 + QPW, f.lq) - 1;

  const int64_t row0 = ((int64_t)b * f.hq + h) * f.lq;
  const T* qb = static_cast<const T*>(f.q) + b * f.q_sb + h * f.q_sh;
  const T* gb = static_cast<const T*>(p.dout) + b * p.do_sb + h * p.do_sh;
  float qv[QPW][DT], gv[QPW][DT], dq[QPW][DT], lse[QPW], delta[QPW];
#pragma unroll
  for (int qi = 0; qi < QPW; ++qi) {
    const int i = i0 + qi;
    const bool ok = i < f.lq;
    load_row<T, DT>(qb + (int64_t)(ok ? i : 0) * f.q_sl, ok ? f.d : 0, lane, qv[qi]);
    load_row<T, DT>(gb + (int64_t)(ok ? i : 0) * p.do_sl, ok ? f.dv : 0, lane, gv[qi]);
    lse[qi] = ok ? f.lse[row0 + i] : -INFINITY;
    delta[qi] = ok ? p.delta[row0 + i] : 0.f;
#pragma unroll
    for (int t = 0; t < DT; ++t) dq[qi][t] = 0.f;
  }

  int j_lo, j_hi;
  bwd_key_range(f, i0, i_last, &j_lo, &j_hi);
  const T* kb = static_cast<const T*>(f.k) + b * f.k_sb + hk * f.k_sh;
  const T* vb = static_cast<const T*>(f.v) + b * f.v_sb + hk * f.v_sh;
  for (int j = j_lo; j <= j_hi; ++j) {
    float kr[DT], vr[DT];
    load_row<T, DT>(kb + (int64_t)j * f.k_sl, f.d, lane, kr);
    load_row<T, DT>(vb + (int64_t)j * f.v_sl, f.dv, lane, vr);
#pragma unroll
    for (int qi = 0; qi < QPW; ++qi) {
      float x = 0.f, dp = 0.f;
#pragma unroll
      for (int t = 0; t < DT; ++t) {
        x = fmaf(qv[qi][t], kr[t], x);
        dp = fmaf(gv[qi][t], vr[t], dp);
      }
      x = warp_allsum(x);
      dp = warp_allsum(dp);
      const int i = i0 + qi;
      if (lse[qi] == -INFINITY) continue;  // also covers i >= lq
      bool keep;
      float add, s, slope;
      mask_at(f, b, h, i, j, &keep, &add);
      if (!pair_score(f, x, i, j, keep, add, &s, &slope)) continue;
      const float dx = pair_prob(s, lse[qi]) * (dp - delta[qi]) * slope;
#pragma unroll
      for (int t = 0; t < DT; ++t) dq[qi][t] = fmaf(dx, kr[t], dq[qi][t]);
    }
  }

  T* dqb = static_cast<T*>(p.dq) + b * p.dq_sb + h * p.dq_sh;
#pragma unroll
  for (int qi = 0; qi < QPW; ++qi)
    if (i0 + qi < f.lq) store_row<T, DT>(dqb + (int64_t)(i0 + qi) * p.dq_sl, f.d, lane, dq[qi]);
}

}  // namespace mlx_attn_cuda
