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
// empty when hi < lo.
//
// Overflow.  Any side in [-1, INT32_MAX] is valid here (a huge side is simply unbounded), so no
// function forms c + wr or c - wl, which overflow int near INT32_MAX: each compares the side with
// a distance that fits an int (for 0 <= i < lq, 0 <= j < lk, lq and lk < 2^31) and adds it only
// when the sum is inside the range:  j - c in [1 - lk, lq - 1],  lk - 1 - c in [0, lq - 1],
// lq - 1 - (j - off) in [0, lk - 1].  Plain int compares and adds, no 64-bit math in the
// kernels' hot paths (cuda_bridge/host_tests/rules_check.cpp checks this against int64).
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
  if (wr >= 0 && j - c > wr) return false;  // j > c + wr
  if (wl >= 0 && c - j > wl) return false;  // j < c - wl
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
  const int c_first = i_first + off, c_last = i_last + off;  // their diagonal keys
  int lo = 0, hi = lk - 1;
  if (wl >= 0 && c_first > wl) lo = c_first - wl;         // max(0, c_first - wl)
  if (wr >= 0 && wr < lk - 1 - c_last) hi = c_last + wr;  // min(lk - 1, c_last + wr)
  return Span{lo, hi};
}

// Queries [lo, hi] (within [0, lq - 1]) that may attend to some key of [j_first, j_last]:
// j <= i + off + wr  <=>  i >= j - off - wr ;  j >= i + off - wl  <=>  i <= j - off + wl.
MLX_ATTN_HD Span queries_seeing(int j_first, int j_last, int lq, int lk, const int& wl,
                                 const int& wr) {
  const int off = lk - lq;
  const int t_first = j_first - off, t_last = j_last - off;  // queries with these diagonals
  int lo = 0, hi = lq - 1;
  if (wr >= 0 && t_first > wr) lo = t_first - wr;         // max(0, t_first - wr)
  if (wl >= 0 && wl < lq - 1 - t_last) hi = t_last + wl;  // min(lq - 1, t_last + wl)
  return Span{lo, hi};
}

}  // namespace mlx_attn_common
