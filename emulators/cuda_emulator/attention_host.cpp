// The emulator's host side of the real attention kernels, for one (dtype, head-dim bucket):
// the instances nvcc builds from cuda_bridge/src/kernel_instance.cu.in (MA_DEFINE_FWD /
// MA_DEFINE_BWD, launching through launch.cuh / bwd_launch.cuh), the planner of api.cu
// (blocks.h make_plan on traits.h's tile sizes), and the parameter filling of binding.cpp
// (check_fwd_args / set_scalars / check_bwd_args, and binding_varlen.cpp's varlen twins) for
// arguments Python has already checked.
// EMU_CTYPE, EMU_TAG and EMU_HDIM come from the compiler command line (attention.py).
#include "mlx_attn_cuda/blocks.h"
#include "mlx_attn_cuda/bwd_launch.cuh"
#include "mlx_attn_cuda/launch.cuh"
#include "mlx_attn_cuda/launch_dims.cuh"
#include "mlx_attn_cuda/traits.h"

#define EMU_EXPAND(M, ...) M(__VA_ARGS__)
EMU_EXPAND(MA_DEFINE_FWD, EMU_CTYPE, EMU_TAG, EMU_HDIM)
EMU_EXPAND(MA_DEFINE_BWD, EMU_CTYPE, EMU_TAG, EMU_HDIM)
#define EMU_CAT(a, b, c, d) a##b##c##d
#define EMU_NAME(a, b, c, d) EMU_CAT(a, b, c, d)

using namespace mlx_attn_cuda;

extern "C" {
// Strides in elements, 0 on a dim of size 1 (binding.cpp's stride_or_0).
struct EmuTensor {
  void* data;
  int64_t sb, sh, sl, sk;
};
// One call's description; every field 8 bytes (mirrored by attention.py's ctypes structure).
struct EmuAttn {
  EmuTensor q, k, v, out, mask, dout, dq, dk, dv;
  float *lse, *o_accum, *lse_accum, *dlse, *delta;
  int64_t mask_type, b, hq, hkv, lq, lk, d, dv_dim;
  double scale, softcap;
  int64_t causal, window_left, window_right, config, num_splits, num_sms;
  // fused varlen (params.h): int32 [n + 1] each, or null; total_q = cu_seqlens_q[n]
  const int *cu_seqlens_q, *cu_seqlens_k;
  int64_t total_q;
  // backward: deterministic dQ (no atomics), else dq_accum float32 [rows of lse, d]
  int64_t deterministic;
  float* dq_accum;
};
}

static FwdParams fwd_params(const EmuAttn& a) {
  FwdParams p;
  p.q = a.q.data, p.k = a.k.data, p.v = a.v.data, p.out = a.out.data, p.lse = a.lse;
  p.q_sb = a.q.sb, p.q_sh = a.q.sh, p.q_sl = a.q.sl;
  p.k_sb = a.k.sb, p.k_sh = a.k.sh, p.k_sl = a.k.sl;
  p.v_sb = a.v.sb, p.v_sh = a.v.sh, p.v_sl = a.v.sl;
  p.o_sb = a.out.sb, p.o_sh = a.out.sh, p.o_sl = a.out.sl;
  p.b = (int)a.b, p.hq = (int)a.hq, p.hkv = (int)a.hkv, p.group = (int)(a.hq / a.hkv);
  p.lq = (int)a.lq, p.lk = (int)a.lk, p.d = (int)a.d, p.dv = (int)a.dv_dim;
  p.rows = p.lq * p.group;
  if (a.mask.data) {
    p.mask = a.mask.data;
    p.mask_type = (int)a.mask_type;
    p.m_sb = a.mask.sb, p.m_sh = a.mask.sh, p.m_sq = a.mask.sl, p.m_sk = a.mask.sk;
  }
  p.num_splits = (int)a.num_splits;
  p.o_accum = a.o_accum, p.lse_accum = a.lse_accum;
  p.scale = (float)a.scale;
  p.scale_log2 = (float)(a.scale * 1.4426950408889634);
  p.softcap = (float)a.softcap;
  p.window_left = mlx_attn_common::window_side(a.window_left);
  p.window_right = fold_causal(a.causal != 0, mlx_attn_common::window_side(a.window_right));
  p.cu_seqlens_q = a.cu_seqlens_q, p.cu_seqlens_k = a.cu_seqlens_k, p.total_q = (int)a.total_q;
  return p;
}

