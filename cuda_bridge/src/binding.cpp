// mlx_attn.backends.cuda._cuda: the nanobind module over the CUDA kernel library.
//
// Tensors arrive through DLPack as nb::ndarray (torch tensors, detached by the Python side);
// no libtorch is linked.  Outputs are allocated by the caller (torch.empty, so torch's caching
// allocator is used) and passed in.  The stream is the caller's current torch stream, passed
// as an integer.  Every argument is checked here with an error that names it; the checks also
// run on CPU arrays (check_fwd_args(..., allow_cpu=True)) so they are tested without a GPU.
// Shared checks: binding_args.h; the fused varlen entry points: binding_varlen.cpp.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdlib>
#include <mutex>

#include "binding_args.h"

namespace nb = nanobind;
using namespace mlx_attn_cuda;
using namespace mlx_attn_binding;

namespace {

Checked check_fwd_args(const Array& q, const Array& k, const Array& v, const Array& out,
                       const Array& lse, const std::optional<Array>& mask,
                       const std::optional<Array>& o_accum, const std::optional<Array>& lse_accum,
                       int num_splits, bool allow_cpu) {
  Checked c;
  FwdParams& p = c.p;
  check_device(q, "q", allow_cpu, &c.device_type, &c.device_id, "q");
  check_device(k, "k", allow_cpu, &c.device_type, &c.device_id, "q");
  check_device(v, "v", allow_cpu, &c.device_type, &c.device_id, "q");
  check_device(out, "out", allow_cpu, &c.device_type, &c.device_id, "q");
  check_device(lse, "lse", allow_cpu, &c.device_type, &c.device_id, "q");
  if (mask) check_device(*mask, "mask", allow_cpu, &c.device_type, &c.device_id, "q");
  if (o_accum) check_device(*o_accum, "o_accum", allow_cpu, &c.device_type, &c.device_id, "q");
  if (lse_accum)
    check_device(*lse_accum, "lse_accum", allow_cpu, &c.device_type, &c.device_id, "q");

  c.dtype = check_half_dtypes(q, k, v, out);

  check_operand(q, "q");
  check_operand(k, "k");
  check_operand(v, "v");
  check_operand(out, "out");
  const size_t B = q.shape(0), Hq = q.shape(1), Lq = q.shape(2), D = q.shape(3);
  const size_t Hkv = k.shape(1), Lk = k.shape(2), Dv = v.shape(3);
  if (k.shape(0) != B || v.shape(0) != B)
    value_error("batch sizes differ: q " + shape_str(q) + ", k " + shape_str(k) + ", v " +
                shape_str(v));
  if (v.shape(1) != Hkv || v.shape(2) != Lk)
    value_error("v " + shape_str(v) + " must match k " + shape_str(k) + " in heads and keys");
  check_heads_and_dims(Hq, Hkv, D, k.shape(3), Dv);
  if (out.shape(0) != B || out.shape(1) != Hq || out.shape(2) != Lq || out.shape(3) != Dv)
    value_error("out must have shape (" + std::to_string(B) + ", " + std::to_string(Hq) + ", " +
                std::to_string(Lq) + ", " + std::to_string(Dv) + "), got " + shape_str(out));
  if (B == 0 || Hq == 0 || Lq == 0 || Lk == 0)
    value_error("empty problem (B, Hq, Lq or Lk is 0): the Python side handles it");
  const size_t group = Hq / Hkv;
  if (Lq * group > 0x7fffffffULL || Lk > 0x7fffffffULL || B * Hq > 0x7fffffffULL)
    value_error("problem too large for 32-bit row indices (Lq * Hq/Hkv, Lk and B * Hq must be "
                "< 2^31)");
  check_f32_contiguous(lse, "lse", {B, Hq, Lq});

  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.out = const_cast<void*>(out.data());
  p.lse = static_cast<float*>(const_cast<void*>(lse.data()));
  p.q_sb = stride_or_0(q, 0), p.q_sh = stride_or_0(q, 1), p.q_sl = stride_or_0(q, 2);
  p.k_sb = stride_or_0(k, 0), p.k_sh = stride_or_0(k, 1), p.k_sl = stride_or_0(k, 2);
  p.v_sb = stride_or_0(v, 0), p.v_sh = stride_or_0(v, 1), p.v_sl = stride_or_0(v, 2);
  p.o_sb = stride_or_0(out, 0), p.o_sh = stride_or_0(out, 1), p.o_sl = stride_or_0(out, 2);
  p.b = (int)B, p.hq = (int)Hq, p.hkv = (int)Hkv, p.group = (int)group;
  p.lq = (int)Lq, p.lk = (int)Lk, p.d = (int)D, p.dv = (int)Dv;
  p.rows = (int)(Lq * group);

  if (mask) {
    const Array& m = *mask;
    if (m.ndim() != 4)
      value_error("mask must have rank 4, broadcastable to [B, Hq, Lq, Lk], got shape " +
                  shape_str(m));
    const size_t target[4] = {B, Hq, Lq, Lk};
    for (size_t i = 0; i < 4; ++i)
      if (m.shape(i) != 1 && m.shape(i) != target[i])
        value_error("mask of shape " + shape_str(m) + " is not broadcastable to [B, Hq, Lq, Lk] = [" +
                    std::to_string(B) + ", " + std::to_string(Hq) + ", " + std::to_string(Lq) +
                    ", " + std::to_string(Lk) + "]");
    const auto dt = m.dtype();
    if (dt.lanes != 1) type_error("mask must be a scalar dtype");
    if (dt.code == kCodeBool && dt.bits == 8)
      p.mask_type = kMaskBool;
    else if (dt.code == kCodeFloat && dt.bits == 32)
      p.mask_type = kMaskF32;
    else if (dt.code == kCodeFloat && dt.bits == 16)
      p.mask_type = kMaskF16;
    else if (dt.code == kCodeBfloat && dt.bits == 16)
      p.mask_type = kMaskBF16;
    else
      type_error("mask must be bool, float16, bfloat16 or float32, got " + dtype_name(m));
    p.mask = m.data();
    p.m_sb = stride_or_0(m, 0), p.m_sh = stride_or_0(m, 1);
    p.m_sq = stride_or_0(m, 2), p.m_sk = stride_or_0(m, 3);
  }

  if (num_splits < 1 || num_splits > 128)
    value_error("num_splits must be in [1, 128], got " + std::to_string(num_splits));
  p.num_splits = num_splits;
  if (num_splits > 1) {
    if (!o_accum || !lse_accum)
      value_error("num_splits > 1 needs the o_accum and lse_accum workspaces");
    check_f32_contiguous(*o_accum, "o_accum", {(size_t)num_splits, B, Hq, Lq, Dv});
    check_f32_contiguous(*lse_accum, "lse_accum", {(size_t)num_splits, B, Hq, Lq});
    p.o_accum = static_cast<float*>(const_cast<void*>(o_accum->data()));
    p.lse_accum = static_cast<float*>(const_cast<void*>(lse_accum->data()));
  }
  return c;
}

// The backward's extra tensors, on top of the forward's checks (which cover q, k, v, out, lse
// and mask): dout like out, dq/dk/dv like q/k/v, delta (and dlse if given) like lse, dq_accum.
Checked check_bwd_args(BwdParams& bp, const Array& dout, const Array& q, const Array& k,
                       const Array& v, const Array& out, const Array& lse,
                       const std::optional<Array>& dlse, const std::optional<Array>& mask,
                       const Array& delta, const Array& dq, const Array& dk, const Array& dv,
                       const std::optional<Array>& dq_accum, bool deterministic, bool allow_cpu) {
  Checked c = check_fwd_args(q, k, v, out, lse, mask, std::nullopt, std::nullopt, 1, allow_cpu);
  check_grad_tensors(c, q, k, v, out, dout, delta, dlse, dq, dk, dv, allow_cpu, check_operand);
  const FwdParams& f = c.p;
  const std::vector<size_t> rows = {(size_t)f.b, (size_t)f.hq, (size_t)f.lq};
  check_f32_contiguous(delta, "delta", rows);
  if (dlse) check_f32_contiguous(*dlse, "dlse", rows);
  bp.deterministic = deterministic;
  bp.dq_accum = check_dq_accum(dq_accum, deterministic, (size_t)f.b * f.hq * f.lq, (size_t)f.d,
                               allow_cpu, c);

  bp.dout = dout.data();
  bp.do_sb = stride_or_0(dout, 0), bp.do_sh = stride_or_0(dout, 1), bp.do_sl = stride_or_0(dout, 2);
  bp.dlse = dlse ? static_cast<const float*>(dlse->data()) : nullptr;
  bp.delta = static_cast<float*>(const_cast<void*>(delta.data()));
  bp.dq = const_cast<void*>(dq.data());
  bp.dq_sb = stride_or_0(dq, 0), bp.dq_sh = stride_or_0(dq, 1), bp.dq_sl = stride_or_0(dq, 2);
  bp.dk = const_cast<void*>(dk.data());
  bp.dk_sb = stride_or_0(dk, 0), bp.dk_sh = stride_or_0(dk, 1), bp.dk_sl = stride_or_0(dk, 2);
  bp.dv = const_cast<void*>(dv.data());
  bp.dv_sb = stride_or_0(dv, 0), bp.dv_sh = stride_or_0(dv, 1), bp.dv_sl = stride_or_0(dv, 2);
  return c;
}

// ---- forced planner choice ---------------------------------------------------------------
// The planner sends small problems to the decode tiles, so tests on small shapes would never run
// the prefill kernels (128-row tiles, two m16 tiles per warp, the 8-warp D=192 kernel) nor a
// chosen split count.  An override forces them: from the environment, read once at the first
// plan() (MLX_ATTN_CUDA_CONFIG=prefill|decode|auto, MLX_ATTN_CUDA_SPLITS=<1..128>; SPLITS alone
// implies decode), or from set_plan_override(), which replaces it for the rest of the process.
struct PlanOverride {
  int config = -1;  // -1: the planner's; kPrefill / kDecode: forced
  int splits = 0;   // 0: the planner's (decode_splits when decode is forced); else forced
  std::string error;  // a bad environment value: every plan() raises it
};

std::mutex g_override_mutex;
bool g_override_loaded = false;
PlanOverride g_override;

std::string check_override(int config, int splits) {
  if (config < -1 || config > 1)
    return "config must be -1 (planner), 0 (prefill) or 1 (decode), got " + std::to_string(config);
  if (splits < 0 || splits > 128)
    return "splits must be 0 (planner) or in [1, 128], got " + std::to_string(splits);
  if (config == kPrefill && splits > 1)
    return "the prefill configuration takes 1 split, got " + std::to_string(splits);
  return "";
}

PlanOverride override_from_env() {
  PlanOverride o;
  const char* cfg = std::getenv("MLX_ATTN_CUDA_CONFIG");
  const char* spl = std::getenv("MLX_ATTN_CUDA_SPLITS");
  const std::string c = cfg ? cfg : "", n = spl ? spl : "";
  if (c == "prefill" || c == "0") {
    o.config = kPrefill;
  } else if (c == "decode" || c == "1") {
    o.config = kDecode;
  } else if (!(c.empty() || c == "auto")) {
    o.error = "MLX_ATTN_CUDA_CONFIG='" + c + "': allowed are prefill, decode, auto (or unset)";
    return o;
  }
  if (!n.empty()) {
    char* end = nullptr;
    const long v = std::strtol(n.c_str(), &end, 10);
    if (*end != '\0' || v < 1 || v > 128) {
      o.error = "MLX_ATTN_CUDA_SPLITS='" + n + "': allowed is an integer in [1, 128] (or unset)";
      return o;
    }
    o.splits = (int)v;
    if (o.config < 0 && v > 1) o.config = kDecode;
  }
  const std::string bad = check_override(o.config, o.splits);
  if (!bad.empty()) o.error = "MLX_ATTN_CUDA_CONFIG / MLX_ATTN_CUDA_SPLITS: " + bad;
  return o;
}

// The override in force (the environment's until set), replaced by *next when given.
PlanOverride current_override(const PlanOverride* next = nullptr) {
  std::lock_guard<std::mutex> lock(g_override_mutex);
  if (!g_override_loaded) g_override = override_from_env();
  g_override_loaded = true;
  const PlanOverride before = g_override;
  if (next) g_override = *next;
  return before;
}

}  // namespace

