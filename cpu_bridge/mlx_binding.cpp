// nanobind module mlx_attn.backends.cpu._mlx_primitive (NB_DOMAIN mlx, so it shares mlx.core's array type).
#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/vector.h>

#include "attn.h"
#include "mlx_primitive.h"

namespace nb = nanobind;
namespace mx = mlx::core;
using namespace mlx_attn_cpu;

NB_MODULE(_mlx_primitive, m) {
  m.doc() = "mlx_attn CPU kernel as an MLX primitive (forward, vjp, vmap, compile)";
  m.def(
      "attention",
      [](const mx::array& q, const mx::array& k, const mx::array& v,
         std::optional<mx::array> mask, std::optional<mx::array> cu_q,
         std::optional<mx::array> cu_k, float scale, float softcap, int64_t wl, int64_t wr, bool causal,
         int mask_kind) {
        AttnParams p;
        p.scale = scale; p.softcap = softcap; p.wl = window_side(wl);
        p.wr = fold_causal(causal, window_side(wr));
        p.mask_kind = mask_kind;
        return mlx_attention(q, k, v, mask, cu_q, cu_k, p);
      },
      nb::arg("q"), nb::arg("k"), nb::arg("v"), nb::arg("mask").none(), nb::arg("cu_q").none(),
      nb::arg("cu_k").none(), nb::arg("scale"), nb::arg("softcap"), nb::arg("wl"), nb::arg("wr"),
      nb::arg("causal"), nb::arg("mask_kind"));
#ifdef MLX_ATTN_MLX_VERSION
  m.attr("MLX_BUILT_VERSION") = MLX_ATTN_MLX_VERSION;
#endif
}
