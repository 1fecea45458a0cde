#include "mlx_primitive.h"

#include <stdexcept>

#include "attn.h"
#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/ops.h"

namespace mx = mlx::core;

namespace mlx_attn_cpu {
namespace {

int dtype_code(mx::Dtype t) {
  if (t == mx::float32) return F32;
  if (t == mx::float16) return F16;
  if (t == mx::bfloat16) return BF16;
  throw std::invalid_argument("mlx_attn cpu: q, k, v must be float32, float16 or bfloat16");
}

int mask_type(mx::Dtype t) {
  if (t == mx::bool_) return MT_BOOL;
  if (t == mx::float32) return MT_F32;
  if (t == mx::float16) return MT_F16;
  if (t == mx::bfloat16) return MT_BF16;
  throw std::invalid_argument("mlx_attn cpu: mask must be bool, float32, float16 or bfloat16");
}

// element strides in (b, h, l, d) order; varlen [total, H, D] -> (0, h, l, d)
void strides4(const mx::array& a, bool varlen, int64_t* s) {
  if (varlen) {
    s[0] = 0; s[1] = a.strides()[1]; s[2] = a.strides()[0]; s[3] = a.strides()[2];
  } else {
    for (int i = 0; i < 4; ++i) s[i] = a.shape(i) == 1 ? 0 : a.strides()[i];
  }
}
void strides3(const mx::array& a, bool varlen, int64_t* s) {
  if (varlen) {
    s[0] = 0; s[1] = a.strides()[0]; s[2] = a.strides()[1];
  } else {
    for (int i = 0; i < 3; ++i) s[i] = a.strides()[i];
  }
}

// Fill the shape / input parts of a Problem from the primitive's inputs.
Problem base_problem(const AttnParams& ap, const std::vector<mx::array>& in) {
  Problem p;
  const auto &q = in[0], &k = in[1], &v = in[2];
  p.dtype = dtype_code(q.dtype());
  if (ap.varlen) {
    const auto& cq = in[3];
    p.B = int(cq.size()) - 1;
    p.Hq = q.shape(1); p.Hkv = k.shape(1); p.Lq = q.shape(0); p.Lk = k.shape(0);
    p.D = q.shape(2); p.Dv = v.shape(2);
    p.cu_q = in[3].data<int32_t>();
    p.cu_k = in[4].data<int32_t>();
  } else {
    p.B = q.shape(0); p.Hq = q.shape(1); p.Hkv = k.shape(1); p.Lq = q.shape(2); p.Lk = k.shape(2);
    p.D = q.shape(3); p.Dv = v.shape(3);
  }
  p.q = q.data<void>(); strides4(q, ap.varlen, p.qs);
  p.k = k.data<void>(); strides4(k, ap.varlen, p.ks);
  p.v = v.data<void>(); strides4(v, ap.varlen, p.vs);
  if (ap.has_mask) {
    const auto& m = in[3];
    p.mask = m.data<void>();
    p.mask_kind = ap.mask_kind;
    p.mask_type = mask_type(m.dtype());
    strides4(m, false, p.ms);
  }
  p.scale = ap.scale; p.softcap = ap.softcap; p.wl = ap.wl; p.wr = ap.wr;
  return p;
}

int n_base_inputs(const AttnParams& p) { return 3 + (p.has_mask ? 1 : 0) + (p.varlen ? 2 : 0); }

std::vector<mx::Shape> fwd_shapes(const AttnParams& p, const std::vector<mx::array>& in) {
  const auto &q = in[0], &v = in[2];
  if (p.varlen) return {{q.shape(0), q.shape(1), v.shape(2)}, {q.shape(1), q.shape(0)}};
  return {{q.shape(0), q.shape(1), q.shape(2), v.shape(3)}, {q.shape(0), q.shape(1), q.shape(2)}};
}

}  // namespace

std::vector<mx::array> mlx_attention(const mx::array& q, const mx::array& k, const mx::array& v,
                                     std::optional<mx::array> mask, std::optional<mx::array> cu_q,
                                     std::optional<mx::array> cu_k, const AttnParams& params) {
  AttnParams p = params;
  p.has_mask = mask.has_value();
  p.varlen = cu_q.has_value();
  if (p.varlen != cu_k.has_value()) throw std::invalid_argument("varlen needs cu_q and cu_k");
  if (p.varlen && p.has_mask) throw std::invalid_argument("varlen takes no mask");
  const int rank = p.varlen ? 3 : 4;
  if (q.ndim() != rank || k.ndim() != rank || v.ndim() != rank)
    throw std::invalid_argument("mlx_attn cpu: q, k, v have the wrong rank");
  dtype_code(q.dtype());
  if (k.dtype() != q.dtype() || v.dtype() != q.dtype())
    throw std::invalid_argument("mlx_attn cpu: q, k, v must share one dtype");
  auto s = mx::default_stream(mx::Device::cpu);
  std::vector<mx::array> inputs = {q, k, v};
  if (p.has_mask) {
    mx::array m = *mask;
    if (m.ndim() != 4) throw std::invalid_argument("mlx_attn cpu: mask must have rank 4");
    if (m.dtype() != mx::bool_ && m.dtype() != mx::float32 && m.dtype() != mx::float16 &&
        m.dtype() != mx::bfloat16)
      m = mx::astype(m, mx::float32, s);
    inputs.push_back(m);
  }
  if (p.varlen) {
    inputs.push_back(mx::astype(*cu_q, mx::int32, s));
    inputs.push_back(mx::astype(*cu_k, mx::int32, s));
  }
  auto shapes = fwd_shapes(p, inputs);
  const mx::Dtype out_dtype = p.out_f32 ? mx::float32 : q.dtype();
  return mx::array::make_arrays(std::move(shapes), {out_dtype, mx::float32},
                                std::make_shared<AttnForward>(s, p), inputs);
}

void AttnForward::eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) {
  auto& out = outputs[0];
  auto& lse = outputs[1];
  out.set_data(mx::allocator::malloc(out.nbytes()));
  lse.set_data(mx::allocator::malloc(lse.nbytes()));
  Problem p = base_problem(p_, inputs);
  p.o = out.data<void>(); strides4(out, p_.varlen, p.os);
  p.out_f32 = out.dtype() == mx::float32 && p.dtype != F32;
  p.lse = lse.data<float>(); strides3(lse, p_.varlen, p.ls);
  if (p_.varlen) { p.ls[0] = 0; p.ls[1] = lse.strides()[0]; p.ls[2] = lse.strides()[1]; }
  auto& enc = mx::cpu::get_command_encoder(stream());
  for (auto& a : inputs) enc.set_input_array(a);
  enc.set_output_array(out);
  enc.set_output_array(lse);
  enc.dispatch([p]() { forward(p); });
}

