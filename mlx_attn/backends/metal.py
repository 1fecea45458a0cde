"""The `metal` backend: our tiled flash-attention Metal kernels, as MLX custom kernels."""
from __future__ import annotations

from .base import Backend


class MetalBackend(Backend):
    name = "metal"
    priority = 10
    array_kinds = frozenset({"mlx"})
    dtypes = frozenset({"float16", "bfloat16", "float32"})
    summary = "MLX arrays on an Apple GPU (Metal custom kernels)"

    def _availability_reasons(self) -> list[str]:
        return ["the Metal kernels are not written yet"]
