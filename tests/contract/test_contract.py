"""The contract suite: every SPEC case (tests/contract/cases.py) on every backend available or
emulated here, against the float64 reference (mlx_attn.reference), the only oracle.

Backends: `math` and `cpu` (numpy, torch and MLX CPU arrays), `metal` under the project's MSL
emulator (MLX arrays: msl_emulator.metal_kernel as its kernel factory; torch CPU tensors under
MLX_ATTN_METAL_EMULATE=1: the torch launcher on msl_emulator.torch_mps.compile_shader), `cuda` (torch CUDA tensors on a GPU;
without one, torch CPU tensors under MLX_ATTN_CUDA_EMULATE=1: the real kernel sources in the
project's CUDA emulator, through the same dispatch, custom ops and autograd; and `cuda-mlx`: MLX
CPU arrays standing for CUDA arrays under the same switch, through the MLX launcher and the
emulator's stand-in for mx.fast.precompiled_cuda_kernel). Each backend runs exactly the cases its
own `not_supported_reasons(call)` accepts: the cases are filtered at collection time on the
AttentionCall of each case (`mlx_attn.validate.check_dense` / `check_varlen` on zeros).

Criterion (SPEC, as FlashAttention's tests): a fused backend's error <= 2x the math backend's
error in the same dtype on the same inputs + 1e-5 (fp32: or <= 1e-4); the math backend itself is
within a few roundings of its dtype. Tolerances: tests/contract/tolerance.py.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os

import pytest

from mlx_attn import config

from mlx_attn.backends import by_name

from .cases import ALL
from .runner import HAVE, array_kinds, placeholder_call, run

BACKENDS = ("math", "cpu", "metal", "cuda")
# the emulator runs every Metal thread on the CPU: cases above this much work
# (B*Hq*Lq*Lk*(D+Dv)) are left to a Mac, where the real `metal` backend is available and this
# suite runs every case it supports, without the limit
EMULATED_METAL_WORK = 6_000_000
# the same for the CUDA emulator (each case also compiles one kernel library per dtype and
# head-dim bucket, once per machine)
EMULATED_CUDA_WORK = 3_000_000


@contextlib.contextmanager
def _switched_on(variable: str):
    """`variable`=1 for the duration (an emulation switch), then as it was."""
    saved = os.environ.get(variable)
    os.environ[variable] = "1"
    config.reload()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = saved
        config.reload()


def cuda_emulation():
    """MLX_ATTN_CUDA_EMULATE=1 for the duration (the cuda backend then takes torch CPU tensors
    and MLX CPU arrays)."""
    return _switched_on("MLX_ATTN_CUDA_EMULATE")


def metal_torch_emulation():
    """MLX_ATTN_METAL_EMULATE=1 for the duration (the metal backend's torch launcher then takes
    torch CPU tensors, on the MSL emulator's compile_shader)."""
    return _switched_on("MLX_ATTN_METAL_EMULATE")


def _cuda_emulated() -> bool:
    """No usable GPU, but the CUDA emulator and torch are here: the cuda cases run emulated."""
    real = by_name("cuda")
    return not (real is not None and real.available) and HAVE["torch"] and \
        importlib.util.find_spec("cuda_emulator") is not None


CUDA_EMULATED = _cuda_emulated()


def _metal_torch_emulated() -> bool:
    """No MPS device, but torch and the MSL emulator are here: the metal backend's torch cases
    run emulated (torch CPU tensors under MLX_ATTN_METAL_EMULATE=1)."""
    if not HAVE["torch"] or importlib.util.find_spec("msl_emulator") is None:
        return False
    import torch
    return not torch.backends.mps.is_available()


METAL_TORCH_EMULATED = _metal_torch_emulated()
# Cases the cuda backend fails today (strict xfails: a fix fails the entry, which must then go).
# Empty: "grad-1x1x1x1x7x40x40-window(9,4)-softcap4.0" (bf16; delta = rowsum(dout * out) read
# the bf16-rounded out, 2.8x the math path's error) passes since the tensor-core backward sums
# delta = sum_j P dP from its recomputed tiles, as the math path does (issue 17).
CUDA_KNOWN_FAILURES: dict = {}


def _emulated_metal():
    if not HAVE["mlx"]:
        return None
    from mlx_attn.backends.metal import MetalBackend
    from msl_emulator import metal_kernel
    return MetalBackend(kernel_factory=metal_kernel)


def _backend_for_filtering(name):
    """The backend whose declarations decide which cases run (metal: the emulated one)."""
    if name == "metal":
        real = by_name("metal")
        if real is not None and real.available:
            return real
        return _emulated_metal()
    return by_name(name)


def _work(case):
    if case.varlen:
        lens_q, lens_k, Hq, _, D, Dv = case.varlen
        return sum(a * b for a, b in zip(lens_q, lens_k)) * Hq * (D + Dv)
    B, Hq, _, Lq, Lk, D, Dv = case.shape
    return B * Hq * Lq * Lk * (D + Dv)


def _mlx_device(backend_name: str, real_metal: bool):
    """MLX arrays go to the GPU for a real Metal backend, to the CPU device otherwise."""
    import mlx.core as mx
    mx.set_default_device(mx.gpu if backend_name == "metal" and real_metal else mx.cpu)


def _params():
    params, counts = [], {}
    kinds = array_kinds()
    backends = {name: _backend_for_filtering(name) for name in BACKENDS}
    emulated = backends["metal"] is not None and backends["metal"].kernel_factory is not None
    for name, backend in backends.items():
        if name == "cuda" and CUDA_EMULATED:
            continue
        if backend is None or not backend.available:
            why = "not installed" if backend is None else "; ".join(backend.availability_reasons)
            params.append(pytest.param(name, None, None, None, id=f"{name}-unavailable",
                                       marks=pytest.mark.skip(reason=f"{name}: {why}")))
    for case in ALL:
        for kind in kinds:
            if kind.removesuffix("_cuda") not in case.kinds:
                continue
            for dtype in case.dtypes:
                if kind == "numpy" and dtype == "bfloat16":
                    continue  # numpy has no bfloat16
                call = None if kind == "mlx" else placeholder_call(case, kind, dtype)
                for name, backend in backends.items():
                    emulated_cuda = name == "cuda" and CUDA_EMULATED
                    torch_metal = (name == "metal" and kind == "torch" and METAL_TORCH_EMULATED
                                   and backend is not None)
                    if emulated_cuda and kind in ("torch", "mlx"):
                        with cuda_emulation():  # MLX CPU arrays stand for CUDA arrays
                            if kind == "mlx":
                                _mlx_device(name, False)
                                call = placeholder_call(case, kind, dtype)
                            if not backend.available or backend.not_supported_reasons(call):
                                continue
                    elif torch_metal:
                        with metal_torch_emulation():
                            if backend.not_supported_reasons(call):
                                continue
                    elif backend is None or not backend.available:
                        continue
                    if kind == "mlx" and not emulated_cuda:
                        _mlx_device(name, not emulated)
                        call = placeholder_call(case, kind, dtype)
                    if not (emulated_cuda or torch_metal) and backend.not_supported_reasons(call):
                        continue
                    if case.grad and "backward" not in backend.features:
                        continue
                    marks = ()
                    if name == "metal" and (emulated or torch_metal) \
                            and _work(case) > EMULATED_METAL_WORK:
                        marks = pytest.mark.skip(reason="metal under the MSL emulator: case "
                                                 "over the emulator's budget (runs on a Mac)")
                    elif emulated_cuda and _work(case) > EMULATED_CUDA_WORK:
                        marks = pytest.mark.skip(reason="cuda under the CUDA emulator: case over "
                                                 "the emulator's budget (runs on a GPU)")
                    elif name == "cuda" and case.name in CUDA_KNOWN_FAILURES:
                        marks = pytest.mark.xfail(reason=CUDA_KNOWN_FAILURES[case.name],
                                                  strict=True)
                    else:
                        counts[name] = counts.get(name, 0) + 1
                    params.append(pytest.param(name, case, kind, dtype, marks=marks, id=f"{name}-{kind}-{dtype}-{case.name}"))
    return params, counts


PARAMS, COUNTS = _params()
REAL_METAL = bool(by_name("metal") and by_name("metal").available)


@pytest.fixture(scope="module", autouse=True)
def emulated_metal():
    """Point the registered `metal` backend at the emulator's kernel factory (where there is no
    Metal GPU), for this module only."""
    backend = by_name("metal")
    if backend is None or backend.available or not HAVE["mlx"]:
        yield
        return
    from msl_emulator import metal_kernel
    saved = dict(backend.__dict__)
    backend.kernel_factory = metal_kernel
    for cached in ("availability_reasons", "kernels"):
        backend.__dict__.pop(cached, None)
    yield
    backend.__dict__.clear()
    backend.__dict__.update(saved)


@pytest.mark.parametrize("backend,case,kind,dtype", PARAMS)
def test_contract(backend, case, kind, dtype):
    if kind == "mlx":
        _mlx_device(backend, REAL_METAL)
    if backend == "cuda" and kind in ("torch", "mlx"):  # emulated (MLX: the CPU device)
        with cuda_emulation():
            run(backend, case, kind, dtype)
        return
    if backend == "metal" and kind == "torch":  # emulated: the torch launcher on CPU tensors
        with metal_torch_emulation():
            run(backend, case, kind, dtype)
        return
    run(backend, case, kind, dtype)
