"""Run-time options of the MSL emulator (they do not change the kernel interface).

Defaults come from the environment:
  MLX_ATTN_MSL_THREADS   OS threads running threadgroups (default: min(4, CPUs))
  MLX_ATTN_MSL_SCHEDULE  order in which fibers run between synchronisation
                         points: forward (default), reverse or random
  MLX_ATTN_MSL_SEED      seed of the random schedule (default 0)
  MLX_ATTN_MSL_STACK_KB  stack of each emulated thread in KB (default 256)
"""
from __future__ import annotations

from simt_runtime.run_options import RunOptions, RunOptionStack

# Apple GPU limits the emulator enforces.
THREADGROUP_MEMORY_LIMIT = 32768
MAX_THREADS_PER_THREADGROUP = 1024

_options = RunOptionStack("MLX_ATTN_MSL_")


def current() -> RunOptions:
    return _options.current()


def emulator_options(*, workers: int | None = None, schedule: str | None = None, seed: int | None = None,
                     stack_kb: int | None = None):
    """Temporarily change how kernels run under the emulator, e.g.
    ``with emulator_options(schedule="reverse"): ...`` to shake out missing
    barriers that the default forward order happens to hide."""
    return _options.override(workers=workers, schedule=schedule, seed=seed, stack_kb=stack_kb)
