// Host-only self-check of the CUDA kernels' index maps and block logic (no GPU needed).
// Built and run by tests/test_cuda_layout.py with the host C++ compiler:
//     g++ -std=c++17 -O1 -I cuda_bridge/include layout_check.cpp && ./a.out
// It includes the very headers the kernels use (layout.h, blocks.h, traits.h) and checks:
//   1. the smem swizzle is a bijection inside each row for every head-dim bucket;
//   2. SplitOffset (the kernel's cheap per-lane addressing) equals tile_offset;
//   3. every ldmatrix phase (8 row addresses) is free of shared-memory bank conflicts;
//   4. the m16n8k16 A/B/C fragment maps cover each matrix element exactly once;
//   5. emulated ldmatrix (.trans) from the swizzled tiles at the kernel's lane addresses yields
//      exactly the A / B fragments the mma expects for Q, K^T and V, and the S accumulator
//      (C layout) re-packed as P is the A fragment of P V;
//   6. a scalar emulation of the kernel's blocked online softmax, visiting only key_blocks(),
//      splitting with split_blocks(), masking only where block_needs_mask() says so, with packed
//      GQA rows and the split-KV combine, matches a direct reference on random problems;
//   7. traits: every configuration fits 99 KB of shared memory and the planner's tile table
//      agrees with the traits.
// Prints "OK <n checks>" and exits 0, or prints the first failures and exits 1.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <vector>

#include "mlx_attn_cuda/blocks.h"
#include "mlx_attn_cuda/layout.h"
#include "mlx_attn_cuda/params.h"
#include "check.h"
#include "mlx_attn_cuda/traits.h"

using namespace mlx_attn_cuda;
using namespace mlx_attn_common;  // MASK_NONE / MASK_BOOL / MASK_ADD, shared with the kernels


// ---- 1-3: swizzle, split offsets, bank conflicts ---------------------------------------------
template <int kChunks>
void check_swizzle() {
  for (int row = 0; row < 256; ++row) {
    std::set<int> seen;
    for (int c = 0; c < kChunks; ++c) {
      const int s = swizzle_chunk<kChunks>(row, c);
      CHECK(s >= 0 && s < kChunks, "kChunks=%d row=%d chunk=%d -> %d out of row", kChunks, row, c, s);
      seen.insert(s);
    }
    CHECK((int)seen.size() == kChunks, "kChunks=%d row=%d swizzle not a bijection", kChunks, row);
  }
}

// Lane -> (row within the 16-row slab, lane chunk) for the three operands.
struct LaneMap {
  int (*row)(int);
  int (*chunk)(int);
  const char* name;
};
static const LaneMap kMaps[3] = {{ldsm_a_row, ldsm_a_lane_chunk, "Q/A"},
                                 {ldsm_k_row, ldsm_k_lane_chunk, "K/B"},
                                 {ldsm_v_row, ldsm_v_lane_chunk, "V/B.trans"}};

template <int kChunks>
void check_offsets_and_banks() {
  for (const LaneMap& m : kMaps) {
    for (int lane = 0; lane < 32; ++lane) {
      SplitOffset<kChunks> so;
      so.init(m.row(lane), m.chunk(lane));
      for (int crow = 0; crow < 256; crow += 16)
        for (int cc = 0; cc < kChunks; cc += 2) {
          const int want = tile_offset<kChunks>(m.row(lane) + crow, m.chunk(lane) + cc);
          CHECK(so.at(crow, cc) == want, "%s kChunks=%d lane=%d row+%d chunk+%d: %d != %d", m.name,
                kChunks, lane, crow, cc, so.at(crow, cc), want);
        }
    }
    // One ldmatrix.x4 = 4 phases of 8 lanes; each phase reads 8 x 16 bytes and is conflict free
    // iff the 8 chunks fall in 8 distinct 16-byte bank groups of a 128-byte line.
    for (int crow = 0; crow < 128; crow += 16)
      for (int cc = 0; cc < kChunks; cc += 2)
        for (int phase = 0; phase < 4; ++phase) {
          std::set<int> groups;
          for (int l = 8 * phase; l < 8 * phase + 8; ++l) {
            const int bytes = tile_offset<kChunks>(m.row(l) + crow, m.chunk(l) + cc) * 2;
            groups.insert((bytes / 16) % 8);
          }
          CHECK(groups.size() == 8, "%s kChunks=%d row+%d chunk+%d phase %d: bank conflict",
                m.name, kChunks, crow, cc, phase);
        }
  }
}

