// Body of the prefill forward kernel (an MLX custom kernel: mx.fast.metal_kernel
// generates the signature from the input/output names and the template).
//
// Template: T (q/k/v/out dtype), MT (mask dtype), MASK (0 none, 1 bool, 2 additive),
//           D, DV (head dims, multiples of 8), BK (keys per tile), WM (simdgroups),
//           VARLEN (cu_q/cu_k describe packed sequences).
// Inputs:   q, k, v (bhld views, any strides), mask (rank 4, broadcast dims have
//           size 1), cu_q, cu_k (int32), ip, fp (see common.h).
// Outputs:  out [Z, Hq, Ltot, DV] (T), lse [Z, Hq, Ltot] (float32, natural log).
// Grid:     (ceil(max Lq / BQ) * 32 * WM, Hq, batches or sequences); one
//           threadgroup owns BQ = 8 * WM query rows, 8 per simdgroup.
//
// Each threadgroup streams the K/V tiles its rows may see (whole tiles outside
// the causal/window band are skipped) through threadgroup memory; each
// simdgroup keeps its 8 query rows and its 8 x DV output in float32 fragments
// and runs the online softmax (exp2, log2-unit scores) on them.
constexpr int BQ = 8 * WM;
constexpr int NT = 32 * WM;
constexpr int PAD = 8;            // row padding (elements) against bank conflicts
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
  return;  // the whole threadgroup leaves together (no barrier reached yet)
}
const int off = Lk - Lq;
const ScoreParams sp = make_score_params(fp[0], fp[1], ip[4], ip[5]);

const long qbase = long(b) * q_strides[0] + long(h) * q_strides[1] + long(q_start) * q_strides[2];
const long kbase = long(b) * k_strides[0] + long(hk) * k_strides[1] + long(k_start) * k_strides[2];
const long vbase = long(b) * v_strides[0] + long(hk) * v_strides[1] + long(k_start) * v_strides[2];
const long ms0 = mask_shape[0] == 1 ? 0 : mask_strides[0];
const long ms1 = mask_shape[1] == 1 ? 0 : mask_strides[1];
const long ms2 = mask_shape[2] == 1 ? 0 : mask_strides[2];
const long ms3 = mask_shape[3] == 1 ? 0 : mask_strides[3];

const int fr = frag_row(lane);
const int fc = frag_col(lane);
const int i = q0 + sg * 8 + fr;   // this lane's query row
const long mrow = long(b) * ms0 + long(h) * ms1 + long(i) * ms2;

// Q rows in registers (float32), zero beyond Lq.
frag_t qf[D / 8];
for (int dd = 0; dd < D / 8; ++dd) {
  for (int e = 0; e < 2; ++e) {
    int c = dd * 8 + fc + e;
    qf[dd].thread_elements()[e] = i < Lq ? float(q[qbase + long(i) * q_strides[2] + long(c) * q_strides[3]]) : 0.0f;
  }
}
frag_t of[DV / 8];
for (int dv = 0; dv < DV / 8; ++dv) {
  of[dv] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}
float m_run = -INFINITY;  // running max of this lane's row (log2 units)
float l_lane = 0.0f;      // this lane's share of the running sum

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

  // S = Q K^T for 8 rows x BK keys.
  frag_t sf[BK / 8];
  for (int nb = 0; nb < BK / 8; ++nb) {
    sf[nb] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  }
  for (int dd = 0; dd < D / 8; ++dd) {
    for (int nb = 0; nb < BK / 8; ++nb) {
      frag_t kt;
      kt.thread_elements()[0] = float(Ks[(nb * 8 + fc) * LDK + dd * 8 + fr]);
      kt.thread_elements()[1] = float(Ks[(nb * 8 + fc + 1) * LDK + dd * 8 + fr]);
      simdgroup_multiply_accumulate(sf[nb], qf[dd], kt, sf[nb]);
    }
  }
  // Scores in log2 units; removed entries -inf.
  float m_blk = -INFINITY;
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
      sf[nb].thread_elements()[e] = t;
      m_blk = max(m_blk, t);
    }
  }
  const float m_new = max(m_run, row_max4(m_blk));
  const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // rows with nothing yet stay at 0
  const float alpha = exp2(m_run - m_use);
  float l_blk = 0.0f;
  for (int nb = 0; nb < BK / 8; ++nb) {
    for (int e = 0; e < 2; ++e) {
      float p = exp2(sf[nb].thread_elements()[e] - m_use);
      sf[nb].thread_elements()[e] = p;
      l_blk += p;
    }
  }
  l_lane = l_lane * alpha + l_blk;
  m_run = m_new;
  for (int dv = 0; dv < DV / 8; ++dv) {
    of[dv].thread_elements() *= alpha;
  }
  // O += P V
  for (int nb = 0; nb < BK / 8; ++nb) {
    for (int dv = 0; dv < DV / 8; ++dv) {
      frag_t vt;
      vt.thread_elements()[0] = float(Vs[(nb * 8 + fr) * LDV + dv * 8 + fc]);
      vt.thread_elements()[1] = float(Vs[(nb * 8 + fr) * LDV + dv * 8 + fc + 1]);
      simdgroup_multiply_accumulate(of[dv], sf[nb], vt, of[dv]);
    }
  }
}

const float l_row = row_sum4(l_lane);
if (i < Lq) {
  const float inv = l_row > 0.0f ? 1.0f / l_row : 0.0f;  // a row with no key gives zeros
  const long orow = (long(b) * Hq + h) * Ltot + q_start + i;
  for (int dv = 0; dv < DV / 8; ++dv) {
    for (int e = 0; e < 2; ++e) {
      out[orow * DV + dv * 8 + fc + e] = T(of[dv].thread_elements()[e] * inv);
    }
  }
  if ((lane & 9) == 0) {
    lse[orow] = l_row > 0.0f ? (m_run + log2(l_row)) * LN2 : -INFINITY;
  }
}
