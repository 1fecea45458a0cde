"""Choosing a backend for a call, and explaining the choice.

`backend="auto"` takes the first backend in priority order that has no reasons against the
call; a named backend that cannot run raises an error listing its reasons. The environment
variable MLX_ATTN applies when the caller leaves `backend="auto"`.
"""
from __future__ import annotations

import warnings

from . import config
from .backends import by_name, names, registry
from .backends.base import Backend
from .call import AttentionCall

SPECIAL = ("auto", "flash")
_warned_flash_fallback = False


class BackendUnavailableError(ValueError):
    """A backend was asked for by name but cannot run these inputs."""


def reset_warnings() -> None:
    global _warned_flash_fallback
    _warned_flash_fallback = False


def requested(backend: str) -> str:
    """The backend the caller asked for: the argument, or MLX_ATTN when the argument is auto."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {backend!r}")
    choice = backend.strip().lower()
    if choice == "auto":
        choice = config.requested_backend()
        if choice not in SPECIAL and by_name(choice) is None:
            raise ValueError(f"MLX_ATTN={choice!r} is not a backend; allowed: "
                             f"{', '.join(SPECIAL + tuple(names()))}")
    elif choice not in SPECIAL and by_name(choice) is None:
        raise ValueError(f"backend={backend!r} is not a backend; allowed: "
                         f"{', '.join(SPECIAL + tuple(names()))}")
    return choice


# Per (requested backend, call signature): the backends whose signature-level reasons are empty,
# in the order `choose` tries them. A repeated call then only runs their cheap `call_reasons`.
_PLANS: dict = {}
_MAX_PLANS = 1024
_REQUESTED: dict = {}


def clear_cache() -> None:
    """Forget the cached decisions (config.reload does; tests that swap backends do)."""
    _PLANS.clear()
    _REQUESTED.clear()


config.on_reload(reset_warnings)
config.on_reload(clear_cache)


def choose(call: AttentionCall, backend: str = "auto") -> Backend:
    choice = _REQUESTED.get(backend) if isinstance(backend, str) else None
    if choice is None:
        choice = requested(backend)
        _REQUESTED[backend] = choice
    key = (choice, call.signature())
    plan = _PLANS.get(key)
    if plan is None:
        plan = _plan(call, choice)
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    for candidate in plan:
        if not candidate.call_reasons(call):
            return candidate
    return _choose_uncached(call, choice)  # raises, warns, or falls to math as the rules say


def _plan(call: AttentionCall, choice: str) -> tuple:
    if choice in SPECIAL:
        fused_only = choice == "flash"
        return tuple(b for b in registry() if (b.fused or not fused_only)
                     and not b.signature_reasons(call))
    chosen = by_name(choice)
    return () if chosen.signature_reasons(call) else (chosen,)


def _choose_uncached(call: AttentionCall, choice: str) -> Backend:
    if choice == "auto":
        for candidate in registry():
            if not candidate.not_supported_reasons(call):
                return candidate
        raise AssertionError("the math backend supports every call")  # pragma: no cover
    if choice == "flash":
        for candidate in registry():
            if candidate.fused and not candidate.not_supported_reasons(call):
                return candidate
        _warn_flash_fallback(call)
        return by_name("math")
    chosen = by_name(choice)
    reasons = chosen.not_supported_reasons(call)
    if reasons:
        raise BackendUnavailableError(f"backend {choice!r} cannot run these inputs: "
                                      + "; ".join(reasons))
    return chosen


def _warn_flash_fallback(call: AttentionCall) -> None:
    global _warned_flash_fallback
    if _warned_flash_fallback:
        return
    _warned_flash_fallback = True
    why = "; ".join(f"{b.name}: {', '.join(b.not_supported_reasons(call))}"
                    for b in registry() if b.fused)
    warnings.warn("MLX_ATTN=flash: no fused backend can run these inputs, using the math "
                  f"backend ({why}). This warning is shown once per process.",
                  RuntimeWarning, stacklevel=4)


def explain_call(call: AttentionCall, backend: str = "auto") -> str:
    """One line per backend: chosen, could run, or why not."""
    try:  # derived afresh, not from the per-signature cache: this is the diagnostic
        chosen = _choose_uncached(call, requested(backend))
        problem = None
    except BackendUnavailableError as error:
        chosen, problem = None, str(error)
    lines = [f"inputs: {_describe(call)}", f"requested: {requested(backend)}"]
    for candidate in registry():
        reasons = candidate.not_supported_reasons(call)
        if candidate is chosen:
            status = "chosen"
        elif reasons:
            status = "cannot run: " + "; ".join(reasons)
        else:
            status = "could run (not chosen)"
        note = candidate.call_note(call)
        if note:
            status += f" [{note}]"
        lines.append(f"  {candidate.name:<6} {status}")
    if problem:
        lines.append(f"error: {problem}")
    return "\n".join(lines)


def _describe(call: AttentionCall) -> str:
    shape = (f"varlen n={call.B} total_q={call.Lq} total_k={call.Lk}" if call.varlen
             else f"B={call.B} Lq={call.Lq} Lk={call.Lk}")
    feats = ", ".join(sorted(call.features())) or "none"
    return (f"{call.kind} {call.dtype} on {call.device}, {shape} Hq={call.Hq} Hkv={call.Hkv} "
            f"D={call.D} Dv={call.Dv}; features: {feats}")
