// Body of the backward dK/dV kernel.
//
// Template: T, MT, MASK, D, DV, BQ (query rows per tile), WM, VARLEN.
// Inputs:   as backward_dq.
// Outputs:  dk [Z, Hkv, Lktot, D], dv [Z, Hkv, Lktot, DV] (T).
// Grid:     (ceil(max Lk / (8 WM)) * 32 * WM, Hkv, Z). A threadgroup owns 8 * WM
//           keys of one kv head (8 per simdgroup, K and V rows and the dK/dV
//           accumulators in float32 fragments) and loops over every query head
//           of its GQA group and every query tile that can see its keys, with Q,
//           dO, lse and delta tiles in threadgroup memory. Each dK/dV row has a
//           single writer: no atomics (Apple GPUs have no float atomics).
constexpr int NT = 32 * WM;
constexpr int BKV = 8 * WM;
constexpr int PAD = 8;
constexpr int LDQ = D + PAD;
constexpr int LDO = DV + PAD;
threadgroup T Qs[BQ * LDQ];
threadgroup T Os[BQ * LDO];
threadgroup float Ls[BQ];
threadgroup float Ds[BQ];

const int tid = int(thread_index_in_threadgroup);
const int sg = int(simdgroup_index_in_threadgroup);
const int lane = int(thread_index_in_simdgroup);
const int kblock = int(threadgroup_position_in_grid.x);
const int hk = int(threadgroup_position_in_grid.y);
const int z = int(threadgroup_position_in_grid.z);
const int Ltot = ip[0];
const int Lktot = ip[1];
const int Hq = ip[2];
const int G = ip[3];
const int Hkv = Hq / G;

int Lq = ip[0], Lk = ip[1], q_start = 0, k_start = 0, b = z;
if (VARLEN) {
  q_start = cu_q[z]; Lq = cu_q[z + 1] - q_start;
  k_start = cu_k[z]; Lk = cu_k[z + 1] - k_start;
  b = 0;
}
const int k0 = kblock * BKV;
if (k0 >= Lk) {
  return;  // uniform for the threadgroup
}
const int off = Lk - Lq;
const ScoreParams sp = make_score_params(fp[0], fp[1], ip[4], ip[5]);
const float scale = fp[0];
const long kbase = long(b) * k_strides[0] + long(hk) * k_strides[1] + long(k_start) * k_strides[2];
const long vbase = long(b) * v_strides[0] + long(hk) * v_strides[1] + long(k_start) * v_strides[2];
const long ms0 = mask_shape[0] == 1 ? 0 : mask_strides[0];
const long ms1 = mask_shape[1] == 1 ? 0 : mask_strides[1];
const long ms2 = mask_shape[2] == 1 ? 0 : mask_strides[2];
const long ms3 = mask_shape[3] == 1 ? 0 : mask_strides[3];

const int fr = frag_row(lane);
const int fc = frag_col(lane);
const int j = k0 + sg * 8 + fr;   // this lane's key row

frag_t kf[D / 8];
frag_t dkf[D / 8];
for (int dd = 0; dd < D / 8; ++dd) {
  for (int e = 0; e < 2; ++e) {
    int c = dd * 8 + fc + e;
    kf[dd].thread_elements()[e] = j < Lk ? float(k[kbase + long(j) * k_strides[2] + long(c) * k_strides[3]]) : 0.0f;
  }
  dkf[dd] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}
frag_t vf[DV / 8];
frag_t dvf[DV / 8];
for (int cv = 0; cv < DV / 8; ++cv) {
  for (int e = 0; e < 2; ++e) {
    int c = cv * 8 + fc + e;
    vf[cv].thread_elements()[e] = j < Lk ? float(v[vbase + long(j) * v_strides[2] + long(c) * v_strides[3]]) : 0.0f;
  }
  dvf[cv] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}

