"""A small flash-attention kernel written against real MSL semantics (simdgroup
matrices, online softmax with exp2, threadgroup tiles and barriers) runs under
the emulator and matches the float64 SPEC reference."""
import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from mlx_attn import flash_attention  # noqa: E402
from msl_emulator import emulator_options, metal_kernel  # noqa: E402
from mlx_attn.reference import max_error, passes, reference  # noqa: E402

# One simdgroup per threadgroup handles BQ = 8 query rows of one (batch, head);
# keys are visited in blocks of BK = 8. Scores and P*V use 8x8 simdgroup
# matrices; the row max / sum use shuffles inside each quad of lanes.
ATTN_SOURCE = """
  const int BQ = 8, BK = 8;
  const uint lane = thread_index_in_simdgroup;
  const uint sg = simdgroup_index_in_threadgroup;
  const int qb = threadgroup_position_in_grid.y;
  const int bh = threadgroup_position_in_grid.z;
  const int Lq = q_shape[1];
  const int Lk = k_shape[1];
  const int off = Lk - Lq;
  const float log2e = 1.4426950408889634f;

  threadgroup float Qs[BQ * D];
  threadgroup float Ks[BK * D];
  threadgroup float Vs[BK * D];
  threadgroup float Os[BQ * D];
  threadgroup float Ss[BQ * BK];
  threadgroup float row_m[BQ], row_l[BQ], row_a[BQ];

  for (int i = lane; i < BQ * D; i += threads_per_threadgroup.x) {
    int r = i / D, c = i % D;
    int qi = qb * BQ + r;
    Qs[i] = qi < Lq ? float(q[(bh * Lq + qi) * D + c]) * scale : 0.0f;
    Os[i] = 0.0f;
  }
  if (lane < BQ) { row_m[lane] = -INFINITY; row_l[lane] = 0.0f; }
  threadgroup_barrier(mem_flags::mem_threadgroup);

  for (int kb = 0; kb < Lk; kb += BK) {
    for (int i = lane; i < BK * D; i += 32) {
      int kj = kb + i / D;
      bool in = kj < Lk;
      Ks[i] = in ? float(k[(bh * Lk + kj) * D + i % D]) : 0.0f;
      Vs[i] = in ? float(v[(bh * Lk + kj) * D + i % D]) : 0.0f;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    simdgroup_matrix<float, 8, 8> acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    for (int d0 = 0; d0 < D; d0 += 8) {
      simdgroup_matrix<float, 8, 8> a, b;
      simdgroup_load(a, Qs + d0, D);
      simdgroup_load(b, Ks + d0, D, ulong2(0, 0), true);  // K^T
      simdgroup_multiply_accumulate(acc, a, b, acc);
    }
    simdgroup_store(acc, Ss, BK);
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // lane -> (row r, columns c0, c0 + 1)
    const int r = lane / 4, c0 = (lane % 4) * 2;
    const int qi = qb * BQ + r;
    float s[2];
    float mloc = -INFINITY;
    for (int j = 0; j < 2; ++j) {
      int kj = kb + c0 + j;
      bool keep = kj < Lk && qi < Lq;
      if (keep && HAS_MASK) keep = mask[qi * Lk + kj];
      if (keep && CAUSAL) keep = kj <= qi + off;
      s[j] = select(-INFINITY, Ss[r * BK + c0 + j], keep);
      mloc = max(mloc, s[j]);
    }
    float m_old = row_m[r];
    mloc = max(mloc, simd_shuffle_xor(mloc, 1));
    mloc = max(mloc, simd_shuffle_xor(mloc, 2));
    float m_new = max(m_old, mloc);
    float m_use = m_new == -INFINITY ? 0.0f : m_new;
    float p0 = fast::exp2((s[0] - m_use) * log2e);
    float p1 = metal::exp2((s[1] - m_use) * log2e);
    float ps = p0 + p1;
    ps += simd_shuffle_xor(ps, 1);
    ps += simd_shuffle_xor(ps, 2);
    float alpha = metal::exp2((m_old - m_use) * log2e);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    Ss[r * BK + c0] = p0;
    Ss[r * BK + c0 + 1] = p1;
    if (lane % 4 == 0) {
      row_m[r] = m_new;
      row_l[r] = row_l[r] * alpha + ps;
      row_a[r] = alpha;
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    // O = diag(alpha) O + P V, rescaling through thread_elements (Apple's lane layout)
    const int my_row = ((lane / 4) & 4) + (lane / 2) % 4;
    simdgroup_matrix<float, 8, 8> p;
    simdgroup_load(p, Ss, BK);
    for (int d0 = 0; d0 < D; d0 += 8) {
      simdgroup_matrix<float, 8, 8> o, vv;
      simdgroup_load(o, Os, D, ulong2(d0, 0));
      o.thread_elements()[0] *= row_a[my_row];
      o.thread_elements()[1] *= row_a[my_row];
      simdgroup_load(vv, Vs + d0, D);
      simdgroup_multiply_accumulate(o, p, vv, o);
      simdgroup_store(o, Os, D, ulong2(d0, 0));
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }

  for (int i = lane; i < BQ * D; i += 32) {
    int r = i / D, qi = qb * BQ + r;
    if (qi < Lq) {
      float l = row_l[r];
      out[(bh * Lq + qi) * D + i % D] = T(l > 0.0f ? Os[i] / l : 0.0f);
    }
  }
  if (lane < BQ && qb * BQ + int(lane) < Lq) {
    float l = row_l[lane];
    lse[bh * Lq + qb * BQ + lane] = l > 0.0f ? row_m[lane] + metal::precise::log(l) : -INFINITY;
  }
  (void)sg;
"""

