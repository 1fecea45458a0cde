// The binding's argument checks and helpers shared by its translation units (binding.cpp:
// dense entry points, binding_varlen.cpp: the fused varlen ones).  Every error names the
// argument, what it got and what is allowed.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "mlx_attn_cuda/api.h"
#include "mlx_attn_cuda/blocks.h"
#include "mlx_attn_cuda/params.h"
#include "mlx_attn_cuda/traits.h"

namespace mlx_attn_binding {

namespace nb = nanobind;
using namespace mlx_attn_cuda;

using Array = nb::ndarray<nb::ro>;

constexpr int kDLCPU = 1, kDLCUDA = 2;
constexpr uint8_t kCodeInt = 0, kCodeUInt = 1, kCodeFloat = 2, kCodeBfloat = 4, kCodeBool = 6;

inline std::string dtype_name(const Array& a) {
  const auto dt = a.dtype();
  std::string base;
  switch (dt.code) {
    case kCodeInt: base = "int"; break;
    case kCodeUInt: base = "uint"; break;
    case kCodeFloat: base = "float"; break;
    case kCodeBfloat: base = "bfloat"; break;
    case kCodeBool: return "bool";
    default: base = "code" + std::to_string(dt.code) + "_"; break;
  }
  return base + std::to_string(dt.bits);
}

inline std::string shape_str(const Array& a) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  if (a.ndim() == 1) s << ",";
  s << ")";
  return s.str();
}

inline std::string strides_str(const Array& a) {
  std::ostringstream s;
  s << "(";
  for (size_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.stride(i);
  s << ")";
  return s.str();
}

[[noreturn]] inline void value_error(const std::string& msg) { throw nb::value_error(msg.c_str()); }
[[noreturn]] inline void type_error(const std::string& msg) { throw nb::type_error(msg.c_str()); }

inline bool is_half_like(const Array& a) {
  const auto dt = a.dtype();
  return dt.lanes == 1 && dt.bits == 16 && (dt.code == kCodeFloat || dt.code == kCodeBfloat);
}

// Stride of dim i in elements, 0 for a dim of size 1 (its stride never matters).
inline int64_t stride_or_0(const Array& a, size_t i) { return a.shape(i) == 1 ? 0 : a.stride(i); }

inline void check_device(const Array& a, const char* name, bool allow_cpu, int* device_type,
                  int* device_id, const char* first) {
  const int type = a.device_type();
  if (type != kDLCUDA && !(allow_cpu && type == kDLCPU))
    value_error(std::string(name) + " must be a CUDA tensor, got DLPack device type " +
                std::to_string(type) + (type == kDLCPU ? " (cpu)" : ""));
  if (*device_type < 0) {
    *device_type = type;
    *device_id = a.device_id();
  } else if (type != *device_type || a.device_id() != *device_id) {
    value_error(std::string(name) + " is on device " + std::to_string(type) + ":" +
                std::to_string(a.device_id()) + " but " + first + " is on " +
                std::to_string(*device_type) + ":" + std::to_string(*device_id) +
                "; all tensors must be on one device");
  }
}

// An operand the kernels read or write with cp.async / 16-byte stores: rank `rank` (`layout`
// names its dims in errors), contiguous last dim, the other strides multiples of 8 elements
// (16 bytes), base pointer 16-byte aligned.
inline void check_strided(const Array& a, const char* name, size_t rank, const char* layout) {
  if (a.ndim() != rank)
    value_error(std::string(name) + " must have rank " + std::to_string(rank) + " " + layout +
                ", got shape " + shape_str(a));
  if (a.shape(rank - 1) > 1 && a.stride(rank - 1) != 1)
    value_error(std::string(name) + " must have a contiguous last dim (stride 1), got strides " +
                strides_str(a));
  for (size_t i = 0; i + 1 < rank; ++i)
    if (stride_or_0(a, i) % 8 != 0)
      value_error(std::string(name) + " strides " + strides_str(a) +
                  " must be multiples of 8 elements (16 bytes) outside the last dim");
  if (reinterpret_cast<uintptr_t>(a.data()) % 16 != 0)
    value_error(std::string(name) + " data pointer must be 16-byte aligned");
}

// A dense operand (q/k/v/out, dout/dq/dk/dv) in the bhld index order.
inline void check_operand(const Array& a, const char* name) {
  check_strided(a, name, 4, "[B, H, L, D] (bhld order)");
}

inline void check_f32_contiguous(const Array& a, const char* name, const std::vector<size_t>& shape) {
  const auto dt = a.dtype();
  if (!(dt.code == kCodeFloat && dt.bits == 32 && dt.lanes == 1))
    type_error(std::string(name) + " must be float32, got " + dtype_name(a));
  bool ok = a.ndim() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  if (!ok) {
    std::ostringstream s;
    s << name << " must have shape (";
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << "), got " << shape_str(a);
    value_error(s.str());
  }
  int64_t expect = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] > 1 && a.stride(i) != expect)
      value_error(std::string(name) + " must be contiguous, got strides " + strides_str(a));
    expect *= (int64_t)shape[i];
  }
  if (reinterpret_cast<uintptr_t>(a.data()) % 16 != 0)
    value_error(std::string(name) + " data pointer must be 16-byte aligned");
}

