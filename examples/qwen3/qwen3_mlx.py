"""A self-contained Qwen3 in MLX whose attention is mlx_attn, loading a Hugging Face checkpoint.

    python examples/qwen3/qwen3_mlx.py --model ~/models/Qwen3-0.6B --prompt "Hello" --max-tokens 64

The checkpoint directory is what `huggingface-cli download Qwen/Qwen3-0.6B` gives: config.json,
*.safetensors (Hugging Face parameter names, loaded as they are) and tokenizer.json. Nothing
else from Hugging Face is needed: the tokenizer is read with the `tokenizers` package.

Model: GQA attention with per-head RMSNorm of q and k, RoPE (half-split), SwiGLU MLP, a KV cache
that grows by concatenation; prefill runs the whole prompt at once (causal, bottom-right aligned
so that chunked prefill onto a cache is also right), decode runs one token at a time.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

import mlx_attn


def native_attention(q, k, v, *, scale, causal):
    """MLX's own fused attention, for comparison (`--attention native`)."""
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale,
                                                mask="causal" if causal else None)


def flash_attention(q, k, v, *, scale, causal):
    return mlx_attn.flash_attention(q, k, v, scale=scale, causal=causal)


class KVCache:
    def __init__(self):
        self.keys = self.values = None

    @property
    def offset(self) -> int:
        return 0 if self.keys is None else self.keys.shape[2]

    def update(self, keys, values):
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        return self.keys, self.values


class Attention(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        h, d = cfg["hidden_size"], cfg["head_dim"]
        self.n_heads, self.n_kv, self.head_dim = (cfg["num_attention_heads"],
                                                  cfg["num_key_value_heads"], d)
        bias = cfg.get("attention_bias", False)
        self.q_proj = nn.Linear(h, self.n_heads * d, bias=bias)
        self.k_proj = nn.Linear(h, self.n_kv * d, bias=bias)
        self.v_proj = nn.Linear(h, self.n_kv * d, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * d, h, bias=bias)
        self.q_norm = nn.RMSNorm(d, eps=cfg["rms_norm_eps"])
        self.k_norm = nn.RMSNorm(d, eps=cfg["rms_norm_eps"])
        self.rope = nn.RoPE(d, traditional=False, base=rope_theta(cfg))

    def __call__(self, x, cache: KVCache, attention):
        B, L, _ = x.shape
        split = lambda t, n: t.reshape(B, L, n, self.head_dim).transpose(0, 2, 1, 3)  # noqa
        q = self.q_norm(split(self.q_proj(x), self.n_heads))
        k = self.k_norm(split(self.k_proj(x), self.n_kv))
        v = split(self.v_proj(x), self.n_kv)
        q, k = self.rope(q, offset=cache.offset), self.rope(k, offset=cache.offset)
        k, v = cache.update(k, v)
        out = attention(q, k, v, scale=self.head_dim ** -0.5, causal=L > 1)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj, self.up_proj = nn.Linear(h, i, bias=False), nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def __call__(self, x):
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.self_attn, self.mlp = Attention(cfg), MLP(cfg)
        self.input_layernorm = nn.RMSNorm(cfg["hidden_size"], eps=cfg["rms_norm_eps"])
        self.post_attention_layernorm = nn.RMSNorm(cfg["hidden_size"], eps=cfg["rms_norm_eps"])

    def __call__(self, x, cache, attention):
        x = x + self.self_attn(self.input_layernorm(x), cache, attention)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = [Layer(cfg) for _ in range(cfg["num_hidden_layers"])]
        self.norm = nn.RMSNorm(cfg["hidden_size"], eps=cfg["rms_norm_eps"])


class Qwen3(nn.Module):
    """Parameter names follow Hugging Face's Qwen3ForCausalLM, so checkpoints load as they are."""

    def __init__(self, cfg: dict, attention=flash_attention):
        super().__init__()
        self.cfg, self.attention = cfg, attention
        self.model = Body(cfg)
        if not cfg.get("tie_word_embeddings", False):
            self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)

    def make_cache(self):
        return [KVCache() for _ in self.model.layers]

    def __call__(self, tokens, cache):
        x = self.model.embed_tokens(tokens)
        for layer, c in zip(self.model.layers, cache):
            x = layer(x, c, self.attention)
        x = self.model.norm(x)
        if "lm_head" in self:
            return self.lm_head(x)
        return self.model.embed_tokens.as_linear(x)