_kernel = metal_kernel("emu_test_attention", ["q", "k", "v", "mask", "scale"], ["out", "lse"], ATTN_SOURCE)


def run_attention(q, k, v, mask, scale, causal):
    B, H, Lq, D = q.shape
    Lk = k.shape[2]
    dt = q.dtype
    mask_arr = mx.array(mask) if mask is not None else mx.array([True])
    out, lse = _kernel(
        inputs=[q.reshape(B * H, Lq, D), k.reshape(B * H, Lk, D), v.reshape(B * H, Lk, D), mask_arr,
                mx.array(scale, dtype=mx.float32)],
        template=[("T", dt), ("D", D), ("CAUSAL", causal), ("HAS_MASK", mask is not None)],
        grid=(32, (Lq + 7) // 8, B * H), threadgroup=(32, 1, 1),
        output_shapes=[(B * H, Lq, D), (B * H, Lq)], output_dtypes=[dt, mx.float32])
    return out.reshape(B, H, Lq, D), lse.reshape(B, H, Lq)


@pytest.mark.parametrize("dtype,L,Lk,D,causal,use_mask", [
    (mx.float32, 7, 7, 40, False, False),
    (mx.float16, 113, 37, 72, True, False),
    (mx.bfloat16, 13, 21, 40, True, True),
    (mx.float32, 1, 203, 128, False, True),
])
def test_attention_kernel_matches_reference(dtype, L, Lk, D, causal, use_mask):
    rng = np.random.default_rng(L * 1000 + D)
    q, k, v = (mx.array(rng.standard_normal((1, 2, n, D)).astype(np.float32)).astype(dtype)
               for n in (L, Lk, Lk))
    mask = rng.random((L, Lk)) > 0.3 if use_mask else None
    if use_mask:
        mask[0, :] = False  # a fully removed row must give zeros and lse = -inf
    scale = 1.0 / np.sqrt(D)
    out, lse = run_attention(q, k, v, mask, scale, causal)
    f32 = [x.astype(mx.float32) for x in (q, k, v)]  # exact; numpy cannot take bfloat16
    want, want_lse = reference(*f32, scale=scale, causal=causal, mask=mask)
    base = flash_attention(q, k, v, scale=scale, causal=causal, mask=mx.array(mask) if use_mask else None,
                           backend="math")
    err = max_error(out.astype(mx.float32), want)
    base_err = max_error(base.astype(mx.float32), want)
    assert passes(err, base_err), (err, base_err)
    assert max_error(lse, want_lse) < 1e-4
    if use_mask:
        assert np.all(np.array(out.astype(mx.float32))[0, :, 0] == 0)


def test_attention_kernel_is_schedule_independent():
    """Its barriers are complete: running fibers in reverse/random order gives the same bits."""
    rng = np.random.default_rng(0)
    q, k, v = (mx.array(rng.standard_normal((1, 1, 9, 40)).astype(np.float32)) for _ in range(3))
    first = run_attention(q, k, v, None, 0.2, True)[0]
    for sched in ("reverse", "random"):
        with emulator_options(schedule=sched, seed=3):
            again = run_attention(q, k, v, None, 0.2, True)[0]
        assert np.array_equal(np.array(first), np.array(again))
