// Body of the decode merge kernel: pass 2 of the split-K decode attention.
//
// Template: T (output dtype), NR, DV, VARLEN.
// Inputs:   part_o, part_ml (from forward_decode), cu_q, ip.
// Outputs:  out [Z, Hq, Ltot, DV] (T), lse [Z, Hq, Ltot] float32.
// Grid:     (32 * 4, Hq, Z): one threadgroup per (head, batch or sequence); each
//           thread merges (row, column) pairs over the nsplit partials with the
//           usual rescaling by exp2(m_split - max_m).
const int tid = int(thread_index_in_threadgroup);
const int h = int(threadgroup_position_in_grid.y);
const int z = int(threadgroup_position_in_grid.z);
const int nthreads = int(threads_per_threadgroup.x);
const int Ltot = ip[0];
const int Hq = ip[2];
const int nsplit = ip[6];
int Lq = ip[0], q_start = 0, b = z;
if (VARLEN) {
  q_start = cu_q[z]; Lq = cu_q[z + 1] - q_start;
  b = 0;
}
const int rows = min(Lq, NR);
const long pbase = (long(z) * Hq + h) * nsplit;
for (int idx = tid; idx < rows * DV; idx += nthreads) {
  int r = idx / DV, c = idx % DV;
  float M = -INFINITY;
  for (int s = 0; s < nsplit; ++s) {
    M = max(M, part_ml[((pbase + s) * NR + r) * 2]);
  }
  float L = 0.0f, O = 0.0f;
  if (M != -INFINITY) {
    for (int s = 0; s < nsplit; ++s) {
      long p = (pbase + s) * NR + r;
      float w = exp2(part_ml[p * 2] - M);
      L += part_ml[p * 2 + 1] * w;
      O += part_o[p * DV + c] * w;
    }
  }
  long orow = (long(b) * Hq + h) * Ltot + q_start + r;
  out[orow * DV + c] = T(L > 0.0f ? O / L : 0.0f);
  if (c == 0) {
    lse[orow] = L > 0.0f ? (M + log2(L)) * LN2 : -INFINITY;
  }
}
