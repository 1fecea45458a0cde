"""Glue for the CUDA bridge: loading the compiled module `mlx_attn._cuda`.

Importing this package imports neither torch nor the extension; `extension()` loads the
extension on first use (it links the CUDA runtime statically, so it imports on machines without
a driver or GPU) and `load_error()` says why it could not be loaded.  The torch custom op lives
in `mlx_attn.cuda.ops` (imports torch).
"""
from __future__ import annotations

import functools
import importlib


@functools.cache
def _load():
    try:
        return importlib.import_module("mlx_attn._cuda"), None
    except ImportError as error:  # not built, or built for another Python / platform
        return None, f"{type(error).__name__}: {error}"


def extension():
    """The `mlx_attn._cuda` module, or None when it cannot be imported."""
    return _load()[0]


def load_error() -> str | None:
    """Why `mlx_attn._cuda` cannot be imported (None when it can)."""
    return _load()[1]
