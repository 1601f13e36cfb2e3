"""NumPy reference of the embedding lookup, forward (a gather) and backward (a scatter-add).

``weight`` [V, D], ``ids`` [N] integer. Forward: ``y[n] = weight[ids[n]]``; an id outside
[0, V) gives a row of NaN (the public function raises torch's IndexError before any backend runs
in eager mode; a compiled graph cannot branch on data, so every backend makes such an id visible
instead of reading out of bounds). Backward: ``grad_weight[v] = sum of grad_y[n] over ids[n] ==
v`` (divided by the number of such n with ``scale_grad_by_freq``), zero for ``padding_idx`` and
for rows no id names; ids out of range contribute nothing.
"""
from __future__ import annotations

import numpy as np


def _valid(ids: np.ndarray, num_weights: int) -> np.ndarray:
    return (ids >= 0) & (ids < num_weights)


def embedding_forward(weight: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """weight [V, D], ids [N] -> y [N, D] in weight's dtype (NaN rows for ids out of range)."""
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    valid = _valid(ids, weight.shape[0])
    y = weight[np.where(valid, ids, 0)] if weight.shape[0] else \
        np.zeros((ids.size, weight.shape[1]), dtype=weight.dtype)
    y = np.array(y, dtype=weight.dtype)
    y[~valid] = np.nan
    return y


def embedding_backward(grad_y: np.ndarray, ids: np.ndarray, num_weights: int,
                       padding_idx: int, scale_grad_by_freq: bool) -> np.ndarray:
    """grad_y [N, D], ids [N] -> grad_weight [num_weights, D] in grad_y's dtype; padding_idx
    normalized to [0, V) or -1 for none. Sums in float64."""
    ids = np.asarray(ids).astype(np.int64).reshape(-1)
    valid = _valid(ids, num_weights)
    grad = np.zeros((num_weights, grad_y.shape[1]), dtype=np.float64)
    np.add.at(grad, ids[valid], grad_y[valid].astype(np.float64))
    if scale_grad_by_freq:
        counts = np.bincount(ids[valid], minlength=num_weights)
        grad /= np.maximum(counts, 1)[:, None]
    if 0 <= padding_idx < num_weights:
        grad[padding_idx] = 0.0
    return grad.astype(grad_y.dtype)
