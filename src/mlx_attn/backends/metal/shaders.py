"""Where the Metal shaders are and what each kernel's arguments are called (no MLX, no torch).

One source, two launchers: kernels.py hands these bodies to MLX's `mx.fast.metal_kernel` (which
writes the `[[kernel]]` signature itself); torch_launch.py hands the full sources that
msl_source.py builds from the same bodies and SIGNATURES to `torch.mps.compile_shader`.
"""
from __future__ import annotations

import functools
from pathlib import Path


def _shader_dir() -> Path:
    """The shaders: installed as package data next to this file (wheels), or the clone's top-level
    metal/ folder when the package runs from its source tree (editable install, PYTHONPATH=src)."""
    here = Path(__file__).resolve().parent
    installed = here / "shaders"
    return installed if installed.is_dir() else here.parents[3] / "metal"


KERNEL_DIR = _shader_dir()

# kernel name -> (input names, output names), in the order the kernels bind them
SIGNATURES = {
    "forward_prefill": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp"), ("out", "lse")),
    "forward_decode": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp"), ("part_o", "part_ml")),
    "decode_merge": (("part_o", "part_ml", "cu_q", "ip"), ("out", "lse")),
    "backward_dq": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp", "dout", "lse", "delta"),
                    ("dq",)),
    "backward_dkv": (("q", "k", "v", "mask", "cu_q", "cu_k", "ip", "fp", "dout", "lse", "delta"),
                     ("dk", "dv")),
}
# Inputs that carry run-time parameters (common.h: ip int32[16], fp float32[8]) rather than data.
PARAM_INPUTS = {"ip": "int", "fp": "float"}


@functools.cache
def kernel_text(name: str) -> str:
    return (KERNEL_DIR / name).read_text()


def body(kernel: str) -> str:
    return kernel_text(f"{kernel}.metal")


def header() -> str:
    return kernel_text("common.h")
