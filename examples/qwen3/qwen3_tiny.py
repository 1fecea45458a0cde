"""Write a tiny, random-initialised Qwen3 checkpoint directory in the Hugging Face layout.

The demos take a local checkpoint directory (config.json, *.safetensors, tokenizer.json); no
weights can be downloaded here or on CI, so the tests build one of these and run the real
loading code on it. The tokenizer is a byte-level BPE trained on a few sentences.

    python examples/qwen3/qwen3_tiny.py /tmp/tiny-qwen3
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

TINY_CONFIG = dict(
    architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=64, intermediate_size=128,
    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
    rms_norm_eps=1e-6, vocab_size=384, max_position_embeddings=512, tie_word_embeddings=False,
    rope_theta=1000000.0, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
    attention_bias=False, attention_dropout=0.0, hidden_act="silu", bos_token_id=None,
    eos_token_id=0, pad_token_id=0, torch_dtype="float32", use_cache=True,
    use_sliding_window=False, sliding_window=None, max_window_layers=2,
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Flash attention computes softmax attention in tiles, one block of keys at a time.",
    "Hello world! MLX runs on Apple silicon; torch runs on CUDA and on the CPU.",
    "Once upon a time there was a tiny language model with random weights.",
]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def weight_shapes(cfg: dict) -> dict:
    """Hugging Face Qwen3ForCausalLM parameter names and shapes."""
    h, d, i = cfg["hidden_size"], cfg["head_dim"], cfg["intermediate_size"]
    nq, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": (cfg["vocab_size"], h), "model.norm.weight": (h,)}
    if not cfg["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (cfg["vocab_size"], h)
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes.update({
            p + "self_attn.q_proj.weight": (nq * d, h), p + "self_attn.k_proj.weight": (nkv * d, h),
            p + "self_attn.v_proj.weight": (nkv * d, h), p + "self_attn.o_proj.weight": (h, nq * d),
            p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
        })
    return shapes


def write_tokenizer(path: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_CORPUS, trainer)
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "model_max_length": 512, "padding_side": "left",
    }, indent=1))


def write_tiny_qwen3(path, seed: int = 0, std: float = 0.15, **overrides) -> Path:
    """Create `path` with config.json, model.safetensors and a tokenizer; return the path."""
    from safetensors.numpy import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = {**TINY_CONFIG, **overrides}
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(cfg).items():
        if len(shape) == 1:  # norm gains near 1 so activations keep their scale
            weights[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            weights[name] = (std * rng.standard_normal(shape)).astype(np.float32)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(cfg, indent=1))
    write_tokenizer(path, min(cfg["vocab_size"], 384))
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": 0}))
    return path


if __name__ == "__main__":
    out = write_tiny_qwen3(sys.argv[1] if len(sys.argv) > 1 else "tiny-qwen3")
    print(f"wrote a tiny random Qwen3 checkpoint to {out}")
