"""Output allocation for every GPU launcher (Triton and CuPy).

Launchers allocate outputs through ``empty`` / ``empty_like`` here, never ``torch.empty``
directly, so that tests can poison every output with NaN (``with poison_outputs():``) and then
check that a kernel wrote every element it owns.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch

_poison = False


@contextlib.contextmanager
def poison_outputs(enabled: bool = True) -> Iterator[None]:
    global _poison
    previous, _poison = _poison, enabled
    try:
        yield
    finally:
        _poison = previous


def _fill(t: torch.Tensor) -> torch.Tensor:
    if _poison and t.numel():
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.dtype == torch.bool:
            t.fill_(True)
        else:  # an implausible value of the dtype's own range
            t.fill_(torch.iinfo(t.dtype).min + 7)
    return t


def empty(*size, **kwargs) -> torch.Tensor:
    return _fill(torch.empty(*size, **kwargs))


def empty_like(t: torch.Tensor, **kwargs) -> torch.Tensor:
    return _fill(torch.empty_like(t, **kwargs))


def empty_strided(size, stride, **kwargs) -> torch.Tensor:
    return _fill(torch.empty_strided(size, stride, **kwargs))
