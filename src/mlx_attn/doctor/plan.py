"""What the doctor runs, and what it costs: the default plan fits in about a minute on 2 CPU
cores, `--full` runs the whole grid.

A cost model learns each implementation's speed (FLOP/s, per array kind and shape class) from
the calls already made; cases run smallest first, so the speed is known before a large case.
By default:
- every available backend is checked against the reference on every case, except where its
  call is predicted to be slow (`SLOW_CALL_S`) once it has been checked on a smaller case,
- the math backend (the portable fallback, not what the doctor benchmarks) is left out of the
  large cases once it has been checked on a small one, unless its call there is fast (a GPU),
- a call slower than `FAST_CALL_S` is timed once rather than repeated.
Each skip carries its reason into the table and the JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .cases import Case

FAST_CALL_S = 0.5        # per call: repeat it up to this; above, the default plan times it once
SLOW_CALL_S = 3.0        # predicted per call above this: the default plan does not run it again
LARGE_SCORES = 1 << 25   # B·Hq·Lq·Lk above which the default plan may leave the math backend out
SETTLE_S = 0.05          # untimed pause before each timed call (see `timing.measure_interleaved`)
# Speeds assumed before anything is measured (only the progress estimate uses them).
PRIOR_RATE = {"ours": 100e9, "math": 5e9, "native": 20e9, "reference": 30e6}


@dataclass(frozen=True)
class Mode:
    full: bool = False
    repeats: int = 3
    max_seconds: float = 10.0
    warmup: int = 1
    settle_s: float = SETTLE_S


@dataclass(frozen=True)
class Impl:
    """One thing run on a case: a backend of ours (role "ours" or "math") or the native SDPA."""
    name: str      # backend name, or the native SDPA's label
    role: str      # "ours" | "math" | "native"
    # False for a backend that does not take this array kind (a row saying why, no call)
    takes: bool = field(default=True, compare=False)


REFERENCE = Impl("float64 reference", "reference")


def work(role: str, case: Case) -> float:
    """What a call's time is proportional to: FLOPs, or for the float64 reference, the elements
    it converts and gathers (GQA repeats K per query head)."""
    if role == "reference":
        return float(case.B * (case.Hq * (case.Lq + case.Lk) + 2 * case.Hkv * case.Lk) * case.D)
    return case.flops


@dataclass
class Planner:
    mode: Mode = field(default_factory=Mode)
    rates: dict = field(default_factory=dict)       # (kind, impl name, shape class) -> work/s
    checked: set = field(default_factory=set)       # (kind, impl name) that ran a check
    references: dict = field(default_factory=dict)  # (case, dtype) -> float64 reference rows

    def learn(self, kind: str, impl: Impl, case: Case, seconds: float | None) -> None:
        if seconds and seconds > 0:
            self.rates[(kind, impl.name, case.shape_class)] = work(impl.role, case) / seconds

    def known(self, kind: str, impl: Impl, case: Case) -> float | None:
        """Seconds per call predicted from this array kind's own measurements, or None."""
        rate = self.rates.get((kind, impl.name, case.shape_class))
        if rate is None:  # another shape class of the same kind and impl: the closest guess
            # tuple(): the progress bar's thread reads while the run learns
            rate = next((r for (k, n, _), r in tuple(self.rates.items())
                         if (k, n) == (kind, impl.name)), None)
        return None if rate is None else work(impl.role, case) / rate

    def per_call(self, kind: str, impl: Impl, case: Case) -> float:
        """`known`, else what other array kinds measured for this impl, else the prior."""
        seconds = self.known(kind, impl, case)
        if seconds is None:
            rates = [r for (_, n, c), r in tuple(self.rates.items())
                     if n == impl.name and c == case.shape_class]
            rate = max(rates) if rates else PRIOR_RATE[impl.role]
            seconds = work(impl.role, case) / rate
        return seconds

    def skip_reason(self, kind: str, impl: Impl, case: Case,
                    checked: bool | None = None) -> str | None:
        """Why the plan does not run `impl` on `case`, or None. Never before the impl has been
        checked for this array kind (`checked` overrides that, for predicting later cases)."""
        if self.mode.full or not (checked if checked is not None
                                  else (kind, impl.name) in self.checked):
            return None
        seconds = self.known(kind, impl, case)
        if impl.role == "math" and case.B * case.Hq * case.Lq * case.Lk > LARGE_SCORES and (
                seconds is None or seconds > FAST_CALL_S):
            about = "" if seconds is None else f" (about {_secs(seconds)} per call here)"
            return f"its time grows with Lq·Lk{about}; checked on smaller cases; --full runs it"
        if seconds is not None and seconds > SLOW_CALL_S:
            return (f"about {_secs(seconds)} per call here (predicted from smaller cases); "
                    "--full runs it")
        return None

    def timed_calls(self, seconds_per_call: float) -> tuple[int, int]:
        """(warm-up calls, timed calls) after the check call, for a call of this duration."""
        if not self.mode.full and seconds_per_call > FAST_CALL_S:
            return 0, 1  # timed once: the check call was its warm-up
        cap = max(3, math.ceil(self.mode.max_seconds / max(seconds_per_call, 1e-9)))
        return self.mode.warmup, min(self.mode.repeats, cap)

    # -- predictions for the progress bar ------------------------------------------------------
    def reference_cost(self, kind: str, dtype: str, case: Case) -> float:
        if (case, dtype) in self.references:
            return 0.0
        return self.per_call(kind, REFERENCE, case)

    def check_cost(self, kind: str, impl: Impl, case: Case, later: bool) -> float:
        if not impl.takes or self.skip_reason(kind, impl, case, checked=later or None):
            return 0.0
        return self.per_call(kind, impl, case)

    def timing_cost(self, kind: str, impl: Impl, case: Case, later: bool) -> float:
        if not impl.takes or self.skip_reason(kind, impl, case, checked=later or None):
            return 0.0
        seconds = self.per_call(kind, impl, case)
        warmup, timed = self.timed_calls(seconds)
        return (warmup + timed) * seconds + timed * self.mode.settle_s


def _secs(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
