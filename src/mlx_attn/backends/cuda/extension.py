"""Loading the CUDA bridge's compiled module `mlx_attn.backends.cuda._cuda` (built from cuda_bridge/).

Importing this module imports neither torch nor the extension; `extension()` loads the
extension on first use (it links the CUDA runtime statically, so it imports on machines without
a driver or GPU) and `load_error()` says why it could not be loaded.  The torch custom op lives
in `ops.py` beside it (imports torch).
"""
from __future__ import annotations

import functools
import importlib


@functools.cache
def _load():
    try:
        return importlib.import_module("mlx_attn.backends.cuda._cuda"), None
    except ImportError as error:  # not built, or built for another Python / platform
        return None, f"{type(error).__name__}: {error}"


def extension():
    """The `_cuda` module, or None when it cannot be imported."""
    return _load()[0]


def load_error() -> str | None:
    """Why `_cuda` cannot be imported (None when it can)."""
    return _load()[1]
