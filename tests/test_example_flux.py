"""examples/flux: our MLX FLUX transformer vs diffusers' FluxTransformer2DModel on the same tiny
random weights, and both demos end to end on a tiny pipeline folder written by the test."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "flux"))
import flux_common  # noqa: E402
import flux_mlx  # noqa: E402
from flux_tiny import write_tiny_flux  # noqa: E402


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("flux"))


def _inputs(B=2, h=4, w=6, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.from_numpy(flux_common.image_ids(2 * h, 2 * w))
    return dict(hidden_states=torch.randn(B, h * w, 16, generator=g),
                encoder_hidden_states=torch.randn(B, T, 32, generator=g),
                pooled_projections=torch.randn(B, 24, generator=g),
                timestep=torch.tensor([0.7, 0.3][:B]), guidance=torch.full((B,), 3.5),
                img_ids=ids, txt_ids=torch.zeros(T, 3))


def _diffusers(folder, inputs, dtype):
    model = diffusers.FluxTransformer2DModel.from_pretrained(folder).to(dtype).eval()
    with torch.no_grad():
        return model(**{k: v.to(dtype) for k, v in inputs.items()}).sample.double().numpy()


def _ours(folder, inputs, attention=flux_mlx.flash_attention):
    model = flux_mlx.load_transformer(folder, mx.float32, attention)
    m = lambda t: mx.array(t.numpy())  # noqa: E731
    out = model(m(inputs["hidden_states"]), m(inputs["encoder_hidden_states"]),
                m(inputs["pooled_projections"]), m(inputs["timestep"]), inputs["img_ids"].numpy(),
                inputs["txt_ids"].numpy(), m(inputs["guidance"]))
    return np.array(out).astype(np.float64)


def test_mlx_flux_matches_diffusers_on_the_same_weights(pipeline_dir):
    folder, inputs = pipeline_dir / "transformer", _inputs()
    ref = _diffusers(folder, inputs, torch.float64)
    theirs = _diffusers(folder, inputs, torch.float32)
    ours = _ours(folder, inputs)
    native = _ours(folder, inputs, flux_mlx.native_attention)
    scale = np.abs(ref).max()
    # float32 through 4 blocks: MLX and torch round differently, so judge relative to the
    # output's size, to torch's own float32 error and to the same MLX model's error with MLX's
    # own attention (MLX's float32 matmuls differ by CPU: on an AMX Xeon the model with
    # mx.fast attention was 2.1e-5 * scale off, over the fixed bound)
    native_err = np.abs(native - ref).max()
    assert np.abs(theirs - ref).max() < 1e-4 * scale
    assert np.abs(ours - ref).max() <= max(4 * np.abs(theirs - ref).max(), 2 * native_err,
                                           2e-5 * scale)
    assert np.abs(ours - native).max() <= 1e-4 * scale      # mlx_attn vs mx.fast inside


def test_load_rejects_wrong_folder(tmp_path, pipeline_dir):
    with pytest.raises(ValueError, match="not a FluxTransformer2DModel"):
        flux_mlx.load_transformer(pipeline_dir / "vae")
    (tmp_path / "config.json").write_text((pipeline_dir / "transformer" / "config.json").read_text())
    with pytest.raises(FileNotFoundError):
        flux_mlx.load_transformer(tmp_path)


def test_schedule_matches_diffusers_scheduler(pipeline_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler
    cfg = flux_common.read_json(pipeline_dir / "scheduler" / "scheduler_config.json")
    sched = FlowMatchEulerDiscreteScheduler.from_pretrained(pipeline_dir / "scheduler")
    ours = flux_common.sigmas(cfg, 4, 1024)
    mu = 0.5 + (1.15 - 0.5) * (1024 - 256) / (4096 - 256)
    sched.set_timesteps(sigmas=np.linspace(1.0, 0.25, 4), mu=mu)
    np.testing.assert_allclose(ours, sched.sigmas.numpy(), atol=1e-6)


def test_both_demos_make_the_same_image(pipeline_dir, tmp_path, capsys):
    import flux_generate_mlx
    import flux_generate_torch
    common = ["--model", str(pipeline_dir), "--embeddings",
              str(pipeline_dir / "prompt_embeds.safetensors"), "--height", "32", "--width", "32",
              "--steps", "2"]
    flux_generate_mlx.main(common + ["--dtype", "float32", "--out", str(tmp_path / "mlx.png")])
    out = capsys.readouterr().out
    assert "[mlx_attn] per step" in out and "[native] per step" in out and "peak memory" in out
    diff = float(out.split("max |mlx_attn - native| = ")[1].split()[0])
    assert diff < 1e-4
    flux_generate_torch.main(common + ["--device", "cpu", "--dtype", "float32",
                                       "--out", str(tmp_path / "torch.png")])
    out = capsys.readouterr().out
    assert "[mlx_attn] cpu float32: per step" in out and "[native]" in out
    from PIL import Image
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")).astype(int) for n in ("mlx", "torch"))
    assert a.shape == b.shape == (32, 32, 3)
    assert np.abs(a - b).max() <= 1          # the MLX and the diffusers pipelines agree
    assert a.std() > 0                         # and the image is not blank
