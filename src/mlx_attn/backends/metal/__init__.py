"""The `metal` backend: MLX arrays and torch `mps` tensors on an Apple GPU, on our Metal shaders
(metal/, top level; in a wheel they are package data in shaders/ beside these files).

- backend.py          the backend class: what it supports, on which arrays and devices
- blocks.py           block sizes per head dim and dtype (HEAD_DIMS: the head dims with a tuned entry)
- shaders.py          where the shaders are; each kernel's input and output names (SIGNATURES)
- launches.py         grids, threadgroups, template arguments, output shapes: shared by both launchers
- kernels.py          the MLX launcher (mx.fast.metal_kernel), each variant built once
- attention.py        forward and backward as one differentiable MLX function (mx.custom_function)
- msl_source.py       the whole MSL source of one variant, from the same body (for compile_shader)
- torch_launch.py     the torch launcher (torch.mps.compile_shader), each variant compiled once
- torch_attention.py  forward and backward as one torch.autograd.Function

Nothing imported here imports MLX: the backend registry reads HEAD_DIMS without it.
"""
from .backend import MetalBackend
from .blocks import HEAD_DIMS

__all__ = ["HEAD_DIMS", "MetalBackend"]
