"""Backend selection, and the launchers of one op on every backend (``Kernels``).

Names: ``"auto"`` (default: CUDA tensors -> ``"triton"``, CPU tensors -> ``"reference"``),
``"triton"`` (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``), ``"cupy"`` (CUDA
tensors and CuPy installed) and ``"reference"`` (NumPy on the host; CUDA tensors are copied).
The selection is, in order of precedence: ``with use_backend(name)`` (per thread),
``set_backend(name)``, the ``GPUDNN_BACKEND`` environment variable, ``"auto"``.

The selection state is a thread-local and two plain globals (not a ContextVar) because
``torch.compile`` traces ``get_backend`` and guards on what it reads: a compiled model recompiles
when the selection changes, so ``use_backend`` keeps working on compiled code.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

BACKENDS = ("auto", "triton", "cupy", "reference")
KERNEL_BACKENDS = ("reference", "triton", "cupy")

_global_choice: str | None = None
_local = threading.local()  # .choice: the innermost use_backend of this thread


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"unknown gpudnn backend {name!r}; expected one of {BACKENDS}")
    return name.lower()


def get_backend() -> str:
    """The selected backend name (``"auto"`` unless chosen otherwise)."""
    choice = getattr(_local, "choice", None) or _global_choice
    if choice is None:
        choice = _check_name(os.environ.get("GPUDNN_BACKEND", "auto") or "auto")
    return choice


def set_backend(name: str) -> None:
    """Select the backend for this process (``with use_backend`` overrides it locally)."""
    global _global_choice
    _global_choice = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Select a backend inside a ``with`` block (for this thread only)."""
    previous = getattr(_local, "choice", None)
    _local.choice = _check_name(name)
    try:
        yield _local.choice
    finally:
        _local.choice = previous


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def _cupy_problem() -> str | None:
    """Why CuPy cannot run here, or None when it can."""
    if importlib.util.find_spec("cupy") is None:
        return ("CuPy is not installed; install it with `pip install 'gpudnn[cupy]'` "
                "(cupy-cuda13x, for CUDA 13 drivers)")
    if not torch.cuda.is_available():
        return "CuPy needs a CUDA GPU and torch.cuda.is_available() is False"
    from .kernels.cupy._runtime import cupy_module
    try:
        cupy_module()  # also catches a CuPy built for another CUDA than torch's
    except RuntimeError as exc:
        return str(exc)
    return None


def available_backends() -> list[str]:
    """Backends that can run in this process (for some tensors): always ``"reference"``."""
    names = ["reference"]
    if _triton_importable() and (torch.cuda.is_available() or triton_interpreted()):
        names.insert(0, "triton")
    if _cupy_problem() is None:
        names.insert(1 if "triton" in names else 0, "cupy")
    return names


