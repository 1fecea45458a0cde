// Host-only check of the range rules the CUDA kernels and the CPU kernel share
// (include/mlx_attn_common/rules.h) and of the CUDA block logic built on them (blocks.h), at the
// edges of int: window sides and lengths up to INT32_MAX, where `c + side` would overflow.
// Built and run by tests/test_cuda_layout.py:
//     g++ -std=c++17 -O1 -I cuda_bridge/include -I include rules_check.cpp && ./a.out
// Every function is compared with the SPEC's inequalities evaluated in int64:
//   1. window_side: a caller's int64 side past INT32_MAX is unbounded (-1), below -1 invalid;
//   2. window_allows, keys_seen, queries_seeing on small problems exhaustively and on lengths
//      up to INT32_MAX at the rows and keys where ranges start and end, for sides in
//      {-1, 0, 1, ..., lq, lk, INT32_MAX - 1, INT32_MAX}; a side that reaches past every key
//      gives exactly the unbounded answer;
//   3. key_blocks / block_needs_mask at the last row block and key block of INT32_MAX-sized
//      problems; ceil_div near INT32_MAX; make_plan with huge windows;
//   4. the split-KV combine's scalar rules (max_nan, combined_lse, split_weight): NaN in any
//      split makes the row NaN, empty splits weigh 0, an empty row stays -inf.
// Prints "OK <n checks>" and exits 0, or prints the first failures and exits 1.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "mlx_attn_cuda/blocks.h"
#include "mlx_attn_cuda/params.h"
#include "check.h"

using namespace mlx_attn_cuda;
using mlx_attn_common::window_side;


using i64 = long long;
constexpr int kMax = INT_MAX;

// ---- the SPEC in int64 -------------------------------------------------------------------------
static bool ref_allows(i64 i, i64 j, i64 lq, i64 lk, i64 wl, i64 wr) {
  const i64 c = i + lk - lq;
  if (j < 0 || j >= lk) return false;
  if (wr >= 0 && j > c + wr) return false;
  if (wl >= 0 && j < c - wl) return false;
  return true;
}
static Span ref_keys(i64 i0, i64 i1, i64 lq, i64 lk, i64 wl, i64 wr) {
  i64 lo = 0, hi = lk - 1;
  if (wl >= 0) lo = std::max(lo, i0 + lk - lq - wl);
  if (wr >= 0) hi = std::min(hi, i1 + lk - lq + wr);
  return Span{(int)lo, (int)std::max(hi, (i64)INT_MIN)};
}
static Span ref_queries(i64 j0, i64 j1, i64 lq, i64 lk, i64 wl, i64 wr) {
  i64 lo = 0, hi = lq - 1;
  if (wr >= 0) lo = std::max(lo, j0 - (lk - lq) - wr);
  if (wl >= 0) hi = std::min(hi, j1 - (lk - lq) + wl);
  return Span{(int)std::min(lo, (i64)INT_MAX), (int)std::max(hi, (i64)INT_MIN)};
}
static bool same(Span a, Span b) {
  const bool ea = a.hi < a.lo, eb = b.hi < b.lo;
  return ea == eb && (ea || (a.lo == b.lo && a.hi == b.hi));
}

static std::vector<int> sides_for(int lq, int lk) {
  std::vector<int> s = {-1, 0, 1, 2, 3, 5, 17, kMax - 1, kMax};
  for (i64 x : {(i64)lq - 2, (i64)lq - 1, (i64)lq, (i64)lk - 2, (i64)lk - 1, (i64)lk,
                (i64)lq + lk})
    if (x >= 0 && x <= kMax) s.push_back((int)x);
  return s;
}

// ---- 1 -----------------------------------------------------------------------------------------
static void check_window_side() {
  CHECK(window_side(-1) == -1 && window_side(0) == 0 && window_side(kMax) == kMax,
        "window_side keeps valid int sides");
  CHECK(window_side((int64_t)kMax + 1) == -1 && window_side(INT64_MAX) == -1,
        "window_side: past INT32_MAX is unbounded");
  CHECK(window_side(-2) == -2 && window_side(-(int64_t)kMax) == -2 && window_side(INT64_MIN) == -2,
        "window_side: below -1 stays invalid (-2)");
}

