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

class AttnForward : public mlx::core::Primitive {
 public:
  AttnForward(mlx::core::Stream s, AttnParams p) : Primitive(s), p_(p) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;
  std::vector<mlx::core::array> vjp(const std::vector<mlx::core::array>& primals,
                                    const std::vector<mlx::core::array>& cotangents,
                                    const std::vector<int>& argnums,
                                    const std::vector<mlx::core::array>& outputs) override;
  std::pair<std::vector<mlx::core::array>, std::vector<int>> vmap(
      const std::vector<mlx::core::array>& inputs, const std::vector<int>& axes) override;
  std::vector<mlx::core::Shape> output_shapes(const std::vector<mlx::core::array>& inputs) override;
  const char* name() const override { return "MlxAttnCpuForward"; }
  bool is_equivalent(const mlx::core::Primitive& other) const override;
  const AttnParams& params() const { return p_; }

 private:
  AttnParams p_;
};

// Inputs: q, k, v, [mask], [cu_q, cu_k], out, lse, dout, dlse. Outputs: dq, dk, dv.
class AttnBackward : public mlx::core::Primitive {
 public:
  AttnBackward(mlx::core::Stream s, AttnParams p) : Primitive(s), p_(p) {}
  void eval_cpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;
  void eval_gpu(const std::vector<mlx::core::array>& inputs,
                std::vector<mlx::core::array>& outputs) override;
  std::vector<mlx::core::Shape> output_shapes(const std::vector<mlx::core::array>& inputs) override;
  const char* name() const override { return "MlxAttnCpuBackward"; }
  bool is_equivalent(const mlx::core::Primitive& other) const override;

 private:
  AttnParams p_;
};

}  // namespace mlx_attn_cpu
