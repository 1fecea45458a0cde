"""Running one case on one framework: every backend that can take it, plus the native SDPA.

First every implementation the plan keeps is called once and checked against the float64
reference on a spread of query rows (the full reference at L=4k would need gigabytes): a fused
backend must meet the SPEC criterion (within 2x the math backend's error + 1e-5; the per-dtype
tolerance where the math backend did not run on the case); the math backend and the native
SDPA must stay within a per-dtype tolerance. Then the timed calls, after all of that: the fast
implementations interleaved, each timed call after a short pause, so that nothing timed shares
the cores with the spinning worker threads of the reference's BLAS or another runtime.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from .. import timing
from ..api import flash_attention
from ..backends import registry
from ..reference import max_error, passes, reference, to_f64
from ..validate import check_dense
from .cases import Case, Framework, host_inputs, to_framework

# Untimed pause before each group of timed calls: longer than OpenBLAS's spin after a call.
BLAS_SETTLE_S = 0.3
from .native import native_sdpa
from .plan import FAST_CALL_S, REFERENCE, Impl, Planner
from .progress import Unit, Untracked

# What the math backend (and a platform SDPA) may be off from float64 by, per input dtype.
TOLERANCE = {"float64": 1e-10, "float32": 1e-4, "float16": 1e-2, "bfloat16": 6e-2}
CHECK_ROWS = 24


@dataclass
class Result:
    framework: str
    device: str
    dtype: str
    case: str
    impl: str              # backend name, or the native SDPA's label
    native: bool
    time_ms: float | None = None
    tflops: float | None = None
    vs_sdpa: float | None = None   # native time / our time: > 1 means we are faster
    peak_mb: float | None = None
    max_err: float | None = None
    ok: bool | None = None
    note: str = ""
    runs: int | None = None        # timed calls behind time_ms (the median of them)
    skipped: bool = False          # left out by the plan, `note` says why (--full runs it)
    vs_sdpa_note: str = ""         # why vs_sdpa is missing although we have a time

    def as_dict(self) -> dict:
        return asdict(self)


def implementations(fw: Framework, case: Case) -> list[Impl]:
    """What runs on (fw, case), in table order: the math backend first (the baseline of the
    check), the other available backends, the native SDPA last. Backends not available here are
    listed in the backend table instead."""
    usable = sorted((b for b in registry() if b.available), key=lambda b: b.name != "math")
    impls = [Impl(b.name, "math" if b.name == "math" else "ours", fw.kind in b.array_kinds)
             for b in usable]
    native = native_sdpa(fw, case)
    return impls + ([Impl(native[0], "native")] if native else [])


def run_case(fw: Framework, case: Case, planner: Planner | None = None, tracker=None):
    """All results for one (framework, case), as the planner's mode says."""
    planner = planner or Planner()
    tracker = tracker or Untracked()
    label = f"{fw.kind} · {case.name}"
    with tracker.step(Unit(fw, case, "reference"), f"{label}: float64 reference"):
        q, k, v = (to_framework(x, fw) for x in host_inputs(case))
        rows = np.unique(np.linspace(0, case.Lq - 1, min(CHECK_ROWS, case.Lq)).astype(int))
        call = check_dense(q, k, v, scale=None, causal=case.causal, mask=None, window=None,
                           softcap=None, return_lse=False, layout="bhld")
        key = (case, fw.dtype)  # every array kind holds the same values in one dtype
        if key not in planner.references:
            start = time.perf_counter()
            planner.references[key] = reference(to_f64(q), to_f64(k), to_f64(v),
                                                causal=case.causal, rows=rows)[0]
            planner.learn(fw.kind, REFERENCE, case, time.perf_counter() - start)
        want = planner.references[key]
    native = native_sdpa(fw, case)
    results, timed, math_err = [], [], None
    for impl in implementations(fw, case):
        result = Result(fw.kind, fw.device, fw.dtype, case.name, impl.name, impl.role == "native")
        results.append(result)
        with tracker.step(Unit(fw, case, "check", impl), f"{label} · {impl.name}: check"):
            fn, reason = _callable(impl, native, call, q, k, v, case)
            reason = reason or planner.skip_reason(fw.kind, impl, case)
            if reason:
                result.note, result.skipped = reason, fn is not None
                continue
            seconds = _check(result, fn, fw, rows, want)
        planner.checked.add((fw.kind, impl.name))
        if seconds is None:
            continue
        planner.learn(fw.kind, impl, case, seconds)
        _judge(result, impl, math_err)
        if impl.role == "math":
            math_err = result.max_err
        timed.append((result, impl, fn, seconds))
    names = ", ".join(r.impl for r, *_ in timed)
    with tracker.step(Unit(fw, case, "timing"), f"{label}: timing {names}"):
        _time_all(timed, fw, case, call.flops(), planner)
    _compare(results)
    return results


