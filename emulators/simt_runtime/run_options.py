"""Run-time options of an emulator front end (how kernels run, never what is compiled): OS
threads running blocks, the order of a block's threads between synchronisation points, the
random schedule's seed, each fiber's stack, and (CUDA) the architecture whose shared-memory
limit applies. Each front end makes one RunOptionStack with its environment prefix; the
defaults come from the environment, `override()` changes them for a `with` block (per thread).
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, replace

from .abi import SCHEDULES


@dataclass(frozen=True)
class RunOptions:
    workers: int      # OS threads running blocks
    schedule: str     # forward, reverse or random
    seed: int         # seed of the random schedule
    stack_kb: int     # stack of each emulated thread
    arch: str | None  # target architecture (None: the front end has no choice of one)


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class RunOptionStack:
    """Options read from `<prefix>THREADS`, `SCHEDULE`, `SEED`, `STACK_KB` (and `ARCH` when
    `archs`, the allowed architectures, is given, defaulting to `default_arch`)."""

    def __init__(self, env_prefix: str, archs=None, default_arch: str | None = None):
        self.prefix = env_prefix
        self.archs = tuple(archs) if archs else ()
        self.default_arch = default_arch
        self._local = threading.local()

    def _check(self, o: RunOptions, source: str) -> None:
        if o.schedule not in SCHEDULES:
            raise ValueError(f"{source}schedule must be one of {sorted(SCHEDULES)}, got {o.schedule!r}")
        if self.archs and o.arch not in self.archs:
            raise ValueError(f"{source}arch must be one of {sorted(self.archs)}, got {o.arch!r}")

    def defaults(self) -> RunOptions:
        env = lambda key, default: os.environ.get(self.prefix + key, default).strip().lower()  # noqa: E731
        o = RunOptions(
            workers=max(1, _env_int(self.prefix + "THREADS", min(4, os.cpu_count() or 1))),
            schedule=env("SCHEDULE", "forward"),
            seed=_env_int(self.prefix + "SEED", 0),
            stack_kb=max(16, _env_int(self.prefix + "STACK_KB", 256)),
            arch=env("ARCH", self.default_arch) if self.archs else None,
        )
        self._check(o, f"{self.prefix}* environment: ")
        return o

    def current(self) -> RunOptions:
        stack = getattr(self._local, "stack", None)
        return stack[-1] if stack else self.defaults()

    @contextlib.contextmanager
    def override(self, **changes):
        new = replace(self.current(), **{k: v for k, v in changes.items() if v is not None})
        self._check(new, "")
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        stack.append(new)
        try:
            yield new
        finally:
            stack.pop()
