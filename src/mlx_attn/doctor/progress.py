"""The doctor's progress bar: the step running and an estimate of the time left.

The run is a list of units (a case's float64 reference, one check call per implementation, the
case's timed calls); the time left is the cost model's prediction for the units not yet run
plus what is left of the running one, re-predicted with the speeds learned so far.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.progress import ProgressColumn
from rich.text import Text

from .cases import Case, Framework
from .plan import Impl, Planner


@dataclass(frozen=True)
class Unit:
    fw: Framework
    case: Case
    phase: str                 # "reference" | "check" | "timing"
    impl: Impl | None = None   # the checked impl; None for the reference and the timing
    impls: tuple = field(default=(), compare=False)   # what a timing unit times
    # not the kind's first case: its impls have been checked by then
    later: bool = field(default=False, compare=False)
    # a reference unit whose rows an earlier array kind of the same dtype computes
    cached: bool = field(default=False, compare=False)


def units_for(frameworks: list[Framework], cases: list[Case], impls_of) -> list[Unit]:
    """Every unit of the run, in run order; `impls_of(fw, case)` lists the impls of a case."""
    units, seen = [], set()
    for fw in frameworks:
        units += _units(fw, cases, impls_of, seen)
    return units


def _units(fw: Framework, cases: list[Case], impls_of, seen: set) -> list[Unit]:
    units = []
    for n, case in enumerate(cases):
        impls = tuple(impls_of(fw, case))
        units.append(Unit(fw, case, "reference", later=n > 0, cached=(case, fw.dtype) in seen))
        seen.add((case, fw.dtype))
        units += [Unit(fw, case, "check", impl, later=n > 0) for impl in impls]
        units.append(Unit(fw, case, "timing", impls=impls, later=n > 0))
    return units


class Estimator:
    """Tracks which unit runs; `remaining()` is the predicted time left, in seconds."""

    def __init__(self, planner: Planner, units: list[Unit], on_change=None):
        self.planner, self.pending = planner, list(units)
        self.on_change = on_change or (lambda description: None)
        self.current, self.started, self.done_s = None, 0.0, 0.0

    def cost(self, unit: Unit) -> float:
        p, kind = self.planner, unit.fw.kind
        if unit.phase == "reference":
            return 0.0 if unit.cached else p.reference_cost(kind, unit.fw.dtype, unit.case)
        if unit.phase == "check":
            return p.check_cost(kind, unit.impl, unit.case, unit.later)
        return sum(p.timing_cost(kind, impl, unit.case, unit.later) for impl in unit.impls)

    def remaining(self) -> float:
        """Called by the progress bar's refresh thread too: reads snapshots only."""
        left = sum(self.cost(u) for u in tuple(self.pending))
        current, started = self.current, self.started
        if current is not None:
            left += max(0.0, self.cost(current) - (time.perf_counter() - started))
        return left

    def fraction_done(self) -> float:
        left = self.remaining()
        return self.done_s / (self.done_s + left) if self.done_s + left > 0 else 1.0

    @contextmanager
    def step(self, unit: Unit, description: str):
        if unit in self.pending:
            self.pending.remove(unit)
        self.current, self.started = unit, time.perf_counter()
        self.on_change(description)
        try:
            yield
        finally:
            self.done_s += time.perf_counter() - self.started
            self.current = None
            self.on_change(None)


class Untracked:
    """`Estimator.step` without the estimate, for `run_case` called on its own."""

    @contextmanager
    def step(self, unit, description):
        yield


class TimeLeftColumn(ProgressColumn):
    """'~42 s left', re-predicted at every refresh."""

    def __init__(self, estimator: Estimator):
        super().__init__()
        self.estimator = estimator

    def render(self, task) -> Text:
        left = self.estimator.remaining()
        if left < 1:
            text = "<1 s left"
        else:
            text = f"~{left:.0f} s left" if left < 120 else f"~{left / 60:.0f} min left"
        return Text(text, style="progress.remaining")
