// Body of the backward dQ kernel.
//
// Template: T, MT, MASK, D, DV, BK, WM, VARLEN (as forward_prefill).
// Inputs:   q, k, v, mask, cu_q, cu_k, ip, fp (as forward_prefill); dout (bhld
//           view, any strides); lse, delta [Z, Hq, Ltot] float32 (delta is
//           rowsum(dO * O) minus the lse cotangent).
// Outputs:  dq [Z, Hq, Ltot, D] (T).
// Grid:     as forward_prefill. A simdgroup keeps its 8 rows of Q and dO and its
//           dQ accumulator in float32 fragments; K/V tiles stream through
//           threadgroup memory; P is recomputed from the saved lse, so no
//           softmax state is carried and nothing is written by two threadgroups.
constexpr int NT = 32 * WM;
constexpr int BQ = 8 * WM;
constexpr int PAD = 8;
constexpr int LDK = D + PAD;
constexpr int LDV = DV + PAD;
threadgroup T Ks[BK * LDK];
threadgroup T Vs[BK * LDV];

const int tid = int(thread_index_in_threadgroup);
const int sg = int(simdgroup_index_in_threadgroup);
const int lane = int(thread_index_in_simdgroup);
const int qblock = int(threadgroup_position_in_grid.x);
const int h = int(threadgroup_position_in_grid.y);
const int z = int(threadgroup_position_in_grid.z);
const int Ltot = ip[0];
const int Hq = ip[2];
const int hk = h / ip[3];

int Lq = ip[0], Lk = ip[1], q_start = 0, k_start = 0, b = z;
if (VARLEN) {
  q_start = cu_q[z]; Lq = cu_q[z + 1] - q_start;
  k_start = cu_k[z]; Lk = cu_k[z + 1] - k_start;
  b = 0;
}
const int q0 = qblock * BQ;
if (q0 >= Lq) {
  return;  // uniform for the threadgroup
}
const int off = Lk - Lq;
const ScoreParams sp = make_score_params(fp[0], fp[1], ip[4], ip[5]);
const float scale = fp[0];
const long qbase = long(b) * q_strides[0] + long(h) * q_strides[1] + long(q_start) * q_strides[2];
const long obase = long(b) * dout_strides[0] + long(h) * dout_strides[1] + long(q_start) * dout_strides[2];
const long kbase = long(b) * k_strides[0] + long(hk) * k_strides[1] + long(k_start) * k_strides[2];
const long vbase = long(b) * v_strides[0] + long(hk) * v_strides[1] + long(k_start) * v_strides[2];
const long ms0 = mask_shape[0] == 1 ? 0 : mask_strides[0];
const long ms1 = mask_shape[1] == 1 ? 0 : mask_strides[1];
const long ms2 = mask_shape[2] == 1 ? 0 : mask_strides[2];
const long ms3 = mask_shape[3] == 1 ? 0 : mask_strides[3];

const int fr = frag_row(lane);
const int fc = frag_col(lane);
const int i = q0 + sg * 8 + fr;
const long mrow = long(b) * ms0 + long(h) * ms1 + long(i) * ms2;
const long row = (long(b) * Hq + h) * Ltot + q_start + i;
// lse in log2 units; +inf for rows beyond Lq or with no key, so that P = 0 there.
const float lse_row = i < Lq ? lse[row] : -INFINITY;
const float lse2 = lse_row == -INFINITY ? INFINITY : lse_row * LOG2E;
const float delta_row = i < Lq ? delta[row] : 0.0f;

frag_t qf[D / 8];
frag_t dqf[D / 8];
for (int dd = 0; dd < D / 8; ++dd) {
  for (int e = 0; e < 2; ++e) {
    int c = dd * 8 + fc + e;
    qf[dd].thread_elements()[e] = i < Lq ? float(q[qbase + long(i) * q_strides[2] + long(c) * q_strides[3]]) : 0.0f;
  }
  dqf[dd] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}
