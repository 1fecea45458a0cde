"""FLUX.1 text-to-image through diffusers' FluxPipeline with mlx_attn's attention processor.

    python examples/flux/flux_generate_torch.py --model ~/models/FLUX.1-schnell \
        --prompt "a red fox in the snow" --steps 4 --height 1024 --width 1024 --out fox.png

Runs the pipeline with `FluxAttnProcessor` (mlx_attn) and, with --attention both (default),
again with diffusers' default processor from the same starting noise; prints per-step time and
peak memory for each (CUDA peak allocated; on the CPU the process's peak RSS so far).
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

import flux_common as common
from mlx_attn.integrations.diffusers import FluxAttnProcessor
from mlx_attn.timing import peak_rss_bytes


def load_pipeline(root: Path, dtype):
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                           FluxTransformer2DModel)
    if (root / "model_index.json").exists():
        return FluxPipeline.from_pretrained(root, torch_dtype=dtype)
    # a folder with only transformer/, vae/, scheduler/ (such as the tiny test checkpoint)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(root / "scheduler"),
        vae=AutoencoderKL.from_pretrained(root / "vae", torch_dtype=dtype),
        transformer=FluxTransformer2DModel.from_pretrained(root / "transformer", torch_dtype=dtype),
        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)


def main(argv=None):
    ap = common.generation_parser(__doc__.splitlines()[0], None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default=None)
    ap.add_argument("--attention", choices=["mlx_attn", "native", "both"], default="both")
    ap.add_argument("--out", default="flux_torch.png")
    args = ap.parse_args(argv)

    root, device = Path(args.model), torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if device.type == "cuda" else torch.float32)
    pipe = load_pipeline(root, dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    channels, h, w = common.latent_grid(dict(pipe.vae.config), args.height, args.width)
    latents = torch.from_numpy(common.pack(common.noise(channels, h, w, args.seed)))
    text = {}
    if args.embeddings or pipe.text_encoder_2 is None:
        embeds, pooled = common.prompt_embeddings(root, args.prompt, args.embeddings)
        text = dict(prompt_embeds=torch.from_numpy(embeds).to(device, dtype),
                    pooled_prompt_embeds=torch.from_numpy(pooled).to(device, dtype))
    else:
        text = dict(prompt=args.prompt)
    default_processors = pipe.transformer.attn_processors

    kinds = ["mlx_attn", "native"] if args.attention == "both" else [args.attention]
    images = {}
    for kind in kinds:
        pipe.transformer.set_attn_processor(FluxAttnProcessor() if kind == "mlx_attn"
                                            else default_processors)
        with torch.no_grad():   # warm-up: one step, first-call costs stay out of the timings
            pipe(**text, height=args.height, width=args.width, num_inference_steps=1,
                 latents=latents.to(device, dtype), output_type="latent")
        stamps = []

        def stamp(_pipe, _step, _t, kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return kwargs

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        stamps.append(time.perf_counter())
        with torch.no_grad():
            result = pipe(**text, height=args.height, width=args.width,
                          num_inference_steps=args.steps, guidance_scale=args.guidance,
                          latents=latents.to(device, dtype), output_type="np",
                          callback_on_step_end=stamp)
        times = np.diff(stamps)
        memory = (f"peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB"
                  if device.type == "cuda" else
                  f"process peak RSS so far {peak_rss_bytes() / 2**20:.1f} MiB")
        print(f"[{kind}] {device.type} {str(dtype).removeprefix('torch.')}: per step median "
              f"{statistics.median(times) * 1e3:.1f} ms (min {times.min() * 1e3:.1f}, "
              f"max {times.max() * 1e3:.1f}); {memory}")
        images[kind] = result.images[0]
    if len(kinds) == 2:
        diff = np.abs(images["mlx_attn"] - images["native"]).max()
        print(f"images, max |mlx_attn - native| = {diff:.3g} (pixel values in [0, 1])")
    from PIL import Image
    Image.fromarray((images[kinds[0]] * 255).round().astype(np.uint8)).save(args.out)
    print(f"wrote {args.out} ({args.width}x{args.height})")
    return images


if __name__ == "__main__":
    main()
