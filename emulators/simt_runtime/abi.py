"""The SIMT runtime's C ABI from Python (simt_abi.h): its ctypes structures, the runtime
library (built once per version, loaded RTLD_GLOBAL so that compiled kernels resolve their
simt_rt_* symbols against it) and the launch call."""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from . import toolchain

RUNTIME_DIR = Path(__file__).resolve().parent  # simt_abi.h: put it on a kernel's include path
_RUNTIME_FILES = ("simt_abi.h", "simt_fiber_switch.h", "simt_runtime.cpp")
SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}
MSL, CUDA = 0, 1  # simt_dialect: how messages name threads, barriers and shared memory

_lock = threading.RLock()
_runtime = None


class SimtBuffer(ctypes.Structure):
    _fields_ = [("ptr", ctypes.c_void_p), ("lo", ctypes.c_void_p), ("hi", ctypes.c_void_p),
                ("name", ctypes.c_char_p), ("type", ctypes.c_char_p), ("is_const", ctypes.c_int32),
                ("elem_size", ctypes.c_int32)]


class SimtLaunch(ctypes.Structure):
    _fields_ = [("fn", ctypes.c_void_p), ("bufs", ctypes.POINTER(SimtBuffer)), ("nbufs", ctypes.c_int32),
                ("args", ctypes.c_void_p),
                ("grid", ctypes.c_uint32 * 3), ("threadgroup", ctypes.c_uint32 * 3),
                ("nworkers", ctypes.c_int32), ("schedule", ctypes.c_int32), ("seed", ctypes.c_uint64),
                ("tg_mem_limit", ctypes.c_int32), ("stack_kb", ctypes.c_int32),
                ("max_threads", ctypes.c_int32), ("dialect", ctypes.c_int32),
                ("kernel_name", ctypes.c_char_p), ("op_names", ctypes.POINTER(ctypes.c_char_p)),
                ("n_op_names", ctypes.c_int32), ("thread_exit", ctypes.c_void_p),
                ("err", ctypes.c_void_p), ("errlen", ctypes.c_int32)]


def runtime_hash() -> str:
    return toolchain.files_hash(RUNTIME_DIR, _RUNTIME_FILES)


def runtime_library() -> ctypes.CDLL:
    """The fiber runtime, compiled on first use (cached on disk by source hash)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            return _runtime
        out = toolchain.cache_dir() / f"simt_runtime_{runtime_hash()[:20]}.so"
        if not out.exists():
            toolchain.build([toolchain.compiler(), "-std=c++17", "-O2", "-fPIC", "-shared", "-pthread",
                             "-I", str(RUNTIME_DIR), str(RUNTIME_DIR / "simt_runtime.cpp")],
                            out, "the SIMT runtime")
        lib = ctypes.CDLL(str(out), mode=ctypes.RTLD_GLOBAL)
        lib.simt_rt_launch.restype = ctypes.c_int
        lib.simt_rt_launch.argtypes = [ctypes.c_void_p]
        _runtime = lib
        return lib


def op_names(names) -> ctypes.Array:
    """A C array of op names for SimtLaunch.op_names (keep it alive during the launch)."""
    arr = (ctypes.c_char_p * max(1, len(names)))()
    for i, n in enumerate(names):
        arr[i] = n.encode()
    return arr


def launch(L: SimtLaunch) -> tuple[int, str]:
    """Runs a launch; (0, "") on success, (1, hazard report) or (2, invalid launch message)."""
    err = ctypes.create_string_buffer(8192)
    L.err = ctypes.addressof(err)
    L.errlen = len(err)
    rc = runtime_library().simt_rt_launch(ctypes.addressof(L))
    return rc, err.value.decode(errors="replace")
