"""The `cuda` backend: torch CUDA tensors on our CUDA kernels (cuda_bridge/, top level).

- backend.py    the backend class: what it supports (dtypes, head dims, strides, compute capability)
- extension.py  loading the compiled bridge `_cuda` (installed next to these files)
- ops.py        the kernels as torch custom ops, with autograd (imports torch)

Importing this package imports neither torch nor the extension.
"""
from .backend import CudaBackend

__all__ = ["CudaBackend"]
