"""The `metal` backend's torch launcher end to end on Linux: MLX_ATTN_METAL_EMULATE=1 makes the
backend take torch CPU tensors as if they were on `mps` and compile with the MSL emulator's
stand-in for torch.mps.compile_shader (emulators/msl_emulator/torch_mps.py). Dispatch, the
generated whole sources, argument order, grids, dtypes, strides and autograd all run; every
launch runs under the emulator's hazard checks and outputs start as NaN, so an element no
kernel writes shows. The matrix and checks are in metal_torch_cases.py (shared with the run on
an Apple GPU, test_metal_torch_mps.py).
"""
from __future__ import annotations

import importlib.util

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("msl_emulator") is None:
    pytest.skip("the MSL emulator (emulators/msl_emulator) is not on sys.path",
                allow_module_level=True)

import mlx_attn  # noqa: E402
from mlx_attn import config  # noqa: E402
from mlx_attn.backends import by_name  # noqa: E402
from mlx_attn.backends.metal import MetalBackend  # noqa: E402
from metal_torch_cases import (DENSE, VARLEN, WIDE, Case, check_forward,  # noqa: E402
                               check_grad, check_varlen, params)
from msl_emulator import emulator_options  # noqa: E402

DEVICE = "cpu"  # under the switch, torch CPU tensors stand for mps ones


@pytest.fixture(scope="module", autouse=True)
def emulated():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLX_ATTN_METAL_EMULATE", "1")
        config.reload()
        yield
    config.reload()


@pytest.mark.parametrize("case", params(DENSE))
def test_forward_matches_reference(case):
    check_forward(case, DEVICE)


@pytest.mark.parametrize("case", params([c for c in DENSE if c.grad]))
def test_gradients_match_reference(case):
    check_grad(case, DEVICE)


@pytest.mark.parametrize("name", list(VARLEN))
def test_varlen_matches_reference(name):
    check_varlen(name, DEVICE)


@pytest.mark.slow
@pytest.mark.parametrize("case", params(WIDE))
def test_wider_matrix(case):
    check_forward(case, DEVICE)
    if case.grad:
        check_grad(case, DEVICE)


def test_reverse_schedule_gives_the_same_answers():
    """A missing barrier shows up as a different result when threads run in another order."""
    case = DENSE[3]
    with emulator_options(schedule="reverse"):
        check_forward(case, DEVICE)


def test_explain_says_metal_is_chosen_and_emulated():
    q = torch.zeros(1, 2, 9, 64, dtype=torch.float16)
    line = next(x for x in mlx_attn.explain(q, q, q).splitlines()
                if x.strip().startswith("metal"))
    assert "chosen" in line and "MLX_ATTN_METAL_EMULATE" in line
    x = torch.zeros(1, 2, 9, 64, dtype=torch.float64)
    assert "dtype float64 not supported" in mlx_attn.explain(x, x, x)
    y = torch.zeros(1, 2, 9, 40, dtype=torch.float16)
    assert "head dim D=40 not supported" in mlx_attn.explain(y, y, y)


def test_grad_composes_with_other_ops():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 20, 64, generator=g, dtype=torch.float32) for _ in range(3))
    x = q.clone().requires_grad_()
    out = mlx_attn.flash_attention(torch.tanh(x), k, v, causal=True, backend="metal")
    (gx,) = torch.autograd.grad((out ** 2).sum(), x)
    y = q.clone().requires_grad_()
    ref = mlx_attn.flash_attention(torch.tanh(y), k, v, causal=True, backend="math")
    (gy,) = torch.autograd.grad((ref ** 2).sum(), y)
    assert torch.allclose(gx, gy, atol=2e-4)


