// Which keys a CTA visits, which of its key blocks need per-element masking, and how the key
// range is split across CTAs.  Host+device so the host self-check (host_tests/) runs exactly
// these functions in a scalar emulation of the kernel.
//
// Packed GQA rows.  A CTA works on one (batch, kv head) and a tile of "rows": the G = Hq/Hkv
// query heads that share kv head hk are packed with the queries, row r <-> (query i = r / G,
// query head h = hk * G + r % G), r in [0, Lq * G).  K/V tiles are then loaded once for all G
// heads (decode with GQA 32/8 fills 4 rows per query instead of 1), and nothing is repeated.
#pragma once

#include <algorithm>
#include <cmath>

#include "mlx_attn_common/rules.h"
#include "params.h"

namespace mlx_attn_cuda {

// The window rules shared with the CPU kernel (include/mlx_attn_common/rules.h).
using mlx_attn_common::fold_causal;
using mlx_attn_common::imax;
using mlx_attn_common::imin;
using mlx_attn_common::keys_seen;
using mlx_attn_common::queries_seeing;
using mlx_attn_common::Span;
using mlx_attn_common::window_allows;

// a >= 0, b > 0; no a + b - 1, which overflows for a near INT32_MAX.
MA_HD int ceil_div(int a, int b) { return a / b + (a % b != 0); }

// The larger of a and b, NaN if either is NaN (fmaxf returns the other operand): the split-KV
// combine takes the max of the splits' lse with it, so that a NaN partial (NaN in q) makes the
// row NaN, as the unsplit kernel does.  A template so the host check's double emulation uses it.
template <typename F>
MA_HD F max_nan(F a, F b) {
  return (a > b || a != a) ? a : b;
}

// The split-KV combine's lse from the splits' max m (max_nan) and sum_s exp(lse_s - m): -inf
// when no split saw an allowed key, NaN when a split's lse is NaN.
MA_HD float combined_lse(float m, float sum) { return m == -INFINITY ? m : m + logf(sum); }

// The weight of a split with lse ls in the combined row (lse from combined_lse): 0 for a split
// that saw no allowed key, or when no split did; NaN when lse is NaN.
MA_HD float split_weight(float ls, float lse) { return lse == -INFINITY ? 0.f : expf(ls - lse); }

// The per-CTA view of p for one batch entry / varlen sequence s (params.h seq_of): q, k, v and
// out start at the sequence's first row and lq, lk, rows are its own, so that key_blocks,
// block_needs_mask, apply_mask and the tile loads / stores below take it unchanged.  Dense:
// the same values as p (q0 = k0 = 0, the full lengths).  T is the element type.
template <typename T>
MA_HD FwdParams seq_view(const FwdParams& p, const Seq& s) {
  FwdParams v = p;
  v.q = static_cast<const T*>(p.q) + s.q0 * p.q_sl;
  v.k = static_cast<const T*>(p.k) + s.k0 * p.k_sl;
  v.v = static_cast<const T*>(p.v) + s.k0 * p.v_sl;
  v.out = static_cast<T*>(p.out) + s.q0 * p.o_sl;
  v.lq = s.lq;
  v.lk = s.lk;
  v.rows = s.lq * p.group;
  return v;
}

struct BlockRange {
  int begin = 0;  // first key block (in units of block_n keys)
  int end = 0;    // one past the last; begin >= end means nothing to do
};

// Key blocks that can hold an allowed key for any row of the CTA's rows [r0, r0 + block_m).
MA_HD BlockRange key_blocks(const FwdParams& p, int r0, int block_m, int block_n) {
  BlockRange out;
  const int r_last = r0 + imin(block_m, p.rows - r0) - 1;  // no r0 + block_m: rows < 2^31
  if (r_last < r0 || p.lk <= 0) return out;
  const int i_min = r0 / p.group, i_max = r_last / p.group;
  const Span keys = keys_seen(i_min, i_max, p.lq, p.lk, p.window_left, p.window_right);
  if (keys.hi < keys.lo) return out;
  out.begin = keys.lo / block_n;
  out.end = ceil_div(keys.hi + 1, block_n);
  return out;
}

// The share of `all` that split `split` of `num_splits` handles (contiguous, nearly equal).
MA_HD BlockRange split_blocks(BlockRange all, int split, int num_splits) {
  if (num_splits <= 1) return all;
  const int n = imax(all.end - all.begin, 0);
  const int per = ceil_div(n, num_splits);
  BlockRange out;
  out.begin = all.begin + split * per;
  out.end = imin(all.end, out.begin + per);
  if (out.end < out.begin) out.end = out.begin;
  return out;
}

// Whether key block n (keys [n*block_n, (n+1)*block_n)) needs per-element masking for some row
// of the CTA: the key tail, a window/causal edge crossing the block, or a mask tensor.  Blocks
// for which this is false are fully allowed for every (valid) row, so the kernel skips masking.
MA_HD bool block_needs_mask(const FwdParams& p, int r0, int block_m, int n, int block_n) {
  if (p.mask_type != kMaskNone) return true;
  const int j0 = n * block_n;            // first key of the block (< lk: key_blocks)
  if (j0 > p.lk - block_n) return true;  // the key tail: j0 + block_n - 1 >= lk
  const int j1 = j0 + block_n - 1;       // last key
  // min(r0 + block_m, rows) - 1 without int overflow (rows < 2^31).  Near 255 registers ptxas'
  // spills swing with how this is written: this form (unsigned min, window tests as
  // differences) left the sm_80 D=128 prefill kernel with 128x64 tiles spill-free with nvcc
  // 13.0, where r0 + imin(block_m, rows - r0) did not (traits.h now leaves more room).
  const unsigned r_end = (unsigned)r0 + (unsigned)block_m;
  const int r_last = (int)(r_end < (unsigned)p.rows ? r_end : (unsigned)p.rows) - 1;
  const int i_min = r0 / p.group, i_max = r_last / p.group;
  const int off = p.lk - p.lq;
  // j1 > c_min + wr and j0 < c_max - wl as differences: sides may be up to INT32_MAX (rules.h).
  if (p.window_right >= 0 && j1 - (i_min + off) > p.window_right) return true;
  if (p.window_left >= 0 && (i_max + off) - j0 > p.window_left) return true;
  return false;
}

// Host planning: which tile configuration and how many KV splits.
struct Plan {
  int config = kPrefill;
  int num_splits = 1;
};

// KV splits for the decode configuration (64-row tiles): about two waves of CTAs in flight, each
// split keeping >= 2 key blocks, at most 128 (the combine's limit).  Provisional (tune on a GPU).
inline int decode_splits(const FwdParams& p, int num_sms, int decode_m, int decode_n) {
  if (p.lk <= 0 || p.rows <= 0) return 1;
  const long long ctas = (long long)ceil_div(p.rows, decode_m) * p.b * p.hkv;
  long long keys = p.lk;  // keys one row can see at most (64-bit: sides may be INT32_MAX)
  if (p.window_left >= 0 && p.window_right >= 0)
    keys = std::min(keys, (long long)p.window_left + p.window_right + 1);
  const long long nblocks = (keys + decode_n - 1) / decode_n;
  long long splits = (2LL * num_sms + ctas - 1) / (ctas > 0 ? ctas : 1);
  if (splits > nblocks / 2) splits = nblocks / 2;
  if (splits > 128) splits = 128;
  if (splits < 1) splits = 1;
  return (int)splits;
}

// Fused varlen (p.rows, p.b: the longest sequence's rows, the number of sequences): never
// split (the combine and its workspace are dense-only).  The 64-row tiles are still chosen when
// the longest sequence's rows (max Lq * G) fit in 64, or when the prefill tiles give fewer CTAs
// than SMs: a 128-row tile would leave half its warps idle on every such sequence (they still
// load and sync), and 64-row tiles double the CTAs of a small launch; their deeper K/V pipeline
// (traits.h) also suits the short, memory-bound query blocks of decode-like batches.
// Provisional, as make_plan (tune on a GPU).
inline Plan make_plan_varlen(const FwdParams& p, int num_sms, int prefill_m, int decode_m) {
  Plan plan;
  const long long prefill_ctas = (long long)ceil_div(p.rows, prefill_m) * p.b * p.hkv;
  if (p.rows <= decode_m || prefill_ctas < num_sms) plan.config = kDecode;
  return plan;
}

// `prefill_m` / `decode_m` / `decode_n` are the tile sizes of the two configurations for this
// head dim (traits.h).  Provisional heuristic (to be tuned on a GPU): keep the prefill tiles
// whenever they already give at least one CTA per SM; otherwise use 64-row tiles and split the
// key range (decode_splits).
inline Plan make_plan(const FwdParams& p, int num_sms, int prefill_m, int decode_m,
                      int decode_n) {
  Plan plan;
  if (p.cu_seqlens_q != nullptr) return make_plan_varlen(p, num_sms, prefill_m, decode_m);
  const long long bh = (long long)p.b * p.hkv;
  const long long prefill_ctas = (long long)ceil_div(p.rows, prefill_m) * bh;
  if (prefill_ctas >= num_sms || p.lk <= 0 || p.rows <= 0) return plan;
  plan.config = kDecode;
  plan.num_splits = decode_splits(p, num_sms, decode_m, decode_n);
  return plan;
}

}  // namespace mlx_attn_cuda
