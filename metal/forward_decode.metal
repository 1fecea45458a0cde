// Body of the decode forward kernel (Lq <= 8): pass 1 of a split-K attention.
//
// Template: T, MT, MASK, D, DV, NR (query rows held: 1, or 8 for 2..8),
//           WM (simdgroups), VARLEN.
// Inputs:   q, k, v, mask, cu_q, cu_k, ip, fp as in forward_prefill.
// Outputs:  part_o [Z, Hq, nsplit, NR, DV] float32 (unnormalised), part_ml
//           [Z, Hq, nsplit, NR, 2] float32 (row max in log2 units, row sum).
// Grid:     (nsplit * 32 * WM, Hq, Z). Threadgroup (split, h, z) takes one
//           nsplit-th of the keys the rows can see; simdgroup sg takes every
//           WM-th of those keys. Each lane holds q, k, v elements lane + 32 t, so
//           a dot product is a per-lane partial plus one simd_sum; the online
//           softmax state of a row is uniform across its simdgroup.
constexpr int NT = 32 * WM;
constexpr int ND = (D + 31) / 32;
constexpr int NDV = (DV + 31) / 32;
threadgroup float red_o[WM * NR * DV];
threadgroup float red_ml[WM * NR * 2];

const int tid = int(thread_index_in_threadgroup);
const int sg = int(simdgroup_index_in_threadgroup);
const int lane = int(thread_index_in_simdgroup);
const int split = int(threadgroup_position_in_grid.x);
const int h = int(threadgroup_position_in_grid.y);
const int z = int(threadgroup_position_in_grid.z);
const int Hq = ip[2];
const int hk = h / ip[3];
const int nsplit = ip[6];

int Lq = ip[0], Lk = ip[1], q_start = 0, k_start = 0, b = z;
if (VARLEN) {
  q_start = cu_q[z]; Lq = cu_q[z + 1] - q_start;
  k_start = cu_k[z]; Lk = cu_k[z + 1] - k_start;
  b = 0;
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
const int rows = min(Lq, NR);

// This threadgroup's slice of the keys any row may see.
const int2 kr = key_range(sp, 0, Lq - 1, Lk, off);
const int chunk = max(0, (kr.y - kr.x + nsplit - 1) / nsplit);
const int js = kr.x + split * chunk;
const int je = min(kr.y, js + chunk);

float qv[NR][ND];
float m[NR];
float l[NR];
float o[NR][NDV];
for (int r = 0; r < NR; ++r) {
  for (int t = 0; t < ND; ++t) {
    int d = lane + 32 * t;
    qv[r][t] = (r < rows && d < D) ? float(q[qbase + long(r) * q_strides[2] + long(d) * q_strides[3]]) : 0.0f;
  }
  m[r] = -INFINITY;
  l[r] = 0.0f;
  for (int t = 0; t < NDV; ++t) {
    o[r][t] = 0.0f;
  }
}

for (int j = js + sg; j < je; j += WM) {
  float kv[ND];
  float vv[NDV];
  for (int t = 0; t < ND; ++t) {
    int d = lane + 32 * t;
    kv[t] = d < D ? float(k[kbase + long(j) * k_strides[2] + long(d) * k_strides[3]]) : 0.0f;
  }
  for (int t = 0; t < NDV; ++t) {
    int d = lane + 32 * t;
    vv[t] = d < DV ? float(v[vbase + long(j) * v_strides[2] + long(d) * v_strides[3]]) : 0.0f;
  }
  for (int r = 0; r < rows; ++r) {
    float acc = 0.0f;
    for (int t = 0; t < ND; ++t) {
      acc += qv[r][t] * kv[t];
    }
    acc = simd_sum(acc);
    float dcap;
    float s = score_log2(sp, acc, dcap);
    if (key_allowed(sp, r, j, Lq, Lk, off)) {
      s = apply_mask<MASK>(s, mask, long(b) * ms0 + long(h) * ms1 + long(r) * ms2 + long(j) * ms3);
    } else {
      s = -INFINITY;
    }
    if (!(s == -INFINITY)) {  // uniform across the simdgroup
      float mn = max(m[r], s);
      float alpha = exp2(m[r] - mn);
      float p = exp2(s - mn);
      l[r] = l[r] * alpha + p;
      for (int t = 0; t < NDV; ++t) {
        o[r][t] = o[r][t] * alpha + p * vv[t];
      }
      m[r] = mn;
    }
  }
}

// Merge the WM simdgroups' states in threadgroup memory, then write this split's partial.
for (int r = 0; r < NR; ++r) {
  if (lane == 0) {
    red_ml[(sg * NR + r) * 2] = m[r];
    red_ml[(sg * NR + r) * 2 + 1] = l[r];
  }
  for (int t = 0; t < NDV; ++t) {
    int d = lane + 32 * t;
    if (d < DV) {
      red_o[(sg * NR + r) * DV + d] = o[r][t];
    }
  }
}
threadgroup_barrier(mem_flags::mem_threadgroup);
const long pbase = (long(z) * Hq + h) * nsplit + split;
for (int idx = tid; idx < NR * DV; idx += NT) {
  int r = idx / DV, c = idx % DV;
  float M = -INFINITY;
  for (int s = 0; s < WM; ++s) {
    M = max(M, red_ml[(s * NR + r) * 2]);
  }
  float L = 0.0f, O = 0.0f;
  if (M != -INFINITY) {
    for (int s = 0; s < WM; ++s) {
      float w = exp2(red_ml[(s * NR + r) * 2] - M);
      L += red_ml[(s * NR + r) * 2 + 1] * w;
      O += red_o[(s * NR + r) * DV + c] * w;
    }
  }
  part_o[(pbase * NR + r) * DV + c] = O;
  if (c == 0) {
    part_ml[(pbase * NR + r) * 2] = M;
    part_ml[(pbase * NR + r) * 2 + 1] = L;
  }
}