frag_t dof[DV / 8];
for (int dv = 0; dv < DV / 8; ++dv) {
  for (int e = 0; e < 2; ++e) {
    int c = dv * 8 + fc + e;
    dof[dv].thread_elements()[e] = i < Lq ? float(dout[obase + long(i) * dout_strides[2] + long(c) * dout_strides[3]]) : 0.0f;
  }
}

const int2 kr = key_range(sp, q0, min(q0 + BQ, Lq) - 1, Lk, off);
for (int ks = (kr.x / BK) * BK; ks < kr.y; ks += BK) {
  threadgroup_barrier(mem_flags::mem_threadgroup);
  for (int idx = tid; idx < BK * D; idx += NT) {
    int r = idx / D, c = idx % D, j = ks + r;
    Ks[r * LDK + c] = j < Lk ? k[kbase + long(j) * k_strides[2] + long(c) * k_strides[3]] : T(0);
  }
  for (int idx = tid; idx < BK * DV; idx += NT) {
    int r = idx / DV, c = idx % DV, j = ks + r;
    Vs[r * LDV + c] = j < Lk ? v[vbase + long(j) * v_strides[2] + long(c) * v_strides[3]] : T(0);
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  frag_t sf[BK / 8];
  frag_t dpf[BK / 8];
  for (int nb = 0; nb < BK / 8; ++nb) {
    sf[nb] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    dpf[nb] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }
  // S = Q K^T, dP = dO V^T
  for (int dd = 0; dd < D / 8; ++dd) {
    for (int nb = 0; nb < BK / 8; ++nb) {
      frag_t kt;
      kt.thread_elements()[0] = float(Ks[(nb * 8 + fc) * LDK + dd * 8 + fr]);
      kt.thread_elements()[1] = float(Ks[(nb * 8 + fc + 1) * LDK + dd * 8 + fr]);
      simdgroup_multiply_accumulate(sf[nb], qf[dd], kt, sf[nb]);
    }
  }
  for (int dv = 0; dv < DV / 8; ++dv) {
    for (int nb = 0; nb < BK / 8; ++nb) {
      frag_t vt;
      vt.thread_elements()[0] = float(Vs[(nb * 8 + fc) * LDV + dv * 8 + fr]);
      vt.thread_elements()[1] = float(Vs[(nb * 8 + fc + 1) * LDV + dv * 8 + fr]);
      simdgroup_multiply_accumulate(dpf[nb], dof[dv], vt, dpf[nb]);
    }
  }
  // dS = P * (dP - delta) * dcap  (natural units; the scale is applied at the end)
  for (int nb = 0; nb < BK / 8; ++nb) {
    for (int e = 0; e < 2; ++e) {
      int j = ks + nb * 8 + fc + e;
      float dcap;
      float t = score_log2(sp, sf[nb].thread_elements()[e], dcap);
      if (key_allowed(sp, i, j, Lq, Lk, off)) {
        t = apply_mask<MASK>(t, mask, mrow + long(j) * ms3);
      } else {
        t = -INFINITY;
      }
      float p = exp2(t - lse2);
      sf[nb].thread_elements()[e] = p * (dpf[nb].thread_elements()[e] - delta_row) * dcap;
    }
  }
  // dQ += dS K
  for (int nb = 0; nb < BK / 8; ++nb) {
    for (int dd = 0; dd < D / 8; ++dd) {
      frag_t kf;
      kf.thread_elements()[0] = float(Ks[(nb * 8 + fr) * LDK + dd * 8 + fc]);
      kf.thread_elements()[1] = float(Ks[(nb * 8 + fr) * LDK + dd * 8 + fc + 1]);
      simdgroup_multiply_accumulate(dqf[dd], sf[nb], kf, dqf[dd]);
    }
  }
}

if (i < Lq) {
  for (int dd = 0; dd < D / 8; ++dd) {
    for (int e = 0; e < 2; ++e) {
      dq[row * D + dd * 8 + fc + e] = T(dqf[dd].thread_elements()[e] * scale);
    }
  }
}
