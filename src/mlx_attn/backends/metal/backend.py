"""The `metal` backend: our tiled flash-attention Metal kernels, on MLX arrays and torch tensors.

Two launchers run the same shaders (metal/*.metal):
- MLX arrays: `mx.fast.metal_kernel` (kernels.py, attention.py). `MetalBackend(kernel_factory=...)`
  takes the factory that builds the kernels; by default `mx.fast.metal_kernel`, which needs a
  Metal GPU as MLX's default device. Tests pass the MSL emulator's factory instead.
- torch tensors on `mps`: `torch.mps.compile_shader` (torch_launch.py, torch_attention.py), with
  torch >= 2.6 on a Mac whose torch has MPS. `MLX_ATTN_METAL_EMULATE=1` (a verification switch)
  takes torch CPU tensors instead and compiles with the MSL emulator's stand-in
  (`msl_emulator.torch_mps.compile_shader`, in the clone's emulators/ folder).
"""
from __future__ import annotations

import importlib
import platform
import sys

from ... import config
from ...call import AttentionCall
from ...frameworks import ops_for
from .blocks import HEAD_DIMS  # the head dims with a tuned block-size entry (no MLX import)
from ..base import Backend

EMULATOR_MODULE = "msl_emulator.torch_mps"


def torch_emulated() -> bool:
    """Whether torch tensors run on the MSL emulator (MLX_ATTN_METAL_EMULATE=1)."""
    return config.metal_emulate()


