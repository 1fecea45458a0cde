"""The `cuda` backend: our FlashAttention-2-class CUDA kernels for torch CUDA tensors."""
from __future__ import annotations

from .base import Backend


class CudaBackend(Backend):
    name = "cuda"
    priority = 20
    array_kinds = frozenset({"torch"})
    dtypes = frozenset({"float16", "bfloat16"})
    summary = "torch CUDA tensors, fp16/bf16 (nanobind extension)"

    def _availability_reasons(self) -> list[str]:
        return ["the CUDA extension mlx_attn._cuda is not built"]
