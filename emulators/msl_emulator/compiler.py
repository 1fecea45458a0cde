"""Compiles translated kernels (and the fiber runtime) with the system C++
compiler, caching shared libraries on disk by source hash.

Environment:
  MLX_ATTN_MSL_CACHE  cache directory (default ~/.cache/mlx_attn/msl_emulator,
                      or a temporary directory when that is not writable)
  CXX                 compiler (default g++, then c++, then clang++)
  MLX_ATTN_MSL_OPT    optimisation flag for kernels (default -O1)
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from .errors import MetalCompileError

SHIM_DIR = Path(__file__).resolve().parent / "shim"
_SHIM_FILES = ("msl_abi.h", "msl_types.h", "msl_math.h", "msl_memory.h", "msl_simd.h", "msl_shim.h",
               "msl_fiber_switch.h", "msl_runtime.cpp")

_lock = threading.RLock()
_runtime = None
_kernels: dict[str, tuple[ctypes.CDLL, int]] = {}
_compiler_id: str | None = None
_cache_dir: Path | None = None


def compiler() -> str:
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return c
    raise MetalCompileError("no C++ compiler found (set CXX); the MSL emulator needs g++ or clang++")


def _compiler_identity() -> str:
    global _compiler_id
    if _compiler_id is None:
        cxx = compiler()
        try:
            out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
        except OSError as e:  # pragma: no cover
            raise MetalCompileError(f"cannot run {cxx}: {e}") from e
        _compiler_id = cxx + "\n" + out.splitlines()[0] if out else cxx
    return _compiler_id


def cache_dir() -> Path:
    global _cache_dir
    if _cache_dir is not None and os.environ.get("MLX_ATTN_MSL_CACHE", str(_cache_dir)) == str(_cache_dir):
        return _cache_dir
    env = os.environ.get("MLX_ATTN_MSL_CACHE")
    candidates = [Path(env)] if env else [Path.home() / ".cache" / "mlx_attn" / "msl_emulator"]
    candidates.append(Path(tempfile.gettempdir()) / f"mlx_attn_msl_emulator_{os.getuid()}")
    for c in candidates:
        try:
            c.mkdir(parents=True, exist_ok=True)
            probe = c / f".probe_{os.getpid()}"
            probe.write_text("")
            probe.unlink()
            _cache_dir = c
            return c
        except OSError:
            continue
    raise MetalCompileError("no writable cache directory for compiled kernels (set MLX_ATTN_MSL_CACHE)")


def shim_hash() -> str:
    h = hashlib.sha256(_compiler_identity().encode())
    for f in _SHIM_FILES:
        h.update(f.encode())
        h.update((SHIM_DIR / f).read_bytes())
    return h.hexdigest()


def _build(cmd: list[str], out: Path, what: str, source_path: Path | None = None):
    tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    proc = subprocess.run(cmd + ["-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        msg = proc.stderr.strip()
        lines = msg.splitlines()
        if len(lines) > 80:
            msg = "\n".join(lines[:80]) + f"\n... ({len(lines) - 80} more lines)"
        where = f" (translated source: {source_path})" if source_path else ""
        raise MetalCompileError(f"{what} failed to compile{where}:\n{msg}")
    os.replace(tmp, out)


def runtime() -> ctypes.CDLL:
    """The fiber runtime, built once per shim version and loaded RTLD_GLOBAL so
    kernel libraries resolve their msl_rt_* symbols against it."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        out = cache_dir() / f"msl_runtime_{shim_hash()[:20]}.so"
        if not out.exists():
            _build([compiler(), "-std=c++17", "-O2", "-fPIC", "-shared", "-pthread", "-I", str(SHIM_DIR),
                    str(SHIM_DIR / "msl_runtime.cpp")], out, "the MSL emulator runtime")
        lib = ctypes.CDLL(str(out), mode=ctypes.RTLD_GLOBAL)
        lib.msl_rt_launch.restype = ctypes.c_int
        lib.msl_rt_launch.argtypes = [ctypes.c_void_p]
        _runtime = lib
        return lib


def kernel_flags() -> list[str]:
    opt = os.environ.get("MLX_ATTN_MSL_OPT", "-O1")
    return ["-std=c++17", opt, "-fPIC", "-shared", "-w", "-fno-strict-aliasing", "-fno-math-errno",
            "-I", str(SHIM_DIR)]


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
        d = cache_dir()
        so = d / f"k_{key[:32]}.so"
        src = d / f"k_{key[:32]}.cpp"
        if not so.exists():
            src.write_text(cpp_source)
            _build([compiler()] + flags + [str(src)], so, f"kernel '{label}'", src)
        lib = ctypes.CDLL(str(so))
        lib.msl_kernel_entry.restype = ctypes.c_void_p
        fn = lib.msl_kernel_entry()
        _kernels[key] = (lib, fn)
        return fn
