"""SIMT runtime shared by the emulators (a verification tool, not part of mlx_attn): runs
kernels compiled as host C++ with every GPU thread a cooperative fiber, 32-lane warps with
collective exchange, block barriers with divergence detection, guard-paged fiber stacks, a few
OS threads running blocks, and forward / reverse / random thread schedules. The MSL emulator
(emulators/msl_emulator) and the CUDA emulator (emulators/cuda_emulator) are its front ends.
"""
from .abi import (CUDA, MSL, RUNTIME_DIR, SCHEDULES, SimtBuffer, SimtLaunch, launch, op_names,
                  runtime_hash, runtime_library)
from .toolchain import ToolchainError, build, cache_dir, compiler, compiler_identity, files_hash

__all__ = ["CUDA", "MSL", "RUNTIME_DIR", "SCHEDULES", "SimtBuffer", "SimtLaunch", "ToolchainError",
           "build", "cache_dir", "compiler", "compiler_identity", "files_hash", "launch",
           "op_names", "runtime_hash", "runtime_library"]
