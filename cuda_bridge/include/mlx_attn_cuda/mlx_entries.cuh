// Flat-argument entry points for MLX's mx.fast.precompiled_cuda_kernel, which launches one
// `extern "C"` kernel of a PTX / cubin image by name with its arguments in this order: a
// pointer per input array, a pointer per output array, then the scalars (bool, int32 or
// float32, as given).  No null pointers and no int64 can be passed, so optional inputs arrive
// as 1-element placeholders with a flag, and strides as int32 (the Python side checks they
// fit).  Each entry fills FwdParams / BwdParams and runs the same kernel body as the bridge's
// __global__ kernels (fwd_block, combine_block, bwd_*_block): there is no second copy of the
// kernels.  The entries themselves are spelled out per (dtype, head-dim bucket) in
// cuda_bridge/src/mlx_entries.cu.in; the launcher is src/mlx_attn/backends/cuda/mlx_launch.py.
#pragma once

#include "bwd_kernel.cuh"
#include "combine_kernel.cuh"
#include "fwd_kernel.cuh"
#include "params.h"

// The forward's scalars, in the order the launcher passes them (mlx_launch.py FWD_SCALARS):
// sizes, strides of q, k, v, out and the mask in elements (0 on broadcast mask dims), the
// mask's MaskType, causal and the window sides (before window_side / fold_causal), the
// number of KV splits, scale, scale * log2(e) (rounded once from double, as binding_args.h
// does), softcap, and fused varlen: whether cu_seqlens are real inputs, and total_q (params.h:
// then b counts sequences, lq / lk are the longest lengths and the batch strides are 0).
#define MA_FLAT_FWD_SCALARS                                                                   \
  int b, int hq, int hkv, int lq, int lk, int d, int d_v, int q_sb, int q_sh, int q_sl,          \
      int k_sb, int k_sh, int k_sl, int v_sb, int v_sh, int v_sl, int o_sb, int o_sh, int o_sl, \
      int mask_type, int m_sb, int m_sh, int m_sq, int m_sk, int causal, int window_left,       \
      int window_right, int num_splits, float scale, float scale_log2, float softcap, int varlen, \
      int total_q
#define MA_FLAT_FWD_ARGS                                                                      \
  b, hq, hkv, lq, lk, d, d_v, q_sb, q_sh, q_sl, k_sb, k_sh, k_sl, v_sb, v_sh, v_sl, o_sb, o_sh, \
      o_sl, mask_type, m_sb, m_sh, m_sq, m_sk, causal, window_left, window_right, num_splits,  \
      scale, scale_log2, softcap, varlen, total_q
// The backward's extra scalars (mlx_launch.py BWD_SCALARS): strides of dout, dq, dk, dv, and
// flags: whether dlse is a real input, deterministic dQ (no atomics, no dq_accum).
#define MA_FLAT_BWD_SCALARS                                                                   \
  int do_sb, int do_sh, int do_sl, int dq_sb, int dq_sh, int dq_sl, int dk_sb, int dk_sh,      \
      int dk_sl, int dv_sb, int dv_sh, int dv_sl, int has_dlse, int deterministic
#define MA_FLAT_BWD_ARGS                                                                      \
  do_sb, do_sh, do_sl, dq_sb, dq_sh, dq_sl, dk_sb, dk_sh, dk_sl, dv_sb, dv_sh, dv_sl, has_dlse, \
      deterministic

