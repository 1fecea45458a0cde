"""Whether the `cpu` backend's compiled modules can run here, and if not, why (in words).

`_kernel` serves numpy and torch; it records the MLX version `_mlx_primitive` was built against.
An MLX extension must run with that exact libmlx (C++ ABI, nanobind domain), so any other
installed version is declined here *before* `_mlx_primitive` is imported: a reason, never a crash.
"""
from __future__ import annotations

import functools


@functools.cache
def native():
    """The compiled kernel module; raises ImportError when it is not built."""
    from . import _kernel  # noqa: PLC0415
    return _kernel


def kernel_reasons() -> list[str]:
    """Why the kernel cannot run at all (empty when it can)."""
    try:
        native()
    except ImportError as error:
        return [f"the native extension mlx_attn.cpu._kernel is not built ({error}); "
                "build it with `pip install .` (cmake option MLX_ATTN_BUILD_CPU)"]
    return []


def version_reason(built: str, installed: str) -> str | None:
    """Why an MLX primitive built against mlx `built` cannot serve mlx `installed` (None if it can)."""
    if not built:
        return ("the extension was built without the MLX primitive (MLX was not found at build "
                "time)")
    if built != installed:
        return (f"the MLX primitive was built for mlx {built} but mlx {installed} is installed; "
                f"reinstall mlx_attn against this mlx, or install mlx=={built}")
    return None


def built_mlx_version() -> str:
    return getattr(native(), "MLX_BUILT_VERSION", "")


def installed_mlx_version() -> str:
    """mlx.core.__version__; raises ImportError when mlx cannot be imported."""
    import mlx.core as mx  # noqa: PLC0415
    return mx.__version__


@functools.cache
def mlx_reasons() -> tuple:
    """Why MLX arrays cannot use the kernel here (empty when they can)."""
    reasons = kernel_reasons()
    if reasons:
        return tuple(reasons)
    try:
        installed = installed_mlx_version()
    except Exception as error:  # ImportError, or a broken mlx install failing while loading
        return (f"mlx is not importable ({type(error).__name__}: {error})",)
    reason = version_reason(built_mlx_version(), installed)
    if reason:
        return (reason,)
    try:
        from . import _mlx_primitive  # noqa: F401, PLC0415
    except ImportError as error:
        return (f"the MLX primitive mlx_attn.cpu._mlx_primitive failed to load ({error})",)
    return ()
