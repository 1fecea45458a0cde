"""Environment settings, read once per process and cached.

MLX_ATTN        auto | flash | math | <backend name>   (default auto)
MLX_ATTN_CHUNK  <n> | 0 | off                          (default: automatic chunking)
MLX_ATTN_CUDA_EMULATE  1 | 0                           (default 0; a verification switch: the
                cuda backend runs its kernels in the CUDA emulator, on torch CPU tensors, and
                on MLX CPU arrays standing for CUDA arrays (the MLX launcher then calls the
                emulator's stand-in for mx.fast.precompiled_cuda_kernel))
MLX_ATTN_CUDA_DETERMINISTIC 1 | 0                      (default 0: the cuda backend's MLX launcher
                computes dQ without float atomics, the same bits every run; torch callers use
                torch.use_deterministic_algorithms instead)
MLX_ATTN_METAL_EMULATE 1 | 0                           (default 0; a verification switch: the
                metal backend takes torch CPU tensors as if on `mps` and runs its torch
                launcher on the MSL emulator's stand-in for torch.mps.compile_shader)
"""
from __future__ import annotations

import functools
import os

# Without MLX_ATTN_CHUNK, the math backend sizes its query chunks so that one chunk's score
# matrix holds at most this many elements (256 MB in float32).
AUTO_CHUNK_ELEMENTS = 1 << 26


@functools.cache
def requested_backend() -> str:
    return os.environ.get("MLX_ATTN", "auto").strip().lower() or "auto"


@functools.cache
def chunk_setting() -> int | None:
    """Rows per math chunk; 0 means no chunking; None means automatic."""
    raw = os.environ.get("MLX_ATTN_CHUNK", "").strip().lower()
    if raw == "":
        return None
    if raw in ("0", "off", "none", "false"):
        return 0
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"MLX_ATTN_CHUNK must be a positive number of query rows, 0 or off, "
                         f"got {raw!r}")
    return value


@functools.cache
def cuda_emulate() -> bool:
    return _switch("MLX_ATTN_CUDA_EMULATE")


@functools.cache
def cuda_deterministic() -> bool:
    return _switch("MLX_ATTN_CUDA_DETERMINISTIC")


@functools.cache
def metal_emulate() -> bool:
    return _switch("MLX_ATTN_METAL_EMULATE")


def _switch(name: str) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if raw in ("", "0", "off", "false", "no"):
        return False
    if raw in ("1", "on", "true", "yes"):
        return True
    raise ValueError(f"{name} must be 1 or 0, got {raw!r}")


# What modules above this one cached from the environment, forgotten on reload (they register
# here, so that this module imports none of them: imports only go downward).
_RELOAD_HOOKS: list = []


def on_reload(hook) -> None:
    """Call `hook()` on every `reload()` (dispatch forgets its warnings and cached plans)."""
    _RELOAD_HOOKS.append(hook)


def reload() -> None:
    """Forget the cached environment (for tests and long-running tools)."""
    requested_backend.cache_clear()
    chunk_setting.cache_clear()
    cuda_emulate.cache_clear()
    cuda_deterministic.cache_clear()
    metal_emulate.cache_clear()
    for hook in _RELOAD_HOOKS:
        hook()