// ---- 4: fragment ownership -------------------------------------------------------------------
void check_fragments() {
  int a[16][16] = {}, b[16][8] = {}, c[16][8] = {};
  for (int lane = 0; lane < 32; ++lane) {
    for (int reg = 0; reg < 4; ++reg)
      for (int h = 0; h < 2; ++h) a[frag_a_row(lane, reg, h)][frag_a_col(lane, reg, h)]++;
    for (int reg = 0; reg < 2; ++reg)
      for (int h = 0; h < 2; ++h) b[frag_b_k(lane, reg, h)][frag_b_n(lane, reg, h)]++;
    for (int e = 0; e < 4; ++e) c[frag_c_row(lane, e)][frag_c_col(lane, e)]++;
  }
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) CHECK(a[i][j] == 1, "A(%d,%d) covered %d times", i, j, a[i][j]);
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j) {
      CHECK(b[i][j] == 1, "B(%d,%d) covered %d times", i, j, b[i][j]);
      CHECK(c[i][j] == 1, "C(%d,%d) covered %d times", i, j, c[i][j]);
    }
  // P: C fragments of S tiles 2kk, 2kk+1 re-used as the A fragment of k-step kk.
  for (int lane = 0; lane < 32; ++lane)
    for (int kk = 0; kk < 4; ++kk)
      for (int reg = 0; reg < 4; ++reg)
        for (int h = 0; h < 2; ++h) {
          const int tile = p_tile_of_a_reg(kk, reg), e = p_elem_of_a_reg(reg, h);
          CHECK(frag_c_row(lane, e) == frag_a_row(lane, reg, h) &&
                    8 * tile + frag_c_col(lane, e) == 16 * kk + frag_a_col(lane, reg, h),
                "P->A lane %d kk %d reg %d h %d", lane, kk, reg, h);
        }
}

// ---- 5: emulated ldmatrix from swizzled tiles --------------------------------------------------
// One 8x8 b16 matrix: lanes 8*i .. 8*i+7 give row addresses (element offsets); lane l gets the
// pair (row l/4, cols 2(l%4), +1), or with .trans (rows 2(l%4), +1; col l/4).
struct Reg {
  float lo, hi;
};

static void emulate_ldsm_x4(const std::vector<float>& smem, const int (&addr)[32], bool trans,
                            Reg (&out)[32][4]) {
  for (int lane = 0; lane < 32; ++lane)
    for (int i = 0; i < 4; ++i) {
      if (!trans) {
        const int base = addr[8 * i + lane / 4];
        out[lane][i] = {smem[base + 2 * (lane % 4)], smem[base + 2 * (lane % 4) + 1]};
      } else {
        const int r0 = addr[8 * i + 2 * (lane % 4)], r1 = addr[8 * i + 2 * (lane % 4) + 1];
        out[lane][i] = {smem[r0 + lane / 4], smem[r1 + lane / 4]};
      }
    }
}

