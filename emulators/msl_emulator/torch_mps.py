"""``compile_shader``: the emulator's stand-in for ``torch.mps.compile_shader``, on torch CPU
tensors.

``compile_shader(source)`` reads the whole Metal source's ``[[kernel]]`` functions and returns a
library whose attributes are those kernels; a kernel is called as torch calls it,
``lib.name(*args, threads=..., group_size=...)``, with torch's binding rules
(torch/csrc/mps/Module.cpp): argument i goes to ``[[buffer(i)]]``; a tensor is bound in place at
its first element (its storage offset), so the kernel reads and writes the tensor's own memory; a
list or tuple of Python ints becomes an int64 array, of floats a float32 array; an int an int64,
a float a float32. ``threads`` (an int or 1 to 3 ints; default: the first tensor's numel) is
the grid in threads, as Metal's ``dispatchThreads``; ``group_size`` has as many entries as
``threads``. Translation, compilation, the fiber runtime and the hazard checks are the ones
``metal_kernel`` uses (docs/msl_emulator.md).

Stricter than the GPU, on purpose: an argument whose element type or kind (buffer, list,
scalar) does not match its parameter, or a wrong number of arguments, raises instead of
reading garbage.
"""
from __future__ import annotations

import ctypes

import numpy as np

import simt_runtime

from . import compiler, runtime
from .errors import MetalEmulatorError
from .kernel import cpp_source
from .whole_source import kernels, type_aliases

# MSL / C type name -> (torch dtype name, bytes)
_TYPES = {
    "half": ("float16", 2), "float16_t": ("float16", 2), "bfloat": ("bfloat16", 2),
    "bfloat16_t": ("bfloat16", 2), "float": ("float32", 4), "float32_t": ("float32", 4),
    "bool": ("bool", 1), "char": ("int8", 1), "int8_t": ("int8", 1), "uchar": ("uint8", 1),
    "uint8_t": ("uint8", 1), "short": ("int16", 2), "int16_t": ("int16", 2),
    "ushort": ("uint16", 2), "uint16_t": ("uint16", 2), "int": ("int32", 4),
    "int32_t": ("int32", 4), "uint": ("uint32", 4), "uint32_t": ("uint32", 4),
    "long": ("int64", 8), "int64_t": ("int64", 8), "ulong": ("uint64", 8),
    "uint64_t": ("uint64", 8), "size_t": ("uint64", 8),
}


class EmulatedShaderLibrary:
    """What ``compile_shader`` returns: one attribute per ``[[kernel]]`` function."""

    def __init__(self, source: str):
        if not isinstance(source, str):
            raise TypeError(f"compile_shader: source must be a str, got {type(source).__name__}")
        self._source = source
        self._kernels = kernels(source)
        self._aliases = type_aliases(source)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        ks = self._kernels.get(name)
        if ks is None:
            raise AttributeError(f"the library has no kernel function {name!r} (it has: "
                                 f"{', '.join(sorted(self._kernels)) or 'none'})")
        return EmulatedTorchKernel(ks, self._aliases)

    def __dir__(self):
        return sorted(self._kernels)


def compile_shader(source: str) -> EmulatedShaderLibrary:
    """Drop-in for ``torch.mps.compile_shader``; kernels compile on their first call."""
    return EmulatedShaderLibrary(source)


def _resolve(ctype: str, aliases: dict) -> str:
    seen = set()
    while ctype in aliases and ctype not in seen:
        seen.add(ctype)
        ctype = aliases[ctype]
    return ctype.removeprefix("metal::")


def _dims(value, what: str) -> list[int]:
    if isinstance(value, int):
        value = [value]
    value = [int(v) for v in value]
    if not 1 <= len(value) <= 3:
        raise ValueError(f"{what}: 1 to 3 sizes, got {len(value)}")
    return value + [1] * (3 - len(value))


