"""Run-time options of the emulator (they do not change the kernel interface).

Defaults come from the environment:
  MLX_ATTN_MSL_THREADS   OS threads running threadgroups (default: min(4, CPUs))
  MLX_ATTN_MSL_SCHEDULE  order in which fibers run between synchronisation
                         points: forward (default), reverse or random
  MLX_ATTN_MSL_SEED      seed of the random schedule (default 0)
  MLX_ATTN_MSL_STACK_KB  stack of each emulated thread in KB (default 256)
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, replace

from simt_runtime import SCHEDULES  # the runtime's schedule codes (re-exported)

# Apple GPU limits the emulator enforces.
THREADGROUP_MEMORY_LIMIT = 32768
MAX_THREADS_PER_THREADGROUP = 1024


@dataclass(frozen=True)
class Options:
    workers: int
    schedule: str
    seed: int
    stack_kb: int


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _defaults() -> Options:
    sched = os.environ.get("MLX_ATTN_MSL_SCHEDULE", "forward").strip().lower()
    if sched not in SCHEDULES:
        raise ValueError(f"MLX_ATTN_MSL_SCHEDULE must be one of {sorted(SCHEDULES)}, got {sched!r}")
    return Options(
        workers=max(1, _env_int("MLX_ATTN_MSL_THREADS", min(4, os.cpu_count() or 1))),
        schedule=sched,
        seed=_env_int("MLX_ATTN_MSL_SEED", 0),
        stack_kb=max(16, _env_int("MLX_ATTN_MSL_STACK_KB", 256)),
    )


_local = threading.local()


def current() -> Options:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else _defaults()


@contextlib.contextmanager
def emulator_options(*, workers: int | None = None, schedule: str | None = None, seed: int | None = None,
                     stack_kb: int | None = None):
    """Temporarily change how kernels run under the emulator, e.g.
    ``with emulator_options(schedule="reverse"): ...`` to shake out missing
    barriers that the default forward order happens to hide."""
    base = current()
    changes = {k: v for k, v in dict(workers=workers, schedule=schedule, seed=seed, stack_kb=stack_kb).items()
               if v is not None}
    if "schedule" in changes and changes["schedule"] not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}")
    new = replace(base, **changes)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(new)
    try:
        yield new
    finally:
        stack.pop()
