"""A stand-in for MLX's `mx.fast.precompiled_cuda_kernel` on the CUDA emulator: what mlx_attn's
MLX launcher (src/mlx_attn/backends/cuda/mlx_launch.py) calls under MLX_ATTN_CUDA_EMULATE=1,
with MLX CPU arrays standing for arrays on a CUDA device.

It receives the same call as MLX (keyword arguments name, compiled_source, inputs, output_shapes,
output_dtypes, scalars, grid, threadgroup, shared_memory, init_value, ensure_row_contiguous,
stream), and launches as MLX's CUDA backend does (mlx/backend/cuda/custom_kernel.cpp): the
kernel `name` of the image, block = min(threadgroup, grid) and grid = ceil(grid / threadgroup)
per dimension (MLX's grid counts threads), arguments in MLX's order: one pointer per input, one
per output, then the scalars (bool, int32, float32), with `shared_memory` bytes of dynamic shared
memory (opted into above 48000 bytes, as MLX does). Outputs are filled with `init_value`, or
else poisoned with NaN bytes (MLX leaves them uninitialised).

The image: the emulator cannot run PTX, so `compiled_source` is the entry-point source
(`kernel_source`, cuda_bridge/src/mlx_entries.cu.in for one dtype and bucket), compiled
once per text with a host launcher per `extern "C" __global__` entry found in it. The launcher
unpacks an array of argument addresses by the kernel's own parameter types, as cuLaunchKernel
does, and refuses a count that differs from the kernel's (a real launch would read garbage).
Only ensure_row_contiguous=True is modelled (every input is made row-contiguous).
"""
from __future__ import annotations

import ctypes
import re

import numpy as np

from .attention import bf16_from_float
from .compiler import REPO, compile_source
from .errors import CudaEmulatorError
from .memory import DeviceArray

ENTRY_TEMPLATE = REPO / "cuda_bridge" / "src" / "mlx_entries.cu.in"
_CTYPES = {"float16": "__half", "bfloat16": "__nv_bfloat16"}
_TAGS = {"float16": "fp16", "bfloat16": "bf16"}
_ENTRY = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(')

_LAUNCHER_HEAD = r"""
#include <cuda_runtime.h>

#include <cstddef>
#include <type_traits>
#include <utility>
namespace mlxemu {
template <class... A, size_t... I>
void call(void (*k)(A...), dim3 g, dim3 b, size_t smem, void** args, std::index_sequence<I...>) {
  k<<<g, b, smem>>>(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
// As cuLaunchKernel: args[i] is the address of the i-th argument's value.
template <class... A>
int launch(void (*k)(A...), unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
           unsigned bz, long long smem, void** args, int nargs) {
  if (nargs != (int)sizeof...(A)) return (int)sizeof...(A) + 1;
  if (smem > 48000) cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  call(k, dim3(gx, gy, gz), dim3(bx, by, bz), (size_t)smem, args, std::index_sequence_for<A...>{});
  return 0;
}
}  // namespace mlxemu
"""
_LAUNCHER = """
extern "C" __attribute__((visibility("default"))) int mlxemu_{name}(unsigned gx, unsigned gy,
    unsigned gz, unsigned bx, unsigned by, unsigned bz, long long smem, void** args, int nargs) {{
  return mlxemu::launch(&{name}, gx, gy, gz, bx, by, bz, smem, args, nargs);
}}
"""


def kernel_source(dtype: str, bucket: int) -> str:
    """The entry points of (dtype, head-dim bucket), as cuda_bridge/CMakeLists.txt generates
    them for nvcc."""
    text = ENTRY_TEMPLATE.read_text()
    for key, value in (("MA_CTYPE", _CTYPES[dtype]), ("MA_TAG", _TAGS[dtype]), ("MA_HDIM", str(bucket))):
        text = text.replace(f"@{key}@", value)
    return text


def entries(source: str) -> list[str]:
    """The names of the `extern "C" __global__` kernels of a source."""
    return _ENTRY.findall(source)


def module_for(source: str, patches=None):
    """The compiled source with a host launcher per entry (cached by text)."""
    names = entries(source)
    text = source + _LAUNCHER_HEAD + "".join(_LAUNCHER.format(name=n) for n in names)
    return compile_source(text, "mlx_entries.cu", patches=patches)


# MLX dtype name -> (numpy dtype of the emulator's buffer, bf16 as its uint16 bits)
_NP = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32, "bool": np.bool_,
       "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint16": np.uint16}