// q is fp16/bf16 and k, v, out share its dtype; returns the kernels' dtype code.
inline int check_half_dtypes(const Array& q, const Array& k, const Array& v, const Array& out) {
  if (!is_half_like(q)) type_error("q must be float16 or bfloat16, got " + dtype_name(q));
  for (auto [a, name] : {std::pair<const Array*, const char*>{&k, "k"}, {&v, "v"}, {&out, "out"}})
    if (a->dtype() != q.dtype())
      type_error(std::string(name) + " has dtype " + dtype_name(*a) + " but q has " +
                 dtype_name(q) + "; they must match");
  return q.dtype().code == kCodeBfloat ? kBFloat16 : kFloat16;
}

// Head counts and head dims the kernels take: k's head dim is q's, Hq a multiple of Hkv, D and
// Dv multiples of 8 in [8, 256] (the buckets zero-pad up to 32/64/96/128/192/256).
inline void check_heads_and_dims(size_t Hq, size_t Hkv, size_t D, size_t Dk, size_t Dv) {
  if (Dk != D) value_error("k head dim " + std::to_string(Dk) + " != q's " + std::to_string(D));
  if (Hkv == 0 || Hq % Hkv != 0)
    value_error("q has " + std::to_string(Hq) + " heads, not a multiple of k's " +
                std::to_string(Hkv));
  for (auto [dim, name] : {std::pair<size_t, const char*>{D, "D"}, {Dv, "Dv"}})
    if (dim % 8 != 0 || dim > 256 || dim == 0)
      value_error(std::string("head dim ") + name + "=" + std::to_string(dim) +
                  " not supported: must be a multiple of 8 in [8, 256]");
}

struct Checked {
  FwdParams p;
  int dtype = kFloat16;
  int device_type = -1, device_id = 0;
};

// Sides arrive as any Python int (int64): a side past INT32_MAX is unbounded (window_side);
// the kernels' range arithmetic takes any side up to INT32_MAX (rules.h).
inline void set_scalars(FwdParams& p, double scale, bool causal, int64_t window_left,
                        int64_t window_right, double softcap) {
  if (!std::isfinite(scale)) value_error("scale must be finite, got " + std::to_string(scale));
  if (!(softcap >= 0.0) || !std::isfinite(softcap))
    value_error("softcap must be >= 0 (0 = off) and finite, got " + std::to_string(softcap));
  if (window_left < -1 || window_right < -1)
    value_error("window sides must be >= 0 or -1 (unbounded), got (" +
                std::to_string(window_left) + ", " + std::to_string(window_right) + ")");
  p.scale = (float)scale;
  p.scale_log2 = (float)(scale * 1.4426950408889634);
  p.softcap = (float)softcap;
  p.window_left = mlx_attn_common::window_side(window_left);
  p.window_right = fold_causal(causal, mlx_attn_common::window_side(window_right));
}

// The backward's gradients must have the shape of what they are the gradient of.
inline void check_same_shape(const Array& a, const Array& like, const char* name, const char* like_name) {
  bool ok = a.ndim() == like.ndim();
  for (size_t i = 0; ok && i < a.ndim(); ++i) ok = a.shape(i) == like.shape(i);
  if (!ok)
    value_error(std::string(name) + " must have the shape of " + like_name + " " +
                shape_str(like) + ", got " + shape_str(a));
}

