"""`attn_implementation="mlx_attn"` for Hugging Face transformers models.

    import mlx_attn.integrations.transformers as mlx_attn_hf
    mlx_attn_hf.register()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="mlx_attn")

`register()` adds two entries under one name, through transformers' public registries:
- `AttentionInterface`: `attention_forward` below, called by every attention layer;
- `AttentionMaskInterface`: transformers' boolean `sdpa_mask` (True keeps). Without a mask
  function of the same name transformers builds no mask at all for an unknown implementation,
  which silently drops causality and padding.

Conventions we bridge: transformers hands q [B, Hq, Lq, D] and k/v [B, Hkv, Lk, D] (heads
first) and expects [B, Lq, Hq, Dv] back. When it skips the mask it means torch's `is_causal`,
which is top-left aligned; mlx_attn's causal is bottom-right, so for Lk > Lq we keep only the
first Lq keys (as transformers' own SDPA path does), and for Lk < Lq we pass an explicit mask.
"""
from __future__ import annotations

import warnings

from .. import api

NAME = "mlx_attn"
_settings = {"backend": "auto"}


def attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                      is_causal=None, softcap=None, **kwargs):
    """An AttentionInterface function: returns (out [B, Lq, Hq, Dv], None)."""
    import torch

    if dropout and dropout > 0:
        raise ValueError(
            f"attention dropout={dropout} is not supported by attn_implementation='{NAME}' "
            f"(mlx_attn has no dropout); set the config's {_dropout_setting(module, dropout)} "
            f"to 0 or call model.eval(), or use attn_implementation='eager' for dropout in "
            f"training")
    if kwargs.get("output_attentions"):
        warnings.warn(f"attn_implementation='{NAME}' does not return attention weights; "
                      f"use 'eager' for output_attentions=True", stacklevel=2)
    Hq, Lq, Hkv, Lk = query.shape[1], query.shape[2], key.shape[1], key.shape[2]
    groups = getattr(module, "num_key_value_groups", None)
    if groups is not None and Hkv * groups != Hq:
        raise ValueError(f"module.num_key_value_groups={groups} but query has {Hq} heads and "
                         f"key has {Hkv}: expected Hq == Hkv * num_key_value_groups")

    causal = False
    mask = attention_mask
    if mask is None:
        is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        if is_causal and Lq > 1:
            if Lk >= Lq:   # top-left causal over Lk >= Lq keys sees only the first Lq of them
                key, value, causal = key[:, :, :Lq], value[:, :, :Lq], True
            else:
                i = torch.arange(Lq, device=query.device)[:, None]
                mask = torch.arange(Lk, device=query.device)[None, :] <= i
    elif mask.dtype != torch.bool and mask.dtype != query.dtype:
        mask = mask.to(query.dtype)

    out = api.flash_attention(query, key, value, scale=scaling, causal=causal, mask=mask,
                              softcap=softcap, backend=_settings["backend"])
    return out.transpose(1, 2).contiguous(), None


def _dropout_setting(module, dropout) -> str:
    """What the model's config calls its attention dropout: models name it differently
    (Llama/Qwen `attention_dropout`, BERT `attention_probs_dropout_prob`, GPT-2 `attn_pdrop`)."""
    config = getattr(module, "config", None)
    settings = getattr(config, "__dict__", {})
    names = [n for n, value in settings.items() if "att" in n and "drop" in n
             and isinstance(value, (int, float)) and not isinstance(value, bool)]
    matching = [n for n in names if settings[n] == dropout] or names
    if not matching:
        return "attention dropout (e.g. attention_dropout or attention_probs_dropout_prob)"
    return " / ".join(matching)


def register(name: str = NAME, backend: str = "auto") -> str:
    """Register the attention and mask functions under `name`; returns the name to pass as
    `attn_implementation`. `backend` picks the mlx_attn backend ("auto", "math", ...)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    _settings["backend"] = backend
    AttentionInterface.register(name, attention_forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
