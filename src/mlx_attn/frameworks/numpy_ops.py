"""The operations the front end and the math backend need, for numpy arrays."""
from __future__ import annotations

import numpy as np


class NumpyOps:
    kind = "numpy"
    grad_capable = False

    def dtype_name(self, x) -> str:
        return x.dtype.name

    def device(self, x) -> str:
        return "cpu"

    def is_floating(self, x) -> bool:
        return np.issubdtype(x.dtype, np.floating)

    def is_bool(self, x) -> bool:
        return x.dtype == np.bool_

    def is_int32(self, x) -> bool:
        return x.dtype == np.int32

    def requires_grad(self, *xs) -> bool:
        return False

    def to_host(self, x) -> np.ndarray:
        return np.asarray(x)

    def signature(self, q, k, v) -> tuple:
        """What the front end's type and dtype checks depend on (see validate._signature)."""
        return (q.dtype, k.dtype, v.dtype)

    def native_order(self, *xs) -> bool:
        return all(x.dtype.isnative for x in xs)

    def canonical(self, x):
        """x in native byte order (the one place big-endian input is converted): backends,
        the native kernel among them, read the memory as the machine's own numbers."""
        return x if x.dtype.isnative else x.astype(x.dtype.newbyteorder("="))

    def contiguous(self, x):
        return np.ascontiguousarray(x)

    def astype(self, x, dtype: str):
        return x.astype(dtype, copy=False)

    def swapaxes(self, x, a: int, b: int):
        return np.swapaxes(x, a, b)

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def concat(self, xs, axis: int):
        return np.concatenate(xs, axis=axis)

    def full(self, shape, value, dtype: str, like):
        return np.full(shape, value, dtype=dtype)

    def arange(self, n: int, like):
        return np.arange(n)

    def exp(self, x):
        return np.exp(x)

    def log(self, x):
        with np.errstate(divide="ignore"):
            return np.log(x)

    def tanh(self, x):
        return np.tanh(x)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def amax(self, x, axis: int):
        return np.max(x, axis=axis, keepdims=True)

    def sum(self, x, axis: int):
        return np.sum(x, axis=axis, keepdims=True)

    def stop_gradient(self, x):
        return x

    def finish_chunk(self, *xs) -> None:
        """Eager arrays are already computed."""


OPS = NumpyOps()
