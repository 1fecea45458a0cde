// MLX primitives wrapping the CPU kernel: AttnForward (outputs out, lse) with a vjp that builds
// AttnBackward (outputs dq, dk, dv). Both evaluate through MLX's CPU command encoder.
#pragma once
#include <optional>
#include <vector>

#include "mlx/array.h"
#include "mlx/primitives.h"
#include "mlx/utils.h"

namespace mlx_attn_cpu {

struct AttnParams {
  float scale = 1.f;
  float softcap = 0.f;
  int wl = -1, wr = -1;      // causal folded into wr
  int mask_kind = 0;         // MaskKind
  bool has_mask = false;
  bool varlen = false;
  bool out_f32 = false;      // out in float32 whatever q's dtype (the vjp's recompute)
  bool operator==(const AttnParams& o) const {
    return scale == o.scale && softcap == o.softcap && wl == o.wl && wr == o.wr &&
           mask_kind == o.mask_kind && has_mask == o.has_mask && varlen == o.varlen &&
           out_f32 == o.out_f32;
  }
};

// Inputs: q, k, v, [mask], [cu_q, cu_k]. Returns {out, lse}.
std::vector<mlx::core::array> mlx_attention(const mlx::core::array& q, const mlx::core::array& k,
                                            const mlx::core::array& v,
                                            std::optional<mlx::core::array> mask,
                                            std::optional<mlx::core::array> cu_q,
                                            std::optional<mlx::core::array> cu_k,
                                            const AttnParams& params);

// The forward: out [B, Hq, Lq, Dv] (q's dtype, or float32 when out_f32) and lse [B, Hq, Lq]
// float32 (varlen: out [total_q, Hq, Dv], lse [Hq, total_q]).
class AttnForward : public mlx::core::Primitive {
 public:
  AttnForward(mlx::core::Stream s, AttnParams p) : Primitive(s), p_(p) {}

  // Allocates out and lse and runs the native kernel on MLX's CPU command encoder (the kernel's
  // own threads run inside that task; inputs are read in place through their strides).
  void eval_cpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;

  // Never reached: the front end only sends MLX arrays on the CPU device here; throws if it is.
  void eval_gpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;

  // The gradients of q, k, v as one AttnBackward node. fp16 / bf16: out and lse are recomputed
  // in float32 by a second AttnForward (out_f32), so the backward's delta is unrounded and
  // mx.grad, which never evaluates the forward's outputs, still runs one forward. A bool mask
  // and cu_seqlens get zero gradients; an additive mask's gradient is an error.
  std::vector<mlx::core::array> vjp(const std::vector<mlx::core::array>& primals,
                                    const std::vector<mlx::core::array>& cotangents,
                                    const std::vector<int>& argnums,
                                    const std::vector<mlx::core::array>& outputs) override;

  // mx.vmap: the mapped axis is folded into the batch axis ([V, B, ...] -> [V * B, ...]), one
  // call computes every map, and the outputs are unfolded. Not for the varlen call.
  std::pair<std::vector<mlx::core::array>, std::vector<int>> vmap(
      const std::vector<mlx::core::array>& inputs, const std::vector<int>& axes) override;

  // {out, lse} shapes, from q and v (packed shapes for varlen), without evaluating anything.
  std::vector<mlx::core::Shape> output_shapes(const std::vector<mlx::core::array>& inputs) override;

  // The name MLX prints in graphs and errors.
  const char* name() const override { return "MlxAttnCpuForward"; }

  // Same primitive with equal parameters: lets mx.compile merge identical calls.
  bool is_equivalent(const mlx::core::Primitive& other) const override;

  const AttnParams& params() const { return p_; }

 private:
  AttnParams p_;
};

// The backward. Inputs: q, k, v, [mask], [cu_q, cu_k], out, lse, dout, dlse. Outputs: dq, dk, dv
// in the dtypes of q, k, v.
class AttnBackward : public mlx::core::Primitive {
 public:
  AttnBackward(mlx::core::Stream s, AttnParams p) : Primitive(s), p_(p) {}

  // Allocates dq, dk, dv and runs the native backward kernel on MLX's CPU command encoder.
  void eval_cpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;

  // Never reached (CPU arrays only); throws if it is.
  void eval_gpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;

  // dq, dk, dv have the shapes of q, k, v.
  std::vector<mlx::core::Shape> output_shapes(const std::vector<mlx::core::array>& inputs) override;

  // The name MLX prints in graphs and errors.
  const char* name() const override { return "MlxAttnCpuBackward"; }

  // Same primitive with equal parameters: lets mx.compile merge identical calls.
  bool is_equivalent(const mlx::core::Primitive& other) const override;

 private:
  AttnParams p_;
};

}  // namespace mlx_attn_cpu
