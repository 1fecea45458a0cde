"""Exceptions raised by the MSL emulator."""
from __future__ import annotations


class MetalEmulatorError(RuntimeError):
    """A hazard detected while running a kernel under the emulator.

    The message names the kernel, the hazard (divergent barrier, divergent SIMD
    function, out-of-bounds access, threadgroup memory over the limit, ...) and
    the offending thread: ``threadgroup_position_in_grid`` and
    ``thread_position_in_threadgroup`` (plus its grid position, simdgroup and lane).
    """


class MetalCompileError(MetalEmulatorError):
    """The translated kernel did not compile (the compiler's message is attached)."""


class MetalTranslateError(MetalEmulatorError):
    """The kernel source uses MSL the emulator cannot translate."""
