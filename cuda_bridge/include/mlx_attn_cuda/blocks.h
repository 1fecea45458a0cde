// Which keys a CTA visits, which of its key blocks need per-element masking, and how the key
// range is split across CTAs.  Host+device so the host self-check (host_tests/) runs exactly
// these functions in a scalar emulation of the kernel.
//
// Packed GQA rows.  A CTA works on one (batch, kv head) and a tile of "rows": the G = Hq/Hkv
// query heads that share kv head hk are packed with the queries, row r <-> (query i = r / G,
// query head h = hk * G + r % G), r in [0, Lq * G).  K/V tiles are then loaded once for all G
// heads (decode with GQA 32/8 fills 4 rows per query instead of 1), and nothing is repeated.
#pragma once

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

MA_HD int ceil_div(int a, int b) { return (a + b - 1) / b; }

struct BlockRange {
  int begin = 0;  // first key block (in units of block_n keys)
  int end = 0;    // one past the last; begin >= end means nothing to do
};

// Key blocks that can hold an allowed key for any row of the CTA's rows [r0, r0 + block_m).
MA_HD BlockRange key_blocks(const FwdParams& p, int r0, int block_m, int block_n) {
  BlockRange out;
  const int r_last = imin(r0 + block_m, p.rows) - 1;
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
  const int j0 = n * block_n, j1 = j0 + block_n - 1;  // first and last key of the block
  if (j1 >= p.lk) return true;
  const int r_last = imin(r0 + block_m, p.rows) - 1;
  const int i_min = r0 / p.group, i_max = r_last / p.group;
  const int off = p.lk - p.lq;
  if (p.window_right >= 0 && j1 > i_min + off + p.window_right) return true;
  if (p.window_left >= 0 && j0 < i_max + off - p.window_left) return true;
  return false;
}

// Host planning: which tile configuration and how many KV splits.
struct Plan {
  int config = kPrefill;
  int num_splits = 1;
};

// `prefill_m` / `decode_m` / `decode_n` are the tile sizes of the two configurations for this
// head dim (traits.h).  Provisional heuristic (to be tuned on a GPU): keep the prefill tiles
// whenever they already give at least one CTA per SM; otherwise use 64-row tiles and split the
// key range so that about two waves of CTAs are in flight, each split keeping >= 2 key blocks.
inline Plan make_plan(const FwdParams& p, int num_sms, int prefill_m, int decode_m,
                      int decode_n) {
  Plan plan;
  const long long bh = (long long)p.b * p.hkv;
  const long long prefill_ctas = (long long)ceil_div(p.rows, prefill_m) * bh;
  if (prefill_ctas >= num_sms || p.lk <= 0 || p.rows <= 0) return plan;
  plan.config = kDecode;
  const long long ctas = (long long)ceil_div(p.rows, decode_m) * bh;
  int keys = p.lk;  // keys one row can see at most
  if (p.window_left >= 0 && p.window_right >= 0) keys = imin(keys, p.window_left + p.window_right + 1);
  const int nblocks = ceil_div(keys, decode_n);
  const long long want = ceil_div((int)(2LL * num_sms), (int)(ctas > 0 ? ctas : 1));
  long long splits = want;
  if (splits > nblocks / 2) splits = nblocks / 2;
  if (splits > 128) splits = 128;
  if (splits < 1) splits = 1;
  plan.num_splits = (int)splits;
  return plan;
}

}  // namespace mlx_attn_cuda
