"""Write a tiny, random-initialised FLUX pipeline directory in the diffusers layout.

The real FLUX.1 checkpoints (black-forest-labs/FLUX.1-schnell or -dev, 12B transformer, T5-XXL
and CLIP text encoders, a 16-channel VAE) cannot be downloaded here or on CI. This writes the
parts the demos load — transformer/, vae/, scheduler/ — with tiny configs and random weights,
plus prompt_embeds.safetensors standing in for the text encoders (which the tiny directory
does not have), so the tests run the demos' real loading and denoising code.

    python examples/flux/flux_tiny.py /tmp/tiny-flux
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

TRANSFORMER = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=2,
                   attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                   pooled_projection_dim=24, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
VAE = dict(in_channels=3, out_channels=3, latent_channels=4,
           down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
           up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
           block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8,
           scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
           use_post_quant_conv=False)
SCHEDULER = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                 base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                 max_image_seq_len=4096, time_shift_type="exponential")
TEXT_TOKENS = 8


def _randomise(module, seed: int, std: float = 0.2) -> None:
    """Random weights large enough that a wrong attention shows in the output (diffusers'
    default init leaves some layers near zero)."""
    import torch
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm_q.weight") or "norm_k" in name or "norm_added" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))


def write_tiny_flux(path, seed: int = 0, **transformer_overrides) -> Path:
    """Create `path` with transformer/, vae/, scheduler/ and prompt_embeds.safetensors."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**{**TRANSFORMER, **transformer_overrides})
    _randomise(transformer, seed)
    transformer.save_pretrained(path / "transformer")
    vae = AutoencoderKL(**VAE)
    vae.save_pretrained(path / "vae")
    FlowMatchEulerDiscreteScheduler(**SCHEDULER).save_pretrained(path / "scheduler")
    cfg = transformer.config
    gen = torch.Generator().manual_seed(seed + 1)
    save_file({"prompt_embeds": torch.randn(1, TEXT_TOKENS, cfg.joint_attention_dim, generator=gen),
               "pooled_prompt_embeds": torch.randn(1, cfg.pooled_projection_dim, generator=gen)},
              str(path / "prompt_embeds.safetensors"))
    (path / "README.txt").write_text("tiny random FLUX for tests: no text encoders; use "
                                     "--embeddings prompt_embeds.safetensors\n")
    return path


if __name__ == "__main__":
    out = write_tiny_flux(sys.argv[1] if len(sys.argv) > 1 else "tiny-flux")
    print(f"wrote a tiny random FLUX pipeline to {out}")
    print(json.dumps({"transformer": TRANSFORMER}, default=list))
