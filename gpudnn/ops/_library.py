"""Defining a gpudnn op as a ``torch.library`` custom operator in the ``gpudnn::`` namespace.

``@define("dense")`` turns a typed function whose last parameter is ``backend: str`` (the body:
it calls that backend's launcher) into ``torch.ops.gpudnn.dense``:

- ``traceable=True`` (the default): the public op is a ``torch.library.triton_op``. On CUDA
  tensors with the triton backend its body runs the Triton launchers, whose kernel launches go
  through ``torch.library.wrap_triton``, so ``torch.compile`` (Inductor) sees the kernels
  themselves. Every other case (the reference and CuPy backends, and the Triton interpreter on
  CPU tensors, which cannot run on fake tensors) calls the opaque twin ``gpudnn::<name>_opaque``,
  a plain ``custom_op``, with the same arguments.
- ``traceable=False``: one opaque ``custom_op`` (launchers that read device addresses or replay
  CUDA graphs: the LSTM step loops, the optimizers' multi-tensor steps).

``register_fake`` (shape, dtype and stride rules, no data access) and ``register_autograd`` go
through the returned ``Op``. The backend is an argument of every op, resolved by the caller
(``gpudnn.backend.resolve``) and passed on to the backward op by the autograd formula, so a
backward always runs on the backend its forward ran on, and ``torch.compile`` records the choice
in the graph (guarded: a new selection recompiles).
"""
from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, Iterable

import torch
from torch.library import custom_op, triton_op

NAMESPACE = "gpudnn"

# every gpudnn op by name (torch.ops.gpudnn.<name>), as defined; the tests walk it for opcheck
OPS: dict[str, "Op"] = {}
# device types whose triton-backend calls run the traceable body (Triton on a GPU). A CPU-only
# torch cannot fake every op on CUDA tensors, so tests/fake_cuda_trace.py adds "meta" to trace
# the same launchers on fake meta tensors there.
TRITON_TRACE_DEVICES: tuple[str, ...] = ("cuda",)


class _Depth(threading.local):
    value = 0


# how deep this thread is inside gpudnn (an op's body, or a gpudnn.aten override): while it is,
# gpudnn.aten's ATen overrides hand every torch call (the launchers' own) to ATen's kernels
_INSIDE = _Depth()


def inside_gpudnn() -> bool:
    """Whether this thread is running gpudnn's own code (see ``guarded``)."""
    return _INSIDE.value > 0


def guarded(fn: Callable) -> Callable:
    """``fn`` marked as gpudnn's own code for ``inside_gpudnn`` while it runs."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        _INSIDE.value += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _INSIDE.value -= 1

    return run


def _first_tensor(args: Iterable[Any]) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (list, tuple)):
            found = _first_tensor(a)
            if found is not None:
                return found
    return None


class Op:
    """One gpudnn custom op: call it like its body; ``op`` is the ``torch.ops`` overload
    packet's definition, ``opaque`` the custom op that runs launchers opaquely to the compiler
    (the same object as ``op`` when the op is not traceable)."""

    def __init__(self, name: str, body: Callable, mutates_args: tuple[str, ...],
                 traceable: bool) -> None:
        self.name = name
        self.traceable = traceable
        signature = inspect.signature(body, eval_str=True)  # real types for schema inference
        if list(signature.parameters)[-1] != "backend":
            raise TypeError(f"gpudnn op {name}: the body's last parameter must be `backend: str`")
        body = guarded(body)

        def run(*args, **kwargs):
            return body(*args, **kwargs)

        run.__signature__ = signature
        run.__doc__ = body.__doc__
        suffix = "_opaque" if traceable else ""
        self.opaque = custom_op(f"{NAMESPACE}::{name}{suffix}", run, mutates_args=mutates_args)
        if not traceable:
            self.op = self.opaque
        else:
            opaque = self.opaque

            def dispatch(*args, **kwargs):
                bound = signature.bind(*args, **kwargs)
                first = _first_tensor(bound.arguments.values())
                if bound.arguments["backend"] == "triton" and first is not None \
                        and first.device.type in TRITON_TRACE_DEVICES:
                    return body(*args, **kwargs)  # wrap_triton launches: Inductor sees them
                return opaque(*args, **kwargs)

            dispatch.__signature__ = signature
            dispatch.__doc__ = body.__doc__
            self.op = triton_op(f"{NAMESPACE}::{name}", dispatch, mutates_args=mutates_args)
        self.__doc__ = body.__doc__
        self.has_autograd = False
        OPS[name] = self

    def __call__(self, *args, **kwargs):
        return self.op(*args, **kwargs)

    @property
    def overload(self) -> torch._ops.OpOverload:
        """``torch.ops.gpudnn.<name>.default`` (what opcheck and graphs see)."""
        return getattr(getattr(torch.ops, NAMESPACE), self.name).default

    def register_fake(self, fn: Callable) -> Callable:
        """Shape/dtype/stride rule of the outputs (on the opaque op: a traceable op's triton
        path is its own fake, run on fake tensors)."""
        self.opaque.register_fake(fn)
        return fn

    def register_autograd(self, backward: Callable, *, setup_context: Callable) -> None:
        self.op.register_autograd(backward, setup_context=setup_context)
        self.has_autograd = True


def define(name: str, *, mutates_args: Iterable[str] = (),
           traceable: bool = True) -> Callable[[Callable], Op]:
    """Decorator: the typed body ``fn(..., backend: str)`` -> ``Op`` ``gpudnn::<name>``."""

    def decorate(body: Callable) -> Op:
        return Op(name, body, tuple(mutates_args), traceable)

    return decorate


def absent(like: torch.Tensor) -> torch.Tensor:
    """What an op returns where its launcher returned None (a custom op cannot return None): an
    empty tensor; the caller knows from its own arguments which outputs are real."""
    return like.new_empty(0)


def like_layout(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` with the strides ``torch.empty_like(like)`` would have (what the fake rules of the
    elementwise ops promise, whatever layout a backend returned): a copy only when they differ."""
    expected = torch.empty_like(like, dtype=out.dtype, device="meta")
    if out.stride() == expected.stride():
        return out
    return torch.empty_like(like, dtype=out.dtype).copy_(out)
