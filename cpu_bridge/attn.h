// Public C++ interface of the native CPU flash-attention kernel.
//
// One entry point serves numpy, torch and MLX: a `Problem` describes raw pointers with element
// strides (any layout, broadcast dims as stride 0) and the SPEC's options. The driver splits the
// work over our own thread pool and calls the kernels of the best ISA this CPU supports.
#pragma once
#include <cstdint>

#include "mlx_attn_common/rules.h"

namespace mlx_attn_cpu {

// The rules shared with the CUDA kernels (include/mlx_attn_common/rules.h): mask kinds, window
// sides from the caller's integers, causal folded into the window, key / query ranges.
using mlx_attn_common::MaskKind;
using mlx_attn_common::MASK_NONE;
using mlx_attn_common::MASK_BOOL;
using mlx_attn_common::MASK_ADD;
using mlx_attn_common::window_side;
using mlx_attn_common::fold_causal;
using mlx_attn_common::Span;
using mlx_attn_common::keys_seen;
using mlx_attn_common::queries_seeing;

enum DType : int { F32 = 0, F16 = 1, BF16 = 2 };
// mask element types (bool masks are one byte per element)
enum MaskType : int { MT_BOOL = 0, MT_F32 = 1, MT_F16 = 2, MT_BF16 = 3 };

struct Problem {
  int dtype = F32;                      // q, k, v, out (and dout, dq, dk, dv)
  int B = 0, Hq = 0, Hkv = 0, Lq = 0, Lk = 0, D = 0, Dv = 0;
  // varlen: sequence b has query rows cu_q[b]..cu_q[b+1] and key rows cu_k[b]..cu_k[b+1];
  // batch strides are then ignored and Lq / Lk are the totals.
  const int32_t* cu_q = nullptr;
  const int32_t* cu_k = nullptr;
  // element strides, in the order (b, h, l, d)
  const void* q = nullptr; int64_t qs[4] = {0, 0, 0, 0};
  const void* k = nullptr; int64_t ks[4] = {0, 0, 0, 0};
  const void* v = nullptr; int64_t vs[4] = {0, 0, 0, 0};
  void* o = nullptr; int64_t os[4] = {0, 0, 0, 0};
  // o holds float32 whatever `dtype` is. backward() sets it internally for fp16 / bf16: its
  // delta = rowsum(dout * o) must not see o rounded to 8 bits (cancellation when p peaks).
  bool out_f32 = false;
  float* lse = nullptr; int64_t ls[3] = {0, 0, 0};        // (b, h, l), natural log; may be null
  // Softmax statistics per query row, log2 units: (row max m, log2 of the row sum l), two floats
  // at stats + (b, h, l) strides. forward() writes them when non-null; backward() reads them in
  // place of lse (it computes them itself with one extra forward when lse cannot stand in: a
  // float32 lse of large magnitude, e.g. a row of -1e9 masks, has lost log2(l) to rounding).
  float* stats = nullptr; int64_t ss[3] = {0, 0, 0};
  const void* mask = nullptr; int mask_kind = MASK_NONE; int mask_type = MT_F32;
  int64_t ms[4] = {0, 0, 0, 0};                          // broadcast dims have stride 0
  float scale = 1.f;
  float softcap = 0.f;                                   // 0 = off
  // allowed keys for query i: i + off - wl <= j <= i + off + wr (off = Lk - Lq per sequence);
  // -1 = unbounded. Causal is folded in as wr = 0 (see fold_causal).
  int wl = -1, wr = -1;
  // backward inputs / outputs
  const void* dout = nullptr; int64_t dos[4] = {0, 0, 0, 0};
  const float* dlse = nullptr; int64_t dls[3] = {0, 0, 0};   // may be null
  void* dq = nullptr; int64_t dqs[4] = {0, 0, 0, 0};
  void* dk = nullptr; int64_t dks[4] = {0, 0, 0, 0};
  void* dv = nullptr; int64_t dvs[4] = {0, 0, 0, 0};
};

// Forward: fills o (and lse if non-null). Throws std::invalid_argument on bad problems.
void forward(const Problem& p);
// Backward: needs q, k, v, o, lse, dout (dlse optional); fills dq, dk, dv.
void backward(const Problem& p);

// Threads used by the kernels (default: hardware threads, or env MLX_ATTN_THREADS; at most 4x
// the hardware threads). A malformed MLX_ATTN_THREADS throws std::invalid_argument.
int num_threads();
void set_num_threads(int n);
// "avx512amx" (avx512bf16 plus AMX tiles for the bf16 forward), "avx512bf16" (AVX-512 +
// AVX512-BF16 dot products for bf16), "avx512", "avx2", "neonbf16" (NEON +
// BF16 dot products for bf16 forward scores), "neon" (AArch64) or "generic"
// (env MLX_ATTN_CPU_ISA can force a lower one).
const char* isa_name();
void set_isa(const char* name);  // "auto" or one of isa_name()'s; throws if unsupported

}  // namespace mlx_attn_cpu