def test_no_grad_and_empty_inputs():
    q = torch.zeros(1, 2, 0, 64, dtype=torch.float16)
    k = torch.zeros(1, 2, 5, 64, dtype=torch.float16)
    out, lse = mlx_attn.flash_attention(q, k, k, return_lse=True, backend="metal")
    assert out.shape == (1, 2, 0, 64) and lse.shape == (1, 2, 0)
    out = mlx_attn.flash_attention(k, q, q, backend="metal")
    assert out.shape == (1, 2, 5, 64) and not out.any()
    with torch.no_grad():
        out = mlx_attn.flash_attention(k.requires_grad_(), k, k, backend="metal")
    assert out.grad_fn is None


def test_switch_is_checked_and_off_means_no_claim(monkeypatch):
    q = torch.zeros(1, 2, 9, 64, dtype=torch.float16)
    monkeypatch.setenv("MLX_ATTN_METAL_EMULATE", "maybe")
    config.reload()
    with pytest.raises(ValueError, match="MLX_ATTN_METAL_EMULATE"):
        mlx_attn.flash_attention(q, q, q)
    monkeypatch.setenv("MLX_ATTN_METAL_EMULATE", "0")
    config.reload()
    try:
        line = next(x for x in mlx_attn.explain(q, q, q).splitlines()
                    if x.strip().startswith("metal"))
        assert "cannot run" in line
        if not torch.backends.mps.is_available():
            assert "no MPS device" in line or "compile_shader" in line, line
        with pytest.raises(ValueError, match="metal"):
            mlx_attn.flash_attention(q, q, q, backend="metal")
    finally:
        monkeypatch.setenv("MLX_ATTN_METAL_EMULATE", "1")
        config.reload()


def test_real_torch_path_is_never_claimed_without_mps():
    if torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    backend = MetalBackend()
    config.reload()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLX_ATTN_METAL_EMULATE", "0")
        config.reload()
        reasons = backend.torch_reasons()
        assert reasons and ("MPS" in reasons[0] or "compile_shader" in reasons[0])
    config.reload()
    assert by_name("metal").torch_reasons() == []  # the switch is back on


def test_without_the_switch_only_mps_tensors_are_claimed():
    """The real (not emulated) device rule, with an injected compile_shader standing in for
    torch's: mps tensors are taken, CPU ones are not."""
    import dataclasses

    from mlx_attn.validate import check_dense

    q = torch.zeros(1, 2, 9, 64, dtype=torch.float16)
    call = check_dense(q, q, q, scale=None, causal=False, mask=None, window=None,
                       softcap=None, return_lse=False, layout="bhld")
    backend = MetalBackend(compile_shader=lambda source: None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLX_ATTN_METAL_EMULATE", "0")
        config.reload()
        assert backend.not_supported_reasons(dataclasses.replace(call, device="mps:0")) == []
        reasons = backend.not_supported_reasons(call)
        assert reasons == ["tensors are on cpu, not mps (an Apple GPU)"]
    config.reload()


def test_case_ids_are_unique():
    names = [c.name for c in DENSE + WIDE] + list(VARLEN)
    assert len(names) == len(set(names)) and all(isinstance(c, Case) for c in DENSE + WIDE)


try:
    from hypothesis import HealthCheck, given, settings, strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    @settings(max_examples=12, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(Lq=st.integers(1, 40), Lk=st.integers(1, 40), group=st.sampled_from([1, 2]),
           causal=st.booleans(), left=st.integers(-1, 12), right=st.integers(-1, 12),
           softcap=st.sampled_from([None, 4.0]), layout=st.sampled_from(["bhld", "blhd"]))
    def test_generated_shapes_and_features(Lq, Lk, group, causal, left, right, softcap, layout):
        """fp16 D=64 (variants the matrix already compiled) at generated sizes and options."""
        opts = dict(causal=causal)
        if left >= 0 or right >= 0:
            opts["window"] = (left, right)
        if softcap:
            opts["softcap"] = softcap
        check_forward(Case("generated", (1, 2 * group, 2, Lq, Lk, 64, 64), layout=layout,
                           opts=opts), DEVICE)
