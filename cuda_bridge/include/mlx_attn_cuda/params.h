// The plain description of one forward launch, shared by the host dispatch, the kernels and
// the host-only self-check program (so it must compile with a plain C++17 compiler too).
#pragma once

#include <cstdint>

#include "mlx_attn_common/rules.h"

// __host__ __device__ __forceinline__ under nvcc, inline for the host compiler (rules.h).
#define MA_HD MLX_ATTN_HD

namespace mlx_attn_cuda {

// Element type of an optional mask tensor.
enum MaskType : int {
  kMaskNone = 0,
  kMaskBool = 1,  // 1 byte per element, nonzero keeps
  kMaskF32 = 2,   // additive
  kMaskF16 = 3,   // additive
  kMaskBF16 = 4,  // additive
};

enum DType : int { kFloat16 = 0, kBFloat16 = 1 };

// Which tile configuration a launch uses (see traits.h).
enum Config : int {
  kPrefill = 0,  // large query tiles, one pass over the keys per CTA
  kDecode = 1,   // 64-row query tiles, the key range optionally split across CTAs (split-KV)
};

struct FwdParams {
  // Inputs, all in the bhld index order with arbitrary batch/head/seq strides (in elements)
  // and a contiguous last dim.  q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv].
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t q_sb = 0, q_sh = 0, q_sl = 0;
  int64_t k_sb = 0, k_sh = 0, k_sl = 0;
  int64_t v_sb = 0, v_sh = 0, v_sl = 0;

  // Output [B, Hq, Lq, Dv] in q's dtype (strided like the inputs) and lse float32 [B, Hq, Lq]
  // contiguous.  Written directly when num_splits == 1, by the combine kernel otherwise.
  void* out = nullptr;
  int64_t o_sb = 0, o_sh = 0, o_sl = 0;
  float* lse = nullptr;

  // Split-KV workspace (num_splits > 1): o_accum float32 [S, B, Hq, Lq, Dv] and
  // lse_accum float32 [S, B, Hq, Lq], both contiguous.
  float* o_accum = nullptr;
  float* lse_accum = nullptr;

  // Optional mask, broadcastable to [B, Hq, Lq, Lk]: strides are 0 on broadcast dims.
  const void* mask = nullptr;
  int mask_type = kMaskNone;
  int64_t m_sb = 0, m_sh = 0, m_sq = 0, m_sk = 0;

  int b = 0, hq = 0, hkv = 0, group = 1;  // group = Hq / Hkv
  int lq = 0, lk = 0, d = 0, dv = 0;
  int rows = 0;  // lq * group: a CTA tile packs the query heads of one kv head (see blocks.h)

  float scale = 1.f;       // SPEC scale
  float scale_log2 = 1.f;  // scale * log2(e)
  float softcap = 0.f;     // 0 = off
  // Allowed keys for query i (off = lk - lq): i + off - window_left <= j <= i + off +
  // window_right; -1 = unbounded on that side.  Causal is folded in as window_right <= 0.
  int window_left = -1, window_right = -1;

  int num_splits = 1;

  // Fused varlen (cu_seqlens_q != nullptr; SPEC: no mask, no split-KV).  b counts sequences:
  // sequence b is rows [cu_seqlens_q[b], cu_seqlens_q[b + 1]) of the packed q/out (and dout/dq)
  // and [cu_seqlens_k[b], cu_seqlens_k[b + 1]) of k/v (dk/dv).  The host sets the batch strides
  // to 0 (the sequence's first row comes from Seq below), lq/lk to the longest lengths (grid
  // sizes; rows = lq * group) and total_q to cu_seqlens_q[b].  Causal and window are
  // bottom-right aligned per sequence.  lse (and the backward's delta) are [Hq, total_q].
  const int* cu_seqlens_q = nullptr;
  const int* cu_seqlens_k = nullptr;
  int total_q = 0;
};

// One (dense batch entry or varlen sequence)'s place in the tensors: its first query and key
// row and its lengths.  Dense: rows 0 of batch b (whose batch stride the pointers add), lq, lk.
struct Seq {
  int64_t q0 = 0, k0 = 0;  // first row: add q0 * q_sl (out, dout, dq too), k0 * k_sl (v, dk, dv)
  int lq = 0, lk = 0;      // this sequence's lengths (<= p.lq, p.lk)
};

MA_HD Seq seq_of(const FwdParams& p, int b) {
  Seq s;
  if (p.cu_seqlens_q == nullptr) {
    s.lq = p.lq;
    s.lk = p.lk;
    return s;
  }
  s.q0 = p.cu_seqlens_q[b];
  s.k0 = p.cu_seqlens_k[b];
  s.lq = p.cu_seqlens_q[b + 1] - p.cu_seqlens_q[b];
  s.lk = p.cu_seqlens_k[b + 1] - p.cu_seqlens_k[b];
  return s;
}

// Index of row i of query head h of batch entry / sequence b in lse (and the backward's delta,
// dq_accum rows): dense [B, Hq, Lq], varlen [Hq, total_q].
MA_HD int64_t lse_index(const FwdParams& p, const Seq& s, int b, int h, int i) {
  if (p.cu_seqlens_q == nullptr) return ((int64_t)b * p.hq + h) * p.lq + i;
  return (int64_t)h * p.total_q + s.q0 + i;
}

}  // namespace mlx_attn_cuda

namespace mlx_attn_cuda {

// The backward launch: the forward's description (q, k, v, out, lse, mask, dims, scale,
// softcap, window; split fields unused) plus the incoming gradients and the outputs.
struct BwdParams {
  FwdParams f;
  // dout [B, Hq, Lq, Dv] in q's dtype, strided like out.
  const void* dout = nullptr;
  int64_t do_sb = 0, do_sh = 0, do_sl = 0;
  // Optional gradient of lse, float32 [B, Hq, Lq] contiguous (nullptr when lse is unused).
  const float* dlse = nullptr;
  // Workspace float32 [B, Hq, Lq] contiguous: delta = dot(dout, out) - dlse per row.
  float* delta = nullptr;
  // Outputs in q's dtype, shaped and strided like q, k, v.
  void* dq = nullptr;
  int64_t dq_sb = 0, dq_sh = 0, dq_sl = 0;
  void* dk = nullptr;
  int64_t dk_sb = 0, dk_sh = 0, dk_sl = 0;
  void* dv = nullptr;
  int64_t dv_sb = 0, dv_sh = 0, dv_sl = 0;
  // deterministic: no float atomics anywhere, the same bits on every run and schedule.
  // Otherwise dQ is accumulated with float32 atomics into dq_accum (float32, one row of
  // f.d values per lse_index row, i.e. [B * Hq * Lq, D] dense or [Hq * total_q, D] varlen;
  // contiguous, allocated by the caller, zeroed and converted by the backward kernels).
  bool deterministic = false;
  float* dq_accum = nullptr;
};

}  // namespace mlx_attn_cuda