namespace mlx_attn_cuda {

// FwdParams from the flat scalars; pointers are set by the caller.
__device__ __forceinline__ FwdParams flat_fwd_params(MA_FLAT_FWD_SCALARS) {
  FwdParams p;
  p.b = b, p.hq = hq, p.hkv = hkv, p.group = hq / hkv;
  p.lq = lq, p.lk = lk, p.d = d, p.dv = d_v, p.rows = lq * p.group;
  p.q_sb = q_sb, p.q_sh = q_sh, p.q_sl = q_sl;
  p.k_sb = k_sb, p.k_sh = k_sh, p.k_sl = k_sl;
  p.v_sb = v_sb, p.v_sh = v_sh, p.v_sl = v_sl;
  p.o_sb = o_sb, p.o_sh = o_sh, p.o_sl = o_sl;
  p.mask_type = mask_type;
  p.m_sb = m_sb, p.m_sh = m_sh, p.m_sq = m_sq, p.m_sk = m_sk;
  p.window_left = mlx_attn_common::window_side(window_left);
  p.window_right = fold_causal(causal != 0, mlx_attn_common::window_side(window_right));
  p.num_splits = num_splits;
  p.scale = scale;
  p.scale_log2 = scale_log2;
  p.softcap = softcap;
  p.total_q = total_q;
  (void)varlen;  // the pointers are set by flat_fwd
  return p;
}

// BwdParams around the forward's description; pointers are set by the caller.
__device__ __forceinline__ BwdParams flat_bwd_params(const FwdParams& f, MA_FLAT_BWD_SCALARS) {
  BwdParams p;
  p.f = f;
  p.f.num_splits = 1;
  p.do_sb = do_sb, p.do_sh = do_sh, p.do_sl = do_sl;
  p.dq_sb = dq_sb, p.dq_sh = dq_sh, p.dq_sl = dq_sl;
  p.dk_sb = dk_sb, p.dk_sh = dk_sh, p.dk_sl = dk_sl;
  p.dv_sb = dv_sb, p.dv_sh = dv_sh, p.dv_sl = dv_sl;
  p.deterministic = deterministic != 0;
  (void)has_dlse;
  return p;
}

// The forward: q, k, v, mask (a placeholder when mask_type is kMaskNone), cu_seqlens_q / _k
// (placeholders unless varlen) in; out, lse (written when num_splits == 1) and o_accum,
// lse_accum (written when num_splits > 1) out.
template <typename T>
__device__ __forceinline__ FwdParams flat_fwd(const T* q, const T* k, const T* v, const void* mask,
                                              const int* cu_q, const int* cu_k, T* out,
                                              float* lse, float* o_accum, float* lse_accum,
                                              MA_FLAT_FWD_SCALARS) {
  FwdParams p = flat_fwd_params(MA_FLAT_FWD_ARGS);
  p.q = q, p.k = k, p.v = v, p.out = out, p.lse = lse;
  p.mask = mask_type == kMaskNone ? nullptr : mask;
  p.o_accum = o_accum, p.lse_accum = lse_accum;
  if (varlen) p.cu_seqlens_q = cu_q, p.cu_seqlens_k = cu_k;
  return p;
}

// The backward kernels share one signature: q, k, v, mask, lse, dout, dlse (a placeholder
// unless has_dlse), delta_in (dK/dV reads the delta pass's output; a placeholder for the
// others), cu_seqlens_q / _k in; delta_out, dq, dk, dv, dq_accum out (each kernel writes its
// own; the others are placeholders).  `delta` / `dq_accum` say which buffers this kernel uses
// for p.delta and p.dq_accum.
template <typename T>
__device__ __forceinline__ BwdParams flat_bwd(const T* q, const T* k, const T* v, const void* mask,
                                              const float* lse, const T* dout, const float* dlse,
                                              const int* cu_q, const int* cu_k, float* delta,
                                              T* dq, T* dk, T* dv, float* dq_accum,
                                              MA_FLAT_FWD_SCALARS, MA_FLAT_BWD_SCALARS) {
  FwdParams f = flat_fwd(q, k, v, mask, cu_q, cu_k, (T*)nullptr, const_cast<float*>(lse),
                         (float*)nullptr, (float*)nullptr, MA_FLAT_FWD_ARGS);
  BwdParams p = flat_bwd_params(f, MA_FLAT_BWD_ARGS);
  p.dout = dout;
  p.dlse = has_dlse ? dlse : nullptr;
  p.delta = delta;
  p.dq = dq, p.dk = dk, p.dv = dv;
  p.dq_accum = deterministic ? nullptr : dq_accum;
  return p;
}

}  // namespace mlx_attn_cuda
