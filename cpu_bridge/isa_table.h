// Defines this ISA's kernel table; included last by each isa_*.cpp.
#pragma once
#include "bwd.h"
#include "peak.h"
#if ATTN_W == 16 || ATTN_W == 8 || defined(ATTN_NEON)
#include "decode.h"
#define ATTN_SMALL(ns) ns::fwd_small_ws_floats, ns::fwd_small
#else
#define ATTN_SMALL(ns) nullptr, nullptr
#endif
#ifdef ATTN_BF16DOT
#include "bwd_bf16.h"
#endif

#define ATTN_TABLE_FN2(ns) kernels_##ns
#define ATTN_TABLE_FN(ns) ATTN_TABLE_FN2(ns)

namespace mlx_attn_cpu {
const IsaKernels& ATTN_TABLE_FN(ATTN_NS)() {
  static const IsaKernels k = {
      ATTN_ISA_NAME, ATTN_NS::W, ATTN_NS::BQ, ATTN_NS::kAmx,
      ATTN_NS::fwd_ws_floats, ATTN_NS::fwd_rows, ATTN_NS::fwd_partial_floats,
      ATTN_NS::fwd_merge, ATTN_SMALL(ATTN_NS),
      ATTN_NS::bwd_ws_floats, ATTN_NS::dq_acc_layout, ATTN_NS::bwd_keys, ATTN_NS::bwd_dq,
  };
  return k;
}
}  // namespace mlx_attn_cpu
