"""diffusers FluxTransformer2DModel with mlx_attn's FluxAttnProcessor vs its default processor.

Reference: the same tiny random model in float64 with diffusers' default processor (torch SDPA).
Ours (float32) may be off by at most 2x the default float32 model's error + 1e-5 (SPEC criterion
applied to the transformer output).
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from mlx_attn.integrations.diffusers import FluxAttnProcessor, use_mlx_attn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "flux"))
from flux_tiny import TRANSFORMER, _randomise  # noqa: E402


def _inputs(model, B=2, h=4, w=6, T=5, seed=0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(h, w, 3)
    ids[..., 1] += torch.arange(h)[:, None]
    ids[..., 2] += torch.arange(w)[None, :]
    return dict(hidden_states=torch.randn(B, h * w, cfg.in_channels, generator=g),
                encoder_hidden_states=torch.randn(B, T, cfg.joint_attention_dim, generator=g),
                pooled_projections=torch.randn(B, cfg.pooled_projection_dim, generator=g),
                timestep=torch.tensor([0.7, 0.3][:B]), guidance=torch.full((B,), 3.5),
                img_ids=ids.reshape(-1, 3), txt_ids=torch.zeros(T, 3))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = diffusers.FluxTransformer2DModel(**TRANSFORMER).eval()
    _randomise(m, 0)
    return m


def _run(model, inputs, dtype=torch.float32):
    with torch.no_grad():
        cast = {k: v.to(dtype) for k, v in inputs.items()}
        return model.to(dtype)(**cast).sample.double()


def test_processor_matches_default(model):
    inputs = _inputs(model)
    native = _run(copy.deepcopy(model), inputs)
    ref = _run(copy.deepcopy(model), inputs, torch.float64)
    ours_model = use_mlx_attn(copy.deepcopy(model))
    assert all(isinstance(p, FluxAttnProcessor) for p in ours_model.attn_processors.values())
    assert len(ours_model.attn_processors) == TRANSFORMER["num_layers"] + TRANSFORMER["num_single_layers"]
    ours = _run(ours_model, inputs)
    err, bound = (ours - ref).abs().max().item(), 2 * (native - ref).abs().max().item() + 1e-5
    assert err <= bound, f"mlx_attn processor error {err:.3g} > bound {bound:.3g}"
    assert (native - ref).abs().max() < 1e-3            # the comparison is meaningful


def test_fused_projections_and_bfloat16(model):
    inputs = _inputs(model, B=1)
    ref = _run(copy.deepcopy(model), inputs, torch.float64)
    native = _run(copy.deepcopy(model), inputs, torch.bfloat16)
    ours_model = copy.deepcopy(model)
    ours_model.fuse_qkv_projections()
    use_mlx_attn(ours_model)
    ours = _run(ours_model, inputs, torch.bfloat16)
    # bf16 through a whole transformer: compare errors, not bits
    assert (ours - ref).abs().max() <= 2 * (native - ref).abs().max() + 1e-5


def test_attention_mask_is_honoured(model):
    """A bool mask hiding the last text tokens = dropping those tokens altogether."""
    inputs = _inputs(model, B=1, T=5)
    keep = torch.ones(1, 1, 1, 5 + 24, dtype=torch.bool)
    keep[..., 3:5] = False
    ours_model = use_mlx_attn(copy.deepcopy(model))
    with torch.no_grad():
        masked = ours_model(**inputs, joint_attention_kwargs={"attention_mask": keep}).sample
        short = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"][:, :3],
                     txt_ids=inputs["txt_ids"][:3])
        dropped = ours_model(**short).sample
    torch.testing.assert_close(masked, dropped, atol=1e-5, rtol=1e-5)
