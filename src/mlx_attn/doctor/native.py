"""Each platform's own SDPA, timed in the same run as our backends for the "vs SDPA" column."""
from __future__ import annotations

from .cases import Case, Framework


def native_sdpa(fw: Framework, case: Case):
    """(label, fn(q, k, v) -> out) for the framework's built-in attention, or None for numpy."""
    scale = case.D ** -0.5
    if fw.kind == "mlx":
        import mlx.core as mx

        def mlx_sdpa(q, k, v):
            return mx.fast.scaled_dot_product_attention(
                q, k, v, scale=scale, mask="causal" if case.causal else None)
        return "mx.fast.sdpa", mlx_sdpa
    if fw.kind == "torch":
        import torch
        import torch.nn.functional as F

        # torch's is_causal is top-left aligned; the doctor's causal cases have Lq == Lk, where
        # it coincides with the SPEC's bottom-right alignment.
        def torch_sdpa(q, k, v):
            with torch.no_grad():
                return F.scaled_dot_product_attention(q, k, v, is_causal=case.causal, scale=scale,
                                                      enable_gqa=case.Hq != case.Hkv)
        return "torch sdpa", torch_sdpa
    return None
