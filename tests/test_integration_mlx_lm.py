"""mlx-lm with route_mlx_lm() vs without, on a tiny random Qwen3 written to a temporary dir.

Logits are judged by the SPEC criterion applied to the whole model: a float64 copy of the model
whose attention is mlx_attn.reference (independent numpy float64) is the reference, and the
routed model may be off by at most 2x the unrouted (mx.fast) model's error + 1e-5.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
mlx_lm = pytest.importorskip("mlx_lm")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from mlx_lm.models import cache as mlx_cache  # noqa: E402

from mlx_attn import reference  # noqa: E402
from mlx_attn.integrations.mlx_lm import (  # noqa: E402
    MlxLmRoute, explain_call, pass_through_reason, route_mlx_lm)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "qwen3"))
from qwen3_tiny import write_tiny_qwen3  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. Flash attention"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_qwen3(tmp_path_factory.mktemp("qwen3"))
    model, tokenizer = mlx_lm.load(str(path))
    return path, model, tokenizer


def _reference_sdpa(queries, keys, values, *, scale, mask=None, sinks=None):
    """Drop-in for mx.fast.scaled_dot_product_attention computed by mlx_attn.reference."""
    assert sinks is None
    causal = isinstance(mask, str)
    m = None if (mask is None or causal) else np.array(mask)
    out, _ = reference.reference(np.array(queries), np.array(keys), np.array(values),
                                 scale=scale, causal=causal, mask=m)
    return mx.array(out, dtype=queries.dtype)


@pytest.fixture(scope="module")
def reference_model(tiny):
    path = tiny[0]
    model, _ = mlx_lm.load(str(path))
    model.set_dtype(mx.float64)
    return model


def _run(model, ids, steps, cache=None, chunk=None):
    """Prefill (optionally in chunks) then greedy decode; return (list of logits, tokens)."""
    cache = cache if cache is not None else mlx_cache.make_prompt_cache(model)
    chunk = chunk or ids.shape[1]
    for start in range(0, ids.shape[1], chunk):
        logits = model(ids[:, start:start + chunk], cache=cache)
    logits = logits[:, -1]
    outs, tokens = [np.array(logits.astype(mx.float64))], []
    for _ in range(steps):
        token = mx.argmax(logits, axis=-1)
        tokens.append(int(token.item()))
        logits = model(token[:, None], cache=cache)[:, -1]
        outs.append(np.array(logits.astype(mx.float64)))
    return outs, tokens


def _run_reference(model, ids, steps, monkeypatch, chunk=None, cache=None):
    with mx.stream(mx.cpu), monkeypatch.context() as patch:
        patch.setattr(mx.fast, "scaled_dot_product_attention", _reference_sdpa)
        return _run(model, ids, steps, chunk=chunk, cache=cache)


def _assert_spec(ours, native, ref, what):
    err, bound = np.abs(ours - ref).max(), 2 * np.abs(native - ref).max() + 1e-5
    assert err <= bound, f"{what}: routed error {err:.3g} > bound {bound:.3g}"


def test_prefill_and_16_decode_steps_match(tiny, reference_model, monkeypatch):
    _, model, tokenizer = tiny
    ids = mx.array([tokenizer.encode(PROMPT)])
    native, native_tokens = _run(model, ids, 16)
    with route_mlx_lm() as route:
        ours, tokens = _run(model, ids, 16)
    ref, ref_tokens = _run_reference(reference_model, ids, 16, monkeypatch)
    assert route.routed == 2 * 17 and not route.passed, route.explain()
    assert tokens == native_tokens == ref_tokens
    for step, (o, n, r) in enumerate(zip(ours, native, ref)):
        _assert_spec(o, n, r, f"step {step}")


def test_chunked_prefill_is_bottom_right_causal(tiny, reference_model, monkeypatch):
    """Prefill in chunks of 5: Lq < Lk with mask="causal" and a cache offset."""
    _, model, tokenizer = tiny
    ids = mx.array([tokenizer.encode(PROMPT)])
    native, _ = _run(model, ids, 2, chunk=5)
    with route_mlx_lm() as route:
        ours, _ = _run(model, ids, 2, chunk=5)
    whole, _ = _run(model, ids, 2)
    ref, _ = _run_reference(reference_model, ids, 2, monkeypatch, chunk=5)
    assert route.routed > 0 and not route.passed
    for o, n, r, w in zip(ours, native, ref, whole):
        _assert_spec(o, n, r, "chunked prefill")
        np.testing.assert_allclose(o, w, atol=1e-4)   # chunking does not change the answer


def test_rotating_cache_window_masks(tiny, reference_model, monkeypatch):
    """A rotating cache smaller than the prompt: mlx-lm hands bool window masks."""
    _, model, tokenizer = tiny
    ids = mx.array([tokenizer.encode(PROMPT)])
    layers = len(model.layers)
    native, native_tokens = _run(model, ids, 6, chunk=7,
                                 cache=[mlx_cache.RotatingKVCache(8) for _ in range(layers)])
    with route_mlx_lm() as route:
        ours, tokens = _run(model, ids, 6, chunk=7,
                            cache=[mlx_cache.RotatingKVCache(8) for _ in range(layers)])
    ref, _ = _run_reference(reference_model, ids, 6, monkeypatch, chunk=7,
                            cache=[mlx_cache.RotatingKVCache(8) for _ in range(layers)])
    assert route.routed > 0 and not route.passed
    assert tokens == native_tokens
    for o, n, r in zip(ours, native, ref):
        _assert_spec(o, n, r, "rotating cache")


def test_quantized_cache_passes_through_with_reason(tiny):
    _, model, tokenizer = tiny
    ids = mx.array([tokenizer.encode(PROMPT)])
    make = lambda: [mlx_cache.QuantizedKVCache(group_size=32, bits=8)  # noqa: E731
                    for _ in model.layers]
    native, native_tokens = _run(model, ids, 3, cache=make())
    with route_mlx_lm() as route:
        ours, tokens = _run(model, ids, 3, cache=make())
    assert route.routed == 0 and sum(route.passed.values()) == 2 * 4
    assert "quantized KV cache" in route.explain()
    assert tokens == native_tokens
    for o, n in zip(ours, native):
        np.testing.assert_array_equal(o, n)  # the very same mlx-lm code ran


def _qkv(B=2, Hq=4, Hkv=2, Lq=5, Lk=9, D=16, seed=0):
    rng = np.random.default_rng(seed)
    return (mx.array(rng.standard_normal(s).astype(np.float32))
            for s in ((B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, D)))


@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool", "additive", "window1d"])
def test_each_mask_form_against_reference(mask_kind):
    import mlx_lm.models.base as base
    q, k, v = _qkv()
    rng = np.random.default_rng(1)
    mask = {"none": None, "causal": "causal",
            "bool": mx.array(rng.random((2, 1, 5, 9)) > 0.3),
            "additive": mx.array(rng.standard_normal((5, 9)).astype(np.float32)),
            "window1d": mx.array(np.arange(9) >= 3)}[mask_kind]
    with route_mlx_lm() as route:
        out = base.scaled_dot_product_attention(q, k, v, cache=None, scale=0.3, mask=mask)
    assert route.routed == 1
    m = None if mask is None or isinstance(mask, str) else np.array(mask)
    ref, _ = reference.reference(q, k, v, scale=0.3, causal=mask == "causal"
                                 if isinstance(mask, str) else False, mask=m)
    native = mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask=mask)
    err, bound = np.abs(np.array(out) - ref).max(), 2 * np.abs(np.array(native) - ref).max() + 1e-5
    assert err <= bound


def test_sinks_pass_through_and_explain():
    import mlx_lm.models.base as base
    q, k, v = _qkv()
    sinks = mx.zeros((4,))
    with route_mlx_lm() as route:
        base.scaled_dot_product_attention(q, k, v, cache=None, scale=0.25, mask=None, sinks=sinks)
    assert route.routed == 0 and "attention sinks" in route.explain()
    assert "attention sinks" in explain_call(q, k, v, scale=0.25, sinks=sinks)
    text = explain_call(q, k, v, scale=0.25, mask="causal")
    assert text.startswith("routed to mlx_attn") and "causal=True" in text and "math" in text
    assert pass_through_reason(q, k, v, scale=0.25, mask="weird").startswith("mask mode")


def test_patches_every_loaded_model_module_and_restores():
    import mlx_lm.models.base as base
    original = base.scaled_dot_product_attention
    names = ["mlx_lm.models.qwen3", "mlx_lm.models.llama", "mlx_lm.models.gpt_oss"]
    modules = [importlib.import_module(n) for n in names]
    late = "mlx_lm.models.starcoder2"
    sys.modules.pop(late, None)
    with route_mlx_lm() as route:
        router = base.scaled_dot_product_attention
        assert router is not original
        assert all(m.scaled_dot_product_attention is router for m in modules)
        late_module = importlib.import_module(late)   # imported while routing: picks ours up
        assert late_module.scaled_dot_product_attention is router
        with pytest.raises(RuntimeError):
            route.start()
    assert base.scaled_dot_product_attention is original
    assert all(m.scaled_dot_product_attention is original for m in modules)
    assert late_module.scaled_dot_product_attention is original
    assert not route.active and "restored" in route.explain()


def test_nested_routes_restore_in_order():
    import mlx_lm.models.base as base
    import mlx_lm.models.qwen3 as qwen3
    original = base.scaled_dot_product_attention
    outer = route_mlx_lm()
    try:
        outer_fn = qwen3.scaled_dot_product_attention
        with MlxLmRoute(backend="math"):
            assert qwen3.scaled_dot_product_attention not in (original, outer_fn)
        assert qwen3.scaled_dot_product_attention is outer_fn
    finally:
        outer.restore()
    assert qwen3.scaled_dot_product_attention is original
