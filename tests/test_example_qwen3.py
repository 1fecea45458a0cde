"""examples/qwen3: our MLX Qwen3 vs mlx-lm's Qwen3 on the same tiny random checkpoint, and both
demo scripts end to end."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "qwen3"))
import qwen3_mlx  # noqa: E402
from qwen3_tiny import write_tiny_qwen3  # noqa: E402

PROMPT = "Once upon a time there was a tiny language model"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_qwen3(tmp_path_factory.mktemp("qwen3-example"))


def _logits(model, ids, steps, call):
    """Prefill + greedy decode; `call(tokens, cache)` runs one forward. Returns logits, tokens."""
    cache = model.make_cache() if hasattr(model, "make_cache") else None
    if cache is None:
        from mlx_lm.models.cache import make_prompt_cache
        cache = make_prompt_cache(model)
    logits = call(model, mx.array([ids]), cache)[:, -1]
    outs, tokens = [np.array(logits.astype(mx.float64))], []
    for _ in range(steps):
        token = mx.argmax(logits, axis=-1)
        tokens.append(int(token.item()))
        logits = call(model, token[:, None], cache)[:, -1]
        outs.append(np.array(logits.astype(mx.float64)))
    return outs, tokens


def _reference_sdpa(queries, keys, values, *, scale, mask=None, sinks=None):
    """mx.fast.scaled_dot_product_attention computed by mlx_attn.reference (float64 numpy)."""
    from mlx_attn import reference
    assert sinks is None and (mask is None or isinstance(mask, str))
    out, _ = reference.reference(np.array(queries), np.array(keys), np.array(values),
                                 scale=scale, causal=mask == "causal")
    return mx.array(out, dtype=queries.dtype)


def _ours(model, tokens, cache):
    return model(tokens, cache)


def _mlx_lm(model, tokens, cache):
    return model(tokens, cache=cache)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matches_mlx_lm_on_the_same_checkpoint(checkpoint, dtype, monkeypatch):
    mlx_lm = pytest.importorskip("mlx_lm")
    if dtype == "float64":
        # both in float64 on the CPU, mlx-lm's attention replaced by mlx_attn.reference:
        # only the model code differs. (MLX's float64 exp/rsqrt are only float32-accurate on
        # the CPU, so "agree" means ~1e-6 here, still far below any modelling mistake.)
        monkeypatch.setattr(mx.fast, "scaled_dot_product_attention", _reference_sdpa)
        stream = mx.stream(mx.cpu)
    else:
        import contextlib
        stream = contextlib.nullcontext()
    with stream:
        dt = getattr(mx, dtype)
        ours, tokenizer, _ = qwen3_mlx.load(checkpoint, dtype=dt)
        theirs, _ = mlx_lm.load(str(checkpoint))
        theirs.set_dtype(dt)
        ids = tokenizer.encode(PROMPT).ids
        a, ta = _logits(ours, ids, 8, _ours)
        b, tb = _logits(theirs, ids, 8, _mlx_lm)
    tol = 1e-5 if dtype == "float64" else 2e-4
    assert ta == tb
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=tol * max(1.0, np.abs(y).max()), rtol=0)


def test_chunked_prefill_equals_whole_prefill(checkpoint):
    model, tokenizer, _ = qwen3_mlx.load(checkpoint)
    ids = mx.array([tokenizer.encode(PROMPT).ids])
    whole = model(ids, model.make_cache())[:, -1]
    cache = model.make_cache()
    for start in range(0, ids.shape[1], 4):          # Lq = 4 onto a growing cache
        part = model(ids[:, start:start + 4], cache)[:, -1]
    np.testing.assert_allclose(np.array(part), np.array(whole), atol=1e-4)


def test_load_rejects_other_models(tmp_path, checkpoint):
    import json
    import shutil
    shutil.copytree(checkpoint, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "m" / "config.json").write_text(json.dumps({**cfg, "model_type": "llama"}))
    with pytest.raises(ValueError, match="not qwen3"):
        qwen3_mlx.load(tmp_path / "m")


def test_mlx_demo_generates_text(checkpoint, capsys):
    tokens = qwen3_mlx.main(["--model", str(checkpoint), "--prompt", PROMPT, "--max-tokens", "12"])
    out = capsys.readouterr().out
    assert 1 <= len(tokens) <= 12 and "[mlx_attn]" in out and "decode" in out and "peak memory" in out
    native = qwen3_mlx.main(["--model", str(checkpoint), "--prompt", PROMPT, "--max-tokens", "12",
                             "--attention", "native"])
    assert native == tokens


def test_torch_demo_through_transformers(checkpoint, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import qwen3_torch
    results = qwen3_torch.main(["--model", str(checkpoint), "--prompt", PROMPT,
                                "--max-tokens", "12", "--device", "cpu", "--compare"])
    out = capsys.readouterr().out
    assert "greedy tokens identical to sdpa: True" in out
    model, tokenizer, cfg = qwen3_mlx.load(checkpoint)
    mlx_tokens, _, _ = qwen3_mlx.generate(model, tokenizer.encode(PROMPT).ids, 12,
                                          qwen3_mlx.eos_ids(checkpoint, cfg))
    assert results["mlx_attn"] == mlx_tokens          # the MLX and torch demos agree
