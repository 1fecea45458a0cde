// The fused varlen entry points of mlx_attn.backends.cuda._cuda: fwd_varlen / bwd_varlen (and
// their check_*_args twins, which also take CPU arrays with allow_cpu=True), plan_varlen.
//
// Packed tensors (SPEC): q [total_q, Hq, D], k [total_k, Hkv, D], v [total_k, Hkv, Dv], out
// [total_q, Hq, Dv], cu_seqlens_q/k int32 [n + 1] on the tensors' device, lse (and delta, dlse)
// float32 [Hq, total_q].  They become one launch's FwdParams as params.h describes: the packed
// row is the seq dim, the batch strides are 0, b = n, lq / lk = max_seqlen_q / _k (the grid),
// rows = max_seqlen_q * G.  The kernels read cu_seqlens; their values (starting at 0,
// non-decreasing, ending at total, every length <= its max) are the Python side's check
// (validate.py): they live on the device, where this binding never reads.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>

#include "binding_args.h"

namespace mlx_attn_binding {

namespace {

constexpr int64_t kMaxI32 = 0x7fffffffLL;

// A packed varlen operand (q/k/v/out, dout/dq/dk/dv): [total, H, D].
void check_packed(const Array& a, const char* name) {
  check_strided(a, name, 3, "[total, H, D] (packed varlen)");
}

// cu_seqlens: int32, 1-D, n + 1 entries (n >= 1), contiguous (the kernels index it directly).
void check_cu_seqlens(const Array& a, const char* name) {
  const auto dt = a.dtype();
  if (!(dt.code == kCodeInt && dt.bits == 32 && dt.lanes == 1))
    type_error(std::string(name) + " must be int32, got " + dtype_name(a));
  if (a.ndim() != 1 || a.shape(0) < 2)
    value_error(std::string(name) + " must be 1-D with n + 1 >= 2 entries, got shape " +
                shape_str(a));
  if (a.shape(0) > 1 && a.stride(0) != 1)
    value_error(std::string(name) + " must be contiguous, got strides " + strides_str(a));
}

// The packed operand's FwdParams strides in the bhld order (batch stride 0).
void packed_strides(const Array& a, int64_t* sb, int64_t* sh, int64_t* sl) {
  *sb = 0, *sh = stride_or_0(a, 1), *sl = stride_or_0(a, 0);
}

Checked check_fwd_varlen_args(const Array& q, const Array& k, const Array& v, const Array& out,
                              const Array& lse, const Array& cu_q, const Array& cu_k,
                              int64_t max_q, int64_t max_k, bool allow_cpu) {
  Checked c;
  FwdParams& p = c.p;
  for (auto [a, name] : {std::pair<const Array*, const char*>{&q, "q"}, {&k, "k"}, {&v, "v"},
                         {&out, "out"}, {&lse, "lse"}, {&cu_q, "cu_seqlens_q"},
                         {&cu_k, "cu_seqlens_k"}})
    check_device(*a, name, allow_cpu, &c.device_type, &c.device_id, "q");
  c.dtype = check_half_dtypes(q, k, v, out);
  check_packed(q, "q");
  check_packed(k, "k");
  check_packed(v, "v");
  check_packed(out, "out");
  check_cu_seqlens(cu_q, "cu_seqlens_q");
  check_cu_seqlens(cu_k, "cu_seqlens_k");
  if (cu_k.shape(0) != cu_q.shape(0))
    value_error("cu_seqlens_k has " + std::to_string(cu_k.shape(0)) + " entries but cu_seqlens_q "
                "has " + std::to_string(cu_q.shape(0)) + "; they must describe the same sequences");
  const size_t Tq = q.shape(0), Hq = q.shape(1), D = q.shape(2);
  const size_t Tk = k.shape(0), Hkv = k.shape(1), Dv = v.shape(2);
  if (v.shape(0) != Tk || v.shape(1) != Hkv)
    value_error("v " + shape_str(v) + " must match k " + shape_str(k) + " in rows and heads");
  check_heads_and_dims(Hq, Hkv, D, k.shape(2), Dv);
  if (out.shape(0) != Tq || out.shape(1) != Hq || out.shape(2) != Dv)
    value_error("out must have shape (" + std::to_string(Tq) + ", " + std::to_string(Hq) + ", " +
                std::to_string(Dv) + "), got " + shape_str(out));
  if (Tq == 0 || Tk == 0 || Hq == 0)
    value_error("empty problem (total_q, total_k or Hq is 0): the Python side handles it");
  // The grid is sized by the maxima; a sequence longer than its max would be cut silently, so
  // the Python side checks them against the lengths.  Here: the bounds the kernels rely on.
  if (max_q < 1 || (size_t)max_q > Tq)
    value_error("max_seqlen_q must be in [1, total_q=" + std::to_string(Tq) + "], got " +
                std::to_string(max_q));
  if (max_k < 0 || (size_t)max_k > Tk)
    value_error("max_seqlen_k must be in [0, total_k=" + std::to_string(Tk) + "], got " +
                std::to_string(max_k));
  const size_t group = Hq / Hkv, n = cu_q.shape(0) - 1;
  if ((size_t)max_q * group > (size_t)kMaxI32 || Tq > (size_t)kMaxI32 ||
      Tk > (size_t)kMaxI32 || Hq * Tq > (size_t)kMaxI32 || n * Hq > (size_t)kMaxI32)
    value_error("problem too large for 32-bit row indices (max_seqlen_q * Hq/Hkv, total_q, "
                "total_k, Hq * total_q and n * Hq must be < 2^31)");
  check_f32_contiguous(lse, "lse", {Hq, Tq});

  p.q = q.data(), p.k = k.data(), p.v = v.data();
  p.out = const_cast<void*>(out.data());
  p.lse = static_cast<float*>(const_cast<void*>(lse.data()));
  packed_strides(q, &p.q_sb, &p.q_sh, &p.q_sl);
  packed_strides(k, &p.k_sb, &p.k_sh, &p.k_sl);
  packed_strides(v, &p.v_sb, &p.v_sh, &p.v_sl);
  packed_strides(out, &p.o_sb, &p.o_sh, &p.o_sl);
  p.b = (int)n, p.hq = (int)Hq, p.hkv = (int)Hkv, p.group = (int)group;
  p.lq = (int)max_q, p.lk = (int)max_k, p.d = (int)D, p.dv = (int)Dv;
  p.rows = (int)(max_q * group);
  p.cu_seqlens_q = static_cast<const int*>(cu_q.data());
  p.cu_seqlens_k = static_cast<const int*>(cu_k.data());
  p.total_q = (int)Tq;
  p.num_splits = 1;
  return c;
}

Checked check_bwd_varlen_args(BwdParams& bp, const Array& dout, const Array& q, const Array& k,
                              const Array& v, const Array& out, const Array& lse,
                              const std::optional<Array>& dlse, const Array& cu_q,
                              const Array& cu_k, int64_t max_q, int64_t max_k,
                              const Array& delta, const Array& dq, const Array& dk,
                              const Array& dv, const std::optional<Array>& dq_accum,
                              bool deterministic, bool allow_cpu) {
  Checked c = check_fwd_varlen_args(q, k, v, out, lse, cu_q, cu_k, max_q, max_k, allow_cpu);
  check_grad_tensors(c, q, k, v, out, dout, delta, dlse, dq, dk, dv, allow_cpu, check_packed);
  const FwdParams& f = c.p;
  const std::vector<size_t> rows = {(size_t)f.hq, (size_t)f.total_q};
  check_f32_contiguous(delta, "delta", rows);
  if (dlse) check_f32_contiguous(*dlse, "dlse", rows);
  bp.deterministic = deterministic;
  bp.dq_accum = check_dq_accum(dq_accum, deterministic, (size_t)f.hq * f.total_q, (size_t)f.d,
                               allow_cpu, c);
  bp.dout = dout.data();
  packed_strides(dout, &bp.do_sb, &bp.do_sh, &bp.do_sl);
  bp.dlse = dlse ? static_cast<const float*>(dlse->data()) : nullptr;
  bp.delta = static_cast<float*>(const_cast<void*>(delta.data()));
  bp.dq = const_cast<void*>(dq.data());
  packed_strides(dq, &bp.dq_sb, &bp.dq_sh, &bp.dq_sl);
  bp.dk = const_cast<void*>(dk.data());
  packed_strides(dk, &bp.dk_sb, &bp.dk_sh, &bp.dk_sl);
  bp.dv = const_cast<void*>(dv.data());
  packed_strides(dv, &bp.dv_sb, &bp.dv_sh, &bp.dv_sl);
  return c;
}

nb::dict varlen_dict(const Checked& c) {
  nb::dict d = params_dict(c);
  d["num_seqs"] = c.p.b;
  d["total_q"] = c.p.total_q;
  d["max_seqlen_q"] = c.p.lq;
  d["max_seqlen_k"] = c.p.lk;
  return d;
}

}  // namespace

void register_varlen(nb::module_& m) {
  m.def(
      "check_fwd_varlen_args",
      [](const Array& q, const Array& k, const Array& v, const Array& out, const Array& lse,
         const Array& cu_seqlens_q, const Array& cu_seqlens_k, int64_t max_seqlen_q,
         int64_t max_seqlen_k, double scale, bool causal, int64_t window_left,
         int64_t window_right, double softcap, bool allow_cpu) {
        Checked c = check_fwd_varlen_args(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k,
                                          max_seqlen_q, max_seqlen_k, allow_cpu);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        return varlen_dict(c);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"), nb::arg("max_seqlen_q"),
      nb::arg("max_seqlen_k"), nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"),
      nb::arg("window_right"), nb::arg("softcap"), nb::arg("allow_cpu") = false,
      "Check the arguments of fwd_varlen() (also on CPU arrays with allow_cpu=True) and return "
      "the launch parameters they give.");

  m.def(
      "fwd_varlen",
      [](const Array& q, const Array& k, const Array& v, const Array& out, const Array& lse,
         const Array& cu_seqlens_q, const Array& cu_seqlens_k, int64_t max_seqlen_q,
         int64_t max_seqlen_k, double scale, bool causal, int64_t window_left,
         int64_t window_right, double softcap, int config, uintptr_t stream) {
        Checked c = check_fwd_varlen_args(q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k,
                                          max_seqlen_q, max_seqlen_k, false);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        check_config(config);
        require_sm80(c.device_id);
        nb::gil_scoped_release release;
        run_fwd(c.p, c.dtype, config, c.device_id, stream);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"), nb::arg("max_seqlen_q"),
      nb::arg("max_seqlen_k"), nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"),
      nb::arg("window_right"), nb::arg("softcap"), nb::arg("config"), nb::arg("stream"),
      "Fused varlen forward, one launch for all sequences: out [total_q, Hq, Dv] and lse "
      "float32 [Hq, total_q] on `stream`.  config 0 = prefill tiles, 1 = 64-row tiles (never "
      "split); empty sequences give zeros and lse -inf.");

  m.def(
      "check_bwd_varlen_args",
      [](const Array& dout, const Array& q, const Array& k, const Array& v, const Array& out,
         const Array& lse, std::optional<Array> dlse, const Array& cu_seqlens_q,
         const Array& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
         const Array& delta, const Array& dq, const Array& dk, const Array& dv,
         std::optional<Array> dq_accum, bool deterministic, double scale, bool causal,
         int64_t window_left, int64_t window_right, double softcap, bool allow_cpu) {
        BwdParams bp;
        Checked c = check_bwd_varlen_args(bp, dout, q, k, v, out, lse, dlse, cu_seqlens_q,
                                          cu_seqlens_k, max_seqlen_q, max_seqlen_k, delta, dq,
                                          dk, dv, dq_accum, deterministic, allow_cpu);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        nb::dict d = varlen_dict(c);
        d["has_dlse"] = bp.dlse != nullptr;
        d["deterministic"] = bp.deterministic;
        d["has_dq_accum"] = bp.dq_accum != nullptr;
        return d;
      },
      nb::arg("dout"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("dlse").none(), nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"),
      nb::arg("max_seqlen_q"), nb::arg("max_seqlen_k"), nb::arg("delta"), nb::arg("dq"),
      nb::arg("dk"), nb::arg("dv"), nb::arg("dq_accum").none(), nb::arg("deterministic"),
      nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"), nb::arg("window_right"),
      nb::arg("softcap"), nb::arg("allow_cpu") = false,
      "Check the arguments of bwd_varlen() (also on CPU arrays with allow_cpu=True) and return "
      "the launch parameters they give.");

  m.def(
      "bwd_varlen",
      [](const Array& dout, const Array& q, const Array& k, const Array& v, const Array& out,
         const Array& lse, std::optional<Array> dlse, const Array& cu_seqlens_q,
         const Array& cu_seqlens_k, int64_t max_seqlen_q, int64_t max_seqlen_k,
         const Array& delta, const Array& dq, const Array& dk, const Array& dv,
         std::optional<Array> dq_accum, bool deterministic, double scale, bool causal,
         int64_t window_left, int64_t window_right, double softcap, uintptr_t stream) {
        BwdParams bp;
        Checked c = check_bwd_varlen_args(bp, dout, q, k, v, out, lse, dlse, cu_seqlens_q,
                                          cu_seqlens_k, max_seqlen_q, max_seqlen_k, delta, dq,
                                          dk, dv, dq_accum, deterministic, false);
        set_scalars(c.p, scale, causal, window_left, window_right, softcap);
        require_sm80(c.device_id);
        bp.f = c.p;
        nb::gil_scoped_release release;
        run_bwd(bp, c.dtype, c.device_id, stream);
      },
      nb::arg("dout"), nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("out"), nb::arg("lse"),
      nb::arg("dlse").none(), nb::arg("cu_seqlens_q"), nb::arg("cu_seqlens_k"),
      nb::arg("max_seqlen_q"), nb::arg("max_seqlen_k"), nb::arg("delta"), nb::arg("dq"),
      nb::arg("dk"), nb::arg("dv"), nb::arg("dq_accum").none(), nb::arg("deterministic"),
      nb::arg("scale"), nb::arg("causal"), nb::arg("window_left"), nb::arg("window_right"),
      nb::arg("softcap"), nb::arg("stream"),
      "Fused varlen backward: dq, dk, dv packed like q, k, v; delta float32 [Hq, total_q] is "
      "workspace; dq_accum float32 [Hq * total_q, D] unless deterministic.");

  m.def(
      "plan_varlen",
      [](int num_seqs, int Hq, int Hkv, int max_seqlen_q, int max_seqlen_k, int D, int Dv,
         bool causal, int64_t window_left, int64_t window_right, int device) {
        if (Hkv <= 0 || Hq % Hkv != 0) value_error("plan_varlen: Hq must be a multiple of Hkv");
        FwdParams p;
        p.b = num_seqs, p.hq = Hq, p.hkv = Hkv, p.group = Hq / Hkv;
        p.lq = max_seqlen_q, p.lk = max_seqlen_k, p.d = D, p.dv = Dv;
        p.rows = max_seqlen_q * p.group;
        p.window_left = mlx_attn_common::window_side(window_left);
        p.window_right = fold_causal(causal, mlx_attn_common::window_side(window_right));
        const PlanResult r = plan_with_override(p, device, true);
        return nb::make_tuple(r.config, r.num_splits);
      },
      nb::arg("num_seqs"), nb::arg("Hq"), nb::arg("Hkv"), nb::arg("max_seqlen_q"),
      nb::arg("max_seqlen_k"), nb::arg("D"), nb::arg("Dv"), nb::arg("causal"),
      nb::arg("window_left"), nb::arg("window_right"), nb::arg("device"),
      "(config, 1) for a fused varlen launch on `device`: the tiles (0 prefill, 1 64-row), "
      "never a KV split.  Honours the plan override's config (its split count does not apply).");
}

}  // namespace mlx_attn_binding
