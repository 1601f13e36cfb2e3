"""Memory-layout predicates shared by the Triton and CuPy launchers."""
from __future__ import annotations

import torch


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
