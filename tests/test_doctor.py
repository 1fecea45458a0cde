"""`python -m mlx_attn`: its table, checks, JSON and plot, on tiny shapes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import mlx_attn.doctor as doctor
from arrays import HAVE
from mlx_attn.backends import math as math_backend
from mlx_attn.backends.base import Backend
from mlx_attn.doctor.cases import Case, Framework, standard_cases
from mlx_attn.doctor.run import run_case

TINY = [Case("tiny", 1, 4, 2, 9, 9, 16, False), Case("tiny causal", 1, 4, 4, 9, 9, 16, True),
        Case("tiny decode", 1, 4, 2, 1, 33, 16, False)]


def test_standard_cases_are_the_issue_shapes():
    names = [c.name for c in standard_cases()]
    assert names == ["prefill L=1k", "prefill L=1k causal", "prefill L=4k",
                     "prefill L=4k causal", "decode Lk=8k GQA 32/8"]
    decode = standard_cases()[-1]
    assert (decode.Lq, decode.Lk, decode.Hq, decode.Hkv) == (1, 8192, 32, 8)
    assert [c.causal for c in standard_cases()] == [False, True, False, True, False]


@pytest.mark.parametrize("kind", [k for k in ("numpy", "torch", "mlx") if HAVE[k]])
def test_run_case_times_and_checks_every_available_backend(kind):
    fw = Framework(kind, "cpu", "float32")
    steps = []
    results = run_case(fw, TINY[0], repeats=2, max_seconds=1.0, advance=lambda: steps.append(1))
    by_impl = {r.impl: r for r in results}
    assert by_impl["math"].ok is True and by_impl["math"].time_ms > 0
    assert by_impl["math"].max_err < 1e-5
    flops = 4 * 1 * 4 * 9 * 9 * 16                    # 4·B·H·Lq·Lk·D
    assert by_impl["math"].tflops == pytest.approx(flops / by_impl["math"].time_ms / 1e9)
    assert len(steps) == len(results)
    if kind != "numpy":
        native = [r for r in results if r.native]
        assert len(native) == 1 and native[0].ok is True
        assert by_impl["math"].vs_sdpa == pytest.approx(native[0].time_ms /
                                                        by_impl["math"].time_ms)


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
    results = run_case(Framework("numpy", "cpu", "float32"), TINY[0], repeats=1,
                       max_seconds=1.0, advance=lambda: None)
    by_impl = {r.impl: r for r in results}
    assert by_impl["math"].ok is True
    assert by_impl["wrong"].ok is False and by_impl["wrong"].max_err > 0.01
    assert by_impl["broken"].ok is False
    assert "RuntimeError: kernel exploded" in by_impl["broken"].note


def test_main_exits_nonzero_when_a_check_fails(bad_backends, monkeypatch, capsys):
    monkeypatch.setattr(doctor, "standard_cases", lambda quick: TINY[:1])
    assert doctor.main(["--arrays", "numpy", "--repeats", "1"]) == 1
    assert "failed the reference check" in capsys.readouterr().out


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
    assert {"environment", "backends", "cases", "results"} <= set(payload)
    math_rows = [r for r in payload["results"] if r["impl"] == "math"]
    assert len(math_rows) == len(TINY) * (1 + HAVE["torch"] + HAVE["mlx"])
    assert all(r["ok"] for r in math_rows)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_module_entry_point_lists_backends():
    done = subprocess.run([sys.executable, "-m", "mlx_attn", "--list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("metal", "cuda", "cpu", "math"):
        assert name in done.stdout
    assert "backends (priority order)" in done.stdout


def test_bad_arguments_are_reported(capsys):
    assert doctor.main(["--arrays", "jax"]) == 2
    assert "unknown kind(s) ['jax']" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        doctor.main(["--repeats", "0"])
