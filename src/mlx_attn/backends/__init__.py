"""The backend registry, in priority order (first that supports a call wins under "auto")."""
from __future__ import annotations

import functools

from .base import Backend


@functools.cache
def registry() -> tuple[Backend, ...]:
    # Imported here so that importing mlx_attn never imports torch, mlx or an extension.
    from .cpu import CpuBackend
    from .cuda import CudaBackend
    from .math import MathBackend
    from .metal import MetalBackend

    found = (MetalBackend(), CudaBackend(), CpuBackend(), MathBackend())
    return tuple(sorted(found, key=lambda b: b.priority))


def by_name(name: str) -> Backend | None:
    for backend in registry():
        if backend.name == name:
            return backend
    return None


def names() -> list[str]:
    return [b.name for b in registry()]