template <int kChunks>
void check_ldmatrix_emulation() {
  constexpr int D = kChunks * 8, R = 64;  // a 64-row tile
  std::vector<float> logical(R * D), smem(R * D, NAN);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < D; ++c) {
      logical[r * D + c] = (float)(r * 1000 + c);
      smem[tile_offset<kChunks>(r, c / 8) + c % 8] = logical[r * D + c];
    }
  auto L = [&](int r, int c) { return logical[r * D + c]; };
  Reg frag[32][4];
  int addr[32];
  // Q as A: m16 tile at rows row0, k-step kk.
  for (int row0 = 0; row0 < R; row0 += 16)
    for (int kk = 0; kk < D / 16; ++kk) {
      for (int l = 0; l < 32; ++l) {
        SplitOffset<kChunks> so;
        so.init(ldsm_a_row(l), ldsm_a_lane_chunk(l));
        addr[l] = so.at(row0, 2 * kk);
      }
      emulate_ldsm_x4(smem, addr, false, frag);
      for (int l = 0; l < 32; ++l)
        for (int reg = 0; reg < 4; ++reg)
          for (int h = 0; h < 2; ++h) {
            const float got = h ? frag[l][reg].hi : frag[l][reg].lo;
            const float want = L(row0 + frag_a_row(l, reg, h), 16 * kk + frag_a_col(l, reg, h));
            CHECK(got == want, "Q A-frag D=%d row0=%d kk=%d lane=%d reg=%d h=%d", D, row0, kk, l,
                  reg, h);
          }
    }
  // K^T as B: keys nj*8 .. +15 (two n8 tiles), k-step kk.
  for (int nj = 0; nj < R / 8; nj += 2)
    for (int kk = 0; kk < D / 16; ++kk) {
      for (int l = 0; l < 32; ++l) {
        SplitOffset<kChunks> so;
        so.init(ldsm_k_row(l), ldsm_k_lane_chunk(l));
        addr[l] = so.at(nj * 8, 2 * kk);
      }
      emulate_ldsm_x4(smem, addr, false, frag);
      for (int l = 0; l < 32; ++l)
        for (int reg = 0; reg < 4; ++reg)
          for (int h = 0; h < 2; ++h) {
            const float got = h ? frag[l][reg].hi : frag[l][reg].lo;
            // B(k, n) = K[n][k] of n8 tile nj + reg/2, register reg % 2.
            const int n = 8 * (nj + reg / 2) + frag_b_n(l, reg % 2, h);
            const int k = 16 * kk + frag_b_k(l, reg % 2, h);
            CHECK(got == L(n, k), "K B-frag D=%d nj=%d kk=%d lane=%d reg=%d h=%d", D, nj, kk, l,
                  reg, h);
          }
    }
  // V as B (.trans): keys 16*kk .. +15, dv tiles dj, dj+1.
  for (int kk = 0; kk < R / 16; ++kk)
    for (int dj = 0; dj < D / 8; dj += 2) {
      for (int l = 0; l < 32; ++l) {
        SplitOffset<kChunks> so;
        so.init(ldsm_v_row(l), ldsm_v_lane_chunk(l));
        addr[l] = so.at(kk * 16, dj);
      }
      emulate_ldsm_x4(smem, addr, true, frag);
      for (int l = 0; l < 32; ++l)
        for (int reg = 0; reg < 4; ++reg)
          for (int h = 0; h < 2; ++h) {
            const float got = h ? frag[l][reg].hi : frag[l][reg].lo;
            // B(k, n) = V[k][n]: k = key, n = dv column of tile dj + reg/2.
            const int k = 16 * kk + frag_b_k(l, reg % 2, h);
            const int n = 8 * (dj + reg / 2) + frag_b_n(l, reg % 2, h);
            CHECK(got == L(k, n), "V B-frag D=%d kk=%d dj=%d lane=%d reg=%d h=%d", D, kk, dj, l,
                  reg, h);
          }
    }
}

// ---- 6: blocked online softmax emulation ------------------------------------------------------
struct Problem {
  int B, Hq, Hkv, Lq, Lk, D;
  bool causal;
  int wl, wr;      // caller's window (-1 unbounded)
  int mask_kind;   // MASK_NONE, MASK_BOOL (random) or MASK_ADD (random)
  std::vector<double> q, k, v, mask;  // bhld, mask [B, Hq, Lq, Lk]
};

static bool ref_allowed(const Problem& P, int i, int j) {
  const long long c = (long long)i + P.Lk - P.Lq;  // 64-bit: sides go up to INT32_MAX
  if (P.causal && j > c) return false;
  if (P.wl >= 0 && j < c - P.wl) return false;
  if (P.wr >= 0 && j > c + P.wr) return false;
  return true;
}

static double score(const Problem& P, int b, int h, int i, int j) {
  const int hk = h / (P.Hq / P.Hkv);
  double s = 0;
  for (int d = 0; d < P.D; ++d)
    s += P.q[((b * P.Hq + h) * P.Lq + i) * P.D + d] * P.k[((b * P.Hkv + hk) * P.Lk + j) * P.D + d];
  return s / std::sqrt((double)P.D);
}

static double mask_at(const Problem& P, int b, int h, int i, int j) {
  return P.mask[((b * P.Hq + h) * P.Lq + i) * P.Lk + j];
}

