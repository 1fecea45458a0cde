"""MSL emulator: runs MLX custom Metal kernels on the CPU for testing.

``metal_kernel`` has the signature of ``mx.fast.metal_kernel`` and returns a
callable with the same call signature; the kernel's Metal source (built exactly
as MLX builds it) is translated to C++, compiled with the system compiler
against a shim of the MSL subset, and run with one cooperative fiber per GPU
thread. Hazards (divergent barriers or SIMD functions, out-of-bounds device
accesses, threadgroup memory over 32 KB, ...) raise :class:`MetalEmulatorError`.
See docs/msl_emulator.md.
"""
from .errors import MetalCompileError, MetalEmulatorError, MetalTranslateError
from .kernel import EmulatedKernel, metal_kernel
from .options import emulator_options
from .patch import emulation_requested, metal_kernel_factory, patched_metal_kernel

__all__ = [
    "EmulatedKernel",
    "MetalCompileError",
    "MetalEmulatorError",
    "MetalTranslateError",
    "emulation_requested",
    "emulator_options",
    "metal_kernel",
    "metal_kernel_factory",
    "patched_metal_kernel",
]