// ---- 2 -----------------------------------------------------------------------------------------
static void check_small_exhaustive() {
  for (int lq = 1; lq <= 9; ++lq)
    for (int lk = 1; lk <= 9; ++lk)
      for (int wl : sides_for(lq, lk))
        for (int wr : sides_for(lq, lk)) {
          for (int i = 0; i < lq; ++i)
            for (int j = -1; j <= lk; ++j)
              CHECK(window_allows(i, j, lq, lk, wl, wr) == ref_allows(i, j, lq, lk, wl, wr),
                    "window_allows(%d, %d, lq=%d, lk=%d, %d, %d)", i, j, lq, lk, wl, wr);
          for (int i0 = 0; i0 < lq; ++i0)
            for (int i1 = i0; i1 < lq; ++i1) {
              // keys_seen is the hull of the allowed keys of the rows i0..i1
              int lo = lk, hi = -1;
              for (int i = i0; i <= i1; ++i)
                for (int j = 0; j < lk; ++j)
                  if (ref_allows(i, j, lq, lk, wl, wr)) lo = std::min(lo, j), hi = std::max(hi, j);
              const Span got = keys_seen(i0, i1, lq, lk, wl, wr);
              CHECK(same(got, ref_keys(i0, i1, lq, lk, wl, wr)) &&
                        (hi < lo ? got.hi < got.lo : (got.lo <= lo && got.hi >= hi)),
                    "keys_seen(%d, %d, lq=%d, lk=%d, %d, %d) = [%d, %d]", i0, i1, lq, lk, wl, wr,
                    got.lo, got.hi);
            }
          for (int j0 = 0; j0 < lk; ++j0)
            for (int j1 = j0; j1 < lk; ++j1) {
              const Span got = queries_seeing(j0, j1, lq, lk, wl, wr);
              CHECK(same(got, ref_queries(j0, j1, lq, lk, wl, wr)),
                    "queries_seeing(%d, %d, lq=%d, lk=%d, %d, %d) = [%d, %d]", j0, j1, lq, lk, wl,
                    wr, got.lo, got.hi);
            }
        }
}

// Lengths up to INT32_MAX: rows and keys at the ends and at the window's edges.
static void check_huge() {
  const int lens[] = {1, 2, 1000, kMax / 2, kMax - 129, kMax - 1, kMax};
  for (int lq : lens)
    for (int lk : lens)
      for (int wl : sides_for(lq, lk))
        for (int wr : sides_for(lq, lk)) {
          const i64 off = (i64)lk - lq;
          std::vector<i64> rows = {0, 1, lq / 2, (i64)lq - 2, (i64)lq - 1};
          for (i64 c : {(i64)0, (i64)lk - 1})  // queries whose diagonal is a key-range end
            rows.push_back(c - off);
          for (i64 i : rows) {
            if (i < 0 || i >= lq) continue;
            const i64 c = i + off;
            std::vector<i64> keys = {0, 1, (i64)lk - 1, c, c - 1, c + 1};
            for (i64 w : {(i64)wl, (i64)wr})
              for (i64 d : {-1, 0, 1}) keys.push_back(c - w + d), keys.push_back(c + w + d);
            for (i64 j : keys) {
              if (j < 0 || j >= lk) continue;
              const bool got = window_allows((int)i, (int)j, lq, lk, wl, wr);
              CHECK(got == ref_allows(i, j, lq, lk, wl, wr),
                    "window_allows(%lld, %lld, lq=%d, lk=%d, %d, %d)", i, j, lq, lk, wl, wr);
              const Span q = queries_seeing((int)j, (int)j, lq, lk, wl, wr);
              CHECK(same(q, ref_queries(j, j, lq, lk, wl, wr)),
                    "queries_seeing(%lld, lq=%d, lk=%d, %d, %d) = [%d, %d]", j, lq, lk, wl, wr,
                    q.lo, q.hi);
            }
            const Span k = keys_seen((int)i, (int)i, lq, lk, wl, wr);
            CHECK(same(k, ref_keys(i, i, lq, lk, wl, wr)),
                  "keys_seen(%lld, lq=%d, lk=%d, %d, %d) = [%d, %d]", i, lq, lk, wl, wr, k.lo,
                  k.hi);
          }
          const Span all = keys_seen(0, lq - 1, lq, lk, wl, wr);
          CHECK(same(all, ref_keys(0, (i64)lq - 1, lq, lk, wl, wr)),
                "keys_seen(all rows, lq=%d, lk=%d, %d, %d)", lq, lk, wl, wr);
          const Span allq = queries_seeing(0, lk - 1, lq, lk, wl, wr);
          CHECK(same(allq, ref_queries(0, (i64)lk - 1, lq, lk, wl, wr)),
                "queries_seeing(all keys, lq=%d, lk=%d, %d, %d)", lq, lk, wl, wr);
        }
  // A side no position can use behaves exactly as unbounded (SPEC: "at least as large as the
  // sequences behaves exactly as unbounded"): INT32_MAX, INT32_MAX - 1 vs -1.
  for (int lq : lens)
    for (int lk : lens)
      for (int big : {kMax, kMax - 1})
        for (int i : {0, lq / 2, lq - 1}) {
          CHECK(same(keys_seen(i, i, lq, lk, big, big), keys_seen(i, i, lq, lk, -1, -1)) &&
                    same(keys_seen(i, i, lq, lk, big, 0), keys_seen(i, i, lq, lk, -1, 0)) &&
                    same(keys_seen(i, i, lq, lk, 3, big), keys_seen(i, i, lq, lk, 3, -1)),
                "huge side != unbounded: keys_seen(%d, lq=%d, lk=%d, side %d)", i, lq, lk, big);
          const Span unb = keys_seen(i, i, lq, lk, -1, -1);
          CHECK(unb.lo == 0 && unb.hi == lk - 1, "unbounded keys_seen");
        }
}

