"""The Metal backend's host side: kernel sources in kernels/, block sizes, launches, autodiff.

Kernel sources (`kernels/*.metal`, `kernels/common.h`) live inside the package so that they
ship in the wheel and are found at run time next to this file.
"""
from .attention import attention
from .blocks import HEAD_DIMS
from .kernels import Config, MetalKernels

__all__ = ["attention", "Config", "HEAD_DIMS", "MetalKernels"]
