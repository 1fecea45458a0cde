"""The operations the front end and the math backend need, for torch tensors."""
from __future__ import annotations

import numpy as np
import torch

_DTYPES = {
    "float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
    "float64": torch.float64, "int32": torch.int32, "bool": torch.bool,
}


class TorchOps:
    kind = "torch"
    grad_capable = True

    def dtype_name(self, x) -> str:
        return str(x.dtype).removeprefix("torch.")

    def device(self, x) -> str:
        return str(x.device)

    def is_floating(self, x) -> bool:
        return x.is_floating_point()

    def is_bool(self, x) -> bool:
        return x.dtype == torch.bool

    def is_int32(self, x) -> bool:
        return x.dtype == torch.int32

    def requires_grad(self, *xs) -> bool:
        return torch.is_grad_enabled() and any([x.requires_grad for x in xs])

    def signature(self, q, k, v) -> tuple:
        """What the front end's type, dtype and device checks depend on (validate._signature)."""
        return (q.dtype, k.dtype, v.dtype, q.device, k.device, v.device)

    def native_order(self, *xs) -> bool:
        return True

    def to_host(self, x) -> np.ndarray:
        """A numpy copy; bfloat16 (which numpy lacks) is widened to float32 exactly."""
        x = x.detach().cpu()
        return (x.float() if x.dtype == torch.bfloat16 else x).numpy()

    def canonical(self, x):
        """Tensors are always in native byte order."""
        return x

    def contiguous(self, x):
        return x.contiguous()

    def astype(self, x, dtype: str):
        return x.to(_DTYPES[dtype])

    def swapaxes(self, x, a: int, b: int):
        return x.transpose(a, b)

    def reshape(self, x, shape):
        return x.reshape(shape)

    def concat(self, xs, axis: int):
        return torch.cat(xs, dim=axis)

    def full(self, shape, value, dtype: str, like):
        return torch.full(shape, value, dtype=_DTYPES[dtype], device=like.device)

    def arange(self, n: int, like):
        return torch.arange(n, device=like.device)

    def exp(self, x):
        return torch.exp(x)

    def log(self, x):
        return torch.log(x)

    def tanh(self, x):
        return torch.tanh(x)

    def where(self, cond, a, b):
        return torch.where(cond, a, b)

    def amax(self, x, axis: int):
        return torch.amax(x, dim=axis, keepdim=True)

    def sum(self, x, axis: int):
        return torch.sum(x, dim=axis, keepdim=True)

    def stop_gradient(self, x):
        return x.detach()

    def finish_chunk(self, *xs) -> None:
        """Eager arrays are already computed."""


OPS = TorchOps()
