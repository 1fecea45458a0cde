"""The `metal` backend's torch launcher on a real Apple GPU: torch tensors on `mps`, kernels
compiled by torch.mps.compile_shader. The emulated matrix again plus the wider one
(metal_torch_cases.py), explain() and timing of a FLUX-sized call against the math path.
Skipped, with the reason, where there is no MPS device or torch lacks compile_shader.

Run on a Mac with:  python -m pytest tests/test_metal_torch_mps.py -q
"""
from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")

if not callable(getattr(torch.mps, "compile_shader", None)):
    pytest.skip(f"torch {torch.__version__} has no torch.mps.compile_shader (needs >= 2.6)",
                allow_module_level=True)
if not torch.backends.mps.is_available():
    pytest.skip("no MPS device here (torch.backends.mps.is_available() is False); the same "
                "matrix runs under the MSL emulator in test_metal_torch_emulated.py",
                allow_module_level=True)

import mlx_attn  # noqa: E402
from mlx_attn import config  # noqa: E402
from metal_torch_cases import (DENSE, VARLEN, WIDE, check_forward, check_grad,  # noqa: E402
                               check_varlen, params)

DEVICE = "mps"


@pytest.fixture(scope="module", autouse=True)
def not_emulated():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLX_ATTN_METAL_EMULATE", raising=False)
        config.reload()
        yield
    config.reload()


@pytest.mark.parametrize("case", params(DENSE + WIDE))
def test_forward_matches_reference(case):
    check_forward(case, DEVICE)


@pytest.mark.parametrize("case", params([c for c in DENSE + WIDE if c.grad]))
def test_gradients_match_reference(case):
    check_grad(case, DEVICE)


@pytest.mark.parametrize("name", list(VARLEN))
def test_varlen_matches_reference(name):
    check_varlen(name, DEVICE)


def test_explain_chooses_metal_for_mps_tensors():
    q = torch.zeros(1, 2, 9, 64, dtype=torch.float16, device=DEVICE)
    line = next(x for x in mlx_attn.explain(q, q, q).splitlines()
                if x.strip().startswith("metal"))
    assert "chosen" in line and "emulated" not in line


def test_flux_sized_call_agrees_with_the_math_path_and_reports_time():
    """FLUX.1's joint attention at 1024x1024: B=1, H=24, L=4608, D=128, fp16, blhd. Too large for
    the float64 reference: checked against the same-dtype math path; times are printed (-s),
    not asserted (never measured by us: no Mac)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4608, 24, 128, generator=g).half().to(DEVICE) for _ in range(3))

    def timed(backend):
        out = mlx_attn.flash_attention(q, k, v, layout="blhd", backend=backend)
        torch.mps.synchronize()
        start = time.perf_counter()
        for _ in range(3):
            mlx_attn.flash_attention(q, k, v, layout="blhd", backend=backend)
        torch.mps.synchronize()
        return out, (time.perf_counter() - start) / 3

    (fused, t_fused), (math, t_math) = timed("metal"), timed("math")
    print(f"FLUX-sized attention on mps: metal {t_fused * 1e3:.1f} ms, math {t_math * 1e3:.1f} ms")
    assert (fused.float() - math.float()).abs().max().item() < 1e-2
