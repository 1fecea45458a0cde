"""Loading the CUDA bridge's compiled module `mlx_attn.backends.cuda._cuda` (built from cuda_bridge/),
or, under MLX_ATTN_CUDA_EMULATE=1, its stand-in from the CUDA emulator: the same kernel sources
compiled for the host and run on torch CPU tensors (`cuda_emulator.torch_bridge`, in the clone's
emulators/ folder; a verification tool, not part of this package).

Importing this module imports neither torch nor the extension; `extension()` loads it on first
use (the real one links the CUDA runtime statically, so it imports on machines without a driver
or GPU) and `load_error()` says why it could not be loaded. The torch custom op lives in
`ops.py` beside it (imports torch).
"""
from __future__ import annotations

import functools
import importlib

from ... import config


@functools.cache
def _load(emulated: bool):
    name = "cuda_emulator.torch_bridge" if emulated else "mlx_attn.backends.cuda._cuda"
    try:
        return importlib.import_module(name), None
    except ImportError as error:  # not built, or built for another Python / platform
        if emulated:
            return None, (f"MLX_ATTN_CUDA_EMULATE=1 but the CUDA emulator cannot be imported "
                          f"({type(error).__name__}: {error}); it lives in the clone's emulators/ "
                          f"folder, which must be on sys.path")
        return None, f"{type(error).__name__}: {error}"


def emulated() -> bool:
    """Whether the kernels run in the CUDA emulator (MLX_ATTN_CUDA_EMULATE=1)."""
    return config.cuda_emulate()


def extension():
    """The `_cuda` module (or the emulator's stand-in), or None when it cannot be imported."""
    return _load(emulated())[0]


def load_error() -> str | None:
    """Why it cannot be imported (None when it can)."""
    return _load(emulated())[1]
