"""The `cpu` backend: numpy arrays, torch CPU tensors and MLX CPU arrays on the native C++ kernel of
cpu_bridge/ (top level). Importing this package imports no framework and no extension.

- backend.py   the backend class: what it supports, and which glue runs a call
- status.py    whether the extensions are built and usable (the MLX version check)
- strided.py   array descriptions (data pointer + element strides) and the kernel's problem spec
- numpy_op.py  numpy arrays, zero-copy
- torch_op.py  torch custom ops (forward and backward, registered with autograd)
- openmp.py    whether the torch ops run the kernel on torch's own OpenMP threads
- mlx_op.py    the MLX primitive (its vjp is the native backward)

Compiled modules, installed next to these files: `_kernel` (numpy / torch, no MLX dependency) and
`_mlx_primitive` (NB_DOMAIN mlx, linked against the libmlx it was built with). `pip install .`
builds both (CMake options MLX_ATTN_BUILD_CPU, MLX_ATTN_BUILD_MLX). Developer build: the editable
install of the README's layout section, or by hand:

    cmake -S . -B build/dev -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build/dev -j2
    (cd src/mlx_attn/backends/cpu && ln -sf ../../../../build/dev/cpu_bridge/*.so .)   # git-ignored links
"""
from .backend import CpuBackend

__all__ = ["CpuBackend"]