def _name(dtype) -> str:
    return str(dtype).split(".")[-1].replace("bool_", "bool")


def _to_numpy(a) -> np.ndarray:
    import mlx.core as mx
    if _name(a.dtype) == "bfloat16":
        a = a.view(mx.uint16)
    return np.ascontiguousarray(np.array(a, copy=True))


def _to_mlx(x: np.ndarray, dtype):
    import mlx.core as mx
    a = mx.array(x)
    return a.view(mx.bfloat16) if _name(dtype) == "bfloat16" else a


def _scalar(v):
    if isinstance(v, (bool, np.bool_)):
        return ctypes.c_bool(bool(v))
    if isinstance(v, (int, np.integer)):
        if not -2**31 <= int(v) < 2**31:
            raise OverflowError(f"[precompiled_cuda_kernel] scalar {v} does not fit int32 (MLX "
                                f"passes int scalars as int32)")
        return ctypes.c_int32(int(v))
    if isinstance(v, (float, np.floating)):
        return ctypes.c_float(float(v))
    raise ValueError(f"[precompiled_cuda_kernel] Invalid scalar argument type. Received "
                     f"{type(v).__name__} but must be one of bool, int or float")


def precompiled_cuda_kernel(*, name, compiled_source, inputs, output_shapes, output_dtypes, scalars,
                            grid, threadgroup, shared_memory=0, init_value=None,
                            ensure_row_contiguous=False, stream=None, patches=None):
    """Runs kernel `name` of `compiled_source` (entry-point source text, as bytes) on the
    emulator; returns the outputs as MLX arrays. `patches` (not MLX's) edit the kernel headers'
    copies, for planting bugs in tests."""
    if not ensure_row_contiguous:
        raise CudaEmulatorError("the stand-in models ensure_row_contiguous=True only")
    if len(output_shapes) != len(output_dtypes):
        raise ValueError("output_shapes and output_dtypes differ in length")
    source = bytes(compiled_source).decode()
    if name not in entries(source):
        raise CudaEmulatorError(f"There is no kernel named {name}.")  # MLX's own message
    mod = module_for(source, patches)
    keep = [DeviceArray.from_numpy(_to_numpy(a), f"input {i} of {name}", contiguous=True)
            for i, a in enumerate(inputs)]
    outs = []
    for i, (shape, dtype) in enumerate(zip(output_shapes, output_dtypes)):
        np_dtype = _NP[_name(dtype)]
        if init_value is None:
            outs.append(DeviceArray(shape, np_dtype, name=f"output {i} of {name}"))
        else:
            fill = np.full(shape, init_value, dtype=np.float32)
            fill = bf16_from_float(fill) if _name(dtype) == "bfloat16" else fill.astype(np_dtype)
            outs.append(DeviceArray.from_numpy(fill, f"output {i} of {name}", contiguous=True))
    values = [ctypes.c_void_p(d.ptr) for d in keep + outs] + [_scalar(v) for v in scalars]
    args = (ctypes.c_void_p * max(1, len(values)))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
    (gx, gy, gz), (tx, ty, tz) = (tuple(int(x) for x in grid), tuple(int(x) for x in threadgroup))
    block = (min(tx, gx), min(ty, gy), min(tz, gz))
    blocks = tuple(-(-g // t) for g, t in zip((gx, gy, gz), (tx, ty, tz)))
    code = mod.call(f"mlxemu_{name}", *[ctypes.c_uint(x) for x in blocks + block],
                    ctypes.c_longlong(int(shared_memory)), args, ctypes.c_int(len(values)))
    if code:
        raise CudaEmulatorError(f"kernel {name} takes {code - 1} arguments, the call passed "
                                f"{len(values)} ({len(inputs)} inputs, {len(outs)} outputs, "
                                f"{len(scalars)} scalars)")
    return [_to_mlx(d.copy_to_host(), dtype) for d, dtype in zip(outs, output_dtypes)]
