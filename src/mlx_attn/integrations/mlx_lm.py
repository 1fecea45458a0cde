"""Route mlx-lm's attention through mlx_attn.

    from mlx_attn.integrations.mlx_lm import route_mlx_lm
    with route_mlx_lm() as route:          # or: route = route_mlx_lm(); ...; route.restore()
        text = mlx_lm.generate(model, tokenizer, prompt)
    print(route.explain())                 # how many calls were routed, and why others were not

mlx-lm's model files do `from .base import scaled_dot_product_attention`, so each holds its own
reference to the function: replacing the attribute on `mlx_lm.models.base` alone would miss every
model already imported. We therefore replace the name in every loaded `mlx_lm.*` module that
holds mlx-lm's function (and in `base`, so model files imported while routing pick ours up),
and put every one back on exit.

What mlx-lm hands its attention, and what we do with it:
- mask None -> no mask; mask "causal" -> causal=True (both libraries align causal bottom-right,
  so chunked prefill with Lq < Lk and KV-cache offsets need nothing more); bool or additive
  arrays (padding, rotating-window caches, batch caches) -> mask, broadcast as given.
- quantized KV caches (keys/values are packed tuples) and attention sinks are passed to mlx-lm's
  own function unchanged; the reason is counted and shown by `explain()`.
"""
from __future__ import annotations

import numbers
import sys
import threading
from collections import Counter

import mlx.core as mx

from .. import api

_NAME = "scaled_dot_product_attention"
_LOCK = threading.Lock()


def pass_through_reason(queries, keys, values, cache=None, scale=None, mask=None, sinks=None):
    """Why this mlx-lm attention call is left to mlx-lm, or None when mlx_attn takes it."""
    if hasattr(cache, "bits"):
        return (f"quantized KV cache ({type(cache).__name__}, {cache.bits}-bit): keys/values are "
                f"packed (data, scales, biases) tuples, which mlx_attn does not take")
    if sinks is not None:
        return "attention sinks (an extra per-head logit in the softmax) are not in mlx_attn's contract"
    for name, x in (("queries", queries), ("keys", keys), ("values", values)):
        if not isinstance(x, mx.array):
            return f"{name} is a {type(x).__name__}, not an mlx array"
    if isinstance(mask, str) and mask != "causal":
        return f"mask mode {mask!r} is not one mlx_attn knows (only 'causal')"
    if mask is not None and not isinstance(mask, (str, mx.array)):
        return f"mask is a {type(mask).__name__}, not None, 'causal' or an mlx array"
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        return f"scale is a {type(scale).__name__}, not a real number"
    return None


def flash_keywords(mask) -> dict:
    """mlx-lm's mask argument as mlx_attn keywords (the call is already known to be taken)."""
    if mask is None:
        return {}
    if isinstance(mask, str):  # "causal": bottom-right aligned in mlx-lm, MLX and mlx_attn
        return {"causal": True}
    return {"mask": mask}


def explain_call(queries, keys, values, cache=None, scale=None, mask=None, sinks=None,
                 backend="auto") -> str:
    """What the router would do with this mlx-lm call: the pass-through reason, or mlx_attn's
    own `explain()` for the call it would make."""
    reason = pass_through_reason(queries, keys, values, cache, scale, mask, sinks)
    if reason:
        return f"passed through to mlx-lm: {reason}"
    keywords = flash_keywords(mask)
    shown = ", ".join(f"{k}={'<array>' if k == 'mask' else v}" for k, v in keywords.items())
    return (f"routed to mlx_attn.flash_attention(scale={float(scale):g}"
            f"{', ' + shown if shown else ''}):\n"
            + api.explain(queries, keys, values, scale=float(scale), backend=backend, **keywords))


class MlxLmRoute:
    """The patch itself: a context manager that counts what it routed and what it passed on."""

    def __init__(self, backend: str = "auto"):
        self.backend = backend
        self.routed = 0
        self.passed = Counter()          # reason -> number of calls
        self._patched = []               # (module, the value it held before)
        self._router = None
        self.active = False

    # -- patching -----------------------------------------------------------------------
    def start(self) -> "MlxLmRoute":
        import mlx_lm.models.base as base  # noqa: F401  (the module whose function we replace)
        with _LOCK:
            if self.active:
                raise RuntimeError("this mlx-lm route is already active")
            original = getattr(base, _NAME)
            self._router = self._make_router(original)
            for module in _mlx_lm_modules():
                if getattr(module, _NAME, None) is original:
                    self._patched.append((module, original))
                    setattr(module, _NAME, self._router)
            self.active = True
        return self

    def restore(self) -> None:
        """Put mlx-lm's function back everywhere, including in modules imported since start."""
        with _LOCK:
            if not self.active:
                return
            original = self._router.original
            for module, before in self._patched:
                if getattr(module, _NAME, None) is self._router:
                    setattr(module, _NAME, before)
            for module in _mlx_lm_modules():   # model files imported while we were routing
                if getattr(module, _NAME, None) is self._router:
                    setattr(module, _NAME, original)
            self._patched.clear()
            self.active = False

    def __enter__(self):
        return self if self.active else self.start()

    def __exit__(self, *exc):
        self.restore()
        return False

    # -- the replacement function ---------------------------------------------------------
    def _make_router(self, original):
        route = self

        def scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks=None,
                                         **extra):
            reason = ("unexpected keyword(s) " + ", ".join(sorted(extra)) if extra else
                      pass_through_reason(queries, keys, values, cache, scale, mask, sinks))
            if reason:
                route.passed[reason] += 1
                return original(queries, keys, values, cache=cache, scale=scale, mask=mask,
                                sinks=sinks, **extra)
            route.routed += 1
            return api.flash_attention(queries, keys, values, scale=float(scale),
                                       backend=route.backend, **flash_keywords(mask))

        scaled_dot_product_attention.original = original
        scaled_dot_product_attention.__doc__ = "mlx-lm attention routed through mlx_attn."
        return scaled_dot_product_attention

    # -- reporting ------------------------------------------------------------------------
    def explain(self) -> str:
        lines = [f"mlx-lm route ({'active' if self.active else 'restored'}, backend="
                 f"{self.backend!r}): {self.routed} call(s) routed to mlx_attn, "
                 f"{sum(self.passed.values())} passed through to mlx-lm"]
        for reason, count in self.passed.most_common():
            lines.append(f"  passed through x{count}: {reason}")
        unrouted = sorted(_direct_callers())
        if unrouted:
            lines.append("  loaded model files with no scaled_dot_product_attention name to route "
                         "(they call mx.fast directly, or have no attention): " + ", ".join(unrouted))
        return "\n".join(lines)


def route_mlx_lm(backend: str = "auto") -> MlxLmRoute:
    """Start routing mlx-lm's attention through mlx_attn; use as a context manager or call
    `.restore()` on the result to undo."""
    return MlxLmRoute(backend).start()


def _mlx_lm_modules():
    return [m for name, m in list(sys.modules.items())
            if m is not None and (name == "mlx_lm" or name.startswith("mlx_lm."))]


def _direct_callers():
    """Loaded mlx-lm model modules with no `scaled_dot_product_attention` name to patch."""
    return {name.rsplit(".", 1)[-1] for name, m in list(sys.modules.items())
            if m is not None and name.startswith("mlx_lm.models.")
            and hasattr(m, "Model") and not hasattr(m, _NAME)}
