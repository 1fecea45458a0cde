// What the ISA-independent driver and the per-ISA kernel translation units exchange.
// Plain data only: no inline code here may depend on the ISA.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "attn.h"

// Bounds-checked debug build (CMake option MLX_ATTN_BOUNDS_CHECK): every carve-up of a workspace
// and every dq accumulator block is checked against the size the driver allocated; a violation
// prints where and aborts (a sanitizer or core dump then has the stack). Off: no code at all.
#ifdef MLX_ATTN_BOUNDS_CHECK
#define ATTN_CHECK(cond, what)                                                                  \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "mlx_attn cpu kernel: bounds check failed at %s:%d: %s (%s)\n",       \
                   __FILE__, __LINE__, what, #cond);                                            \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)
#else
#define ATTN_CHECK(cond, what) ((void)0)
#endif

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

// The float32 dq accumulator of one (sequence, kv head) in the backward pass: the G query heads
// of the kv head, `group_stride` floats apart, `floats` in all. One function per ISA
// (bwd.h: dq_acc_layout) gives both the driver's allocation and the kernels' strides, so the two
// cannot disagree (they once did: the driver rounded rows up to 64, the AVX2 kernels to 24).
struct DqAccLayout {
  size_t group_stride = 0;
  size_t floats = 0;
};

// A contiguous range of keys of one (sequence b, kv head) for the backward pass.
struct KeyRange {
  int b = 0, hk = 0, k0 = 0, k1 = 0;
  float* dq_acc = nullptr;   // dq accumulator owned by this item (DqAccLayout)
  size_t dq_acc_floats = 0;  // its allocated size, for the bounds-checked build
};

struct IsaKernels {
  const char* name;
  int W;          // lanes per vector
  int rows;       // query rows per forward row block (NV * W)
  // bf16 forward packs each key block (AMX: K padded, V transposed), so row blocks of one head
  // always share it (fwd_rows groups), not only when K and V outgrow the L2 cache
  bool bf16_packs_keys;
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
  // such kernel (generic: the driver then uses fwd_rows for them)
  size_t (*fwd_small_ws)(const Problem&);
  void (*fwd_small)(const Problem&, const Rows&, int k0, int k1, float* ws, float* partial);
  // backward
  size_t (*bwd_ws)(const Problem&);
  DqAccLayout (*bwd_dq_layout)(const Problem&, int Lq);  // dq accumulator of Lq query rows
  void (*bwd_keys)(const Problem&, const KeyRange&, float* ws);
  // dq accumulator rows -> dq (sum of `nacc` accumulators spaced `stride` floats apart)
  void (*bwd_dq)(const Problem&, int b, int hk, const float* acc, int nacc, size_t stride);
};

const IsaKernels& kernels_generic();
const IsaKernels& kernels_avx2();
const IsaKernels& kernels_avx512();
const IsaKernels& kernels_avx512bf16();
const IsaKernels& kernels_avx512amx();
const IsaKernels& kernels_neon();      // AArch64 builds only (isa_neon.cpp)
const IsaKernels& kernels_neonbf16();  // AArch64 builds only (isa_neonbf16.cpp)

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
