"""mlx_attn.timing.measure_interleaved: contenders alternate, and `settle_s` pauses before each
timed call without counting the pause."""
from __future__ import annotations

import time

from mlx_attn.timing import measure_interleaved


def _recorder(name, log):
    def fn():
        log.append((name, time.perf_counter()))
    return fn


def test_contenders_alternate():
    log = []
    measure_interleaved([_recorder("a", log), _recorder("b", log)], warmup=1, repeats=3)
    assert [n for n, _ in log] == ["a", "b"] + ["a", "b"] * 3


def test_settle_pauses_before_each_timed_call_and_is_not_timed():
    log = []
    settle = 0.03
    timings = measure_interleaved([_recorder("a", log), _recorder("b", log)], warmup=0,
                                  repeats=3, settle_s=settle)
    starts = [t for _, t in log]
    assert all(later - earlier >= settle for earlier, later in zip(starts, starts[1:]))
    assert all(t.max_s < settle for t in timings)  # the no-op calls' times exclude the pause
