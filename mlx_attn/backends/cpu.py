"""The `cpu` backend: our native C++ tiled flash-attention kernel."""
from __future__ import annotations

from .base import Backend


class CpuBackend(Backend):
    name = "cpu"
    priority = 30
    array_kinds = frozenset({"mlx", "torch", "numpy"})
    dtypes = frozenset({"float16", "bfloat16", "float32"})
    summary = "MLX CPU arrays, torch CPU tensors and numpy (native C++ kernel)"

    def _availability_reasons(self) -> list[str]:
        return ["the native extension mlx_attn._cpu is not built"]
