"""transformers Qwen3 with attn_implementation="mlx_attn" vs "eager", tiny random checkpoint.

Reference: the same checkpoint in float64 through torch's own SDPA (transformers' "eager" in
float64 turns fully padded rows into NaN, so it cannot serve). Logits at real (non-pad)
positions must meet the SPEC criterion against it: error <= 2x eager-float32's error + 1e-5.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

import mlx_attn.integrations.transformers as mlx_attn_hf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "qwen3"))
from qwen3_tiny import write_tiny_qwen3  # noqa: E402

PROMPTS = ["The quick brown fox jumps over the lazy", "Hello world"]   # padded to one length


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    mlx_attn_hf.register()
    return write_tiny_qwen3(tmp_path_factory.mktemp("qwen3-hf"))


def _load(path, impl, dtype=torch.float32, **config):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation=impl, dtype=dtype,
                                                **config).eval()


@pytest.fixture(scope="module")
def batch(checkpoint):
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer.padding_side = "left"
    out = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert not out["attention_mask"].all(), "the batch must contain padding"
    return out


def test_registered_under_both_interfaces(checkpoint):
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    assert AttentionInterface._global_mapping["mlx_attn"] is mlx_attn_hf.attention_forward
    assert "mlx_attn" in ALL_MASK_ATTENTION_FUNCTIONS


def test_logits_match_with_padding(checkpoint, batch):
    with torch.no_grad():
        ours = _load(checkpoint, "mlx_attn")(**batch).logits.double()
        eager = _load(checkpoint, "eager")(**batch).logits.double()
        ref = _load(checkpoint, "sdpa", torch.float64)(**batch).logits
    real = batch["attention_mask"].bool()
    err = (ours - ref)[real].abs().max().item()
    bound = 2 * (eager - ref)[real].abs().max().item() + 1e-5
    assert err <= bound, f"mlx_attn error {err:.3g} > bound {bound:.3g}"


def test_greedy_generation_matches_eager(checkpoint, batch):
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        ours = _load(checkpoint, "mlx_attn").generate(**batch, **kwargs)
        eager = _load(checkpoint, "eager").generate(**batch, **kwargs)
    assert ours.shape[1] == batch["input_ids"].shape[1] + 10
    assert torch.equal(ours, eager)


def test_gradients_match_eager(checkpoint, batch):
    # the unpadded row only: with padding the last pad position predicts the first real token,
    # and eager's fully masked rows (uniform attention) differ from ours (zeros) by design
    ids = batch["input_ids"][:1]
    grads = {}
    for impl in ("mlx_attn", "eager"):
        model = _load(checkpoint, impl).train()
        model(input_ids=ids, labels=ids).loss.backward()
        grads[impl] = model.model.layers[0].self_attn.q_proj.weight.grad
    torch.testing.assert_close(grads["mlx_attn"], grads["eager"], atol=1e-5, rtol=1e-4)


def test_dropout_in_training_is_a_clear_error(checkpoint, batch):
    model = _load(checkpoint, "mlx_attn", attention_dropout=0.1).train()
    with pytest.raises(ValueError, match="dropout=0.1.*config's attention_dropout to 0"):
        model(**batch)
    model.eval()                               # no dropout in eval: runs
    model(**batch)


def test_dropout_error_names_the_configs_own_setting():
    """BERT-family configs call it attention_probs_dropout_prob, not attention_dropout."""
    from transformers import BertConfig, BertModel
    mlx_attn_hf.register()
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64,
                        attention_probs_dropout_prob=0.1, attn_implementation="mlx_attn")
    model = BertModel(config, add_pooling_layer=False).train()
    assert model.config._attn_implementation == "mlx_attn"
    ids = torch.tensor([[1, 5, 9, 2]])
    with pytest.raises(ValueError, match="config's attention_probs_dropout_prob to 0") as raised:
        model(input_ids=ids)
    assert "attention_dropout " not in str(raised.value)
    model.eval()
    model(input_ids=ids)


def test_gqa_groups_checked_and_layout():
    class Module:
        num_key_value_groups = 3
        is_causal = True
    q, k = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="num_key_value_groups=3"):
        mlx_attn_hf.attention_forward(Module(), q, k, k, None)
    Module.num_key_value_groups = 2
    out, weights = mlx_attn_hf.attention_forward(Module(), q, k, k, None, scaling=0.5)
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), k.repeat_interleave(2, 1), is_causal=True, scale=0.5)
    assert out.shape == (1, 5, 4, 8) and weights is None          # [B, Lq, Hq, Dv]
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("Lq,Lk", [(3, 7), (7, 3)])
def test_skipped_mask_means_top_left_causal(Lq, Lk):
    """No mask + is_causal: transformers means torch's top-left alignment."""
    class Module:
        num_key_value_groups = 1
    q, k, v = torch.randn(2, 2, Lq, 16), torch.randn(2, 2, Lk, 16), torch.randn(2, 2, Lk, 16)
    out, _ = mlx_attn_hf.attention_forward(Module(), q, k, v, None, is_causal=True)
    top_left = torch.ones(Lq, Lk, dtype=torch.bool).tril()
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=top_left)
    torch.testing.assert_close(out, expected.transpose(1, 2), atol=1e-5, rtol=1e-5)


def test_importing_mlx_attn_imports_no_plugged_library():
    import subprocess
    code = ("import sys, mlx_attn, mlx_attn.integrations; "
            "print([m for m in ('mlx_lm', 'transformers', 'diffusers') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
