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

import contextlib
import os
import threading
from dataclasses import dataclass, replace

from simt_runtime import SCHEDULES

# Shared memory one block may use (static + dynamic, with the opt-in attribute), in bytes.
# The default is sm_86: the smallest limit (99 KB) among the architectures the CUDA build
# targets (80, 86, 89, 90), so what passes here fits every one of them.
ARCH_SMEM = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_87": 163 * 1024, "sm_89": 99 * 1024,
             "sm_90": 227 * 1024}
DEFAULT_ARCH = "sm_86"


@dataclass(frozen=True)
class Options:
    workers: int
    schedule: str
    seed: int
    stack_kb: int
    arch: str


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _check(schedule: str, arch: str) -> None:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    if arch not in ARCH_SMEM:
        raise ValueError(f"arch must be one of {sorted(ARCH_SMEM)}, got {arch!r}")


def _defaults() -> Options:
    o = Options(
        workers=max(1, _env_int("MLX_ATTN_CUDA_EMU_THREADS", min(4, os.cpu_count() or 1))),
        schedule=os.environ.get("MLX_ATTN_CUDA_EMU_SCHEDULE", "forward").strip().lower(),
        seed=_env_int("MLX_ATTN_CUDA_EMU_SEED", 0),
        stack_kb=max(16, _env_int("MLX_ATTN_CUDA_EMU_STACK_KB", 256)),
        arch=os.environ.get("MLX_ATTN_CUDA_EMU_ARCH", DEFAULT_ARCH).strip().lower(),
    )
    _check(o.schedule, o.arch)
    return o


_local = threading.local()


def current() -> Options:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else _defaults()


@contextlib.contextmanager
def emulator_options(*, workers: int | None = None, schedule: str | None = None, seed: int | None = None,
                     stack_kb: int | None = None, arch: str | None = None):
    """Temporarily change how kernels run, e.g. ``with emulator_options(schedule="reverse")`` to
    shake out a missing barrier that the default order hides, or ``arch="sm_90"``."""
    changes = {k: v for k, v in dict(workers=workers, schedule=schedule, seed=seed, stack_kb=stack_kb,
                                     arch=arch).items() if v is not None}
    new = replace(current(), **changes)
    _check(new.schedule, new.arch)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(new)
    try:
        yield new
    finally:
        stack.pop()
