"""CUDA emulator: runs our real CUDA kernel sources (cuda_bridge/include/mlx_attn_cuda) on the
CPU for testing, every CUDA thread a cooperative fiber on the SIMT runtime shared with the MSL
emulator (emulators/simt_runtime).

The sources are compiled as host C++ against a shim of the CUDA language and runtime (shim/),
after a front end lowers `__shared__` declarations and `<<<...>>>` launches (frontend.py);
inline PTX in ptx.h is replaced there by the instructions' semantics (cp.async, ldmatrix,
mma.sync, ex2). Hazards raise CudaEmulatorError. See docs/cuda_emulator.md.

    mod = compile_source(cuda_cpp_text)      # kernels + extern "C" host launchers
    mod.call("run", DeviceArray.from_numpy(x, "x"), 5)
    attention.forward(q, k, v, causal=True)  # the real flash-attention kernels
"""
from .compiler import compile_source
from .errors import CudaCompileError, CudaEmulatorError
from .memory import DeviceArray
from .module import Module
from .options import ARCH_SMEM, emulator_options

__all__ = ["ARCH_SMEM", "CudaCompileError", "CudaEmulatorError", "DeviceArray", "Module", "compile_source",
           "emulator_options"]