// ---- 3 -----------------------------------------------------------------------------------------
static FwdParams params(int lq, int lk, int group, int wl, int wr) {
  FwdParams p;
  p.b = p.hkv = 1, p.group = group, p.hq = group, p.lq = lq, p.lk = lk;
  p.rows = (int)std::min((i64)lq * group, (i64)kMax);
  p.d = p.dv = 64;
  p.window_left = wl, p.window_right = wr;
  return p;
}

// block_needs_mask in int64: the tail, or a window edge inside the block for some row.
static bool ref_needs_mask(const FwdParams& p, int r0, int bm, i64 n, int bn) {
  const i64 j0 = n * bn, j1 = j0 + bn - 1;
  if (j1 >= p.lk) return true;
  const i64 r_last = std::min((i64)r0 + bm, (i64)p.rows) - 1;
  const i64 off = (i64)p.lk - p.lq, c_min = r0 / p.group + off, c_max = r_last / p.group + off;
  if (p.window_right >= 0 && j1 > c_min + p.window_right) return true;
  if (p.window_left >= 0 && j0 < c_max - p.window_left) return true;
  return false;
}

static void check_blocks_huge() {
  CHECK(ceil_div(kMax, 128) == (int)(((i64)kMax + 127) / 128) && ceil_div(kMax, 1) == kMax &&
            ceil_div(0, 64) == 0 && ceil_div(kMax - 1, 64) == (int)(((i64)kMax + 62) / 64),
        "ceil_div near INT32_MAX");
  const int lens[] = {1, 1000, kMax - 129, kMax - 1, kMax};
  for (int lq : lens)
    for (int lk : lens)
      for (int group : {1, 4})
        for (int wl : {-1, 0, 7, kMax - 1, kMax})
          for (int wr : {-1, 0, 7, kMax - 1, kMax})
            for (int bm : {64, 128})
              for (int bn : {64, 128}) {
                const FwdParams p = params(lq, lk, group, wl, wr);
                const int m_blocks = ceil_div(p.rows, bm);
                for (i64 mb : {(i64)0, (i64)m_blocks / 2, (i64)m_blocks - 1}) {
                  const int r0 = (int)(mb * bm);
                  const BlockRange got = key_blocks(p, r0, bm, bn);
                  const i64 r_last = std::min((i64)r0 + bm, (i64)p.rows) - 1;
                  const Span k = ref_keys(r0 / group, r_last / group, lq, lk, wl, wr);
                  const bool empty = k.hi < k.lo;
                  CHECK(empty ? got.end <= got.begin
                              : (got.begin == k.lo / bn && got.end == (int)((k.hi + (i64)bn) / bn)),
                        "key_blocks(lq=%d, lk=%d, G=%d, w=(%d,%d), r0=%d, %dx%d) = [%d, %d)", lq,
                        lk, group, wl, wr, r0, bm, bn, got.begin, got.end);
                  if (empty) continue;
                  for (i64 n : {(i64)got.begin, (i64)got.begin + 1, (i64)got.end - 2,
                                (i64)got.end - 1}) {
                    if (n < got.begin || n >= got.end) continue;
                    const bool needs = block_needs_mask(p, r0, bm, (int)n, bn);
                    CHECK(needs == ref_needs_mask(p, r0, bm, n, bn),
                          "block_needs_mask(lq=%d, lk=%d, G=%d, w=(%d,%d), r0=%d, n=%lld, %dx%d)",
                          lq, lk, group, wl, wr, r0, n, bm, bn);
                  }
                }
              }
  // The planner with sides whose sum overflows int: as unbounded.
  for (int lk : {1000, 131072, kMax - 1})
    for (int big : {kMax, kMax - 1}) {
      const Plan a = make_plan(params(1, lk, 4, big, big), 132, 128, 64, 64);
      const Plan b = make_plan(params(1, lk, 4, -1, -1), 132, 128, 64, 64);
      CHECK(a.config == b.config && a.num_splits == b.num_splits && a.num_splits >= 1 &&
                a.num_splits <= 128,
            "make_plan(lk=%d, window (%d, %d)) = (%d, %d), unbounded (%d, %d)", lk, big, big,
            a.config, a.num_splits, b.config, b.num_splits);
    }
}

