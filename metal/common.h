// Shared helpers of the mlx_attn Metal kernels (passed as the `header` of every
// mx.fast.metal_kernel). Everything here is plain MSL: no MLX headers needed.
//
// Conventions shared by all kernels
// - Scores are kept in log2 units: t = s * log2(e), so softmax uses exp2. The
//   scale (and log2 e) is applied to the raw dot product q.k in `score_log2`.
// - ip[] (int32, 16 entries) and fp[] (float32, 8 entries) carry the runtime
//   parameters, so one compiled variant serves every sequence length:
//     ip[0] Lq (dense) / total_q (varlen)   ip[1] Lk / total_k
//     ip[2] Hq    ip[3] Hq / Hkv (GQA group)
//     ip[4] window left  ip[5] window right (causal folded in; -1 = unbounded)
//     ip[6] decode: number of key splits
//     fp[0] scale   fp[1] softcap (0 = off)
// - simdgroup_matrix<float, 8, 8> fragments are filled and read through
//   thread_elements(): lane l holds row frag_row(l), columns frag_col(l) and +1
//   (Apple's layout). Loading element by element lets tiles stay in the input
//   dtype in threadgroup memory while every product accumulates in float32.

constant constexpr float LOG2E = 1.4426950408889634f;
constant constexpr float LN2 = 0.6931471805599453f;

typedef simdgroup_matrix<float, 8, 8> frag_t;

inline int frag_row(int lane) { return ((lane / 4) & 4) + (lane / 2) % 4; }
inline int frag_col(int lane) { return ((lane / 4) & 2) * 2 + (lane % 2) * 2; }

// The four lanes holding one fragment row differ in lane bits 0 and 3.
inline float row_max4(float x) {
  x = max(x, simd_shuffle_xor(x, ushort(1)));
  return max(x, simd_shuffle_xor(x, ushort(8)));
}
inline float row_sum4(float x) {
  x += simd_shuffle_xor(x, ushort(1));
  return x + simd_shuffle_xor(x, ushort(8));
}

// Score of q.k (raw dot product `acc`) in log2 units, before mask/causal/window.
// With softcap c: s = c * tanh(scale * acc / c); `dcap` receives ds/d(scale*acc)
// = 1 - tanh^2 for the backward.
struct ScoreParams {
  float scale_log2;   // scale * log2(e)
  float cap_in;       // scale / c
  float cap_out;      // c * log2(e)
  bool softcap;
  int left;
  int right;
};

inline ScoreParams make_score_params(float scale, float cap, int left, int right) {
  ScoreParams p;
  p.softcap = cap > 0.0f;
  p.scale_log2 = scale * LOG2E;
  p.cap_in = p.softcap ? scale / cap : 0.0f;
  p.cap_out = cap * LOG2E;
  p.left = left;
  p.right = right;
  return p;
}

inline float score_log2(thread const ScoreParams& sp, float acc, thread float& dcap) {
  if (sp.softcap) {
    float th = precise::tanh(acc * sp.cap_in);
    dcap = 1.0f - th * th;
    return th * sp.cap_out;
  }
  dcap = 1.0f;
  return acc * sp.scale_log2;
}

// Key j allowed for query i (both relative to their sequence), given off = Lk - Lq.
inline bool key_allowed(thread const ScoreParams& sp, int i, int j, int Lq, int Lk, int off) {
  int d = j - (i + off);
  return i < Lq && j < Lk && j >= 0 && (sp.left < 0 || d >= -sp.left) && (sp.right < 0 || d <= sp.right);
}

// Apply the mask (MASK: 0 none, 1 bool keeps True, 2 additive) to a log2 score.
template <int MASK, typename PM>
inline float apply_mask(float t, PM mask, long idx) {
  if (MASK == 1) {
    return bool(mask[idx]) ? t : -INFINITY;
  } else if (MASK == 2) {
    return t + float(mask[idx]) * LOG2E;
  }
  return t;
}

// First and one-past-last key a block of query rows [i0, i1] may see.
inline int2 key_range(thread const ScoreParams& sp, int i0, int i1, int Lk, int off) {
  int lo = sp.left >= 0 ? max(0, i0 + off - sp.left) : 0;
  int hi = sp.right >= 0 ? min(Lk, i1 + off + sp.right + 1) : Lk;
  return int2(lo, hi);
}

// First and one-past-last query row that may see keys [j0, j1].
inline int2 query_range(thread const ScoreParams& sp, int j0, int j1, int Lq, int off) {
  int lo = sp.right >= 0 ? max(0, j0 - off - sp.right) : 0;
  int hi = sp.left >= 0 ? min(Lq, j1 - off + sp.left + 1) : Lq;
  return int2(lo, hi);
}
