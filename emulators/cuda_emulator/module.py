"""A compiled library of emulated CUDA code and calls into its host functions."""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import threading

import numpy as np

from . import options
from .errors import CudaEmulatorError
from .memory import DeviceArray, describe_address
from simt_runtime import SCHEDULES


class _Options(ctypes.Structure):  # cuda_emu_options in shim/cuda_runtime.h
    _fields_ = [("workers", ctypes.c_int32), ("schedule", ctypes.c_int32), ("seed", ctypes.c_uint64),
                ("stack_kb", ctypes.c_int32), ("smem_limit", ctypes.c_int32), ("arch", ctypes.c_char * 16)]


_BYREF = type(ctypes.byref(ctypes.c_int()))
_ADDRESS = re.compile(r"invalid memory access at address (0x[0-9a-fA-F]+)")


_PC = re.compile(r" \[pc((?: 0x[0-9a-fA-F]+)+) in (\S+)\]")


def source_of(library: str, offsets: list[int]) -> str | None:
    """'file line N (function)' of an instruction and the call sites above it (each with the
    calls it is inlined into), from the library's line tables (addr2line); None when they
    cannot be read."""
    tool = shutil.which("addr2line")
    if not tool:
        return None
    try:
        out = subprocess.run([tool, "-C", "-f", "-i", "-a", "-e", library] + [hex(o) for o in offsets],
                             capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    frames, i = [], 0
    while i < len(out):
        if out[i].startswith("0x"):  # -a: one address line, then (function, file:line) pairs
            i += 1
            continue
        func, loc = out[i], out[i + 1] if i + 1 < len(out) else ""
        i += 2
        path, _, line = loc.partition(":")
        line = line.split(" ")[0]
        func = func.split("(")[0].removeprefix("void ")
        if "cuda_emu::thread_entry" in func or func.startswith(("std::", "decltype")):
            break  # the emulator's launch glue below the kernel
        if line.isdigit() and line != "0":
            frames.append(f"{os.path.basename(path)} line {line} ({func})")
    return "\n     from ".join(frames) if frames else None


def annotate(msg: str) -> str:
    """Names the device buffer behind a faulting address, and the source line of the faulting
    instruction, in a runtime report."""
    pc = _PC.search(msg)
    if pc:
        where = source_of(pc.group(2), [int(x, 16) for x in pc.group(1).split()])
        msg = msg.replace(pc.group(0), "")
        if where:
            msg = msg.replace("\n  at ", f"\n  at {where}\n  by ", 1)
    m = _ADDRESS.search(msg)
    if m:
        where = describe_address(int(m.group(1), 16))
        if where:
            msg = msg.replace(m.group(0), f"out-of-bounds global memory access at {m.group(1)}: {where}", 1)
            msg = msg.replace(" (a raw thread/threadgroup pointer went out of range)", "", 1)
    return msg


def _c_arg(a):
    if isinstance(a, DeviceArray):
        return ctypes.c_void_p(a.ptr)
    if a is None:
        return ctypes.c_void_p(0)
    if isinstance(a, (ctypes._SimpleCData, ctypes.Structure, ctypes.Array, ctypes._Pointer, _BYREF)):
        return a
    if isinstance(a, (bool, np.bool_)):
        return ctypes.c_int(int(a))
    if isinstance(a, (int, np.integer)):
        return ctypes.c_int64(int(a)) if isinstance(a, np.int64) else ctypes.c_int(int(a))
    if isinstance(a, (float, np.floating)):
        return ctypes.c_double(float(a)) if isinstance(a, np.float64) else ctypes.c_float(float(a))
    raise TypeError(f"cannot pass {type(a).__name__} to an emulated host function")


class Module:
    """A loaded library: ``mod.call("run", out, inp, 5)`` calls its `extern "C"` function `run`
    (DeviceArray -> pointer, int -> int, float -> float, np.int64 -> int64, np.float64 ->
    double) with the current emulator options, then raises CudaEmulatorError if any launch
    inside failed."""

    def __init__(self, path, label: str):
        self.path, self.label = str(path), label
        self.lib = ctypes.CDLL(self.path)
        if self.lib.cuda_emu_abi_version() != 1:
            raise CudaEmulatorError(f"{self.path}: unexpected emulator ABI")
        self.lib.cuda_emu_take_error.restype = ctypes.c_int
        self._lock = threading.Lock()

    def configure(self) -> None:
        o = options.current()
        s = _Options(workers=o.workers, schedule=SCHEDULES[o.schedule], seed=o.seed & 0xFFFFFFFFFFFFFFFF,
                     stack_kb=o.stack_kb, smem_limit=options.ARCH_SMEM[o.arch], arch=o.arch.encode())
        self.lib.cuda_emu_configure(ctypes.byref(s))

    def take_error(self) -> str | None:
        buf = ctypes.create_string_buffer(16384)
        code = self.lib.cuda_emu_take_error(buf, len(buf))
        return annotate(buf.value.decode(errors="replace")) if code else None

    def call(self, name: str, *args, restype=ctypes.c_int):
        fn = getattr(self.lib, name)
        fn.restype = restype
        with self._lock:
            self.configure()
            self.take_error()
            result = fn(*[_c_arg(a) for a in args])
            err = self.take_error()
        if err:
            raise CudaEmulatorError(err)
        return result
