"""mlx_attn: one flash-attention call for MLX arrays, torch tensors and numpy arrays.

The semantics are those of SPEC.md; `explain()` tells which backend a call would use and why.
"""
from .api import BackendInfo, backends, explain, flash_attention, flash_attention_varlen
from .dispatch import BackendUnavailableError

__version__ = "0.1.0"

__all__ = ["flash_attention", "flash_attention_varlen", "explain", "backends", "BackendInfo",
           "BackendUnavailableError", "__version__"]
