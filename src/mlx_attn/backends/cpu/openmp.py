"""Whether the native kernel's torch calls run on torch's own OpenMP threads.

torch's CPU ops run on an OpenMP team whose workers spin-wait for a while after each op. Our
kernel's own thread pool would then share the cores with those spinning workers whenever a torch
op ran just before it (on 2 cores: a bf16 backward took 58 ms right after a torch copy, 50 ms with
OMP_WAIT_POLICY=PASSIVE). So, when torch's ATen parallel backend is OpenMP, the kernel enters that
same runtime (found among the libraries already loaded; nothing is loaded) for torch tensors.
numpy and MLX calls keep the kernel's own pool. `MLX_ATTN_CPU_OPENMP=0` turns this off.
"""
from __future__ import annotations

import functools
import os
import re

from .status import native

# OpenMP runtimes exporting libgomp's entry points: GNU's, LLVM's and Intel's
_RUNTIME = re.compile(r"(/\S*/lib(?:gomp|omp|iomp5)(?:-[0-9a-f]+)?\.so[.0-9]*)$", re.MULTILINE)


def loaded_openmp_runtimes(maps_path: str = "/proc/self/maps") -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process (Linux; [] elsewhere)."""
    try:
        with open(maps_path) as maps:
            return sorted(set(_RUNTIME.findall(maps.read())))
    except OSError:
        return []


@functools.cache
def torch_openmp() -> bool:
    """Attach the kernel to torch's OpenMP runtime once; True when torch calls should use it."""
    if os.environ.get("MLX_ATTN_CPU_OPENMP", "1").strip().lower() in ("0", "off", "false"):
        return False
    import torch  # noqa: PLC0415
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return False
    return any(native().attach_openmp(path) == "" for path in loaded_openmp_runtimes())