// Direct reference: out [B, Hq, Lq, D], lse [B, Hq, Lq].
static void reference(const Problem& P, std::vector<double>& out, std::vector<double>& lse) {
  out.assign(P.B * P.Hq * P.Lq * P.D, 0.0);
  lse.assign(P.B * P.Hq * P.Lq, -INFINITY);
  for (int b = 0; b < P.B; ++b)
    for (int h = 0; h < P.Hq; ++h)
      for (int i = 0; i < P.Lq; ++i) {
        std::vector<double> s(P.Lk, -INFINITY);
        double mx = -INFINITY;
        bool nan = false;  // IEEE: a NaN among the allowed scores makes the row NaN
        for (int j = 0; j < P.Lk; ++j) {
          double x = score(P, b, h, i, j);
          if (P.mask_kind == MASK_BOOL && mask_at(P, b, h, i, j) == 0) x = -INFINITY;
          if (P.mask_kind == MASK_ADD) x += mask_at(P, b, h, i, j);
          if (!ref_allowed(P, i, j)) x = -INFINITY;
          s[j] = x;
          nan |= std::isnan(x);
          mx = std::max(mx, x);
        }
        if (nan) {
          lse[(b * P.Hq + h) * P.Lq + i] = NAN;
          for (int d = 0; d < P.D; ++d) out[((b * P.Hq + h) * P.Lq + i) * P.D + d] = NAN;
          continue;
        }
        if (mx == -INFINITY) continue;
        double sum = 0;
        for (int j = 0; j < P.Lk; ++j) sum += std::exp(s[j] - mx);
        const int hk = h / (P.Hq / P.Hkv);
        for (int j = 0; j < P.Lk; ++j) {
          const double pj = std::exp(s[j] - mx) / sum;
          for (int d = 0; d < P.D; ++d)
            out[((b * P.Hq + h) * P.Lq + i) * P.D + d] +=
                pj * P.v[((b * P.Hkv + hk) * P.Lk + j) * P.D + d];
        }
        lse[(b * P.Hq + h) * P.Lq + i] = mx + std::log(sum);
      }
}

// The kernel's control flow in scalar form: CTAs over (row block, split, b, kv head), key blocks
// from key_blocks/split_blocks, masking only where block_needs_mask, online softmax per row.
static void emulate(const Problem& P, int block_m, int block_n, int num_splits,
                    std::vector<double>& out, std::vector<double>& lse) {
  FwdParams p;
  p.b = P.B, p.hq = P.Hq, p.hkv = P.Hkv, p.group = P.Hq / P.Hkv, p.lq = P.Lq, p.lk = P.Lk;
  p.d = p.dv = P.D;
  p.rows = P.Lq * p.group;
  p.window_left = P.wl;
  p.window_right = fold_causal(P.causal, P.wr);
  p.mask_type = P.mask_kind == MASK_NONE ? kMaskNone : (P.mask_kind == MASK_BOOL ? kMaskBool : kMaskF32);
  p.num_splits = num_splits;
  const int G = p.group;
  std::vector<double> o_acc((size_t)num_splits * P.B * P.Hq * P.Lq * P.D, 0.0);
  std::vector<double> l_acc((size_t)num_splits * P.B * P.Hq * P.Lq, -INFINITY);
  const int m_blocks = ceil_div(p.rows, block_m);
  for (int b = 0; b < P.B; ++b)
    for (int hk = 0; hk < P.Hkv; ++hk)
      for (int mb = 0; mb < m_blocks; ++mb)
        for (int split = 0; split < num_splits; ++split) {
          const int r0 = mb * block_m;
          const BlockRange range =
              split_blocks(key_blocks(p, r0, block_m, block_n), split, num_splits);
          for (int r = r0; r < std::min(r0 + block_m, p.rows); ++r) {
            const int i = r / G, h = hk * G + r % G;
            double mx = -INFINITY, sum = 0;
            std::vector<double> acc(P.D, 0.0);
            for (int n = range.begin; n < range.end; ++n) {
              const bool needs = block_needs_mask(p, r0, block_m, n, block_n);
              for (int j = n * block_n; j < (n + 1) * block_n; ++j) {
                double x = j < P.Lk ? score(P, b, h, i, j) : 0.0;  // zero-filled keys
                if (needs) {
                  if (P.mask_kind == MASK_BOOL && mask_at(P, b, h, i, j) == 0) x = -INFINITY;
                  if (P.mask_kind == MASK_ADD) x += mask_at(P, b, h, i, j);
                  if (!window_allows(i, j, p.lq, p.lk, p.window_left, p.window_right))
                    x = -INFINITY;
                }
                const double nm = std::max(mx, x);
                const double off = nm == -INFINITY ? 0.0 : nm;
                const double corr = std::exp(mx - off), pe = std::exp(x - off);
                sum = sum * corr + pe;
                const int hkv = h / G;
                for (int d = 0; d < P.D; ++d)
                  acc[d] = acc[d] * corr +
                           pe * (j < P.Lk ? P.v[((b * P.Hkv + hkv) * P.Lk + j) * P.D + d] : 0.0);
                mx = nm;
              }
            }
            const size_t row = (((size_t)split * P.B + b) * P.Hq + h) * P.Lq + i;
            l_acc[row] = sum == 0 ? -INFINITY : mx + std::log(sum);
            for (int d = 0; d < P.D; ++d) o_acc[row * P.D + d] = sum == 0 ? 0.0 : acc[d] / sum;
          }
        }
  // combine (combine_kernel.cuh): max_nan, so that NaN partials reach the row
  const size_t total = (size_t)P.B * P.Hq * P.Lq;
  out.assign(total * P.D, 0.0);
  lse.assign(total, -INFINITY);
  for (size_t row = 0; row < total; ++row) {
    double mx = -INFINITY;
    for (int s = 0; s < num_splits; ++s) mx = max_nan(mx, l_acc[s * total + row]);
    if (mx == -INFINITY) continue;
    double sum = 0;
    for (int s = 0; s < num_splits; ++s) sum += std::exp(l_acc[s * total + row] - mx);
    const double l = mx + std::log(sum);
    lse[row] = l;
    for (int s = 0; s < num_splits; ++s) {
      const double w = std::exp(l_acc[s * total + row] - l);
      for (int d = 0; d < P.D; ++d) out[row * P.D + d] += w * o_acc[(s * total + row) * P.D + d];
    }
  }
}

