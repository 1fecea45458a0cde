"""Compiles CUDA C++ as host C++ against the emulator's shim and the SIMT runtime, caching the
shared libraries on disk by the hash of everything that goes into them.

The include roots (by default the project's cuda_bridge/include and include/) are copied into
the cache through the front end (frontend.py), each file starting with a #line marker naming
the original, so compiler messages and hazard reports point at the real sources.

Environment:
  MLX_ATTN_EMU_CACHE        cache directory (see simt_runtime.toolchain)
  CXX                       compiler (default g++, then c++, then clang++)
  MLX_ATTN_CUDA_EMU_OPT     optimisation flag for kernels (default -O2)
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
from pathlib import Path

import simt_runtime
from simt_runtime import toolchain

from .errors import CudaCompileError
from .frontend import Rewriter
from .module import Module

SHIM_DIR = Path(__file__).resolve().parent / "shim"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_INCLUDE_ROOTS = (REPO / "cuda_bridge" / "include", REPO / "include")
_SOURCE_SUFFIXES = (".h", ".hpp", ".cuh", ".inc", ".inl")

_lock = threading.RLock()
_modules: dict[str, Module] = {}
_building: dict[str, threading.Lock] = {}


def _cpu_flags() -> list[str]:
    """-mfma / -mf16c when this CPU has them (the cache is per machine); no contraction of
    a * b + c into fma, so results do not depend on them."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [f"-m{x}" for x in ("fma", "f16c") if x in flags]


def kernel_flags() -> list[str]:
    """-Bsymbolic and -fno-gnu-unique keep every library to itself: the same inline function
    statics (the emulator's state, launch.cuh's once-per-device flags) and template kernels
    exist in each library, and must not be merged across them (a patched library beside the
    original one). -g1 -gdwarf-4: line tables for the fault reports (addr2line)."""
    opt = os.environ.get("MLX_ATTN_CUDA_EMU_OPT", "-O2")
    return ["-std=c++17", opt, "-fPIC", "-shared", "-w", "-fno-strict-aliasing", "-ffp-contract=off",
            "-fno-math-errno", "-fno-gnu-unique", "-Wl,-Bsymbolic", "-g1", "-gdwarf-4",
            "-DMLX_ATTN_CUDA_EMULATE=1"] + _cpu_flags()


def shim_hash() -> str:
    names = sorted(p.name for p in SHIM_DIR.iterdir() if p.is_file())
    return hashlib.sha256((toolchain.files_hash(SHIM_DIR, names) + simt_runtime.runtime_hash()).encode()).hexdigest()


def _rewrite_roots(roots, rewriter: Rewriter, patches) -> list[tuple[str, str]]:
    """(relative path under the copy, rewritten text) of every header under the roots."""
    files, unused = [], dict(patches or {})
    for k, root in enumerate(roots):
        root = Path(root).resolve()
        for p in sorted(root.rglob("*")):
            if not (p.is_file() and p.suffix in _SOURCE_SUFFIXES):
                continue
            rel = str(p.relative_to(root))
            text = p.read_text()
            for old, new in unused.pop(rel, ()):
                if text.count(old) != 1:
                    raise ValueError(f"patch of {rel}: {old!r} occurs {text.count(old)} times, not once")
                text = text.replace(old, new)
            files.append((f"{k}/{rel}", f'#line 1 "{p}"\n' + rewriter.rewrite(text)))
    if unused:
        raise ValueError(f"patches name files not under the include roots: {sorted(unused)}")
    return files


def _materialise(files: list[tuple[str, str]], digest: str) -> Path:
    top = toolchain.cache_dir() / f"cuda_src_{digest[:24]}"
    if not top.exists():
        tmp = top.with_name(f"{top.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for rel, text in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        try:
            os.replace(tmp, top)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    return top


def compile_source(source: str, label: str = "cuda_source", include_roots=DEFAULT_INCLUDE_ROOTS,
                   defines: dict | None = None, patches: dict | None = None) -> Module:
    """Compiles (or finds in the cache) a CUDA C++ translation unit: kernels plus `extern "C"`
    host functions that launch them with `<<<...>>>`; returns the loaded Module.

    `patches` {"mlx_attn_cuda/layout.h": [(old, new), ...]} edits the copies of the headers
    (each `old` must occur once): how the tests plant bugs without touching the sources."""
    try:
        simt_runtime.runtime_library()
    except toolchain.ToolchainError as e:
        raise CudaCompileError(str(e)) from e
    rewriter = Rewriter()
    files = _rewrite_roots(include_roots, rewriter, patches)
    tu = f'#line 1 "{label}"\n' + rewriter.rewrite(source)
    flags = kernel_flags() + [f"-D{k}={v}" for k, v in sorted((defines or {}).items())]
    h = hashlib.sha256(shim_hash().encode())
    for part in [" ".join(flags)] + [x for f in files for x in f] + [tu]:
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()
    with _lock:
        mod = _modules.get(key)
        if mod is not None:
            return mod
        key_lock = _building.setdefault(key, threading.Lock())
    with key_lock:  # builds of different libraries run in parallel
        with _lock:
            mod = _modules.get(key)
        if mod is not None:
            return mod
        try:
            tree_digest = hashlib.sha256("".join(x for f in files for x in f).encode()).hexdigest()
            top = _materialise(files, tree_digest)
            d = toolchain.cache_dir()
            so, cpp = d / f"cuda_{key[:32]}.so", d / f"cuda_{key[:32]}.cpp"
            if not so.exists():
                cpp.write_text(tu)
                incs = ["-I", str(SHIM_DIR), "-I", str(simt_runtime.RUNTIME_DIR)]
                for k in range(len(include_roots)):
                    incs += ["-I", str(top / str(k))]
                toolchain.build([toolchain.compiler()] + flags + incs + [str(cpp)], so, f"'{label}'", cpp,
                                error=CudaCompileError)
        except toolchain.ToolchainError as e:
            raise CudaCompileError(str(e)) from e
        mod = Module(so, label)
        with _lock:
            _modules[key] = mod
        return mod