static int fail(const std::exception& e, char* err, int len) {
  snprintf(err, (size_t)len, "%s", e.what());
  return 1;
}

extern "C" {
__attribute__((visibility("default"))) void emu_plan(const EmuAttn* a, int64_t* config, int64_t* splits) {
  const FwdParams p = fwd_params(*a);
  const TileSizes t = tile_sizes(head_dim_bucket(p.d, p.dv));
  const Plan pl = make_plan(p, (int)a->num_sms, t.prefill_m, t.decode_m, t.decode_n);
  *config = pl.config;
  *splits = pl.num_splits;
}

// The varlen planner on shapes alone (a->b sequences, a->lq / a->lk the longest lengths), as
// binding_varlen.cpp's plan_varlen: the tiles only, never a split.
__attribute__((visibility("default"))) void emu_plan_varlen(const EmuAttn* a, int64_t* config) {
  const FwdParams p = fwd_params(*a);
  const TileSizes t = tile_sizes(head_dim_bucket(p.d, p.dv));
  *config = make_plan_varlen(p, (int)a->num_sms, t.prefill_m, t.decode_m).config;
}

// launch_dims.cuh's table (the bridge's launch_dims()): rows, threads, smem of the prefill,
// decode, combine, bwd_dq, bwd_dkdv and bwd_convert kernels, 18 ints.
__attribute__((visibility("default"))) void emu_launch_dims(int64_t bucket, int* out) {
  const LaunchDims ld = launch_dims_table((int)bucket);
  const KernelDims* ks[] = {&ld.prefill, &ld.decode, &ld.combine, &ld.bwd_dq, &ld.bwd_dkdv, &ld.bwd_convert};
  for (int i = 0; i < 6; ++i) out[3 * i] = ks[i]->rows, out[3 * i + 1] = ks[i]->threads, out[3 * i + 2] = ks[i]->smem;
}

__attribute__((visibility("default"))) int emu_fwd(const EmuAttn* a, char* err, int len) {
  try {
    EMU_NAME(run_fwd_, EMU_TAG, _, EMU_HDIM)(fwd_params(*a), (int)a->config, 0, nullptr);
  } catch (const std::exception& e) {
    return fail(e, err, len);
  }
  return 0;
}

__attribute__((visibility("default"))) int emu_bwd(const EmuAttn* a, char* err, int len) {
  BwdParams p;
  p.f = fwd_params(*a);
  p.dout = a->dout.data, p.do_sb = a->dout.sb, p.do_sh = a->dout.sh, p.do_sl = a->dout.sl;
  p.dlse = a->dlse;
  p.delta = a->delta;
  p.dq = a->dq.data, p.dq_sb = a->dq.sb, p.dq_sh = a->dq.sh, p.dq_sl = a->dq.sl;
  p.dk = a->dk.data, p.dk_sb = a->dk.sb, p.dk_sh = a->dk.sh, p.dk_sl = a->dk.sl;
  p.dv = a->dv.data, p.dv_sb = a->dv.sb, p.dv_sh = a->dv.sh, p.dv_sl = a->dv.sl;
  p.deterministic = a->deterministic != 0;
  p.dq_accum = a->dq_accum;
  try {
    EMU_NAME(run_bwd_, EMU_TAG, _, EMU_HDIM)(p, nullptr);
  } catch (const std::exception& e) {
    return fail(e, err, len);
  }
  return 0;
}
}
