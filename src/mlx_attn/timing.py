"""Timing and memory helpers shared by the doctor and every benchmark in benchmarks/.

- `sync(x)` waits for an array's pending work: `mx.eval` for MLX (lazy), a CUDA
  synchronize for torch tensors on a GPU, nothing for numpy / CPU torch.
- `measure(fn)` warms up, then times repeats and reports the median (and min/max);
  `measure_interleaved(fns)` does the same for contenders timed in turn.
- `peak_rss_bytes()` is the process's high-water resident memory; `isolated_peak` runs a
  function in a fresh process so that high-water marks of several configurations do not mix.
"""
from __future__ import annotations

import multiprocessing
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

from .frameworks import kind_of


def sync(*results) -> None:
    """Block until every array in `results` (nested in tuples/lists) is computed."""
    for x in _flatten(results):
        kind = kind_of(x)
        if kind == "mlx":
            import mlx.core as mx
            mx.eval(x)
        elif kind == "torch" and x.device.type == "cuda":
            import torch
            torch.cuda.synchronize(x.device)


def _flatten(items):
    for x in items:
        if isinstance(x, (tuple, list)):
            yield from _flatten(x)
        elif x is not None:
            yield x


@dataclass
class Timing:
    median_s: float
    min_s: float
    max_s: float
    repeats: int
    times_s: list = field(repr=False, default_factory=list)

    def tflops(self, flops: float) -> float:
        return flops / self.median_s / 1e12 if self.median_s > 0 else float("nan")


def measure(fn, *, warmup: int = 2, repeats: int = 7, max_seconds: float = 30.0) -> Timing:
    """Median wall time of `fn()` including synchronisation of what it returns.

    Stops repeating early (keeping at least 3 samples) once `max_seconds` of timed runs have
    accumulated, so that a slow backend does not stall a whole benchmark table.
    """
    return measure_interleaved([fn], warmup=warmup, repeats=repeats, max_seconds=max_seconds)[0]


def measure_interleaved(fns, *, warmup: int = 2, repeats: int = 7, max_seconds: float = 30.0,
                        settle_s: float = 0.0) -> list[Timing]:
    """`measure` for several contenders at once, their repeats taken in turn (a, b, a, b, ...),
    so that a drift in machine speed (shared or throttling CPUs) reaches every contender alike
    and their ratio stays fair. `max_seconds` bounds the timed runs of all of them together.

    `settle_s`: an untimed pause before each timed call. OpenMP workers (torch's CPU ops) keep
    spinning for a few milliseconds after their parallel region ends; on a 2-core machine the
    call timed right after one would share its cores with that spin (measured: our L=1024
    forward at 136 GFLOP/s right after torch SDPA, 173 GFLOP/s 10 ms later)."""
    for fn in fns:
        for _ in range(warmup):
            sync(fn())
    times = [[] for _ in fns]
    for _ in range(max(repeats, 1)):
        for fn, ts in zip(fns, times):
            if settle_s > 0:
                time.sleep(settle_s)
            start = time.perf_counter()
            sync(fn())
            ts.append(time.perf_counter() - start)
        if len(times[0]) >= 3 and sum(map(sum, times)) > max_seconds:
            break
    return [Timing(statistics.median(ts), min(ts), max(ts), len(ts), ts) for ts in times]


def peak_rss_bytes() -> int:
    """High-water resident set size of this process so far.

    Linux: VmHWM from /proc (ru_maxrss survives exec, so a spawned child would report its
    parent's high-water mark from before the exec).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            import os
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def _child(queue, target, args):
    try:
        setup = target(*args, phase="setup")
        before = current_rss_bytes()
        target(*args, phase="run", state=setup)
        queue.put((before, peak_rss_bytes(), None))
    except BaseException as error:  # reported to the parent, not swallowed
        queue.put((0, 0, f"{type(error).__name__}: {error}"))


def isolated_peak(target, *args, timeout: float = 600.0) -> tuple[int, int]:
    """Run `target` in a fresh process; return (rss after setup, peak rss) in bytes.

    `target(*args, phase="setup")` builds inputs and returns them; `target(*args, phase="run",
    state=inputs)` does the work being measured. Peak minus setup RSS is the work's extra memory.
    `target` must be importable (a module-level function).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, target, args))
    process.start()
    before, peak, error = queue.get(timeout=timeout)
    process.join()
    if error:
        raise RuntimeError(f"isolated run failed: {error}")
    return before, peak


def reset_device_peak(kind: str, device: str) -> None:
    """Reset the framework's own peak-memory counter where it has one (MLX, torch CUDA)."""
    if kind == "mlx":
        import mlx.core as mx
        mx.reset_peak_memory()
    elif kind == "torch" and device.startswith("cuda"):
        import torch
        torch.cuda.reset_peak_memory_stats(device)


def device_peak_bytes(kind: str, device: str) -> int | None:
    """Peak bytes allocated by the framework since `reset_device_peak`, or None if untracked."""
    if kind == "mlx":
        import mlx.core as mx
        return int(mx.get_peak_memory())
    if kind == "torch" and device.startswith("cuda"):
        import torch
        return int(torch.cuda.max_memory_allocated(device))
    return None
