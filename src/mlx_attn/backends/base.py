"""What every backend declares, and the generic checks built on those declarations.

A backend is a small class: it states which array kinds, dtypes, head dims and features it
handles, and `not_supported_reasons(call)` turns those declarations (plus anything specific it
adds in `extra_reasons` and `call_reasons`) into human-readable reasons. An empty list means it
can run the call. Reasons are split by what they depend on: the call's signature (kinds, dtypes,
head dims, features: derived once per signature and cached by dispatch) or the call itself
(`call_reasons`: strides, sizes, values of scalars; checked on every call).
"""
from __future__ import annotations

import functools

from ..call import AttentionCall


class Backend:
    name: str = ""
    #: lower runs first when `backend="auto"`.
    priority: int = 100
    #: whether this is a fused (flash) kernel; `MLX_ATTN=flash` picks only fused backends.
    fused: bool = True
    array_kinds: frozenset = frozenset()
    dtypes: frozenset = frozenset()
    #: head dims (for both D and Dv) it handles; None means any.
    head_dims: tuple | None = None
    features: frozenset = frozenset()
    #: one line for `backends()` and the README table.
    summary: str = ""

    def note(self) -> str:
        """A remark `explain()` adds to this backend's line (e.g. that it is emulated)."""
        return ""

    def call_note(self, call) -> str:
        """The remark for this call (e.g. how it runs varlen); note() unless overridden."""
        return self.note()

    # -- what subclasses override -------------------------------------------------------------
    def _availability_reasons(self) -> list[str]:
        """Why this backend cannot run on this machine at all (not built, wrong OS, ...)."""
        return []

    def extra_reasons(self, call: AttentionCall) -> list[str]:
        """Reasons specific to this backend that depend only on `call.signature()` (device,
        head dims, features, ...): dispatch derives them once per signature."""
        return []

    def call_reasons(self, call: AttentionCall) -> list[str]:
        """Reasons that depend on more than the signature (strides, sizes, the scale's value):
        cheap checks, run on every call."""
        return []

    def forward(self, call: AttentionCall):
        """Dense call in bhld layout -> (out [B, Hq, Lq, Dv] in q's dtype, lse float32 or None)."""
        raise NotImplementedError

    def forward_varlen(self, call: AttentionCall):
        """Packed call -> (out [total_q, Hq, Dv], lse [Hq, total_q] float32 or None)."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------------
    @functools.cached_property
    def availability_reasons(self) -> list[str]:
        return list(self._availability_reasons())

    @property
    def available(self) -> bool:
        return not self.availability_reasons

    def not_supported_reasons(self, call: AttentionCall) -> list[str]:
        """Why this backend cannot run `call`; empty if it can."""
        return self.signature_reasons(call) or self.call_reasons(call)

    def signature_reasons(self, call: AttentionCall) -> list[str]:
        """The reasons that depend only on `call.signature()`."""
        if self.availability_reasons:
            return list(self.availability_reasons)
        reasons = []
        if call.kind not in self.array_kinds:
            reasons.append(f"takes {_names(self.array_kinds)} arrays, got {call.kind}")
        if call.dtype not in self.dtypes:
            reasons.append(f"dtype {call.dtype} not supported (supports {_names(self.dtypes)})")
        if self.head_dims is not None:
            for label, dim in (("head dim D", call.D), ("value head dim Dv", call.Dv)):
                if dim not in self.head_dims:
                    allowed = ", ".join(str(d) for d in self.head_dims)
                    reasons.append(f"{label}={dim} not supported (supports {allowed})")
        missing = sorted(call.features() - set(self.features))
        if missing:
            reasons.append("does not support " + ", ".join(missing))
        if not reasons:
            reasons.extend(self.extra_reasons(call))
        return reasons

    def __repr__(self) -> str:
        return f"<backend {self.name}>"


def _names(items) -> str:
    return ", ".join(sorted(items))