namespace mlx_attn_binding {

PlanResult plan_with_override(const FwdParams& p, int device, bool varlen) {
  const PlanOverride o = current_override();
  if (!o.error.empty()) value_error(o.error);
  PlanResult r = varlen ? plan_varlen(p, device) : plan(p, device);
  if (o.config == kPrefill) {
    r.config = kPrefill;
    r.num_splits = 1;
  } else if (o.config == kDecode) {
    if (varlen) {  // forced tiles, never a split (the combine is dense-only)
      r.config = kDecode;
      r.num_splits = 1;
    } else {
      if (r.config != kDecode) {  // the planner's split count for these decode tiles
        DeviceInfo info;
        const int sms = device_info(device, &info, nullptr) && info.sms > 0 ? info.sms : 108;
        const TileSizes t = tile_sizes(head_dim_bucket(p.d, p.dv));
        r.config = kDecode;
        r.num_splits = decode_splits(p, sms, t.decode_m, t.decode_n);
      }
      if (o.splits > 0) r.num_splits = o.splits;
    }
  }
  return r;
}

}  // namespace mlx_attn_binding

NB_MODULE(_cuda, m) {
  m.doc() = "mlx_attn CUDA bridge: FlashAttention-2-class forward and backward kernels (fp16/bf16, sm_80+)";
  register_varlen(m);

  m.def(
      "check_fwd_args",
      [](const Array& q, const Array& k, const Array& v, const Array& out, const Array& lse,
         std::optional<Array> mask, std::optional<Array> o_accum, std::optional<Array> lse_accum,
         int num_splits, double scale, bool causal, int64_t window_left, int64_t window_right,
         double softcap, bool allow_cpu) {
        Checked c = check_fwd_args(q, k, v, out, lse, mask, o_accum, lse_accum, num_splits,
                                   allow_cpu);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        return params_dict(c);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("mask").none(), nb::arg("o_accum").none(), nb::arg("lse_accum").none(),
      nb::arg("num_splits"), nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"),
      nb::arg("window_right"), nb::arg("softcap"), nb::arg("allow_cpu") = false,
      "Check the arguments of fwd() (also on CPU arrays with allow_cpu=True) and return the "
      "launch parameters they give.");

  m.def(
      "fwd",
      [](const Array& q, const Array& k, const Array& v, const Array& out, const Array& lse,
         std::optional<Array> mask, std::optional<Array> o_accum, std::optional<Array> lse_accum,
         int num_splits, double scale, bool causal, int64_t window_left, int64_t window_right,
         double softcap, int config, uintptr_t stream) {
        Checked c = check_fwd_args(q, k, v, out, lse, mask, o_accum, lse_accum, num_splits,
                                   false);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        check_config(config);
        if (config == kPrefill && num_splits != 1)
          value_error("the prefill configuration takes num_splits == 1");
        require_sm80(c.device_id);
        nb::gil_scoped_release release;
        run_fwd(c.p, c.dtype, config, c.device_id, stream);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("mask").none(), nb::arg("o_accum").none(), nb::arg("lse_accum").none(),
      nb::arg("num_splits"), nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"),
      nb::arg("window_right"), nb::arg("softcap"), nb::arg("config"), nb::arg("stream"),
      "Attention forward into out [B, Hq, Lq, Dv] and lse float32 [B, Hq, Lq] on `stream` "
      "(an integer cudaStream_t).  With num_splits > 1 (config 1 only) o_accum float32 "
      "[S, B, Hq, Lq, Dv] and lse_accum float32 [S, B, Hq, Lq] are the split-KV workspace.");

  m.def(
      "check_bwd_args",
      [](const Array& dout, const Array& q, const Array& k, const Array& v, const Array& out,
         const Array& lse, std::optional<Array> dlse, std::optional<Array> mask,
         const Array& delta, const Array& dq, const Array& dk, const Array& dv,
         std::optional<Array> dq_accum, bool deterministic, double scale, bool causal,
         int64_t window_left, int64_t window_right, double softcap, bool allow_cpu) {
        BwdParams bp;
        Checked c = check_bwd_args(bp, dout, q, k, v, out, lse, dlse, mask, delta, dq, dk, dv,
                                   dq_accum, deterministic, allow_cpu);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        nb::dict d = params_dict(c);
        d["dout_strides"] = nb::make_tuple(bp.do_sb, bp.do_sh, bp.do_sl);
        d["dq_strides"] = nb::make_tuple(bp.dq_sb, bp.dq_sh, bp.dq_sl);
        d["dk_strides"] = nb::make_tuple(bp.dk_sb, bp.dk_sh, bp.dk_sl);
        d["dv_strides"] = nb::make_tuple(bp.dv_sb, bp.dv_sh, bp.dv_sl);
        d["has_dlse"] = bp.dlse != nullptr;
        d["deterministic"] = bp.deterministic;
        d["has_dq_accum"] = bp.dq_accum != nullptr;
        return d;
      },
      nb::arg("dout"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("dlse").none(), nb::arg("mask").none(), nb::arg("delta"), nb::arg("dq"),
      nb::arg("dk"), nb::arg("dv"), nb::arg("dq_accum").none(), nb::arg("deterministic"),
      nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"),
      nb::arg("window_right"), nb::arg("softcap"), nb::arg("allow_cpu") = false,
      "Check the arguments of bwd() (also on CPU arrays with allow_cpu=True) and return the "
      "launch parameters they give.");

  m.def(
      "bwd",
      [](const Array& dout, const Array& q, const Array& k, const Array& v, const Array& out,
         const Array& lse, std::optional<Array> dlse, std::optional<Array> mask,
         const Array& delta, const Array& dq, const Array& dk, const Array& dv,
         std::optional<Array> dq_accum, bool deterministic, double scale, bool causal,
         int64_t window_left, int64_t window_right, double softcap, uintptr_t stream) {
        BwdParams bp;
        Checked c = check_bwd_args(bp, dout, q, k, v, out, lse, dlse, mask, delta, dq, dk, dv,
                                   dq_accum, deterministic, false);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        require_sm80(c.device_id);
        bp.f = c.p;
        nb::gil_scoped_release release;
        run_bwd(bp, c.dtype, c.device_id, stream);
      },
      nb::arg("dout"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("dlse").none(), nb::arg("mask").none(), nb::arg("delta"), nb::arg("dq"),
      nb::arg("dk"), nb::arg("dv"), nb::arg("dq_accum").none(), nb::arg("deterministic"),
      nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"), nb::arg("window_right"),
      nb::arg("softcap"), nb::arg("stream"),
      "Attention backward: dq, dk, dv (shaped like q, k, v, q's dtype) from dout, the forward's "
      "out and lse, and optionally dlse; delta float32 [B, Hq, Lq] is workspace.  "
      "deterministic: no float atomics (same bits every run); otherwise dq_accum float32 "
      "[B * Hq * Lq, D] (contiguous) is the dQ accumulation workspace.");

  m.def(
      "plan",
      [](int B, int Hq, int Hkv, int Lq, int Lk, int D, int Dv, bool causal, int64_t window_left,
         int64_t window_right, int device) {
        if (Hkv <= 0 || Hq % Hkv != 0) value_error("plan: Hq must be a multiple of Hkv");
        FwdParams p;
        p.b = B, p.hq = Hq, p.hkv = Hkv, p.group = Hq / Hkv, p.lq = Lq, p.lk = Lk;
        p.d = D, p.dv = Dv, p.rows = Lq * p.group;
        p.window_left = mlx_attn_common::window_side(window_left);
        p.window_right = fold_causal(causal, mlx_attn_common::window_side(window_right));
        const PlanResult r = plan_with_override(p, device, false);
        return nb::make_tuple(r.config, r.num_splits);
      },
      nb::arg("B"), nb::arg("Hq"), nb::arg("Hkv"), nb::arg("Lq"), nb::arg("Lk"), nb::arg("D"),
      nb::arg("Dv"), nb::arg("causal"), nb::arg("window_left"), nb::arg("window_right"),
      nb::arg("device"),
      "(config, num_splits) for a problem on `device`: config 0 = prefill tiles, 1 = 64-row "
      "tiles with the key range split num_splits ways (split-KV).  Honours the override "
      "(plan_override).");

  m.def(
      "set_plan_override",
      [](int config, int splits) {
        const std::string bad = check_override(config, splits);
        if (!bad.empty()) value_error("set_plan_override: " + bad);
        const PlanOverride next{config, splits, ""};
        const PlanOverride before = current_override(&next);
        return nb::make_tuple(before.config, before.splits);
      },
      nb::arg("config") = -1, nb::arg("splits") = 0,
      "Force plan() for this process (tests, benchmarks): config -1 (planner), 0 (prefill) or "
      "1 (decode); splits 0 (planner) or 1..128.  Replaces MLX_ATTN_CUDA_CONFIG / _SPLITS; "
      "returns the previous (config, splits).");

  m.def(
      "plan_override",
      []() {
        const PlanOverride o = current_override();
        if (!o.error.empty()) value_error(o.error);
        return nb::make_tuple(o.config, o.splits);
      },
      "The forced (config, splits), (-1, 0) when the planner decides; raises ValueError if the "
      "environment's MLX_ATTN_CUDA_CONFIG / MLX_ATTN_CUDA_SPLITS is malformed.");

  m.def(
      "device_count",
      []() {
        std::string err;
        const int n = device_count(&err);
        return nb::make_tuple(n, err);
      },
      "(number of CUDA devices, error text if 0).  Never raises (no driver -> 0).");

  m.def(
      "device_info",
      [](int device) -> nb::object {
        DeviceInfo info;
        std::string err;
        if (!device_info(device, &info, &err)) return nb::str(err.c_str());
        nb::dict d;
        d["name"] = info.name;
        d["capability"] = nb::make_tuple(info.major, info.minor);
        d["sms"] = info.sms;
        d["smem_optin"] = info.smem_optin;
        return d;
      },
      nb::arg("device"), "Device properties as a dict, or the CUDA error text as a str.");

  m.def("kernel_image_error", &kernel_image_error, nb::arg("device"),
        "'' if this build has kernels the device can run, else why not.");
  m.def("head_dims", &built_head_dims, "Head-dim buckets compiled into this build.");
  m.def("archs", &built_archs, "CUDA architectures this build was compiled for.");
  m.def(
      "launch_dims",
      [](int bucket) {
        const LaunchDims ld = launch_dims(bucket);
        nb::dict d;
        const std::pair<const char*, const KernelDims*> kernels[] = {
            {"prefill", &ld.prefill}, {"decode", &ld.decode}, {"combine", &ld.combine},
            {"bwd_dq", &ld.bwd_dq},   {"bwd_dkdv", &ld.bwd_dkdv}, {"bwd_convert", &ld.bwd_convert}};
        for (const auto& [name, k] : kernels) d[name] = nb::make_tuple(k->rows, k->threads, k->smem);
        return d;
      },
      nb::arg("bucket"),
      "{kernel: (rows per CTA, threads per CTA, dynamic shared memory bytes)} of head-dim bucket "
      "`bucket` (launch_dims.cuh), for the MLX launcher.");
  m.def(
      "head_dim_bucket", [](int d, int dv) -> int { return mlx_attn_cuda::head_dim_bucket(d, dv); }, nb::arg("d"),
      nb::arg("dv"), "The kernel bucket (32..256) serving head dims d and dv, 0 if none.");
}
