"""Compiles translated kernels with the system C++ compiler against the MSL shim and the SIMT
runtime (emulators/simt_runtime), caching shared libraries on disk by source hash.

Environment:
  MLX_ATTN_EMU_CACHE  cache directory (see simt_runtime.toolchain)
  CXX                 compiler (default g++, then c++, then clang++)
  MLX_ATTN_MSL_OPT    optimisation flag for kernels (default -O1)
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import threading
from pathlib import Path

import simt_runtime
from simt_runtime import toolchain

from .errors import MetalCompileError

SHIM_DIR = Path(__file__).resolve().parent / "shim"
_SHIM_FILES = ("msl_abi.h", "msl_types.h", "msl_math.h", "msl_memory.h", "msl_simd.h", "msl_shim.h")
# The collective op codes' names, in enum order (msl_abi.h), for the runtime's messages.
OP_NAMES = tuple(re.findall(r"X\((\w+)\)", (SHIM_DIR / "msl_abi.h").read_text()))

_lock = threading.RLock()
_kernels: dict[str, tuple[ctypes.CDLL, int]] = {}


def shim_hash() -> str:
    return hashlib.sha256((toolchain.files_hash(SHIM_DIR, _SHIM_FILES) +
                           simt_runtime.runtime_hash()).encode()).hexdigest()


def runtime() -> ctypes.CDLL:
    try:
        return simt_runtime.runtime_library()
    except toolchain.ToolchainError as e:
        raise MetalCompileError(str(e)) from e


def kernel_flags() -> list[str]:
    opt = os.environ.get("MLX_ATTN_MSL_OPT", "-O1")
    return ["-std=c++17", opt, "-fPIC", "-shared", "-w", "-fno-strict-aliasing", "-fno-math-errno",
            "-I", str(SHIM_DIR), "-I", str(simt_runtime.RUNTIME_DIR)]


def load_kernel(cpp_source: str, label: str) -> int:
    """Compiles (or finds in the cache) one translated kernel; returns the
    address of its per-thread entry function."""
    runtime()
    flags = kernel_flags()
    key = hashlib.sha256((shim_hash() + "\0" + " ".join(flags) + "\0" + cpp_source).encode()).hexdigest()
    with _lock:
        hit = _kernels.get(key)
        if hit is not None:
            return hit[1]
        try:
            d = toolchain.cache_dir()
            so = d / f"msl_{key[:32]}.so"
            src = d / f"msl_{key[:32]}.cpp"
            if not so.exists():
                src.write_text(cpp_source)
                toolchain.build([toolchain.compiler()] + flags + [str(src)], so, f"kernel '{label}'", src,
                                error=MetalCompileError)
        except toolchain.ToolchainError as e:
            raise MetalCompileError(str(e)) from e
        lib = ctypes.CDLL(str(so))
        lib.msl_kernel_entry.restype = ctypes.c_void_p
        fn = lib.msl_kernel_entry()
        _kernels[key] = (lib, fn)
        return fn
