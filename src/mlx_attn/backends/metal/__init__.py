"""The `metal` backend: MLX arrays on an Apple GPU, on our Metal shaders (metal/, top level; in a
wheel they are package data in shaders/ beside these files).

- backend.py    the backend class: what it supports
- blocks.py     block sizes per head dim and dtype (HEAD_DIMS: the head dims with a tuned entry)
- kernels.py    building each kernel variant once and launching it (grids, template arguments)
- attention.py  forward and backward as one differentiable MLX function (mx.custom_function)

Nothing imported here imports MLX: the backend registry reads HEAD_DIMS without it.
"""
from .backend import MetalBackend
from .blocks import HEAD_DIMS

__all__ = ["HEAD_DIMS", "MetalBackend"]
