"""The operations the front end and the math backend need, for MLX arrays."""
from __future__ import annotations

import mlx.core as mx
import numpy as np

_DTYPES = {
    "float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32,
    "float64": mx.float64, "int32": mx.int32, "bool": mx.bool_,
}


class MlxOps:
    kind = "mlx"
    grad_capable = True

    def dtype_name(self, x) -> str:
        return str(x.dtype).removeprefix("mlx.core.")

    def device(self, x) -> str:
        # MLX arrays carry no device: work runs on the default device's stream.
        return "gpu" if mx.default_device().type == mx.gpu else "cpu"

    def is_floating(self, x) -> bool:
        return mx.issubdtype(x.dtype, mx.floating)

    def is_bool(self, x) -> bool:
        return x.dtype == mx.bool_

    def is_int32(self, x) -> bool:
        return x.dtype == mx.int32

    def requires_grad(self, *xs) -> bool:
        # MLX's transforms are invisible from inside a function: backends taking MLX arrays
        # must support the vjp whenever they are chosen.
        return False

    def signature(self, q, k, v) -> tuple:
        """What the front end's type, dtype and device checks depend on (validate._signature):
        MLX arrays run on the default device, so it is part of the signature."""
        return (q.dtype, k.dtype, v.dtype, mx.default_device().type)

    def native_order(self, *xs) -> bool:
        return True

    def to_host(self, x) -> np.ndarray:
        """A numpy copy; bfloat16 (which numpy lacks) is widened to float32 exactly."""
        return np.array(x.astype(mx.float32) if x.dtype == mx.bfloat16 else x)

    def canonical(self, x):
        """MLX arrays are always in native byte order."""
        return x

    def contiguous(self, x):
        return mx.contiguous(x)

    def astype(self, x, dtype: str):
        return x.astype(_DTYPES[dtype])

    def swapaxes(self, x, a: int, b: int):
        return mx.swapaxes(x, a, b)

    def reshape(self, x, shape):
        return mx.reshape(x, shape)

    def concat(self, xs, axis: int):
        return mx.concatenate(xs, axis=axis)

    def full(self, shape, value, dtype: str, like):
        return mx.full(shape, value, dtype=_DTYPES[dtype])

    def arange(self, n: int, like):
        return mx.arange(n)

    def exp(self, x):
        return mx.exp(x)

    def log(self, x):
        return mx.log(x)

    def tanh(self, x):
        return mx.tanh(x)

    def where(self, cond, a, b):
        return mx.where(cond, a, b)

    def amax(self, x, axis: int):
        return mx.max(x, axis=axis, keepdims=True)

    def sum(self, x, axis: int):
        return mx.sum(x, axis=axis, keepdims=True)

    def stop_gradient(self, x):
        return mx.stop_gradient(x)

    def finish_chunk(self, *xs) -> None:
        """Compute a chunk now, so that the lazy graph does not schedule every chunk's score
        block at once (which defeats chunking). Inside mx.compile / mx.vmap, where eval is not
        allowed, the graph is left to MLX."""
        try:
            mx.eval([x for x in xs if x is not None])
        except ValueError:
            pass


OPS = MlxOps()
