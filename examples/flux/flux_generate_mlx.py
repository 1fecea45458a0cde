"""FLUX.1 text-to-image with the MLX transformer: denoising loop in MLX, attention by mlx_attn.

    python examples/flux/flux_generate_mlx.py --model ~/models/FLUX.1-schnell \
        --prompt "a red fox in the snow" --steps 4 --height 1024 --width 1024 --out fox.png

--model is a diffusers FLUX.1 checkpoint folder (transformer/, vae/, scheduler/, and the text
encoders unless --embeddings is given). The transformer and the denoising loop run in MLX; the
text encoders (CLIP, T5) and the VAE decode run in torch through diffusers, once each.
--attention both (the default) runs the loop with mlx_attn and with mx.fast's attention and
prints per-step time and peak memory for each.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import mlx.core as mx
import numpy as np

import flux_common as common
import flux_mlx


def denoise(model, noise_tokens, embeds, pooled, sigmas, img_ids, txt_ids, guidance):
    """Flow-matching Euler steps. Returns (final tokens, seconds per step)."""
    dtype = model.proj_out.weight.dtype
    x = mx.array(noise_tokens).astype(dtype)
    context, pooled = mx.array(embeds).astype(dtype), mx.array(pooled).astype(dtype)
    g = None if guidance is None else mx.array([guidance], dtype=mx.float32)
    rope = flux_mlx.rope_tables(np.concatenate([txt_ids, img_ids]), model.cfg["axes_dims_rope"])
    times = []
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        start = time.perf_counter()
        velocity = model(x, context, pooled, mx.array([float(sigma)]), img_ids,
                         txt_ids, g, rope=rope)
        x = (x.astype(mx.float32) + (float(sigma_next) - float(sigma)) * velocity).astype(dtype)
        mx.eval(x)
        times.append(time.perf_counter() - start)
    return np.array(x.astype(mx.float32)), times


def main(argv=None):
    ap = common.generation_parser(__doc__.splitlines()[0], "used by guidance-distilled dev")
    ap.add_argument("--max-text-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    ap.add_argument("--attention", choices=["mlx_attn", "native", "both"], default="both")
    ap.add_argument("--out", default="flux_mlx.png")
    args = ap.parse_args(argv)

    root = Path(args.model)
    embeds, pooled = common.prompt_embeddings(root, args.prompt, args.embeddings,
                                              args.max_text_tokens)
    channels, h, w = common.latent_grid(common.read_json(root / "vae" / "config.json"),
                                        args.height, args.width)
    tokens = common.pack(common.noise(channels, h, w, args.seed))
    img_ids, txt_ids = common.image_ids(h, w), np.zeros((embeds.shape[1], 3), np.float32)
    sigmas = common.sigmas(common.read_json(root / "scheduler" / "scheduler_config.json"),
                           args.steps, tokens.shape[1])
    model = flux_mlx.load_transformer(root / "transformer", getattr(mx, args.dtype))
    guidance = args.guidance if model.cfg.get("guidance_embeds") else None
    print(f"FLUX transformer: {len(model.transformer_blocks)} joint + "
          f"{len(model.single_transformer_blocks)} single blocks, "
          f"{model.cfg['num_attention_heads']} heads x {model.cfg['attention_head_dim']}; "
          f"{tokens.shape[1]} image + {embeds.shape[1]} text tokens; {args.steps} steps; {args.dtype}")

    kinds = ["mlx_attn", "native"] if args.attention == "both" else [args.attention]
    results = {}
    for kind in kinds:
        model.attention = flux_mlx.flash_attention if kind == "mlx_attn" else \
            flux_mlx.native_attention
        denoise(model, tokens, embeds, pooled, sigmas[-2:], img_ids, txt_ids, guidance)  # warm-up
        mx.reset_peak_memory()
        final, times = denoise(model, tokens, embeds, pooled, sigmas, img_ids, txt_ids, guidance)
        results[kind] = final
        print(f"[{kind}] per step: median {statistics.median(times) * 1e3:.1f} ms "
              f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}); peak memory "
              f"{mx.get_peak_memory() / 2**20:.1f} MiB")
    if len(kinds) == 2:
        diff = np.abs(results["mlx_attn"] - results["native"]).max()
        print(f"final latents, max |mlx_attn - native| = {diff:.3g}")
    latents = common.unpack(results[kinds[0]], h, w)
    common.decode_to_image(root, latents, args.out)
    print(f"wrote {args.out} ({args.width}x{args.height})")
    return latents


if __name__ == "__main__":
    main()
