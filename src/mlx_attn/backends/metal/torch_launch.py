"""Launching the Metal kernels on torch tensors (the torch launcher), through
`torch.mps.compile_shader` or a drop-in with its call signature (the MSL emulator's
`msl_emulator.torch_mps.compile_shader`, on CPU tensors, in tests).

The same shaders as the MLX launcher (kernels.py): msl_source.py turns each kernel body into the
whole source of one variant, compiled once per variant and cached here; launches.py gives the
grids, threadgroups, template arguments and output shapes to both launchers. Arguments are
assembled from msl_source's bindings: tensors in place (torch binds a tensor at its storage
offset; the kernels index with the `_strides` lists we pass, so any strides work), shapes,
strides and the ip/fp parameters as lists of Python numbers.
"""
from __future__ import annotations

import threading

import torch

from . import launches
from .launches import Config, Launch, Problem
from .msl_source import kernel_source

_TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float32": torch.float32, "bool": torch.bool, "int32": torch.int32}


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class TorchMetalKernels:
    """The attention kernels on torch tensors, compiled with one `compile_shader`.

    poison_outputs: fill outputs with NaN before each launch (the emulator's way to show an
    output element a kernel never writes; on a GPU, outputs are left uninitialised).
    """

    def __init__(self, compile_shader, poison_outputs: bool = False):
        if not callable(compile_shader):
            raise TypeError(f"compile_shader must be callable, got {compile_shader!r}")
        self._compile_shader = compile_shader
        self._poison = poison_outputs
        self._libraries = {}
        self._lock = threading.Lock()

    def function(self, launch: Launch, input_dtypes: dict):
        """(the compiled kernel function, its bindings) for one variant; compiled once."""
        key = (launch.kernel, launch.template, tuple(sorted(input_dtypes.items())),
               launch.output_dtypes)
        with self._lock:
            hit = self._libraries.get(key)
        if hit is None:
            src = kernel_source(launch.kernel, launch.template, input_dtypes,
                                launch.output_dtypes)
            lib = self._compile_shader(src.source)
            hit = (getattr(lib, src.function), src.bindings)
            with self._lock:
                self._libraries[key] = hit
        return hit

    def run(self, launch: Launch, inputs: dict, params: dict, device) -> list:
        """One launch: inputs {name: tensor}, params {"ip": [...], "fp": [...]}; returns the
        outputs, allocated here on `device`."""
        dtypes = {n: _name(t.dtype) for n, t in inputs.items()}
        fn, bindings = self.function(launch, dtypes)
        outs = []
        for shape, dtype in zip(launch.output_shapes, launch.output_dtypes):
            if self._poison:
                outs.append(torch.full(shape, float("nan"), dtype=_TORCH_DTYPES[dtype],
                                       device=device))
            else:
                outs.append(torch.empty(shape, dtype=_TORCH_DTYPES[dtype], device=device))
        by_name = dict(zip(_output_names(bindings), outs))
        args = []
        for b in bindings:
            if b.kind == "input":
                args.append(inputs[b.name])
            elif b.kind == "shape":
                args.append([int(n) for n in inputs[b.name].shape])
            elif b.kind == "strides":
                args.append([int(s) for s in inputs[b.name].stride()])
            elif b.kind == "params":
                args.append(params[b.name])
            else:
                args.append(by_name[b.name])
        fn(*args, threads=list(launch.grid), group_size=list(launch.threadgroup))
        return outs

    # -- shared inputs ----------------------------------------------------------------------
    @staticmethod
    def seq_inputs(mask, cu_q, cu_k, like: torch.Tensor):
        """The mask and cu_seqlens inputs, with placeholders when absent (the kernels read
        neither then: MASK = 0, VARLEN = false)."""
        if mask is None:
            mask = torch.zeros((1, 1, 1, 8), dtype=like.dtype, device=like.device)
        pad = torch.zeros((8,), dtype=torch.int32, device=like.device)
        return mask, (pad if cu_q is None else cu_q), (pad if cu_k is None else cu_k)

    def _common(self, cfg: Config, q, k, v, mask, cu_q, cu_k):
        mask, cu_q, cu_k = self.seq_inputs(mask, cu_q, cu_k, q)
        p = Problem.of(q.shape, k.shape, v.shape, _name(q.dtype), _name(mask.dtype))
        inputs = dict(q=q, k=k, v=v, mask=mask, cu_q=cu_q, cu_k=cu_k)
        return p, inputs

    @staticmethod
    def _params(cfg: Config, p: Problem, nsplit: int = 1) -> dict:
        ip, fp = launches.params(cfg, p, nsplit)
        return {"ip": ip, "fp": fp}

    # -- forward ----------------------------------------------------------------------------
    def forward(self, cfg: Config, q, k, v, mask=None, cu_q=None, cu_k=None):
        """out [Z, Hq, Ltot, Dv] in q's dtype and lse [Z, Hq, Ltot] float32 (bhld views in)."""
        p, inputs = self._common(cfg, q, k, v, mask, cu_q, cu_k)
        if not launches.is_decode(cfg, p):
            return self.run(launches.prefill(cfg, p), inputs, self._params(cfg, p), q.device)
        partial, merge, nsplit = launches.decode(cfg, p)
        params = self._params(cfg, p, nsplit)
        part_o, part_ml = self.run(partial, inputs, params, q.device)
        return self.run(merge, dict(part_o=part_o, part_ml=part_ml, cu_q=inputs["cu_q"]),
                        params, q.device)

    # -- backward ---------------------------------------------------------------------------
    def backward(self, cfg: Config, q, k, v, mask, cu_q, cu_k, out, lse, dout, dlse):
        """(dq, dk, dv) in the shapes of the bhld views q, k, v (contiguous, q's dtype)."""
        # delta = rowsum(dO * O); an lse cotangent g adds g * P to dS, i.e. delta - g.
        delta = (dout.float() * out.float()).sum(-1)
        if dlse is not None:
            delta = delta - dlse.float()
        p, inputs = self._common(cfg, q, k, v, mask, cu_q, cu_k)
        inputs.update(dout=dout, lse=lse.contiguous(), delta=delta.contiguous())
        params = self._params(cfg, p)
        dq_launch, dkv_launch = launches.backward(cfg, p)
        (dq,) = self.run(dq_launch, inputs, params, q.device)
        dk, dv = self.run(dkv_launch, inputs, params, q.device)
        return dq, dk, dv


def _output_names(bindings) -> list:
    return [b.name for b in bindings if b.kind == "output"]
