"""The host C++ compiler and the on-disk cache of compiled libraries, shared by the emulators'
front ends (compiled kernels) and the SIMT runtime itself.

Environment:
  MLX_ATTN_EMU_CACHE  cache directory (default ~/.cache/mlx_attn/emulators, or a temporary
                      directory when that is not writable)
  CXX                 compiler (default g++, then c++, then clang++)
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

_compiler_id: str | None = None
_cache_dir: Path | None = None


class ToolchainError(RuntimeError):
    """No compiler, no writable cache, or a compile that failed."""


def compiler() -> str:
    for c in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if c and shutil.which(c):
            return c
    raise ToolchainError("no C++ compiler found (set CXX); the emulators need g++ or clang++")


def compiler_identity() -> str:
    """The compiler and its version: part of every cache key."""
    global _compiler_id
    if _compiler_id is None:
        cxx = compiler()
        try:
            out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
        except OSError as e:  # pragma: no cover
            raise ToolchainError(f"cannot run {cxx}: {e}") from e
        _compiler_id = cxx + "\n" + out.splitlines()[0] if out else cxx
    return _compiler_id


def cache_dir() -> Path:
    global _cache_dir
    env = os.environ.get("MLX_ATTN_EMU_CACHE")
    if _cache_dir is not None and (env is None or env == str(_cache_dir)):
        return _cache_dir
    candidates = [Path(env)] if env else [Path.home() / ".cache" / "mlx_attn" / "emulators"]
    candidates.append(Path(tempfile.gettempdir()) / f"mlx_attn_emulators_{os.getuid()}")
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
    raise ToolchainError("no writable cache directory for compiled kernels (set MLX_ATTN_EMU_CACHE)")


def files_hash(directory: Path, names) -> str:
    """A hash of the compiler identity and the named files: the version of a set of sources."""
    h = hashlib.sha256(compiler_identity().encode())
    for name in names:
        h.update(name.encode())
        h.update((directory / name).read_bytes())
    return h.hexdigest()


def build(cmd: list[str], out: Path, what: str, source_path: Path | None = None,
          error: type[Exception] = ToolchainError) -> None:
    """Runs `cmd -o <tmp>` and moves the result to `out` (atomically: concurrent builders of
    the same library each write their own temporary file)."""
    tmp = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    proc = subprocess.run(cmd + ["-o", str(tmp)], capture_output=True, text=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        msg = proc.stderr.strip()
        lines = msg.splitlines()
        if len(lines) > 80:
            msg = "\n".join(lines[:80]) + f"\n... ({len(lines) - 80} more lines)"
        where = f" (source: {source_path})" if source_path else ""
        raise error(f"{what} failed to compile{where}:\n{msg}")
    os.replace(tmp, out)
