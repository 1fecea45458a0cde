"""Running unmodified host code (that calls ``mx.fast.metal_kernel``) under the emulator."""
from __future__ import annotations

import contextlib

from .kernel import metal_kernel


@contextlib.contextmanager
def patched_metal_kernel(*, metal_available: bool = False):
    """Temporarily replace ``mx.fast.metal_kernel`` with the emulator's
    :func:`metal_kernel`, so code that builds kernels with
    ``mx.fast.metal_kernel(...)`` runs them on the CPU.

    With ``metal_available=True`` ``mx.metal.is_available()`` also returns True
    inside the block (for host code that checks it before choosing the Metal
    path). Only the kernel factory is emulated: every other MLX operation still
    runs on MLX's own (CPU) backend.
    """
    import mlx.core as mx

    saved_kernel = mx.fast.metal_kernel
    saved_avail = mx.metal.is_available
    mx.fast.metal_kernel = metal_kernel
    if metal_available:
        mx.metal.is_available = lambda: True
    try:
        yield metal_kernel
    finally:
        mx.fast.metal_kernel = saved_kernel
        mx.metal.is_available = saved_avail