void AttnForward::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("mlx_attn's cpu backend has no GPU implementation");
}

std::vector<mx::Shape> AttnForward::output_shapes(const std::vector<mx::array>& inputs) {
  return fwd_shapes(p_, inputs);
}

bool AttnForward::is_equivalent(const mx::Primitive& other) const {
  auto* o = dynamic_cast<const AttnForward*>(&other);
  return o && o->p_ == p_;
}

std::vector<mx::array> AttnForward::vjp(const std::vector<mx::array>& primals,
                                        const std::vector<mx::array>& cotangents,
                                        const std::vector<int>& argnums,
                                        const std::vector<mx::array>& outputs) {
  auto s = stream();
  const int nb = n_base_inputs(p_);
  std::vector<mx::array> inputs(primals.begin(), primals.begin() + nb);
  // fp16 / bf16: the backward's delta = rowsum(dout * out) needs out unrounded, so out (and lse)
  // are recomputed here in float32 rather than inside the backward. Then nothing in the gradient
  // reads the forward's own outputs, and mx.grad, which never evaluates them, runs one forward.
  std::vector<mx::array> fwd = outputs;
  if (primals[0].dtype() != mx::float32) {
    AttnParams fp = p_;
    fp.out_f32 = true;
    fwd = mx::array::make_arrays(fwd_shapes(fp, inputs), {mx::float32, mx::float32},
                                 std::make_shared<AttnForward>(s, fp), inputs);
  }
  inputs.push_back(fwd[0]);
  inputs.push_back(fwd[1]);
  inputs.push_back(mx::astype(cotangents[0], primals[0].dtype(), s));
  inputs.push_back(mx::astype(cotangents[1], mx::float32, s));
  auto grads = mx::array::make_arrays(
      {primals[0].shape(), primals[1].shape(), primals[2].shape()},
      {primals[0].dtype(), primals[1].dtype(), primals[2].dtype()},
      std::make_shared<AttnBackward>(s, p_), inputs);
  std::vector<mx::array> result;
  for (int a : argnums) {
    if (a < 3) {
      result.push_back(grads[a]);
    } else if (p_.has_mask && a == 3 && mx::issubdtype(primals[3].dtype(), mx::floating)) {
      throw std::invalid_argument(
          "mlx_attn: the gradient with respect to an additive mask is not supported");
    } else {
      result.push_back(mx::zeros_like(primals[a], s));
    }
  }
  return result;
}