class MetalBackend(Backend):
    name = "metal"
    priority = 10
    array_kinds = frozenset({"mlx", "torch"})
    dtypes = frozenset({"float16", "bfloat16", "float32"})
    head_dims = HEAD_DIMS
    features = frozenset({"causal", "mask", "window", "softcap", "lse", "varlen", "backward",
                          "gqa", "dv"})
    summary = ("Apple GPU: MLX arrays (mx.fast.metal_kernel) and torch mps tensors "
               "(torch.mps.compile_shader), fused forward and backward")

    def __init__(self, kernel_factory=None, compile_shader=None):
        self._cache = {}
        self._kernel_factory = kernel_factory
        self._compile_shader_fn = compile_shader

    # Setting either launcher's factory forgets what was derived from the old one (a new dict,
    # so that a copy of __dict__ taken before still holds the old state).
    @property
    def kernel_factory(self):
        """None: mx.fast.metal_kernel on the default (GPU) device; else an injected factory."""
        return self._kernel_factory

    @kernel_factory.setter
    def kernel_factory(self, factory):
        self._kernel_factory = factory
        self._cache = {}

    @property
    def compile_shader(self):
        """None: torch.mps.compile_shader (the emulator's under MLX_ATTN_METAL_EMULATE=1);
        else an injected drop-in."""
        return self._compile_shader_fn

    @compile_shader.setter
    def compile_shader(self, compile_shader):
        self._compile_shader_fn = compile_shader
        self._cache = {}

    def note(self) -> str:
        return ("torch tensors emulated: MLX_ATTN_METAL_EMULATE=1 runs the Metal kernels on the "
                "CPU, on torch CPU tensors (a verification tool, slow)") if torch_emulated() else ""

    # -- machine ---------------------------------------------------------------------------------
    @property
    def kernels(self):
        """The MLX launcher."""
        if "mlx_kernels" not in self._cache:
            from .kernels import MetalKernels
            self._cache["mlx_kernels"] = MetalKernels(self.kernel_factory)
        return self._cache["mlx_kernels"]

    def torch_kernels(self):
        """The torch launcher for the current mode (emulated or not)."""
        key = ("torch_kernels", torch_emulated())
        if key not in self._cache:
            from .torch_launch import TorchMetalKernels
            self._cache[key] = TorchMetalKernels(self._compile_shader(),
                                                 poison_outputs=torch_emulated())
        return self._cache[key]

    def _compile_shader(self):
        if self.compile_shader is not None:
            return self.compile_shader
        if torch_emulated():
            return importlib.import_module(EMULATOR_MODULE).compile_shader
        import torch
        return torch.mps.compile_shader

    @property
    def availability_reasons(self) -> list[str]:
        """Empty when either launcher can run here; else why neither can."""
        mlx = self.mlx_reasons()
        if not mlx:
            return []
        torch = self.torch_reasons()
        return [f"MLX arrays: {mlx[0]}", f"torch tensors: {torch[0]}"] if torch else []

    def mlx_reasons(self) -> list[str]:
        if "mlx" not in self._cache:
            self._cache["mlx"] = self._mlx_reasons()
        return self._cache["mlx"]

    def _mlx_reasons(self) -> list[str]:
        if self.kernel_factory is not None:
            return []
        try:
            import mlx.core as mx
        except ImportError:
            return ["mlx is not installed"]
        try:
            metal = mx.metal.is_available()
        except Exception as error:  # pragma: no cover - defensive: older MLX builds
            return [f"cannot query Metal: {error}"]
        if not metal:
            return ["no Metal GPU (mx.metal.is_available() is False: not an Apple-silicon Mac "
                    "or MLX without Metal)"]
        return []

    def torch_reasons(self) -> list[str]:
        """Why the torch launcher cannot run here (cached per mode once torch is imported)."""
        key = ("torch", torch_emulated())
        if key in self._cache:
            return self._cache[key]
        if self.compile_shader is None and not torch_emulated() and "torch" not in sys.modules:
            # not cached: checked again once the caller imports torch (never imported here)
            return ["torch is not loaded (the torch path is checked when torch tensors come)"]
        self._cache[key] = self._torch_reasons()
        return self._cache[key]

    def _torch_reasons(self) -> list[str]:
        if self.compile_shader is not None:
            return []
        if torch_emulated():
            try:
                importlib.import_module(EMULATOR_MODULE)
            except ImportError as error:
                return [f"MLX_ATTN_METAL_EMULATE=1 but the MSL emulator cannot be imported "
                        f"({type(error).__name__}: {error}); it lives in the clone's emulators/ "
                        f"folder, which must be on sys.path"]
            return []
        import torch
        if not callable(getattr(getattr(torch, "mps", None), "compile_shader", None)):
            return [f"torch {torch.__version__} has no torch.mps.compile_shader "
                    f"(needs torch >= 2.6)"]
        if not torch.backends.mps.is_available():
            return [f"no MPS device (torch.backends.mps.is_available() is False: torch "
                    f"{torch.__version__} on {platform.system()} {platform.machine()})"]
        return []

    # -- per signature ---------------------------------------------------------------------------
    def extra_reasons(self, call: AttentionCall) -> list[str]:
        if call.kind == "torch":
            reasons = self.torch_reasons()
            if reasons:
                return reasons
            if torch_emulated():
                if call.device != "cpu":
                    return [f"tensors are on {call.device}; under MLX_ATTN_METAL_EMULATE=1 the "
                            f"emulated kernels take torch CPU tensors"]
            elif not call.device.startswith("mps"):
                return [f"tensors are on {call.device}, not mps (an Apple GPU)"]
            return []
        reasons = self.mlx_reasons()
        if reasons:
            return reasons
        if self.kernel_factory is None and call.device != "gpu":
            return [f"MLX's default device is {call.device}, not the GPU "
                    "(mx.set_default_device(mx.gpu))"]
        return []

    # -- run ---------------------------------------------------------------------------------------
    def forward(self, call: AttentionCall):
        from .launches import Config

        B, Hq, Lq, Lk = call.B, call.Hq, call.Lq, call.Lk
        if 0 in (B, Hq, Lq, Lk):
            return _empty(call, (B, Hq, Lq, call.Dv), (B, Hq, Lq))
        cfg = Config(call.scale, call.softcap or 0.0, *call.window_sides, mask_kind=call.mask_code)
        out, lse = self._attention(call, cfg, call.q, call.k, call.v, _mask(call))
        return out, (lse if call.return_lse else None)

    def forward_varlen(self, call: AttentionCall):
        from .launches import Config

        if 0 in (call.B, call.Hq, call.Lq, call.Lk):
            return _empty(call, (call.Lq, call.Hq, call.Dv), (call.Hq, call.Lq))
        cfg = Config(call.scale, call.softcap or 0.0, *call.window_sides,
                     mask_kind=0, varlen=True, nseq=call.B, max_q=call.max_seqlen_q,
                     max_k=call.max_seqlen_k)
        # packed [total, H, D] -> a bhld view [1, H, total, D]; the kernels add cu offsets
        q, k, v = (_swap(call, x[None], 1, 2) for x in (call.q, call.k, call.v))
        out, lse = self._attention(call, cfg, q, k, v, None, call.cu_seqlens_q,
                                   call.cu_seqlens_k)
        out = _swap(call, out[0], 0, 1)
        return out, (lse[0] if call.return_lse else None)

    def _attention(self, call, cfg, q, k, v, mask, cu_q=None, cu_k=None):
        if call.kind == "torch":
            from .torch_attention import attention
            return attention(self.torch_kernels(), cfg, q, k, v, mask, cu_q, cu_k)
        from .attention import attention
        return attention(self.kernels, cfg, q, k, v, mask, cu_q, cu_k)


def _mask(call: AttentionCall):
    """The mask in a dtype Metal has (it has no double)."""
    mask = call.mask
    if mask is not None and str(mask.dtype).endswith("float64"):
        mask = ops_for(call.kind).astype(mask, "float32")
    return mask


def _swap(call: AttentionCall, x, a: int, b: int):
    return ops_for(call.kind).swapaxes(x, a, b)


def _empty(call: AttentionCall, out_shape, lse_shape):
    ops = ops_for(call.kind)
    out = ops.full(out_shape, 0.0, call.dtype, call.q)
    lse = ops.full(lse_shape, float("-inf"), "float32", call.q)
    return out, (lse if call.return_lse else None)