const int2 qr = query_range(sp, k0, min(k0 + BKV, Lk) - 1, Lq, off);
for (int g = 0; g < G; ++g) {
  const int h = hk * G + g;
  const long qbase = long(b) * q_strides[0] + long(h) * q_strides[1] + long(q_start) * q_strides[2];
  const long obase = long(b) * dout_strides[0] + long(h) * dout_strides[1] + long(q_start) * dout_strides[2];
  const long rbase = (long(b) * Hq + h) * Ltot + q_start;
  const long mhead = long(b) * ms0 + long(h) * ms1;
  for (int qs = (qr.x / BQ) * BQ; qs < qr.y; qs += BQ) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int idx = tid; idx < BQ * D; idx += NT) {
      int r = idx / D, c = idx % D, i = qs + r;
      Qs[r * LDQ + c] = i < Lq ? q[qbase + long(i) * q_strides[2] + long(c) * q_strides[3]] : T(0);
    }
    for (int idx = tid; idx < BQ * DV; idx += NT) {
      int r = idx / DV, c = idx % DV, i = qs + r;
      Os[r * LDO + c] = i < Lq ? dout[obase + long(i) * dout_strides[2] + long(c) * dout_strides[3]] : T(0);
    }
    for (int r = tid; r < BQ; r += NT) {
      int i = qs + r;
      float l = i < Lq ? lse[rbase + i] : -INFINITY;
      Ls[r] = l == -INFINITY ? INFINITY : l * LOG2E;  // +inf makes P = 0
      Ds[r] = i < Lq ? delta[rbase + i] : 0.0f;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    frag_t st[BQ / 8];
    frag_t dpt[BQ / 8];
    for (int nb = 0; nb < BQ / 8; ++nb) {
      st[nb] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
      dpt[nb] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    }
    // S^T = K Q^T, dP^T = V dO^T   (rows: keys, columns: queries)
    for (int dd = 0; dd < D / 8; ++dd) {
      for (int nb = 0; nb < BQ / 8; ++nb) {
        frag_t qt;
        qt.thread_elements()[0] = float(Qs[(nb * 8 + fc) * LDQ + dd * 8 + fr]);
        qt.thread_elements()[1] = float(Qs[(nb * 8 + fc + 1) * LDQ + dd * 8 + fr]);
        simdgroup_multiply_accumulate(st[nb], kf[dd], qt, st[nb]);
      }
    }
    for (int cv = 0; cv < DV / 8; ++cv) {
      for (int nb = 0; nb < BQ / 8; ++nb) {
        frag_t ot;
        ot.thread_elements()[0] = float(Os[(nb * 8 + fc) * LDO + cv * 8 + fr]);
        ot.thread_elements()[1] = float(Os[(nb * 8 + fc + 1) * LDO + cv * 8 + fr]);
        simdgroup_multiply_accumulate(dpt[nb], vf[cv], ot, dpt[nb]);
      }
    }
    // P^T, and dS^T = P^T * (dP^T - delta) * dcap (kept in dpt)
    for (int nb = 0; nb < BQ / 8; ++nb) {
      for (int e = 0; e < 2; ++e) {
        int r = nb * 8 + fc + e, i = qs + r;
        float dcap;
        float t = score_log2(sp, st[nb].thread_elements()[e], dcap);
        if (key_allowed(sp, i, j, Lq, Lk, off)) {
          t = apply_mask<MASK>(t, mask, mhead + long(i) * ms2 + long(j) * ms3);
        } else {
          t = -INFINITY;
        }
        float p = exp2(t - Ls[r]);
        st[nb].thread_elements()[e] = p;
        dpt[nb].thread_elements()[e] = p * (dpt[nb].thread_elements()[e] - Ds[r]) * dcap;
      }
    }
    // dV += P^T dO, dK += dS^T Q
    for (int nb = 0; nb < BQ / 8; ++nb) {
      for (int cv = 0; cv < DV / 8; ++cv) {
        frag_t of;
        of.thread_elements()[0] = float(Os[(nb * 8 + fr) * LDO + cv * 8 + fc]);
        of.thread_elements()[1] = float(Os[(nb * 8 + fr) * LDO + cv * 8 + fc + 1]);
        simdgroup_multiply_accumulate(dvf[cv], st[nb], of, dvf[cv]);
      }
      for (int dd = 0; dd < D / 8; ++dd) {
        frag_t qf;
        qf.thread_elements()[0] = float(Qs[(nb * 8 + fr) * LDQ + dd * 8 + fc]);
        qf.thread_elements()[1] = float(Qs[(nb * 8 + fr) * LDQ + dd * 8 + fc + 1]);
        simdgroup_multiply_accumulate(dkf[dd], dpt[nb], qf, dkf[dd]);
      }
    }
  }
}

if (j < Lk) {
  const long krow = (long(b) * Hkv + hk) * Lktot + k_start + j;
  for (int dd = 0; dd < D / 8; ++dd) {
    for (int e = 0; e < 2; ++e) {
      dk[krow * D + dd * 8 + fc + e] = T(dkf[dd].thread_elements()[e] * scale);
    }
  }
  for (int cv = 0; cv < DV / 8; ++cv) {
    for (int e = 0; e < 2; ++e) {
      dv[krow * DV + cv * 8 + fc + e] = T(dvf[cv].thread_elements()[e]);
    }
  }
}
