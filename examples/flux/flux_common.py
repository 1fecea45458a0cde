"""What both FLUX demos share: the prompt embeddings, the starting noise, the sigma schedule.

Noise comes from numpy with a seed, so the MLX and the torch demo start from the same latents.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def latent_grid(vae_cfg: dict, height: int, width: int):
    """(channels, latent height, latent width) of the packed 2x2-patch latents."""
    factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    if height % (2 * factor) or width % (2 * factor):
        raise ValueError(f"height and width must be multiples of {2 * factor}, got "
                         f"{height}x{width}")
    return vae_cfg["latent_channels"], height // factor, width // factor


def noise(channels, h, w, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, channels, h, w)).astype(np.float32)


def pack(latents: np.ndarray) -> np.ndarray:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C], the token layout of the FLUX transformer."""
    B, C, h, w = latents.shape
    x = latents.reshape(B, C, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (h // 2) * (w // 2), C * 4)


def unpack(tokens: np.ndarray, h: int, w: int) -> np.ndarray:
    B, _, C4 = tokens.shape
    x = tokens.reshape(B, h // 2, w // 2, C4 // 4, 2, 2).transpose(0, 3, 1, 4, 2, 5)
    return x.reshape(B, C4 // 4, h, w)


def image_ids(h: int, w: int) -> np.ndarray:
    ids = np.zeros((h // 2, w // 2, 3), np.float32)
    ids[..., 1] += np.arange(h // 2)[:, None]
    ids[..., 2] += np.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def sigmas(scheduler_cfg: dict, steps: int, image_tokens: int) -> np.ndarray:
    """FlowMatchEulerDiscreteScheduler's sigmas as FluxPipeline sets them, with the final 0."""
    for option in ("shift_terminal", "use_karras_sigmas", "use_exponential_sigmas",
                   "use_beta_sigmas"):
        if scheduler_cfg.get(option):
            raise ValueError(f"scheduler option {option} is not implemented in this demo")
    s = np.linspace(1.0, 1.0 / steps, steps)
    if scheduler_cfg.get("use_dynamic_shifting"):
        base, top = scheduler_cfg["base_image_seq_len"], scheduler_cfg["max_image_seq_len"]
        lo, hi = scheduler_cfg["base_shift"], scheduler_cfg["max_shift"]
        mu = lo + (hi - lo) * (image_tokens - base) / (top - base)
        if scheduler_cfg.get("time_shift_type", "exponential") != "exponential":
            raise ValueError("only the exponential time shift is implemented in this demo")
        s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    else:
        shift = scheduler_cfg.get("shift", 1.0)
        s = shift * s / (1 + (shift - 1) * s)
    return np.append(s.astype(np.float32), np.float32(0.0))


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def prompt_embeddings(model_dir, prompt: str, embeddings_file=None, max_len: int = 512):
    """(prompt_embeds [1, T, 4096], pooled [1, 768]) as float32 numpy.

    From a .safetensors file with those two tensors, or by running the checkpoint's CLIP and T5
    text encoders through diffusers (torch), which the full FLUX.1 checkpoints contain.
    """
    if embeddings_file:
        from safetensors.numpy import load_file
        d = load_file(str(embeddings_file))
        return d["prompt_embeds"].astype(np.float32), d["pooled_prompt_embeds"].astype(np.float32)
    model_dir = Path(model_dir)
    if not (model_dir / "text_encoder_2").exists():
        raise FileNotFoundError(f"{model_dir} has no text encoders; pass --embeddings FILE "
                                f"(a .safetensors with prompt_embeds and pooled_prompt_embeds)")
    import torch
    from diffusers import FluxPipeline
    pipe = FluxPipeline.from_pretrained(model_dir, transformer=None, vae=None,
                                        torch_dtype=torch.bfloat16)
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(prompt, prompt_2=None, max_sequence_length=max_len)
    return embeds.float().numpy(), pooled.float().numpy()


def decode_to_image(model_dir, latents: np.ndarray, out_path):
    """Decode unpacked latents [1, C, h, w] with the checkpoint's VAE (diffusers, torch) and save
    a PNG. Returns the image as uint8 [H, W, 3]."""
    import torch
    from diffusers import AutoencoderKL
    from PIL import Image
    vae = AutoencoderKL.from_pretrained(Path(model_dir) / "vae").eval()
    cfg = vae.config
    z = torch.from_numpy(latents).to(vae.dtype) / cfg.scaling_factor + (cfg.shift_factor or 0.0)
    with torch.no_grad():
        image = vae.decode(z).sample[0]
    pixels = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(out_path)
    return pixels


def generation_parser(description: str, guidance_help: str | None = None) -> argparse.ArgumentParser:
    """The arguments both FLUX demos share (model folder, prompt, size, steps, seed)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", required=True, help="diffusers FLUX.1 checkpoint folder")
    ap.add_argument("--prompt", default="a photo of a red fox sitting in fresh snow")
    ap.add_argument("--embeddings", help=".safetensors with prompt_embeds, pooled_prompt_embeds")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=3.5, help=guidance_help)
    return ap
