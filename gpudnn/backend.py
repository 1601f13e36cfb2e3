"""Backend registry and selection.

Names: ``"auto"`` (default: CUDA tensors -> ``"triton"``, CPU tensors -> ``"reference"``),
``"triton"`` (CUDA tensors; CPU tensors only under ``TRITON_INTERPRET=1``), ``"cupy"`` (CUDA
tensors and CuPy installed) and ``"reference"`` (NumPy on the host; CUDA tensors are copied).
The selection is, in order of precedence: ``with use_backend(name)``, ``set_backend(name)``, the
``GPUDNN_BACKEND`` environment variable, ``"auto"``.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os
import warnings
from typing import Any, Callable, Iterator

import numpy as np
import torch

from .launchers import FLOAT32_OUTPUTS, LAUNCHERS

BACKENDS = ("auto", "triton", "cupy", "reference")
_PACKAGES = {
    "reference": "gpudnn.reference",
    "triton": "gpudnn.kernels.triton",
    "cupy": "gpudnn.kernels.cupy",
}

_global_choice: str | None = None
_context_choice: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gpudnn_backend", default=None)


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"unknown gpudnn backend {name!r}; expected one of {BACKENDS}")
    return name.lower()


def get_backend() -> str:
    """The selected backend name (``"auto"`` unless chosen otherwise)."""
    choice = _context_choice.get() or _global_choice
    if choice is None:
        choice = _check_name(os.environ.get("GPUDNN_BACKEND", "auto") or "auto")
    return choice


def set_backend(name: str) -> None:
    """Select the backend for this process (``with use_backend`` overrides it locally)."""
    global _global_choice
    _global_choice = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Select a backend inside a ``with`` block (per thread / async task)."""
    token = _context_choice.set(_check_name(name))
    try:
        yield _context_choice.get()
    finally:
        _context_choice.reset(token)


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


@functools.lru_cache(maxsize=None)
def _find(backend: str, name: str) -> Callable | None:
    family = LAUNCHERS[name]
    try:
        module = importlib.import_module(f"{_PACKAGES[backend]}.{family}")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith(f"{_PACKAGES[backend]}.{family}"):
            return None
        raise
    fn = getattr(module, name, None)
    if fn is not None and backend == "reference":
        fn = _numpy_adapter(fn)
    return fn


_warned: set[str] = set()


def _companion(name: str) -> str | None:
    """The launcher that must run on the same backend as ``name`` (its backward, or forward)."""
    for a, b in (("_forward", "_backward"), ("_backward", "_forward")):
        if name.endswith(a) and name[:-len(a)] + b in LAUNCHERS:
            return name[:-len(a)] + b
    return None


def _has_pair(backend: str, name: str) -> bool:
    companion = _companion(name)
    return _find(backend, name) is not None and (
        companion is None or _find(backend, companion) is not None)


def resolve(name: str, *tensors: Any) -> str:
    """The backend that will run launcher ``name`` for these tensors (raises if none can).

    "auto" only picks a GPU backend that has both halves of a forward/backward pair, because the
    backward of an op must run on the backend its forward ran on (see ``launcher``)."""
    if name not in LAUNCHERS:
        raise KeyError(f"unknown launcher {name!r}")
    device = _device_type(tensors)
    choice = get_backend()
    if choice != "auto":
        why = _why_not(choice, device)
        if why is None and _find(choice, name) is None:
            why = f"the {choice} backend has no kernel for {name} yet"
        if why is not None:
            raise RuntimeError(f"gpudnn backend {choice!r} cannot run {name}: {why}")
        return choice
    if device != "cuda":
        return "reference"
    if not _has_float64(tensors):  # the GPU kernels compute in fp32 at most: float64 -> NumPy
        for candidate in ("triton", "cupy"):
            if _why_not(candidate, device) is None and _has_pair(candidate, name):
                return candidate
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"gpudnn: no GPU kernel can run {name} here (float64 tensors, or no kernel "
                      "for this op); falling back to the NumPy reference on the host (slow)",
                      RuntimeWarning, stacklevel=3)
    return "reference"


def _has_float64(tensors: tuple[Any, ...]) -> bool:
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
            return True
        if isinstance(t, (list, tuple)) and _has_float64(tuple(t)):
            return True
    return False


def launcher(name: str, *tensors: Any, backend: str | None = None) -> Callable:
    """Launcher ``name`` of ``backend``, or of the backend selected for these tensors.

    An autograd Function resolves its forward's backend once (``resolve``), keeps it and passes
    it here for the backward: a backward must never re-read the selection (autograd may run it
    outside the forward's ``use_backend`` block, on its own thread) and the forward's ``saved``
    is only meaningful to the same backend."""
    if backend is None:
        backend = resolve(name, *tensors)
    else:
        backend = _check_name(backend)
        if backend == "auto":
            raise ValueError("launcher: backend= names the backend to use, not 'auto'")
        if name not in LAUNCHERS:
            raise KeyError(f"unknown launcher {name!r}")
    fn = _find(backend, name)
    if fn is None:
        raise RuntimeError(f"gpudnn backend {backend!r} has no kernel for {name} (an op's "
                           "backward runs on the backend its forward ran on)")
    return fn


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
    float32 when ``float32`` (an output that launchers.FLOAT32_OUTPUTS keeps in float32)."""
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


def _numpy_adapter(fn: Callable) -> Callable:
    """Wrap a NumPy launcher so that it takes and returns torch tensors."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        back: list = []
        like = _first_tensor(args)
        nargs = tuple(_to_numpy(a, back) for a in args)
        nkwargs = {k: _to_numpy(v, back) for k, v in kwargs.items()}
        out = fn(*nargs, **nkwargs)
        for tensor, arr in back:  # in-place updates of tensors that were copied
            _copy_back_if_changed(tensor, arr)
        if isinstance(out, tuple) and fn.__name__ in FLOAT32_OUTPUTS:
            keep = FLOAT32_OUTPUTS[fn.__name__]
            return tuple(_to_torch(o, like, i in keep) for i, o in enumerate(out))
        return _to_torch(out, like)

    wrapper.__wrapped_numpy__ = fn
    return wrapper
