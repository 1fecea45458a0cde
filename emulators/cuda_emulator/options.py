"""Run-time options of the CUDA emulator (they do not change the compiled code).

Defaults come from the environment:
  MLX_ATTN_CUDA_EMU_THREADS   OS threads running blocks (default: min(4, CPUs))
  MLX_ATTN_CUDA_EMU_SCHEDULE  order in which a block's threads run between synchronisation
                              points: forward (default), reverse or random
  MLX_ATTN_CUDA_EMU_SEED      seed of the random schedule (default 0)
  MLX_ATTN_CUDA_EMU_STACK_KB  stack of each emulated thread in KB (default 256)
  MLX_ATTN_CUDA_EMU_ARCH      target architecture for the shared-memory limit (default sm_86)
"""
from __future__ import annotations

from simt_runtime.run_options import RunOptions, RunOptionStack

# Shared memory one block may use (static + dynamic, with the opt-in attribute), in bytes.
# The default is sm_86: the smallest limit (99 KB) among the architectures the CUDA build
# targets (80, 86, 89, 90), so what passes here fits every one of them.
ARCH_SMEM = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_87": 163 * 1024, "sm_89": 99 * 1024,
             "sm_90": 227 * 1024}
DEFAULT_ARCH = "sm_86"

_options = RunOptionStack("MLX_ATTN_CUDA_EMU_", archs=ARCH_SMEM, default_arch=DEFAULT_ARCH)


def current() -> RunOptions:
    return _options.current()


def emulator_options(*, workers: int | None = None, schedule: str | None = None, seed: int | None = None,
                     stack_kb: int | None = None, arch: str | None = None):
    """Temporarily change how kernels run, e.g. ``with emulator_options(schedule="reverse")`` to
    shake out a missing barrier that the default order hides, or ``arch="sm_90"``."""
    return _options.override(workers=workers, schedule=schedule, seed=seed, stack_kb=stack_kb, arch=arch)
