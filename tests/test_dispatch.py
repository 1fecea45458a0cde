"""Backend choice: auto / named / flash / MLX_ATTN, the once-only warning, explain(), backends()."""
from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import mlx_attn
from mlx_attn import BackendUnavailableError, backends, config, explain, flash_attention
from mlx_attn.backends import math as math_backend
from mlx_attn.backends.base import Backend


class FakeFused(Backend):
    """A fused backend that takes numpy float32 with causal only, and marks its output."""
    name = "fake"
    priority = 5
    array_kinds = frozenset({"numpy"})
    dtypes = frozenset({"float32"})
    head_dims = (8, 16)
    features = frozenset({"causal", "lse"})
    summary = "test double"

    def forward(self, call):
        out = np.full((call.B, call.Hq, call.Lq, call.Dv), 42.0, np.float32)
        return out, None


@pytest.fixture
def fake(monkeypatch):
    """Registry = (fake, math); environment cleared and re-read around the test."""
    table = (FakeFused(), math_backend.MathBackend())
    # (the attribute mlx_attn.backends is the public function; the package is in sys.modules)
    for module in (sys.modules["mlx_attn.backends"], mlx_attn.dispatch, mlx_attn.api):
        monkeypatch.setattr(module, "registry", lambda: table)
    monkeypatch.delenv("MLX_ATTN", raising=False)
    monkeypatch.delenv("MLX_ATTN_CHUNK", raising=False)
    config.reload()
    yield table
    config.reload()


def inputs(D=8, dtype=np.float32):
    rng = np.random.default_rng(0)
    return tuple(rng.standard_normal((1, 2, 3, D)).astype(dtype) for _ in range(3))


def is_fake(out):
    return bool(np.all(out == 42.0))


def test_auto_takes_the_first_backend_without_reasons(fake):
    q, k, v = inputs()
    assert is_fake(flash_attention(q, k, v, causal=True))
    assert not is_fake(flash_attention(q, k, v, softcap=3.0))       # fake lacks softcap
    assert not is_fake(flash_attention(*inputs(D=40)))               # nor D=40
    assert not is_fake(flash_attention(*inputs(dtype=np.float16)))  # nor float16


def test_named_backend_that_cannot_run_lists_its_reasons(fake):
    q, k, v = inputs(D=40)
    with pytest.raises(BackendUnavailableError) as raised:
        flash_attention(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16),
                        softcap=2.0, window=3, backend="fake")
    message = str(raised.value)
    assert "'fake'" in message
    assert "dtype float16 not supported (supports float32)" in message
    assert "head dim D=40 not supported (supports 8, 16)" in message
    assert "does not support softcap, window" in message
    assert isinstance(raised.value, ValueError)


def test_named_math_runs_even_when_a_fused_backend_could(fake):
    q, k, v = inputs()
    assert not is_fake(flash_attention(q, k, v, backend="math"))
    assert is_fake(flash_attention(q, k, v, backend="FAKE "))       # case and spaces ignored


def test_env_selects_the_backend_and_is_read_once(fake, monkeypatch):
    q, k, v = inputs()
    monkeypatch.setenv("MLX_ATTN", "math")
    config.reload()
    assert not is_fake(flash_attention(q, k, v))
    monkeypatch.setenv("MLX_ATTN", "fake")          # not re-read until reload()
    assert not is_fake(flash_attention(q, k, v))
    config.reload()
    assert is_fake(flash_attention(q, k, v))
    # an explicit argument wins over the environment
    assert not is_fake(flash_attention(q, k, v, backend="math"))


def test_env_with_an_unknown_backend_is_a_clear_error(fake, monkeypatch):
    monkeypatch.setenv("MLX_ATTN", "turbo")
    config.reload()
    with pytest.raises(ValueError, match=r"MLX_ATTN='turbo' is not a backend; allowed: auto, "
                                         r"flash, fake, math"):
        flash_attention(*inputs())


def test_flash_uses_a_fused_backend_or_warns_once(fake, monkeypatch):
    monkeypatch.setenv("MLX_ATTN", "flash")
    config.reload()
    q, k, v = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                # no warning when a fused backend runs
        assert is_fake(flash_attention(q, k, v))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            assert not is_fake(flash_attention(q, k, v, softcap=2.0))
        flash_attention(*inputs(D=40))
    fallbacks = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(fallbacks) == 1
    assert "fake: does not support softcap" in str(fallbacks[0].message)
    assert "once per process" in str(fallbacks[0].message)


def test_chunk_env_rejects_nonsense(monkeypatch):
    monkeypatch.setenv("MLX_ATTN_CHUNK", "lots")
    config.reload()
    try:
        with pytest.raises(ValueError, match="MLX_ATTN_CHUNK.*'lots'"):
            flash_attention(*inputs(), backend="math")
    finally:
        monkeypatch.delenv("MLX_ATTN_CHUNK")
        config.reload()


def test_explain_marks_the_chosen_backend_and_gives_reasons(fake):
    q, k, v = inputs()
    text = explain(q, k, v, causal=True, softcap=1.0)
    lines = text.splitlines()
    assert lines[0].startswith("inputs: numpy float32 on cpu, B=1 Lq=3 Lk=3 Hq=2 Hkv=2 D=8")
    assert "causal, softcap" in lines[0]
    assert lines[1] == "requested: auto"
    assert lines[2].split() == ["fake", "cannot", "run:", "does", "not", "support", "softcap"]
    assert lines[3].split() == ["math", "chosen"]
    text = explain(q, k, v, causal=True)
    assert "fake   chosen" in text and "math   could run (not chosen)" in text


def test_explain_reports_a_named_backend_that_cannot_run(fake):
    text = explain(*inputs(), softcap=1.0, backend="fake")
    assert "requested: fake" in text
    assert text.splitlines()[-1].startswith("error: backend 'fake' cannot run these inputs")


def test_explain_varlen_and_unknown_keywords(fake):
    q = np.zeros((5, 2, 8), np.float32)
    cu = np.array([0, 2, 5], np.int32)
    text = explain(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=3, max_seqlen_k=3)
    assert "varlen n=2 total_q=5 total_k=5" in text
    assert "fake   cannot run: does not support varlen" in text
    with pytest.raises(TypeError, match="mask"):
        explain(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=3, max_seqlen_k=3,
                mask=None)


def test_real_registry_explain_has_exactly_one_chosen_backend():
    config.reload()
    text = explain(*inputs())
    statuses = [line.split(None, 1)[1] for line in text.splitlines()[2:]]
    assert len(statuses) == len(backends())
    assert sum(s == "chosen" for s in statuses) == 1
    assert all(s == "chosen" or s.startswith(("cannot run: ", "could run")) for s in statuses)
    assert "math   chosen" in explain(*inputs(), backend="math")


def test_backends_lists_every_backend_with_reasons_when_unavailable():
    infos = backends()
    assert [b.name for b in infos][-1] == "math"
    assert {b.name for b in infos} == {"metal", "cuda", "cpu", "math"}
    assert [b.priority for b in infos] == sorted(b.priority for b in infos)
    math_info = infos[-1]
    assert math_info.available and not math_info.fused and math_info.reasons == ()
    assert set(math_info.array_kinds) == {"mlx", "torch", "numpy"}
    for info in infos:
        assert info.available or info.reasons, f"{info.name} is unavailable without a reason"