def rope_theta(cfg: dict) -> float:
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
        raise ValueError(f"this example implements plain RoPE only, got rope scaling {scaling}")
    return float(cfg.get("rope_theta") or params.get("rope_theta", 10000.0))


def load(path, dtype=None, attention=flash_attention):
    """(model, tokenizer, config) from a Hugging Face Qwen3 checkpoint directory."""
    from tokenizers import Tokenizer
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") != "qwen3":
        raise ValueError(f"{path} holds a {cfg.get('model_type')!r} model, not qwen3")
    model = Qwen3(cfg, attention)
    weights = {}
    for file in sorted(path.glob("*.safetensors")):
        weights.update(mx.load(str(file)))
    if cfg.get("tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)
    model.load_weights(list(weights.items()))  # strict: every parameter, nothing extra
    dtype = dtype or {"bfloat16": mx.bfloat16, "float16": mx.float16}.get(
        cfg.get("torch_dtype") or cfg.get("dtype"), mx.float32)
    model.set_dtype(dtype)
    mx.eval(model.parameters())
    return model, Tokenizer.from_file(str(path / "tokenizer.json")), cfg


def eos_ids(path, cfg) -> set:
    ids = cfg.get("eos_token_id")
    gen = Path(path) / "generation_config.json"
    if gen.exists():
        ids = json.loads(gen.read_text()).get("eos_token_id", ids)
    return set(ids if isinstance(ids, list) else [ids] if ids is not None else [])


def generate(model, prompt_ids, max_tokens, eos=(), temperature=0.0, seed=0):
    """Greedy (or sampled) decoding. Returns (token ids, prefill seconds, decode seconds)."""
    cache = model.make_cache()
    key = mx.random.key(seed)
    pick = (lambda lg, k: mx.argmax(lg, axis=-1)) if temperature <= 0 else \
        (lambda lg, k: mx.random.categorical(lg / temperature, key=k))
    start = time.perf_counter()
    logits = model(mx.array([prompt_ids]), cache)[:, -1]
    token = pick(logits, key)
    mx.eval(token)
    prefill_s, out = time.perf_counter() - start, []
    start = time.perf_counter()
    for step in range(max_tokens):
        t = int(token.item())
        out.append(t)
        if t in eos or step == max_tokens - 1:
            break
        key = mx.random.split(key)[0]
        token = pick(model(token[:, None], cache)[:, -1], key)
        mx.async_eval(token)
    return out, prefill_s, time.perf_counter() - start


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Hugging Face Qwen3 checkpoint directory")
    ap.add_argument("--prompt", default="Give me a short introduction to large language models.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--chat", action="store_true", help="wrap the prompt in Qwen's chat format")
    ap.add_argument("--attention", choices=["mlx_attn", "native"], default="mlx_attn")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    args = ap.parse_args(argv)

    attention = flash_attention if args.attention == "mlx_attn" else native_attention
    model, tokenizer, cfg = load(args.model, args.dtype and getattr(mx, args.dtype), attention)
    prompt = args.prompt
    if args.chat:
        prompt = f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer.encode(prompt).ids
    generate(model, ids[:8], 2)  # warm-up: first-call costs stay out of the timings
    mx.reset_peak_memory()
    tokens, prefill_s, decode_s = generate(model, ids, args.max_tokens,
                                           eos_ids(args.model, cfg), args.temperature)
    print(tokenizer.decode(tokens))
    print(f"[{args.attention}] prompt {len(ids)} tokens: prefill {len(ids) / prefill_s:.1f} tok/s; "
          f"generated {len(tokens)} tokens: decode {max(len(tokens) - 1, 1) / max(decode_s, 1e-9):.1f}"
          f" tok/s; peak memory {mx.get_peak_memory() / 2**20:.1f} MiB")
    return tokens


if __name__ == "__main__":
    main()
