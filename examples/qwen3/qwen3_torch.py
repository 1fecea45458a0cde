"""Qwen3 through Hugging Face transformers with attn_implementation="mlx_attn" (CUDA or CPU).

    python examples/qwen3/qwen3_torch.py --model ~/models/Qwen3-0.6B --prompt "Hello" --max-tokens 64

`--compare` also runs transformers' own "sdpa" on the same prompt and prints both timings and
whether the greedy tokens agree.
"""
from __future__ import annotations

import argparse
import time

import torch

import mlx_attn.integrations.transformers as mlx_attn_hf


def generate(model, batch, max_tokens, pad_id, device):
    """(new token ids, seconds) of one greedy generate call."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_tokens,
                             do_sample=False, pad_token_id=pad_id)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out[0, batch["input_ids"].shape[1]:].tolist(), time.perf_counter() - start


def run(model, tokenizer, prompt, max_tokens, device):
    """(tokens, prefill seconds, decode seconds per token, peak MiB or None).

    A short warm-up generate runs first, so that one-time costs (lazy imports, first-call
    dispatch, transformers' own set-up) are not counted; prefill is the time of a one-token
    generate, decode the extra time of the full one per extra token."""
    batch = tokenizer([prompt], return_tensors="pt").to(device)
    pad_id = tokenizer.pad_token_id or tokenizer.eos_token_id
    generate(model, batch, 2, pad_id, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, first = generate(model, batch, 1, pad_id, device)
    tokens, seconds = generate(model, batch, max_tokens, pad_id, device)
    per_token = (seconds - first) / max(len(tokens) - 1, 1)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return tokens, first, per_token, peak


def main(argv=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Hugging Face Qwen3 checkpoint directory")
    ap.add_argument("--prompt", default="Give me a short introduction to large language models.")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None)
    ap.add_argument("--compare", action="store_true", help="also run attn_implementation='sdpa'")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if device.type == "cuda" else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    impls = [mlx_attn_hf.register()] + (["sdpa"] if args.compare else [])
    results = {}
    for impl in impls:
        model = AutoModelForCausalLM.from_pretrained(args.model, attn_implementation=impl,
                                                     dtype=dtype).to(device).eval()
        tokens, prefill_s, per_token_s, peak = run(model, tokenizer, args.prompt,
                                                   args.max_tokens, device)
        results[impl] = tokens
        if impl == impls[0]:
            print(tokenizer.decode(tokens, skip_special_tokens=True))
        memory = f"; peak CUDA memory {peak:.1f} MiB" if peak is not None else ""
        print(f"[{impl}] {device.type} {str(dtype).removeprefix('torch.')}: prefill "
              f"{batch_len(tokenizer, args.prompt) / prefill_s:.1f} tok/s; {len(tokens)} tokens, "
              f"decode {1 / per_token_s:.1f} tok/s ({per_token_s * 1e3:.2f} ms/token){memory}")
        del model
    if args.compare:
        print(f"greedy tokens identical to sdpa: {results['mlx_attn'] == results['sdpa']}")
    return results


def batch_len(tokenizer, prompt) -> int:
    return len(tokenizer(prompt)["input_ids"])


if __name__ == "__main__":
    main()