std::pair<std::vector<mx::array>, std::vector<int>> AttnForward::vmap(
    const std::vector<mx::array>& inputs, const std::vector<int>& axes) {
  if (p_.varlen) throw std::invalid_argument("mlx_attn: vmap of the varlen call is not supported");
  auto s = stream();
  int V = -1;
  for (size_t i = 0; i < axes.size(); ++i)
    if (axes[i] >= 0) V = inputs[i].shape(axes[i]);
  // fold the mapped axis into the batch axis: x [V, B, ...] -> [V * B, ...]
  const int B = axes[0] >= 0 ? inputs[0].shape(axes[0] == 0 ? 1 : 0) : inputs[0].shape(0);
  auto fold = [&](const mx::array& x, int ax, bool broadcast_batch) {
    mx::array y = ax >= 0 ? mx::moveaxis(x, ax, 0, s) : mx::expand_dims(x, 0, s);
    mx::Shape sh = y.shape();
    if (sh[0] == 1 && sh[1] == 1 && !broadcast_batch) return mx::squeeze(y, 0, s);
    sh[0] = V; sh[1] = B;
    y = mx::broadcast_to(y, sh, s);
    mx::Shape flat(sh.begin() + 1, sh.end());
    flat[0] = V * B;
    return mx::reshape(y, flat, s);
  };
  mx::array q = fold(inputs[0], axes[0], true), k = fold(inputs[1], axes[1], true),
            v = fold(inputs[2], axes[2], true);
  std::optional<mx::array> mask;
  if (p_.has_mask) mask = fold(inputs[3], axes[3], false);
  auto outs = mlx_attention(q, k, v, mask, std::nullopt, std::nullopt, p_);
  mx::Shape os = outs[0].shape(), ls = outs[1].shape();
  os[0] = B; os.insert(os.begin(), V);
  ls[0] = B; ls.insert(ls.begin(), V);
  return {{mx::reshape(outs[0], os, s), mx::reshape(outs[1], ls, s)}, {0, 0}};
}

void AttnBackward::eval_cpu(const std::vector<mx::array>& inputs,
                            std::vector<mx::array>& outputs) {
  for (auto& o : outputs) o.set_data(mx::allocator::malloc(o.nbytes()));
  Problem p = base_problem(p_, inputs);
  const int nb = n_base_inputs(p_);
  const auto &out = inputs[nb], &lse = inputs[nb + 1], &dout = inputs[nb + 2],
             &dlse = inputs[nb + 3];
  p.o = const_cast<void*>(out.data<void>()); strides4(out, p_.varlen, p.os);
  p.out_f32 = out.dtype() == mx::float32 && p.dtype != F32;  // else backward() recomputes it
  p.lse = const_cast<float*>(lse.data<float>());
  p.dout = dout.data<void>(); strides4(dout, p_.varlen, p.dos);
  p.dlse = dlse.data<float>();
  if (p_.varlen) {
    p.ls[0] = 0; p.ls[1] = lse.strides()[0]; p.ls[2] = lse.strides()[1];
    p.dls[0] = 0; p.dls[1] = dlse.strides()[0]; p.dls[2] = dlse.strides()[1];
  } else {
    strides3(lse, false, p.ls);
    strides3(dlse, false, p.dls);
  }
  p.dq = outputs[0].data<void>(); strides4(outputs[0], p_.varlen, p.dqs);
  p.dk = outputs[1].data<void>(); strides4(outputs[1], p_.varlen, p.dks);
  p.dv = outputs[2].data<void>(); strides4(outputs[2], p_.varlen, p.dvs);
  auto& enc = mx::cpu::get_command_encoder(stream());
  for (auto& a : inputs) enc.set_input_array(a);
  for (auto& o : outputs) enc.set_output_array(o);
  enc.dispatch([p]() { backward(p); });
}

void AttnBackward::eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) {
  throw std::runtime_error("mlx_attn's cpu backend has no GPU implementation");
}

std::vector<mx::Shape> AttnBackward::output_shapes(const std::vector<mx::array>& inputs) {
  return {inputs[0].shape(), inputs[1].shape(), inputs[2].shape()};
}

bool AttnBackward::is_equivalent(const mx::Primitive& other) const {
  auto* o = dynamic_cast<const AttnBackward*>(&other);
  return o && o->p_ == p_;
}

}  // namespace mlx_attn_cpu
