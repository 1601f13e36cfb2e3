"""Shared glue of the ops' public functions: argument checks, autocast casts, the (h, w) pair
parser."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, t: torch.Tensor | None, *, ndim: int | Sequence[int] | None = None,
                 floating: bool = True, optional: bool = False) -> None:
    """Raise TypeError/ValueError naming ``name`` when ``t`` is not what an op expects."""
    if t is None:
        if optional:
            return
        raise TypeError(f"{name} must be a tensor, got None")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.dim() not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, "
                             f"got shape {tuple(t.shape)}")


def check_same(op: str, **tensors: torch.Tensor | None) -> None:
    """All given tensors share one device and one dtype (None entries are skipped)."""
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {k: v.device for k, v in present.items()}
    if len(set(devices.values())) > 1:
        raise RuntimeError(f"{op}: tensors on different devices: "
                           + ", ".join(f"{k} on {d}" for k, d in devices.items()))
    dtypes = {k: v.dtype for k, v in present.items()}
    if len(set(dtypes.values())) > 1:
        raise TypeError(f"{op}: dtypes differ: "
                        + ", ".join(f"{k} is {d}" for k, d in dtypes.items()))


def autocast_to_lower(*tensors: torch.Tensor | None) -> tuple:
    """Under torch.autocast, cast floating tensors to the autocast dtype (what torch does for
    linear, conv and lstm); otherwise return them unchanged."""
    ref = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if ref is None:
        return tensors
    device = ref.device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                 for t in tensors)


def autocast_to_float(*tensors: torch.Tensor | None) -> tuple:
    """Under torch.autocast, run in float32 (what torch does for softmax, losses, batch norm)."""
    ref = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if ref is None or not torch.is_autocast_enabled(ref.device.type):
        return tensors
    return tuple(t.float() if isinstance(t, torch.Tensor) and t.dtype in
                 (torch.float16, torch.bfloat16) else t for t in tensors)


def pair(value, name: str) -> tuple[int, int]:
    """An int or a 2-sequence of ints -> (h, w), with a ValueError naming ``name`` otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return (int(value[0]), int(value[1]))
    if isinstance(value, (tuple, list)) and len(value) == 1 and isinstance(value[0], int):
        return (int(value[0]), int(value[0]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


class IndexValueError(IndexError, ValueError):
    """An index out of range (torch raises IndexError there): also a ValueError, so that every
    bad argument gpudnn refuses is a ValueError, TypeError or RuntimeError."""


def check_finite(op: str, **values: float | None) -> None:
    """A ValueError naming the hyper-parameter when one is NaN or infinite (None is skipped): a
    non-finite momentum, eps or learning rate would turn every value it touches into NaN."""
    for name, value in values.items():
        if value is not None and not math.isfinite(float(value)):
            raise ValueError(f"{op}: {name} must be finite, got {value!r}")
