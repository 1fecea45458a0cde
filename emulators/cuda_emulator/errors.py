"""Exceptions raised by the CUDA emulator."""
from __future__ import annotations


class CudaEmulatorError(RuntimeError):
    """A hazard found while running kernels under the emulator, or a launch CUDA would reject.

    The message names the kernel, the hazard (divergent barrier or warp collective, out-of-bounds
    global or shared access, too much shared memory for the architecture, ...), the source line
    where it can, and the offending thread as blockIdx / threadIdx (warp and lane)."""


class CudaCompileError(CudaEmulatorError):
    """The kernel source did not compile as host C++ against the emulator's shim."""
