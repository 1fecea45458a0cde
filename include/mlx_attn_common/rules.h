// The SPEC's parameter rules that every native kernel implements, written once: the CPU kernel
// (cpu_bridge) and the CUDA kernels (cuda_bridge, device code and host checks) include this header
// and use these functions instead of their own copies.
//
// Plain C++17 with no dependencies, so it compiles with the host compiler (gcc / clang) and
// under nvcc, where every function is __host__ __device__ (MLX_ATTN_HD).
//
// Conventions.  Query i of a sequence with lq queries and lk keys is aligned bottom-right with
// the keys: its diagonal key is c = i + off, off = lk - lq.  A window (wl, wr) allows keys
// c - wl <= j <= c + wr, a side of -1 being unbounded; causal is folded into the right side
// (fold_causal), so the kernels see only the window.  Ranges below are inclusive [lo, hi] and
// empty when hi < lo; the arithmetic is int (the callers keep every side <= max(lq, lk)).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define MLX_ATTN_HD __host__ __device__ __forceinline__
#else
#define MLX_ATTN_HD inline
#endif

namespace mlx_attn_common {

// What a mask does (the code the front ends pass): none, bool (false removes the pair) or
// additive (added to the score).  The element type of the mask is separate.
enum MaskKind : int { MASK_NONE = 0, MASK_BOOL = 1, MASK_ADD = 2 };

// A window side from the caller's integer: one past every int32 length reaches every key
// (unbounded, -1); a side below -1 stays invalid (the entry points reject it).
MLX_ATTN_HD int window_side(int64_t w) {
  if (w > INT32_MAX) return -1;
  return w < -2 ? -2 : int(w);
}

// Combine `causal` with a window's right side (-1 = unbounded): causal means j <= i + off,
// i.e. right side 0; a window's own right side (if bounded and smaller) still applies.
MLX_ATTN_HD int fold_causal(bool causal, int wr) {
  if (!causal) return wr;
  return (wr < 0 || wr > 0) ? 0 : wr;
}

// Is key j allowed for query i by the window (which carries causal)?
MLX_ATTN_HD bool window_allows(int i, int j, int lq, int lk, int wl, int wr) {
  const int c = i + (lk - lq);
  if (j < 0 || j >= lk) return false;
  if (wr >= 0 && j > c + wr) return false;
  if (wl >= 0 && j < c - wl) return false;
  return true;
}

MLX_ATTN_HD int imin(int a, int b) { return a < b ? a : b; }
MLX_ATTN_HD int imax(int a, int b) { return a > b ? a : b; }

struct Span {
  int lo, hi;  // inclusive; empty when hi < lo
};

// The range functions take the window sides by reference: in the CUDA kernels they are fields
// of the kernel's parameter block, and a reference loads each side only where it is tested,
// the code the kernels had before these rules were shared (by value, ptxas gave the sm_80
// backward kernels up to 10 more registers per thread).

// Keys [lo, hi] (within [0, lk - 1]) that some query of [i_first, i_last] may attend to.
MLX_ATTN_HD Span keys_seen(int i_first, int i_last, int lq, int lk, const int& wl,
                           const int& wr) {
  const int off = lk - lq;
  int lo = 0, hi = lk - 1;
  if (wl >= 0) lo = imax(lo, i_first + off - wl);
  if (wr >= 0) hi = imin(hi, i_last + off + wr);
  return Span{lo, hi};
}

// Queries [lo, hi] (within [0, lq - 1]) that may attend to some key of [j_first, j_last]:
// j <= i + off + wr  <=>  i >= j - off - wr ;  j >= i + off - wl  <=>  i <= j - off + wl.
MLX_ATTN_HD Span queries_seeing(int j_first, int j_last, int lq, int lk, const int& wl,
                                 const int& wr) {
  const int off = lk - lq;
  int lo = 0, hi = lq - 1;
  if (wr >= 0) lo = imax(lo, j_first - off - wr);
  if (wl >= 0) hi = imin(hi, j_last - off + wl);
  return Span{lo, hi};
}

}  // namespace mlx_attn_common
