// The forward's online-softmax step on AMX tiles, for bf16 problems (isa_avx512amx.cpp).
// Included by fwd.h inside its namespaces, after RowState / Scratch / KVTile and the score
// helpers, which it shares with the other paths. Same steps as row_key_block; the differences:
// both products run on tiles (gemm_amx.h), the scores come out unscaled (q stays bf16), and P^T
// leaves the exp2 pass already rounded to the bf16 pairs the second product reads.

// One row block against one key block (each step labelled).
template <int NV>
void row_key_block_amx(const Problem& p, RowState& st, int j0, int nk, const KVTile& t,
                       const Scratch& sc) {
  const float qmul = q_multiplier(p);
  // 1. S^T = K Q^T on tiles (unscaled: q and k are the caller's bf16); rows up to nk padded to
  //    16 are computed from zero rows of K and never read
  amx_gemm<false>(round_up(nk, 16), NV * W, amx_d(p), sc.ST, BQ, t.K16, t.k16_ld, st.QTv, 2 * BQ);
  // 2. the block max. A plain tile (every key allowed, no softcap, no mask) stays unscaled: its
  //    max is that of the raw scores times qmul (> 0, so the order is kept) and step 4 scales as
  //    it subtracts; otherwise score_tile scales, caps and masks in place (log2 units)
  const bool full = st.bd.lo_max <= j0 && j0 + nk - 1 <= st.bd.hi_min;
  const bool plain = full && p.softcap <= 0 && p.mask_kind == MASK_NONE;
  vf bm[NV];
  for (int v = 0; v < NV; ++v) bm[v] = splat(kNegInf);
  if (plain) {
    for (int j = 0; j < nk; ++j)
      for (int v = 0; v < NV; ++v) bm[v] = vmax(bm[v], loadv(sc.ST + j * BQ + v * W));
    for (int v = 0; v < NV; ++v) bm[v] *= qmul;
  } else {
    bool uniform = true;
    if (p.mask_kind != MASK_NONE) uniform = load_mask_tile(p, st.mrow, st.R->n, j0, nk, sc.MT, sc.MU);
    score_tile<NV>(p, sc.ST, nk, j0, full, st.bd, sc.MT, uniform, sc.MU, bm, qmul);
  }
  // 3. new running max; alpha rescales what was accumulated under the old one
  vf mu[NV], lsum[NV];
  const bool moved = new_running_max<NV>(st, bm, sc, mu);
  // 4. P^T = exp2(S^T * mul - max) two keys at a time, summed in float32 and stored as bf16 pairs
  //    (zero pairs past nk up to the tile's 32 keys)
  const vf mul = splat(plain ? qmul : 1.0f);
  for (int v = 0; v < NV; ++v) lsum[v] = splat(0.0f);
  const int nkp = round_up(nk, kAmxK);
  for (int j = 0; j < nkp; j += 2) {
    uint16_t* pairs = sc.PB + (j / 2) * 2 * BQ;
    for (int v = 0; v < NV; ++v) {
      vf e0 = splat(0.0f), e1 = splat(0.0f);
      if (j < nk) e0 = exp2v(loadv(sc.ST + j * BQ + v * W) * mul - mu[v]);
      if (j + 1 < nk) e1 = exp2v(loadv(sc.ST + (j + 1) * BQ + v * W) * mul - mu[v]);
      lsum[v] += e0 + e1;
      store_bf16_pairs(pairs + 2 * v * W, (__m512)e0, (__m512)e1);  // gemm_bf16.h
    }
  }
  for (int v = 0; v < NV; ++v)
    storev(st.l + v * W, loadv(st.l + v * W) * loadv(sc.ALPHA + v * W) + lsum[v]);
  // 5. O^T = O^T * alpha (only when a max moved), then O^T += V^T P^T on tiles
  if (moved)
    for (int e = 0; e < p.Dv; ++e)
      for (int v = 0; v < NV; ++v)
        storev(st.OT + e * BQ + v * W, loadv(st.OT + e * BQ + v * W) * loadv(sc.ALPHA + v * W));
  amx_gemm<true>(amx_dv(p), NV * W, nkp, st.OT, BQ, t.VT, BK, sc.PB, 2 * BQ);
}

// o of a finished row block for bf16 output rows with contiguous elements: O^T 16 x 16 blocks
// transposed in registers, each row times 1 / l, rounded to bf16 (nearest even) and stored
// 16 elements at a time; then lse / statistics as row_end.
inline void row_end_amx(const Problem& p, const RowState& st) {
  const Rows& R = *st.R;
  uint16_t* o16 = static_cast<uint16_t*>(p.o);
  for (int r0 = 0; r0 < R.n; r0 += 16) {
    float inv[16];
    int64_t ob[16];
    for (int i = 0; i < 16 && r0 + i < R.n; ++i) {
      const int r = r0 + i;
      inv[i] = st.l[r] == 0.0f ? 0.0f : 1.0f / st.l[r];
      ob[i] = R.b * p.os[0] + R.h[r] * p.os[1] + (st.s.qo + R.i[r]) * p.os[2];
    }
    for (int e0 = 0; e0 < p.Dv; e0 += 16) {  // O^T has its rows padded to 16: whole loads
      const int ne = p.Dv - e0 < 16 ? p.Dv - e0 : 16;
      __m512i w[16];
      for (int e = 0; e < 16; ++e) w[e] = _mm512_loadu_si512(st.OT + (e0 + e) * BQ + r0);
      transpose16_epi32(w);  // w[i]: row r0 + i, elements e0 .. e0 + 15
      for (int i = 0; i < 16 && r0 + i < R.n; ++i) {
        const __m512 x = _mm512_mul_ps(_mm512_castsi512_ps(w[i]), _mm512_set1_ps(inv[i]));
        _mm256_mask_storeu_epi16(o16 + ob[i] + e0, __mmask16((1u << ne) - 1u),
                                 (__m256i)_mm512_cvtneps_pbh(x));
      }
    }
  }
  for (int r = 0; r < R.n; ++r) store_row_stats(p, R.b, R.h[r], st.s.qo + R.i[r], st.m[r], st.l[r]);
}
