"""pytest plugin that counts the distinct cases each backend ran (not collected by pytest).

Usage: PYTHONPATH=src:tests python -m pytest -p contract.case_counter [paths]
Every `Backend.forward` / `forward_varlen` call is recorded as one case key
(backend, array kind, dtype, layout, shape, features with their values); at the end the number
of distinct keys per backend is printed and, with CASES_JSON=<file>, written as JSON.
"""
from __future__ import annotations

import collections
import json
import os

_SEEN: dict = collections.defaultdict(set)


def _key(backend, call):
    mask = None
    if call.mask is not None:
        mask = (call.mask_kind, tuple(call.mask.shape))
    seq = (tuple(call.seqlens_q), tuple(call.seqlens_k)) if call.varlen else None
    return (call.kind, call.dtype, call.layout, call.varlen, seq,
            (call.B, call.Hq, call.Hkv, call.Lq, call.Lk, call.D, call.Dv),
            call.causal, call.window, call.softcap, round(call.scale, 6), mask, call.return_lse,
            call.requires_grad)


def _wrap(cls, name):
    original = getattr(cls, name)
    if getattr(original, "_counted", False):
        return

    def wrapper(self, call):
        _SEEN[self.name].add(_key(self, call))
        return original(self, call)
    wrapper._counted = True
    setattr(cls, name, wrapper)


def pytest_configure(config):
    from mlx_attn.backends import registry
    for cls in {type(b) for b in registry()}:
        _wrap(cls, "forward")
        _wrap(cls, "forward_varlen")


def pytest_terminal_summary(terminalreporter):
    counts = {name: len(keys) for name, keys in sorted(_SEEN.items())}
    terminalreporter.write_line(f"distinct cases per backend: {counts}")
    out = os.environ.get("CASES_JSON")
    if out:
        with open(out, "w") as f:
            json.dump({name: sorted(map(repr, keys)) for name, keys in _SEEN.items()}, f)