def _why_not(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot run tensors on ``device``, or None when it can."""
    if backend == "reference":
        return None
    if backend == "triton":
        if not _triton_importable():
            return "Triton is not installed (`pip install triton`)"
        if device == "cuda":
            return None
        if device == "cpu":
            if triton_interpreted():
                return None
            return ("the triton backend runs CPU tensors only under the Triton interpreter: set "
                    "TRITON_INTERPRET=1 before importing triton, move the tensors to CUDA, or use "
                    "the 'reference' backend")
        return f"the triton backend does not support {device} tensors"
    if backend == "cupy":
        if device != "cuda":
            return (f"the cupy backend runs CUDA tensors only (got {device} tensors); move them "
                    "to CUDA or use the 'reference' backend")
        return _cupy_problem()
    raise AssertionError(backend)


# --- the launchers of one op ---------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Kernels:
    """The launchers of one op on every backend: ``(forward, backward)`` per backend (a
    1-tuple for an op without a backward, such as an optimizer step). The reference's are NumPy
    functions, wrapped here so that they take and return torch tensors (``reference_launcher``).
    ``None``: the backend has no kernel for this op (``"auto"`` then skips it)."""

    name: str
    reference: tuple[Callable, ...]
    triton: tuple[Callable, ...] | None = None
    cupy: tuple[Callable, ...] | None = None

    def __post_init__(self):
        if self.name in KERNELS:
            raise ValueError(f"gpudnn: kernels for op {self.name!r} defined twice")
        KERNELS[self.name] = self

    def of(self, backend: str) -> tuple[Callable, ...]:
        """The launchers of ``backend`` (RuntimeError when it has none for this op)."""
        launchers = getattr(self, _check_kernel_backend(backend))
        if launchers is None:
            raise RuntimeError(f"gpudnn backend {backend!r} has no kernel for {self.name} (an "
                               "op's backward runs on the backend its forward ran on)")
        return launchers

    def forward(self, backend: str) -> Callable:
        return self.of(backend)[0]

    def backward(self, backend: str) -> Callable:
        return self.of(backend)[1]


# every op's Kernels by op name, filled as gpudnn.ops defines them (tests and tools walk it)
KERNELS: dict[str, Kernels] = {}


def _check_kernel_backend(name: str) -> str:
    if _check_name(name) == "auto":
        raise ValueError("backend= names the backend to use, not 'auto'")
    return name.lower()


def _device_type(tensors: tuple[Any, ...]) -> str:
    types = set()
    for t in tensors:
        if isinstance(t, torch.Tensor):
            types.add(t.device.type)
        elif isinstance(t, (list, tuple)):
            types.update(x.device.type for x in t if isinstance(x, torch.Tensor))
    if len(types) > 1:
        raise RuntimeError(f"gpudnn: tensors on different devices ({sorted(types)}); "
                           "move them to one device first")
    return types.pop() if types else "cpu"


def _has_float64(tensors: tuple[Any, ...]) -> bool:
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
            return True
        if isinstance(t, (list, tuple)) and _has_float64(tuple(t)):
            return True
    return False


_warned: set[str] = set()


@torch.compiler.assume_constant_result
def _choose(op: str, choice: str, device: str, float64: bool) -> tuple[str, str]:
    """(backend, "") or ("", why none can run) for op ``op`` (its name in KERNELS): a pure
    function of its arguments, so that torch.compile evaluates it once while tracing and guards
    on the arguments instead (plain strings: torch 2.11's dynamo cannot pass a frozen dataclass
    such as Kernels into it)."""
    kernels = KERNELS[op]
    if choice != "auto":
        why = _why_not(choice, device)
        if why is None and getattr(kernels, choice) is None:
            why = f"the {choice} backend has no kernel for {kernels.name} yet"
        if why is not None:
            return "", f"gpudnn backend {choice!r} cannot run {kernels.name}: {why}"
        return choice, ""
    if device != "cuda":
        return "reference", ""
    if not float64:  # the GPU kernels compute in fp32 at most: float64 -> NumPy
        for candidate in ("triton", "cupy"):
            if _why_not(candidate, device) is None and getattr(kernels, candidate) is not None:
                return candidate, ""
    if kernels.name not in _warned:
        _warned.add(kernels.name)
        warnings.warn(f"gpudnn: no GPU kernel can run {kernels.name} here (float64 tensors, or no "
                      "kernel for this op); falling back to the NumPy reference on the host "
                      "(slow)", RuntimeWarning, stacklevel=4)
    return "reference", ""


def resolve(kernels: Kernels, *tensors: Any) -> str:
    """The backend that runs op ``kernels`` on these tensors (RuntimeError when none can).

    "auto" only picks a GPU backend that has the op's forward and backward, because a backward
    runs on the backend its forward ran on: the ops pass the name resolved here to both."""
    backend, why = _choose(kernels.name, get_backend(), _device_type(tensors),
                           _has_float64(tensors))
    if why:
        raise RuntimeError(why)
    return backend


# --- NumPy boundary for the reference backend -------------------------------------------------

def _to_numpy(obj: Any, back: list) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            arr = t.float().cpu().numpy()
            back.append((obj, arr))
            return arr
        if t.device.type != "cpu":
            arr = t.cpu().numpy()
            back.append((obj, arr))
            return arr
        return t.numpy()  # shares memory: in-place updates land in the tensor
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(x, back) for x in obj)
    return obj


def _to_torch(obj: Any, like: torch.Tensor | None, float32: bool = False) -> Any:
    """NumPy -> torch on ``like``'s device; floating arrays take ``like``'s dtype, or at least
    float32 when ``float32`` (an output the launcher contract keeps in float32)."""
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        # always a copy (order="K" keeps channels_last strides): an output must never alias an
        # input's memory behind autograd's back
        t = torch.from_numpy(np.array(obj, order="K"))
        if like is not None:
            if t.is_floating_point() and like.is_floating_point():
                t = t.to(torch.promote_types(like.dtype, torch.float32) if float32 else like.dtype)
            t = t.to(like.device)
        return t
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_torch(x, like, float32) for x in obj)
    return obj


def _first_tensor(args: tuple) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
        if isinstance(a, (list, tuple)):
            found = _first_tensor(tuple(a))
            if found is not None:
                return found
    return None


def _copy_back_if_changed(tensor: torch.Tensor, arr: np.ndarray) -> None:
    """Write a launcher's in-place update of a copied argument back into the tensor, and leave
    untouched arguments alone: a needless copy_ would bump the version counter of a tensor that
    autograd saved for backward."""
    new = torch.from_numpy(arr).to(device=tensor.device, dtype=tensor.dtype)
    old = tensor.detach()
    same = (new == old) | (new.isnan() & old.isnan()) if new.is_floating_point() else new == old
    if not bool(same.all()):
        with torch.no_grad():
            tensor.copy_(new)


def reference_launcher(fn: Callable, float32_outputs: tuple[int, ...] = ()) -> Callable:
    """A NumPy launcher of ``gpudnn.reference`` as a torch launcher: tensors in and out (on the
    first tensor argument's device and dtype), in-place updates of arguments copied back.
    ``float32_outputs``: indices of tuple outputs that the launcher contract keeps in (at least)
    float32 whatever the input dtype (lse, mean, invstd, ...); other floating outputs take the
    first tensor argument's dtype."""
    keep = frozenset(float32_outputs)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        back: list = []
        like = _first_tensor(args)
        nargs = tuple(_to_numpy(a, back) for a in args)
        nkwargs = {k: _to_numpy(v, back) for k, v in kwargs.items()}
        out = fn(*nargs, **nkwargs)
        for tensor, arr in back:  # in-place updates of tensors that were copied
            _copy_back_if_changed(tensor, arr)
        if isinstance(out, tuple) and keep:
            return tuple(_to_torch(o, like, i in keep) for i, o in enumerate(out))
        return _to_torch(out, like)

    wrapper.__wrapped_numpy__ = fn
    return wrapper
