"""Device memory for emulated kernels: every buffer lives in its own mapping between two
PROT_NONE guard pages, its end against the upper one, so that an out-of-bounds read or write
of global memory faults in the offending thread (the runtime turns the fault into a report,
and `describe_address` names the buffer and the offset).
"""
from __future__ import annotations

import ctypes
import mmap
import threading
import weakref

import numpy as np

_PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_live: "weakref.WeakSet[DeviceArray]" = weakref.WeakSet()
_live_lock = threading.Lock()


class DeviceArray:
    """A numpy array in guarded memory. ``ptr`` is the address of element [0, ..., 0] (what a
    kernel parameter receives); ``numpy()`` is a view of it."""

    def __init__(self, shape, dtype, strides=None, name: str = "buffer", fill: int | None = 0xFF):
        dtype = np.dtype(dtype)
        shape = tuple(int(s) for s in shape)
        if strides is None:
            strides = _contiguous_strides(shape, dtype.itemsize)
        strides = tuple(int(s) for s in strides)
        count = int(np.prod(shape)) if shape else 1
        if count == 0:
            lo = hi = 0
        else:
            lo = sum(s * (n - 1) for s, n in zip(strides, shape) if s < 0)
            hi = sum(s * (n - 1) for s, n in zip(strides, shape) if s > 0) + dtype.itemsize
        span = hi - lo
        rounded = (span + 15) // 16 * 16
        data_pages = max(1, (rounded + _PAGE - 1) // _PAGE)
        self._map = mmap.mmap(-1, (data_pages + 2) * _PAGE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        for page in (base, base + (data_pages + 1) * _PAGE):
            if _libc.mprotect(page, _PAGE, 0) != 0:
                raise OSError(ctypes.get_errno(), "mprotect of a guard page failed")
        self.start = base + (data_pages + 1) * _PAGE - rounded  # 16-byte aligned, end at the guard
        self.end = self.start + span
        self.ptr = self.start - lo
        self.shape, self.strides, self.dtype, self.name = shape, strides, dtype, name
        self.nbytes = span
        self._offset = self.start - base
        if fill is not None and span:
            ctypes.memset(self.start, fill, span)
        with _live_lock:
            _live.add(self)

    @classmethod
    def from_numpy(cls, a: np.ndarray, name: str = "buffer", contiguous: bool = False) -> "DeviceArray":
        """A copy of `a` keeping its strides (or C-contiguous)."""
        a = np.asarray(a)
        if contiguous or a.size == 0:
            a = np.ascontiguousarray(a)
        d = cls(a.shape, a.dtype, a.strides, name, fill=None)
        if d.nbytes:
            lo = sum(s * (n - 1) for s, n in zip(a.strides, a.shape) if s < 0)
            ctypes.memmove(d.start, a.ctypes.data + lo, d.nbytes)
        return d

    def numpy(self) -> np.ndarray:
        """A view of the device memory (valid while this object lives)."""
        buf = (ctypes.c_char * max(self.nbytes, 1)).from_address(self.start)
        flat = np.frombuffer(buf, dtype=np.uint8, count=self.nbytes)
        lo = self.ptr - self.start
        return np.lib.stride_tricks.as_strided(flat[lo:].view(self.dtype) if self.nbytes else
                                               np.empty(0, self.dtype), self.shape, self.strides)

    def copy_to_host(self) -> np.ndarray:
        return np.array(self.numpy())

    def __repr__(self):
        return f"DeviceArray({self.name!r}, shape={self.shape}, dtype={self.dtype}, {self.nbytes} bytes)"


def _contiguous_strides(shape, itemsize):
    strides, acc = [], itemsize
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


def describe_address(addr: int) -> str | None:
    """Which device buffer an address is in or next to (its guard pages), if any."""
    with _live_lock:
        arrays = list(_live)
    for d in arrays:
        if d.start <= addr < d.end:
            return f"inside device buffer '{d.name}' ({d.nbytes} bytes) at byte offset {addr - d.start}"
        if d.end <= addr < d.end + _PAGE + 16:
            return (f"{addr - d.end} bytes past the end of device buffer '{d.name}' ({d.nbytes} bytes, "
                    f"{d.dtype}{list(d.shape)})")
        if d.start - _PAGE - 16 <= addr < d.start:
            return (f"{d.start - addr} bytes before the start of device buffer '{d.name}' ({d.nbytes} bytes, "
                    f"{d.dtype}{list(d.shape)})")
    return None