// ---- 4 -----------------------------------------------------------------------------------------
// The combine of combine_kernel.cuh for one row, on the host with its scalar rules.
static float combine(const std::vector<float>& lse_s, const std::vector<float>& o_s, float* out) {
  float mx = -INFINITY;
  for (float l : lse_s) mx = max_nan(mx, l);
  float sum = 0.f;
  if (mx != -INFINITY)
    for (float l : lse_s) sum += expf(l - mx);
  const float lse = combined_lse(mx, sum);
  *out = 0.f;
  for (size_t s = 0; s < lse_s.size(); ++s) *out += split_weight(lse_s[s], lse) * o_s[s];
  return lse;
}

static void check_combine_nan() {
  const float nan = NAN, inf = INFINITY;
  CHECK(std::isnan(max_nan(nan, 1.f)) && std::isnan(max_nan(1.f, nan)) &&
            std::isnan(max_nan(-inf, nan)) && std::isnan(max_nan(nan, -inf)) &&
            max_nan(1.f, 2.f) == 2.f && max_nan(2.f, 1.f) == 2.f && max_nan(-inf, -inf) == -inf,
        "max_nan");
  struct Case {
    std::vector<float> lse, o;
    int want;  // 0: finite, 1: NaN, 2: empty (-inf and 0)
  };
  const Case cases[] = {
      {{nan, nan, nan}, {nan, nan, nan}, 1},  // NaN in q: every split NaN
      {{-inf, nan}, {0.f, nan}, 1},            // one split empty, the other NaN
      {{nan, -inf}, {nan, 0.f}, 1},
      {{1.f, nan, 0.5f}, {1.f, nan, 2.f}, 1},  // NaN among finite splits
      {{nan}, {0.f}, 1},                       // a NaN lse alone is enough
      {{-inf, -inf}, {0.f, 0.f}, 2},           // no split saw an allowed key
      {{0.f, -inf, 0.f}, {1.f, 0.f, 3.f}, 0},
  };
  for (const Case& c : cases) {
    float out;
    const float lse = combine(c.lse, c.o, &out);
    if (c.want == 1) {
      CHECK(std::isnan(lse) && std::isnan(out), "combine must propagate NaN: lse %g out %g", lse,
            out);
    } else if (c.want == 2) {
      CHECK(lse == -inf && out == 0.f, "empty row: lse %g out %g", lse, out);
    } else {
      CHECK(std::fabs(lse - (float)std::log(2.0)) < 1e-6f && std::fabs(out - 2.f) < 1e-6f,
            "finite combine: lse %g out %g", lse, out);
    }
  }
}

int main() {
  check_window_side();
  check_small_exhaustive();
  check_huge();
  check_blocks_huge();
  check_combine_nan();
  return check_summary();
}
