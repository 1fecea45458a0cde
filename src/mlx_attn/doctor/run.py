"""Running one case on one framework: every backend that can take it, plus the native SDPA.

Each result is timed with `mlx_attn.timing.measure` and checked against the float64 reference
on a spread of query rows (the full reference at L=4k would need gigabytes): a fused backend
must meet the SPEC criterion (within 2x the math backend's error + 1e-5); the math backend and
the native SDPA must stay within a per-dtype tolerance.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .. import timing
from ..api import flash_attention
from ..backends import registry
from ..reference import max_error, passes, reference, to_f64
from ..validate import check_dense
from .cases import Case, Framework, host_inputs, to_framework
from .native import native_sdpa

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

    def as_dict(self) -> dict:
        return asdict(self)


def steps(fw: Framework, case: Case) -> int:
    """How many results `run_case` produces (for the progress bar)."""
    return sum(b.available for b in registry()) + (native_sdpa(fw, case) is not None)


def run_case(fw: Framework, case: Case, *, repeats: int, max_seconds: float, advance):
    """All results for one (framework, case); `advance()` is called after each one."""
    host = host_inputs(case)
    q, k, v = (to_framework(x, fw) for x in host)
    rows = np.unique(np.linspace(0, case.Lq - 1, min(CHECK_ROWS, case.Lq)).astype(int))
    want, _ = reference(to_f64(q), to_f64(k), to_f64(v), causal=case.causal, rows=rows)
    call = check_dense(q, k, v, scale=None, causal=case.causal, mask=None, window=None,
                       softcap=None, return_lse=False, layout="bhld")
    results, math_err = [], None
    # math first (the baseline); backends not available here are listed in the backend table
    usable = [b for b in registry() if b.available]
    for backend in sorted(usable, key=lambda b: b.name != "math"):
        base = Result(fw.kind, fw.device, fw.dtype, case.name, backend.name, native=False)
        reasons = backend.not_supported_reasons(call)
        if reasons:
            base.note = "; ".join(reasons)
        else:
            _time_and_check(base, lambda b=backend.name: flash_attention(
                q, k, v, causal=case.causal, backend=b), fw, call, rows, want, repeats,
                max_seconds)
            if backend.name == "math":
                math_err = base.max_err
                base.ok = base.max_err is not None and base.max_err <= TOLERANCE[fw.dtype]
            elif base.max_err is not None and math_err is not None:
                base.ok = passes(base.max_err, math_err)
        results.append(base)
        advance()
    native = native_sdpa(fw, case)
    if native is not None:
        label, fn = native
        base = Result(fw.kind, fw.device, fw.dtype, case.name, label, native=True)
        _time_and_check(base, lambda: fn(q, k, v), fw, call, rows, want, repeats, max_seconds)
        if base.max_err is not None:
            base.ok = base.max_err <= TOLERANCE[fw.dtype]
        results.append(base)
        for r in results:
            if not r.native and r.time_ms and base.time_ms:
                r.vs_sdpa = base.time_ms / r.time_ms
        advance()
    return results


def _time_and_check(result: Result, fn, fw, call, rows, want, repeats, max_seconds):
    try:
        timing.reset_device_peak(fw.kind, fw.device)
        out = fn()
        timing.sync(out)
        peak = timing.device_peak_bytes(fw.kind, fw.device)
        result.peak_mb = None if peak is None else peak / 2**20
        result.max_err = max_error(to_f64(out)[:, :, rows], want)
        measured = timing.measure(fn, warmup=1, repeats=repeats, max_seconds=max_seconds)
    except Exception as error:  # a broken backend is reported in the table, not fatal
        result.note = f"failed: {type(error).__name__}: {error}"
        result.ok = False
        return
    result.time_ms = measured.median_s * 1e3
    result.tflops = measured.tflops(call.flops())  # 4·B·H·Lq·Lk·D, halved when causal
