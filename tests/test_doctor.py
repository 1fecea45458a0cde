"""`python -m mlx_attn`: its plan, table, checks, JSON and plot, on tiny shapes (no timing
assertions: the plan is tested on the cost model with speeds set by hand)."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console

import mlx_attn.doctor as doctor
from arrays import HAVE
from mlx_attn.backends import math as math_backend
from mlx_attn.backends.base import Backend
from mlx_attn.doctor import plan, report
from mlx_attn.doctor.cases import Case, Framework, run_order, standard_cases
from mlx_attn.doctor.plan import Impl, Mode, Planner
from mlx_attn.doctor.progress import Estimator, TimeLeftColumn, units_for
from mlx_attn.doctor.run import Result, _compare, implementations, run_case

TINY = [Case("tiny", 1, 4, 2, 9, 9, 16, False), Case("tiny causal", 1, 4, 4, 9, 9, 16, True),
        Case("tiny decode", 1, 4, 2, 1, 33, 16, False)]


def test_standard_cases_are_the_issue_shapes():
    names = [c.name for c in standard_cases()]
    assert names == ["prefill L=1k", "prefill L=1k causal", "prefill L=4k",
                     "prefill L=4k causal", "decode Lk=8k GQA 32/8"]
    decode = standard_cases()[-1]
    assert (decode.Lq, decode.Lk, decode.Hq, decode.Hkv) == (1, 8192, 32, 8)
    assert [c.causal for c in standard_cases()] == [False, True, False, True, False]
    # small cases first, so that a speed is learned before a large case is planned
    assert [c.name for c in run_order(standard_cases())] == [
        "decode Lk=8k GQA 32/8", "prefill L=1k", "prefill L=1k causal", "prefill L=4k",
        "prefill L=4k causal"]


# -- the plan, on the cost model with the speeds of a slow 2-core AVX2 machine --------------------
FRAMEWORKS = [Framework("mlx", "cpu", "float32"), Framework("torch", "cpu", "float32"),
              Framework("numpy", "cpu", "float32")]
NATIVE = {"mlx": "mx.fast.sdpa", "torch": "torch sdpa"}
# seconds per call measured on (prefill L=1k, prefill L=1k causal, decode Lk=8k)
SLOW_MACHINE = {("mlx", "math"): (1.5, 1.6, 0.1), ("mlx", "cpu"): (0.025, 0.016, 0.01),
                ("mlx", "mx.fast.sdpa"): (1.4, 1.5, 0.08), ("torch", "math"): (0.2, 0.25, 0.02),
                ("torch", "cpu"): (0.025, 0.016, 0.01), ("torch", "torch sdpa"): (0.04, 0.03, 0.05),
                ("numpy", "math"): (0.15, 0.15, 0.02), ("numpy", "cpu"): (0.025, 0.016, 0.01)}


def impls_of(fw, case):
    native = [Impl(NATIVE[fw.kind], "native")] if fw.kind in NATIVE else []
    return [Impl("math", "math"), Impl("cpu", "ours")] + native


def learned_planner(mode: Mode) -> Planner:
    """A planner that has measured the small cases (as the run does before the 4k ones)."""
    planner = Planner(mode)
    small = [c for c in standard_cases() if c.Lq != 4096]
    small = [small[0], small[1], small[2]]  # 1k, 1k causal, decode
    for fw in FRAMEWORKS:
        for impl in impls_of(fw, small[0]):
            for case, seconds in zip(small, SLOW_MACHINE[(fw.kind, impl.name)]):
                planner.learn(fw.kind, impl, case, seconds)
            planner.checked.add((fw.kind, impl.name))
    return planner


def planned_skips(planner: Planner) -> set:
    return {(fw.kind, impl.name, case.name) for fw in FRAMEWORKS for case in standard_cases()
            for impl in impls_of(fw, case) if planner.skip_reason(fw.kind, impl, case)}


def test_default_plan_leaves_out_only_the_slow_baselines_at_4k():
    skips = planned_skips(learned_planner(Mode()))
    large = ("prefill L=4k", "prefill L=4k causal")
    assert skips == ({(kind, "math", case) for kind in ("mlx", "torch", "numpy") for case in large}
                     | {("mlx", "mx.fast.sdpa", case) for case in large})
    # every backend and baseline still runs (so is checked) on some case of every array kind
    for fw in FRAMEWORKS:
        for impl in impls_of(fw, standard_cases()[0]):
            assert any((fw.kind, impl.name, c.name) not in skips for c in standard_cases())


def test_skip_reasons_say_why_and_how_to_run_it():
    planner = learned_planner(Mode())
    big = standard_cases()[2]
    math_reason = planner.skip_reason("mlx", Impl("math", "math"), big)
    assert "grows with Lq·Lk" in math_reason and "--full runs it" in math_reason
    sdpa_reason = planner.skip_reason("mlx", Impl("mx.fast.sdpa", "native"), big)
    assert re.search(r"about 2\d s per call here", sdpa_reason), sdpa_reason  # 16 x 1.4 s
    assert "--full runs it" in sdpa_reason
    # where the math backend is fast (a GPU), it runs at 4k too
    gpu = Planner(Mode(), checked={("torch", "math")})
    gpu.learn("torch", Impl("math", "math"), standard_cases()[0], 0.002)
    assert gpu.skip_reason("torch", Impl("math", "math"), big) is None
    # nothing is skipped before it has been checked once for this array kind
    fresh = Planner(Mode(), rates=dict(planner.rates))
    assert fresh.skip_reason("mlx", Impl("math", "math"), big) is None
    assert fresh.skip_reason("mlx", Impl("mx.fast.sdpa", "native"), big) is None


def test_full_keeps_the_whole_grid_and_todays_repeats():
    assert planned_skips(learned_planner(Mode(full=True))) == set()
    full = doctor.parse_args(["--full"])
    assert full.full and full.repeats == 5 and full.max_seconds == 10.0
    default = doctor.parse_args([])
    assert not default.full and default.repeats == 3
    full_plan = Planner(Mode(full=True, repeats=5))
    assert full_plan.timed_calls(0.01) == (1, 5)   # warm-up + repeats, as before
    assert full_plan.timed_calls(20.0) == (1, 3)   # max-seconds reached: at least 3 runs
    assert Planner(Mode()).timed_calls(0.01) == (1, 3)
    assert Planner(Mode()).timed_calls(1.4) == (0, 1)  # a slow call is timed once by default


def test_progress_estimate_fits_the_budget_and_counts_down():
    cases = run_order(standard_cases())
    default = Estimator(learned_planner(Mode()), units_for(FRAMEWORKS, cases, impls_of))
    full = Estimator(learned_planner(Mode(full=True, repeats=5)),
                     units_for(FRAMEWORKS, cases, impls_of))
    # a reference shared by the array kinds of one dtype is predicted (and computed) once
    refs = [default.cost(u) for u in default.pending if u.phase == "reference"]
    assert sum(cost > 0 for cost in refs) == len(cases)
    left = default.remaining()
    # on the slow machine: well under the 90 s budget (imports and set-up come on top)
    assert 15 < left < 70, left
    assert full.remaining() > 5 * 60  # the whole grid takes minutes, as it did before
    seen = []
    default.on_change = seen.append
    for unit in list(default.pending):
        cost = default.cost(unit)
        with default.step(unit, f"{unit.fw.kind} {unit.case.name} {unit.phase}"):
            pass
        assert default.remaining() == pytest.approx(left - cost, abs=1e-6)
        left = default.remaining()
        assert 0.0 <= default.fraction_done() <= 1.0
    assert left == 0.0
    assert "numpy prefill L=4k causal timing" in seen and None in seen
    assert TimeLeftColumn(default).render(None).plain == "<1 s left"


# -- running cases --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", [k for k in ("numpy", "torch", "mlx") if HAVE[k]])
def test_run_case_times_and_checks_every_available_backend(kind):
    fw = Framework(kind, "cpu", "float32")
    steps = []

    class Tracker:
        def step(self, unit, description):
            steps.append(unit.phase)
            return Estimator(Planner(), []).step(unit, description)

    results = run_case(fw, TINY[0], Planner(Mode(repeats=2, max_seconds=1.0)), Tracker())
    by_impl = {r.impl: r for r in results}
    assert [r.impl for r in results] == [i.name for i in implementations(fw, TINY[0])]
    assert by_impl["math"].ok is True and by_impl["math"].time_ms > 0
    assert by_impl["math"].max_err < 1e-5 and by_impl["math"].runs == 2
    flops = 4 * 1 * 4 * 9 * 9 * 16                    # 4·B·H·Lq·Lk·D
    assert by_impl["math"].tflops == pytest.approx(flops / by_impl["math"].time_ms / 1e9)
    assert steps == ["reference"] + ["check"] * len(results) + ["timing"]
    assert not any(r.skipped for r in results)
    if kind != "numpy":
        native = [r for r in results if r.native]
        assert len(native) == 1 and native[0].ok is True
        assert by_impl["math"].vs_sdpa == pytest.approx(native[0].time_ms /
                                                        by_impl["math"].time_ms)


def test_vs_sdpa_says_why_when_the_native_sdpa_was_not_timed():
    reason = "about 21 s per call here (predicted from smaller cases); --full runs it"
    ours = Result("torch", "cpu", "float32", "big", "cpu", False, time_ms=5.0, runs=3, ok=True)
    native = Result("torch", "cpu", "float32", "big", "torch sdpa", True, skipped=True,
                    note=reason)
    _compare([ours, native])
    assert ours.vs_sdpa is None and reason in ours.vs_sdpa_note
    console = Console(record=True, width=250)
    console.print(report.results_table("t", [ours, native]))
    text = console.export_text()
    assert "-¹" in text and f"¹ torch sdpa not timed on this case: {reason}" in text
    assert "skipped: " + reason in text


class Wrong(Backend):
    """A fused backend that returns the wrong answer, so the doctor must flag it."""
    name = "wrong"
    priority = 1
    array_kinds = frozenset({"numpy"})
    dtypes = frozenset({"float32"})
    features = frozenset({"causal", "gqa"})

    def forward(self, call):
        return np.zeros((call.B, call.Hq, call.Lq, call.Dv), np.float32), None


class Broken(Wrong):
    name = "broken"

    def forward(self, call):
        raise RuntimeError("kernel exploded")


@pytest.fixture
def bad_backends(monkeypatch):
    table = (Wrong(), Broken(), math_backend.MathBackend())
    monkeypatch.setattr(doctor.run, "registry", lambda: table)
    monkeypatch.setattr(sys.modules["mlx_attn.backends"], "registry", lambda: table)
    monkeypatch.setattr(doctor.report, "backends", lambda: [])


def test_wrong_and_broken_backends_fail_the_check(bad_backends):
    results = run_case(Framework("numpy", "cpu", "float32"), TINY[0],
                       Planner(Mode(repeats=1, max_seconds=1.0)))
    by_impl = {r.impl: r for r in results}
    assert by_impl["math"].ok is True
    assert by_impl["wrong"].ok is False and by_impl["wrong"].max_err > 0.01
    assert by_impl["broken"].ok is False
    assert "RuntimeError: kernel exploded" in by_impl["broken"].note


def test_main_exits_nonzero_when_a_check_fails(bad_backends, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "standard_cases", lambda quick: TINY[:1])
    assert doctor.main(["--arrays", "numpy", "--repeats", "1"]) == 1
    assert "failed the reference check" in capsys.readouterr().out


def test_skipped_results_carry_their_reason_into_table_and_json(tmp_path, monkeypatch, capsys):
    # the tiny decode runs first; the math backend is then "too large" for the other two
    monkeypatch.setattr(doctor, "standard_cases", lambda quick: TINY)
    monkeypatch.setattr(plan, "LARGE_SCORES", 200)
    monkeypatch.setattr(plan, "FAST_CALL_S", 0.0)  # tiny calls are fast: call them slow here
    out_json = tmp_path / "d.json"
    assert doctor.main(["--arrays", "numpy", "--repeats", "1", "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "skipped: its time grows with Lq·Lk" in text
    assert "2 slow result(s) skipped" in text
    payload = json.loads(out_json.read_text())
    assert payload["plan"]["mode"] == "default" and payload["plan"]["repeats"] == 1
    math_rows = {r["case"]: r for r in payload["results"] if r["impl"] == "math"}
    assert math_rows["tiny decode"]["ok"] is True and not math_rows["tiny decode"]["skipped"]
    for case in ("tiny", "tiny causal"):
        row = math_rows[case]
        assert row["skipped"] and row["ok"] is None and row["time_ms"] is None
        assert "--full runs it" in row["note"]


def test_main_writes_json_and_plot(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    monkeypatch.setattr(doctor, "standard_cases", lambda quick: TINY)
    out_json, out_png = tmp_path / "d.json", tmp_path / "d.png"
    code = doctor.main(["--json", str(out_json), "--plot", str(out_png), "--repeats", "1"])
    text = capsys.readouterr().out
    assert code == 0
    assert "every result that ran matches the float64 reference" in text
    assert "tiny decode" in text and "TFLOP/s" in text
    payload = json.loads(out_json.read_text())
    assert {"environment", "backends", "plan", "cases", "results"} <= set(payload)
    math_rows = [r for r in payload["results"] if r["impl"] == "math"]
    assert len(math_rows) == len(TINY) * (1 + HAVE["torch"] + HAVE["mlx"])
    assert all(r["ok"] for r in math_rows)
    # the tables keep the standard order of the cases, whatever order they ran in
    assert [r["case"] for r in math_rows[:3]] == [c.name for c in TINY]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_entry_point_lists_backends():
    done = subprocess.run([sys.executable, "-m", "mlx_attn", "--list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("metal", "cuda", "cpu", "math"):
        assert name in done.stdout
    assert "backends (priority order)" in done.stdout
    # the row CI greps for: name, then yes or no
    assert re.search(r"^│ cpu +│ (yes|no) +│", done.stdout, re.M), done.stdout


def test_bad_arguments_are_reported(capsys):
    assert doctor.main(["--arrays", "jax"]) == 2
    assert "unknown kind(s) ['jax']" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        doctor.main(["--repeats", "0"])


def test_math_is_never_timed_interleaved_with_ours(monkeypatch):
    """numpy's OpenBLAS workers spin after each math call: timed in turn with ours, they halved
    our figure on 2 cores. Ours and the native SDPA share a group; math gets its own, and every
    group starts after the BLAS settle pause."""
    from mlx_attn import timing
    from mlx_attn.doctor import run as run_module
    groups, sleeps, measure = [], [], timing.measure_interleaved

    def spy(fns, **kw):
        groups.append(len(fns))
        return measure(fns, **kw)
    monkeypatch.setattr(timing, "measure_interleaved", spy)
    monkeypatch.setattr(run_module.time, "sleep", lambda s: sleeps.append(s))
    results = run_case(Framework("numpy", "cpu", "float32"), TINY[0],
                       Planner(Mode(repeats=2, max_seconds=1.0)))
    timed = [r.impl for r in results if r.time_ms is not None]
    assert "math" in timed and len(timed) >= 2
    assert groups == [len(timed) - 1, 1]      # ours (cpu) in one group, math alone after it
    assert sleeps.count(run_module.BLAS_SETTLE_S) == 2
