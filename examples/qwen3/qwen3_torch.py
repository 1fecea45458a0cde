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


def run(model, tokenizer, prompt, max_tokens, device):
    batch = tokenizer([prompt], return_tensors="pt").to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return out[0, batch["input_ids"].shape[1]:].tolist(), seconds, peak


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
        tokens, seconds, peak = run(model, tokenizer, args.prompt, args.max_tokens, device)
        results[impl] = tokens
        if impl == impls[0]:
            print(tokenizer.decode(tokens, skip_special_tokens=True))
        memory = f"; peak CUDA memory {peak:.1f} MiB" if peak is not None else ""
        print(f"[{impl}] {device.type} {str(dtype).removeprefix('torch.')}: {len(tokens)} tokens "
              f"in {seconds:.2f} s ({len(tokens) / seconds:.1f} tok/s){memory}")
        del model
    if args.compare:
        print(f"greedy tokens identical to sdpa: {results['mlx_attn'] == results['sdpa']}")
    return results


if __name__ == "__main__":
    main()
