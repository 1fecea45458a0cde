"""Running unmodified host code (that calls ``mx.fast.metal_kernel``) under the emulator."""
from __future__ import annotations

import contextlib
import os

from .kernel import metal_kernel

ENV_EMULATE = "MLX_ATTN_MSL_EMULATE"


def emulation_requested() -> bool:
    """True when ``MLX_ATTN_MSL_EMULATE`` is set to 1/true/yes/on."""
    return os.environ.get(ENV_EMULATE, "").strip().lower() in ("1", "true", "yes", "on")


def metal_kernel_factory(emulate: bool | None = None):
    """The ``metal_kernel`` factory host code should build its kernels with.

    ``emulate=True`` (or, with ``emulate=None``, the environment variable
    ``MLX_ATTN_MSL_EMULATE=1``) gives the emulator's :func:`metal_kernel`;
    otherwise MLX's own ``mx.fast.metal_kernel`` (looked up at call time, so
    :func:`patched_metal_kernel` also takes effect). Both have the same factory
    and call signatures.
    """
    if emulate is None:
        emulate = emulation_requested()
    if emulate:
        return metal_kernel
    import mlx.core as mx

    return mx.fast.metal_kernel


@contextlib.contextmanager
def patched_metal_kernel(*, metal_available: bool = False):
    """Temporarily replace ``mx.fast.metal_kernel`` with the emulator's
    :func:`metal_kernel`, so code that builds kernels with
    ``mx.fast.metal_kernel(...)`` runs them on the CPU. Yields the emulator's
    factory.

    With ``metal_available=True`` ``mx.metal.is_available()`` also returns True
    inside the block (for host code that checks it before choosing the Metal
    path). Only the kernel factory is emulated: every other MLX operation still
    runs on MLX's own (CPU) backend. Code that imported the function object
    itself (``from mlx.core.fast import metal_kernel``) before the block is not
    affected; use :func:`metal_kernel_factory` there.
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
