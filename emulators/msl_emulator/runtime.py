"""Moves MLX arrays into emulator buffers, launches a compiled kernel through
the fiber runtime and wraps the outputs back into MLX arrays."""
from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

import simt_runtime
from simt_runtime import SCHEDULES

from . import compiler, options
from .errors import MetalEmulatorError
from .signature import TYPE_STRINGS, Param, dtype_name

_NP_DTYPES = {
    "float32": np.float32, "float16": np.float16, "bfloat16": np.uint16, "bool": np.bool_,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
}
_FLOATS = {"float32", "float16", "bfloat16"}


def np_dtype(name: str):
    if name not in _NP_DTYPES:
        raise MetalEmulatorError(f"dtype {name} is not supported by the MSL emulator")
    return _NP_DTYPES[name]


def numpy_view(a):
    """Zero-copy numpy view of an MLX array (bfloat16 viewed as uint16)."""
    import mlx.core as mx

    if dtype_name(a.dtype) == "bfloat16":
        a = a.view(mx.uint16)
    return np.array(a, copy=False)


class _Mem:
    """A 64-byte aligned host allocation (Metal buffers are at least that aligned;
    the host copy of an MLX array may be only 8-byte aligned)."""

    def __init__(self, nbytes: int):
        self.raw = np.empty(nbytes + 128, dtype=np.uint8)
        base = self.raw.ctypes.data
        self.addr = (base + 63) // 64 * 64
        self.nbytes = nbytes

    def view(self, dtype, count):
        off = self.addr - self.raw.ctypes.data
        return self.raw[off:off + self.nbytes].view(dtype)[:count]


@dataclass
class InputData:
    array: object  # mx.array (0-d arrays for python scalars)
    view: np.ndarray
    mem: _Mem
    ptr: int
    lo: int
    hi: int
    strides: list[int]  # in elements


def prepare_input(a, ensure_row_contiguous: bool) -> InputData:
    v = numpy_view(a)
    if ensure_row_contiguous and not v.flags.c_contiguous:
        v = np.ascontiguousarray(v)  # MLX copies such inputs before the launch
    item = v.itemsize
    if v.size == 0:
        lo_off = hi_off = 0
        span = 0
    else:
        lo_off = sum(s * (n - 1) for s, n in zip(v.strides, v.shape) if s < 0)
        hi_off = sum(s * (n - 1) for s, n in zip(v.strides, v.shape) if s > 0)
        span = hi_off - lo_off + item
    src = v.ctypes.data
    mem = _Mem(span)
    if span:
        ctypes.memmove(mem.addr, src + lo_off, span)
    strides = [s // item for s in v.strides]
    return InputData(a, v, mem, mem.addr - lo_off, mem.addr, mem.addr + span, strides)


def _small(values, ctype) -> _Mem:
    arr = np.asarray(values, dtype=ctype).reshape(-1)
    mem = _Mem(max(arr.nbytes, 0))
    if arr.nbytes:
        ctypes.memmove(mem.addr, arr.ctypes.data, arr.nbytes)
    return mem


def launch(fn_addr: int, kernel_label: str, params: list[Param], inputs: list[InputData], output_shapes,
           output_dtypes, grid, threadgroup, init_value):
    import mlx.core as mx

    keep = []
    outs = []
    for shape, dt in zip(output_shapes, output_dtypes):
        name = dtype_name(dt)
        count = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        nbytes = count * TYPE_STRINGS[name][1]
        mem = _Mem(nbytes)
        if init_value is not None:
            fill = numpy_view(mx.array(init_value).astype(dt)).reshape(1)
            mem.view(np_dtype(name), count)[:] = fill[0]
        else:  # uninitialised: NaN for floating types, a 0xA5 pattern otherwise
            mem.view(np.uint8, nbytes)[:] = 0xFF if name in _FLOATS else 0xA5
        outs.append((mem, count, name, tuple(int(s) for s in shape)))

    bufs = (simt_runtime.SimtBuffer * max(1, len(params)))()
    for i, p in enumerate(params):
        b = bufs[i]
        b.name = p.name.encode()
        b.type = p.ctype.encode()
        b.is_const = 1 if p.is_const else 0
        if p.kind == "output":
            mem = outs[p.output_index][0]
            b.ptr, b.lo, b.hi = mem.addr, mem.addr, mem.addr + mem.nbytes
            b.elem_size = TYPE_STRINGS[outs[p.output_index][2]][1]
            continue
        d = inputs[p.input_index]
        if p.kind == "input":
            b.ptr, b.lo, b.hi = d.ptr, d.lo, d.hi
            b.elem_size = d.view.itemsize
            continue
        if p.kind == "shape":
            mem = _small(d.view.shape, np.int32)
            b.elem_size = 4
        elif p.kind == "strides":
            mem = _small(d.strides, np.int64)
            b.elem_size = 8
        else:  # ndim
            mem = _small([d.view.ndim], np.int32)
            b.elem_size = 4
        keep.append(mem)
        b.ptr, b.lo, b.hi = mem.addr, mem.addr, mem.addr + mem.nbytes

    run(fn_addr, kernel_label, bufs, len(params), grid, threadgroup)
    del keep

    results = []
    for mem, count, name, shape in outs:
        data = np.array(mem.view(np_dtype(name), count)).reshape(shape)
        arr = mx.array(data)
        if name == "bfloat16":
            arr = arr.view(mx.bfloat16)
        results.append(arr)
    return results


def run(fn_addr: int, kernel_label: str, bufs, nbufs: int, grid, threadgroup) -> None:
    """Runs a compiled kernel on bound buffers (an array of ``simt_runtime.SimtBuffer``).
    Like Metal's ``dispatchThreads``, ``grid`` counts threads; the threadgroup is clamped to
    the grid in each dimension (MLX does so; a partial threadgroup is what Metal runs then).
    A bad launch raises ValueError, a hazard MetalEmulatorError."""
    opts = options.current()
    names = simt_runtime.op_names(compiler.OP_NAMES)
    L = simt_runtime.SimtLaunch()
    L.fn = fn_addr
    L.bufs = bufs
    L.nbufs = nbufs
    for d in range(3):
        L.grid[d] = int(grid[d])
        L.threadgroup[d] = min(int(threadgroup[d]), int(grid[d])) if int(grid[d]) > 0 else int(threadgroup[d])
    L.nworkers = opts.workers
    L.schedule = SCHEDULES[opts.schedule]
    L.seed = opts.seed & 0xFFFFFFFFFFFFFFFF
    L.tg_mem_limit = options.THREADGROUP_MEMORY_LIMIT
    L.stack_kb = opts.stack_kb
    L.max_threads = options.MAX_THREADS_PER_THREADGROUP
    L.dialect = simt_runtime.MSL
    L.kernel_name = kernel_label.encode()
    L.op_names = names
    L.n_op_names = len(compiler.OP_NAMES)
    compiler.runtime()
    rc, message = simt_runtime.launch(L)
    if rc == 2:
        raise ValueError(message)
    if rc != 0:
        raise MetalEmulatorError(message)
