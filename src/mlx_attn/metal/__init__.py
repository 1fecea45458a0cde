"""The Metal backend's host side: kernel sources in kernels/, block sizes, launches, autodiff.

Kernel sources (`kernels/*.metal`, `kernels/common.h`) live inside the package so that they
ship in the wheel and are found at run time next to this file.
"""
from .blocks import HEAD_DIMS

# Nothing here imports MLX: the backend registry reads HEAD_DIMS without it. The MLX-dependent
# modules are imported where they are used: attention.attention, kernels.Config / MetalKernels.
__all__ = ["HEAD_DIMS"]