class EmulatedTorchKernel:
    def __init__(self, ks, aliases):
        self._ks = ks
        self._aliases = aliases

    @property
    def name(self) -> str:
        return self._ks.kernel_name

    def __call__(self, *args, threads=None, group_size=None, arg_casts=None):
        import torch

        ks = self._ks
        if arg_casts is not None:
            raise NotImplementedError("compile_shader (emulated): arg_casts is not emulated")
        if len(args) != len(ks.params):
            raise ValueError(f"kernel {ks.kernel_name} has {len(ks.params)} buffer parameters, "
                             f"got {len(args)} arguments")
        if threads is None:
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is None:
                raise ValueError("threads: undefined (no tensor argument to take numel from)")
            threads = first.numel()
        grid = _dims(threads, "threads")
        if group_size is None:
            group = [1024, 1, 1]  # torch: maxTotalThreadsPerThreadgroup along x
        else:
            n = 1 if isinstance(group_size, int) else len(group_size)
            m = 1 if isinstance(threads, int) else len(threads)
            if n != m:
                raise ValueError(f"group_size has {n} entries but threads has {m}")
            group = _dims(group_size, "group_size")
        bufs = (simt_runtime.SimtBuffer * max(1, len(args)))()
        keep = [self._bind(bufs[i], p, i, a, torch) for i, (p, a) in enumerate(zip(ks.params, args))]
        fn = compiler.load_kernel(cpp_source(ks, ks.kernel_name), ks.kernel_name)
        runtime.run(fn, ks.kernel_name, bufs, len(args), grid, group)
        del keep

    def _bind(self, b, p, index: int, arg, torch):
        """Binds one argument to buffer `index`; returns what must stay alive for the launch."""
        where = f"kernel {self._ks.kernel_name}: argument {index} ({p.name})"
        ctype = _resolve(p.ctype, self._aliases)
        want = _TYPES.get(ctype)
        b.name, b.type, b.is_const = p.name.encode(), p.ctype.encode(), int(p.is_const)
        if isinstance(arg, torch.Tensor):
            if arg.device.type != "cpu":
                raise ValueError(f"{where}: the emulator runs kernels on CPU tensors, got one on "
                                 f"{arg.device}")
            got = str(arg.dtype).removeprefix("torch.")
            if p.ref or want is None or want[0] != got:
                raise MetalEmulatorError(f"{where}: declared `{p.ctype}{'&' if p.ref else '*'}` "
                                         f"but bound to a {got} tensor")
            item = arg.element_size()
            span = 0 if arg.numel() == 0 else \
                (sum((n - 1) * s for n, s in zip(arg.shape, arg.stride())) + 1) * item
            b.ptr = b.lo = arg.data_ptr()
            b.hi = b.lo + span
            b.elem_size = item
            return arg
        if isinstance(arg, bool):
            raise MetalEmulatorError(f"{where}: a bool argument (torch binds only tensors, "
                                     f"ints, floats and lists of them)")
        if isinstance(arg, (list, tuple)):
            if not arg:
                raise ValueError(f"{where}: an empty list can not be an argument to a kernel")
            values, scalar = list(arg), False
        elif isinstance(arg, (int, float)):
            values, scalar = [arg], True
        else:
            raise TypeError(f"{where}: unsupported argument type {type(arg).__name__}")
        if isinstance(values[0], int):
            np_type, got = np.int64, "int64"
        elif isinstance(values[0], float):
            np_type, got = np.float32, "float32"
        else:
            raise TypeError(f"{where}: unexpected list element type {type(values[0]).__name__}")
        if want is None or want[0] != got or scalar != p.ref:
            shape = "scalar" if scalar else "list"
            raise MetalEmulatorError(f"{where}: declared `{p.ctype}{'&' if p.ref else '*'}` but "
                                     f"bound to a {got} {shape} (torch binds ints as int64, "
                                     f"floats as float32)")
        data = np.asarray(values, dtype=np_type)
        mem = runtime._Mem(data.nbytes)
        ctypes.memmove(mem.addr, data.ctypes.data, data.nbytes)
        b.ptr = b.lo = mem.addr
        b.hi = mem.addr + data.nbytes
        b.elem_size = data.itemsize
        return mem