// Trials 400..479 put NaN in one query row (or one key row): the row (or every row seeing the
// key) must come out NaN, lse too, through every split count (combine_kernel.cuh's max_nan).
void check_blocked_softmax() {
  std::mt19937 rng(1234);
  auto uni = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::normal_distribution<double> normal(0.0, 1.0);
  for (int trial = 0; trial < 480; ++trial) {
    Problem P;
    P.B = uni(1, 2);
    P.Hkv = uni(1, 2);
    P.Hq = P.Hkv * (uni(0, 2) == 0 ? 1 : uni(2, 4));
    P.Lq = uni(1, 40);
    P.Lk = uni(1, 70);
    if (trial % 7 == 0) P.Lq = 1;  // decode
    P.D = 4;
    P.causal = uni(0, 1);
    P.wl = uni(0, 2) == 0 ? -1 : uni(0, 20);
    P.wr = uni(0, 2) == 0 ? -1 : uni(0, 20);
    if (uni(0, 2) == 0) P.wl = P.wr = -1;
    if (uni(0, 5) == 0) P.wl = INT_MAX - uni(0, 1);  // a huge side is unbounded (no overflow)
    if (uni(0, 5) == 0) P.wr = INT_MAX - uni(0, 1);
    P.mask_kind = uni(0, 4) == 0 ? uni(1, 2) : 0;
    const int nq = P.B * P.Hq * P.Lq * P.D, nk = P.B * P.Hkv * P.Lk * P.D;
    for (int x = 0; x < nq; ++x) P.q.push_back(normal(rng));
    for (int x = 0; x < nk; ++x) P.k.push_back(normal(rng));
    for (int x = 0; x < nk; ++x) P.v.push_back(normal(rng));
    for (int x = 0; x < P.B * P.Hq * P.Lq * P.Lk; ++x)
      P.mask.push_back(P.mask_kind == MASK_BOOL ? (double)(uni(0, 3) != 0) : normal(rng));
    if (trial >= 400) {  // NaN in a query row, or in a key row
      std::vector<double>& x = uni(0, 2) ? P.q : P.k;
      const int row = uni(0, (int)x.size() / P.D - 1);
      for (int d = 0; d < P.D; ++d) x[row * P.D + d] = d == 0 ? NAN : x[row * P.D + d];
    }
    std::vector<double> ro, rl, eo, el;
    reference(P, ro, rl);
    const int bm = uni(0, 1) ? 16 : 64, bn = uni(0, 1) ? 16 : 32;
    const int splits = uni(0, 1) ? 1 : uni(2, 5);
    emulate(P, bm, bn, splits, eo, el);
    double err = 0;
    for (size_t x = 0; x < ro.size(); ++x)
      err = std::max(err, std::isnan(ro[x]) != std::isnan(eo[x]) ? INFINITY
                          : std::isnan(ro[x])                    ? 0.0
                                                                 : std::fabs(ro[x] - eo[x]));
    bool lse_ok = true;
    for (size_t x = 0; x < rl.size(); ++x) {
      if (std::isnan(rl[x]) || std::isnan(el[x]))
        lse_ok &= std::isnan(rl[x]) && std::isnan(el[x]);
      else if (std::isinf(rl[x]) || std::isinf(el[x]))
        lse_ok &= rl[x] == el[x];
      else
        lse_ok &= std::fabs(rl[x] - el[x]) < 1e-9;
    }
    CHECK(err < 1e-9 && lse_ok,
          "trial %d: B=%d Hq=%d Hkv=%d Lq=%d Lk=%d causal=%d window=(%d,%d) mask=%d bm=%d bn=%d "
          "splits=%d: max err %g, lse %s",
          trial, P.B, P.Hq, P.Hkv, P.Lq, P.Lk, (int)P.causal, P.wl, P.wr, P.mask_kind, bm, bn,
          splits, err, lse_ok ? "ok" : "wrong");
  }
}

