// What the ISA-independent driver and the per-ISA kernel translation units exchange.
// Plain data only: no inline code here may depend on the ISA.
#pragma once
#include <cstddef>
#include <cstdint>

#include "attn.h"

namespace mlx_attn_cpu {

constexpr int kMaxRows = 64;  // rows in one row block, the most any ISA config uses
constexpr int kRowGroup = 4;  // row blocks that share each key block's reads (fwd_rows)

// A block of query rows that share one (sequence b, kv head): row r is query i[r] of head h[r].
struct Rows {
  int b = 0;
  int n = 0;
  int h[kMaxRows];
  int i[kMaxRows];
};

// A contiguous range of keys of one (sequence b, kv head) for the backward pass.
struct KeyRange {
  int b = 0, hk = 0, k0 = 0, k1 = 0;
  float* dq_acc = nullptr;  // [G * Lq_b, Dp] float32 accumulator owned by this item
};

struct IsaKernels {
  const char* name;
  int W;          // lanes per vector
  int rows;       // query rows per forward row block (NV * W)
  // forward
  size_t (*fwd_ws)(const Problem&);  // floats of per-thread workspace
  // nr (<= kRowGroup) row blocks of one (sequence, kv head) against keys [k0, k1); partials ==
  // nullptr: write o / lse; else store block g's (m, l, unnormalised o) at partials[g] for a
  // split-K merge
  void (*fwd_rows)(const Problem&, const Rows* R, int nr, int k0, int k1, float* ws,
                   float* const* partials);
  size_t (*fwd_partial)(const Problem&);  // floats per partial
  void (*fwd_merge)(const Problem&, const Rows&, int nsplit, const float* partials);
  // one decode-sized row block (<= 8 rows), otherwise as fwd_rows; null when this ISA has no
  // such kernel (the driver then uses a narrower ISA's fwd_rows for them)
  size_t (*fwd_small_ws)(const Problem&);
  void (*fwd_small)(const Problem&, const Rows&, int k0, int k1, float* ws, float* partial);
  // backward
  size_t (*bwd_ws)(const Problem&);
  int (*bwd_dp)(const Problem&);      // padded head dim of the dq accumulator
  void (*bwd_keys)(const Problem&, const KeyRange&, float* ws);
  // dq accumulator rows -> dq (sum of `nacc` accumulators spaced `stride` floats apart)
  void (*bwd_dq)(const Problem&, int b, int hk, const float* acc, int nacc, size_t stride);
};

const IsaKernels& kernels_generic();
const IsaKernels& kernels_avx2();
const IsaKernels& kernels_avx512();
const IsaKernels& kernels_avx512bf16();

// Sequence bounds of batch item b.
struct Seq {
  int64_t qo, ko;  // first query / key row (varlen), else 0
  int Lq, Lk;
};
inline Seq seq_of(const Problem& p, int b) {
  if (p.cu_q) return {p.cu_q[b], p.cu_k[b], p.cu_q[b + 1] - p.cu_q[b], p.cu_k[b + 1] - p.cu_k[b]};
  return {0, 0, p.Lq, p.Lk};
}

}  // namespace mlx_attn_cpu
