"""Memory-layout predicates shared by the Triton and CuPy launchers."""
from __future__ import annotations

import torch


def contiguous(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """Each tensor contiguous (None stays None): for the per-channel vectors and small
    parameters the kernels index by element offset, which a user's view may stride (a slice) or
    repeat (an expanded zero-stride view)."""
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the elements fill exactly numel slots in some order, so a
    kernel may treat the storage as a flat array (any permutation of a contiguous tensor)."""
    dims = sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True