// The backward's gradient tensors, on the device of the forward's inputs: dout like out and
// dq/dk/dv like q/k/v in dtype and shape, each accepted by `operand` (the dense or packed
// layout check); delta and dlse are checked by the caller (their shape differs by layout).
inline void check_grad_tensors(Checked& c, const Array& q, const Array& k, const Array& v,
                               const Array& out, const Array& dout, const Array& delta,
                               const std::optional<Array>& dlse, const Array& dq,
                               const Array& dk, const Array& dv, bool allow_cpu,
                               void (*operand)(const Array&, const char*)) {
  for (auto [a, name] : {std::pair<const Array*, const char*>{&dout, "dout"}, {&delta, "delta"},
                         {&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}})
    check_device(*a, name, allow_cpu, &c.device_type, &c.device_id, "q");
  if (dlse) check_device(*dlse, "dlse", allow_cpu, &c.device_type, &c.device_id, "q");
  for (auto [a, like, name, like_name] :
       {std::tuple<const Array*, const Array*, const char*, const char*>{&dout, &out, "dout", "out"},
        {&dq, &q, "dq", "q"}, {&dk, &k, "dk", "k"}, {&dv, &v, "dv", "v"}}) {
    if (a->dtype() != q.dtype())
      type_error(std::string(name) + " has dtype " + dtype_name(*a) + " but q has " +
                 dtype_name(q) + "; they must match");
    operand(*a, name);
    check_same_shape(*a, *like, name, like_name);
  }
}

// The launch parameters of a checked call, for the check_*_args entry points (tests).
// The kernels' tile configuration: 0 (prefill) or 1 (decode).
inline void check_config(int config) {
  if (config != kPrefill && config != kDecode)
    value_error("config must be 0 (prefill) or 1 (decode), got " + std::to_string(config));
}

inline nb::dict params_dict(const Checked& c) {
  const FwdParams& p = c.p;
  nb::dict d;
  d["dtype"] = c.dtype == kBFloat16 ? "bfloat16" : "float16";
  d["device_type"] = c.device_type;
  d["device_id"] = c.device_id;
  d["B"] = p.b, d["Hq"] = p.hq, d["Hkv"] = p.hkv, d["group"] = p.group;
  d["Lq"] = p.lq, d["Lk"] = p.lk, d["D"] = p.d, d["Dv"] = p.dv, d["rows"] = p.rows;
  d["q_strides"] = nb::make_tuple(p.q_sb, p.q_sh, p.q_sl);
  d["k_strides"] = nb::make_tuple(p.k_sb, p.k_sh, p.k_sl);
  d["v_strides"] = nb::make_tuple(p.v_sb, p.v_sh, p.v_sl);
  d["out_strides"] = nb::make_tuple(p.o_sb, p.o_sh, p.o_sl);
  d["mask_type"] = p.mask_type;
  d["mask_strides"] = nb::make_tuple(p.m_sb, p.m_sh, p.m_sq, p.m_sk);
  d["num_splits"] = p.num_splits;
  d["window"] = nb::make_tuple(p.window_left, p.window_right);
  d["head_dim_bucket"] = head_dim_bucket(p.d, p.dv);
  return d;
}

// dq_accum: the non-deterministic backward's float32 dQ workspace, [rows of lse, D] contiguous
// (params.h BwdParams); may be None only when deterministic.
inline float* check_dq_accum(const std::optional<Array>& dq_accum, bool deterministic,
                             size_t lse_rows, size_t d, bool allow_cpu, Checked& c) {
  if (!dq_accum) {
    if (!deterministic)
      value_error("dq_accum (float32 [" + std::to_string(lse_rows) + ", " + std::to_string(d) +
                  "] workspace) is required when deterministic is False");
    return nullptr;
  }
  check_device(*dq_accum, "dq_accum", allow_cpu, &c.device_type, &c.device_id, "q");
  check_f32_contiguous(*dq_accum, "dq_accum", {lse_rows, d});
  return static_cast<float*>(const_cast<void*>(dq_accum->data()));
}

// Raises unless `device` is a compute capability 8.0+ device (the kernels' floor).
inline void require_sm80(int device) {
  DeviceInfo info;
  std::string err;
  if (!device_info(device, &info, &err))
    throw std::runtime_error("mlx_attn CUDA: cannot query device " + std::to_string(device) +
                             ": " + err);
  if (info.major < 8)
    value_error("device " + std::to_string(device) + " (" + info.name +
                ") has compute capability " + std::to_string(info.major) + "." +
                std::to_string(info.minor) + "; the kernels need 8.0 or newer");
}

// The planner's choice for p on `device` (varlen: make_plan_varlen, never split), then the
// forced choice of MLX_ATTN_CUDA_CONFIG / _SPLITS or set_plan_override (binding.cpp).
PlanResult plan_with_override(const FwdParams& p, int device, bool varlen);

// Defines the fused varlen entry points (binding_varlen.cpp).
void register_varlen(nb::module_& m);

}  // namespace mlx_attn_binding