def _callable(impl: Impl, native, call, q, k, v, case: Case):
    """(fn, None), or (None, why the backend cannot take this call)."""
    if impl.role == "native":
        return (lambda: native[1](q, k, v)), None
    reasons = next(b for b in registry() if b.name == impl.name).not_supported_reasons(call)
    if reasons:
        return None, "; ".join(reasons)
    return (lambda: flash_attention(q, k, v, causal=case.causal, backend=impl.name)), None


def _check(result: Result, fn, fw: Framework, rows, want) -> float | None:
    """One call, checked on the reference rows; its wall time, or None if it raised."""
    try:
        timing.reset_device_peak(fw.kind, fw.device)
        start = time.perf_counter()
        out = fn()
        timing.sync(out)
        seconds = time.perf_counter() - start
        peak = timing.device_peak_bytes(fw.kind, fw.device)
        result.peak_mb = None if peak is None else peak / 2**20
        result.max_err = max_error(to_f64(out)[:, :, rows], want)
    except Exception as error:  # a broken backend is reported in the table, not fatal
        result.note = f"failed: {type(error).__name__}: {error}"
        result.ok = False
        return None
    return seconds


def _judge(result: Result, impl: Impl, math_err: float | None) -> None:
    tolerance = TOLERANCE[result.dtype]
    if impl.role != "ours":
        result.ok = result.max_err <= tolerance
    elif math_err is not None:
        result.ok = passes(result.max_err, math_err)
    else:  # the math backend did not run on this case (skipped by the plan, or it failed)
        result.ok = result.max_err <= tolerance
        result.note = f"within the {result.dtype} tolerance {tolerance:.0e} (no math here)"
    if result.ok is False and not result.note:
        result.note = f"max err {result.max_err:.2e} over the tolerance"


def _time_all(timed, fw: Framework, case: Case, flops: float, planner: Planner) -> None:
    """Time every checked implementation; the fast ones interleaved (a, b, a, b, ...)."""
    mode, group = planner.mode, []
    for result, impl, fn, seconds in timed:
        try:
            if seconds > FAST_CALL_S:  # a second look: the check call may have paid one-off costs
                time.sleep(mode.settle_s)
                start = time.perf_counter()
                timing.sync(fn())
                seconds = time.perf_counter() - start
                planner.learn(fw.kind, impl, case, seconds)
            if seconds <= FAST_CALL_S:
                group.append((result, impl, fn))
            elif not mode.full:
                _record(result, timing.Timing(seconds, seconds, seconds, 1, [seconds]), flops)
                result.note = _join(result.note, f"timed once ({seconds:.1f} s per call)")
            else:  # --full: today's repeats; the second look was the warm-up
                measured = timing.measure_interleaved(
                    [fn], warmup=0, repeats=planner.timed_calls(seconds)[1],
                    max_seconds=mode.max_seconds, settle_s=mode.settle_s)[0]
                _record(result, measured, flops)
        except Exception as error:
            result.note, result.ok = f"failed while timed: {type(error).__name__}: {error}", False
    # Ours and the native SDPA interleaved; the math backend on its own, after them: its BLAS
    # (numpy's OpenBLAS above all) leaves worker threads spinning for ~0.1 s after each call,
    # which halved the timing of whatever ran next on 2 cores.
    _time_group([g for g in group if g[1].role != "math"], fw, case, flops, planner)
    _time_group([g for g in group if g[1].role == "math"], fw, case, flops, planner)


def _time_group(group, fw: Framework, case: Case, flops: float, planner: Planner) -> None:
    if not group:
        return
    mode = planner.mode
    time.sleep(BLAS_SETTLE_S)  # the check calls just before may have been BLAS-heavy
    try:
        measured = timing.measure_interleaved(
            [fn for *_, fn in group], warmup=mode.warmup, repeats=mode.repeats,
            max_seconds=mode.max_seconds * len(group), settle_s=mode.settle_s)
    except Exception as error:
        for result, *_ in group:
            result.note, result.ok = f"failed while timed: {type(error).__name__}: {error}", False
        return
    for (result, impl, _), m in zip(group, measured):
        _record(result, m, flops)
        planner.learn(fw.kind, impl, case, m.median_s)


def _record(result: Result, measured: timing.Timing, flops: float) -> None:
    result.time_ms = measured.median_s * 1e3
    result.tflops = measured.tflops(flops)  # 4·B·H·Lq·Lk·D, halved when causal
    result.runs = measured.repeats


def _compare(results) -> None:
    """vs SDPA: the native SDPA's time over ours, or why there is none."""
    native = next((r for r in results if r.native), None)
    for r in results:
        if r.native or r.time_ms is None or native is None:
            continue
        if native.time_ms:
            r.vs_sdpa = native.time_ms / r.time_ms
        else:
            r.vs_sdpa_note = f"{native.impl} not timed on this case: {native.note or 'see its row'}"


def _join(*notes: str) -> str:
    return "; ".join(n for n in notes if n)