// ---- 7: traits and the planner -----------------------------------------------------------------
template <int D, int CFG>
void check_traits() {
  using Tr = typename TraitsFor<uint16_t, D, CFG>::type;
  CHECK(Tr::kSmemBytes <= 99 * 1024, "D=%d cfg=%d needs %zu bytes of smem (> 99 KB)", D, CFG,
        (size_t)Tr::kSmemBytes);
  const TileSizes t = tile_sizes(D);
  if (CFG == kPrefill)
    CHECK(t.prefill_m == Tr::kBlockM && t.prefill_n == Tr::kBlockN, "tile table D=%d prefill", D);
  else
    CHECK(t.decode_m == Tr::kBlockM && t.decode_n == Tr::kBlockN, "tile table D=%d decode", D);
  CHECK(head_dim_bucket(D, D) == D, "bucket(%d)", D);
}

void check_plan() {
  for (int sms : {1, 108, 132})
    for (int lq : {1, 4, 100, 4096})
      for (int lk : {1, 100, 8192, 131072}) {
        FwdParams p;
        p.b = 1, p.hq = 32, p.hkv = 8, p.group = 4, p.lq = lq, p.lk = lk, p.rows = lq * 4;
        const Plan pl = make_plan(p, sms, 128, 64, 64);
        CHECK(pl.num_splits >= 1 && pl.num_splits <= 128, "plan splits %d", pl.num_splits);
        CHECK(pl.config == kDecode || pl.num_splits == 1, "prefill plan must not split");
      }
  CHECK(head_dim_bucket(40, 40) == 64 && head_dim_bucket(8, 8) == 32 &&
            head_dim_bucket(200, 64) == 256 && head_dim_bucket(264, 8) == 0,
        "head_dim_bucket");
  CHECK(fold_causal(true, -1) == 0 && fold_causal(true, 5) == 0 && fold_causal(true, 0) == 0 &&
            fold_causal(false, 7) == 7,
        "fold_causal");
}

int main() {
  check_swizzle<4>();
  check_swizzle<8>();
  check_swizzle<12>();
  check_swizzle<16>();
  check_swizzle<24>();
  check_swizzle<32>();
  check_offsets_and_banks<4>();
  check_offsets_and_banks<8>();
  check_offsets_and_banks<12>();
  check_offsets_and_banks<16>();
  check_offsets_and_banks<24>();
  check_offsets_and_banks<32>();
  check_fragments();
  check_ldmatrix_emulation<4>();
  check_ldmatrix_emulation<8>();
  check_ldmatrix_emulation<12>();
  check_ldmatrix_emulation<16>();
  check_ldmatrix_emulation<24>();
  check_ldmatrix_emulation<32>();
  check_blocked_softmax();
  check_traits<32, kPrefill>();
  check_traits<64, kPrefill>();
  check_traits<96, kPrefill>();
  check_traits<128, kPrefill>();
  check_traits<192, kPrefill>();
  check_traits<256, kPrefill>();
  check_traits<32, kDecode>();
  check_traits<64, kDecode>();
  check_traits<96, kDecode>();
  check_traits<128, kDecode>();
  check_traits<192, kDecode>();
  check_traits<256, kDecode>();
  check_plan();
  return check_summary();
}
