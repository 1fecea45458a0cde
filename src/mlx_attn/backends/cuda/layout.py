"""What the CUDA kernels read in place, stated once for the Python side: a unit last stride and
16-byte cp.async granules (every other stride a multiple of 8 fp16/bf16 elements, the data pointer
16-byte aligned). The backend declines a call whose q/k/v break it (the next backend runs); the
op copies a gradient that breaks it. The bridge (cuda_bridge/src/binding.cpp) checks the same
again before any launch, so nothing reaches a kernel unchecked.
"""
from __future__ import annotations


def layout_reasons(name: str, x) -> list[str]:
    """Why the kernels cannot read the torch tensor `x` (named `name`) in place; [] when they can."""
    shape, strides = tuple(x.shape), tuple(x.stride())
    if shape[-1] > 1 and strides[-1] != 1:
        return [f"{name} has a non-contiguous last dim (strides {strides}); the kernels need "
                f"stride 1 there"]
    if any(n > 1 and s % 8 for n, s in zip(shape[:-1], strides[:-1])):
        return [f"{name} strides {strides} are not multiples of 8 elements (16 bytes)"]
    if x.data_ptr() % 16:
        return [f"{name} data pointer is not 16-byte aligned"]
    return []
