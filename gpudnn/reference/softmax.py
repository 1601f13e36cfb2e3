"""NumPy reference of softmax and log_softmax over any dim.

Rows are shifted by their maximum (stable for huge values). As in torch: a row whose maximum is
-inf (all -inf) or +inf, or that holds a NaN, becomes NaN; other -inf entries give 0 (softmax)
and -inf (log_softmax).
"""
from __future__ import annotations

import numpy as np


def softmax_forward(x: np.ndarray, dim: int, log: bool) -> np.ndarray:
    if x.ndim == 0:  # a scalar is a row of one, as torch treats it
        return softmax_forward(x.reshape(1), 0, log).reshape(())
    if x.shape[dim] == 0:  # no rows to normalize (np.max has no identity)
        return x.copy(order="K")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        shifted = x - np.max(x, axis=dim, keepdims=True)
        exp = np.exp(shifted)
        total = np.sum(exp, axis=dim, keepdims=True)
        if log:
            return shifted - np.log(total)
        return exp / total


def softmax_backward(grad_y: np.ndarray, y: np.ndarray, dim: int, log: bool) -> np.ndarray:
    """softmax: y * (g - sum(g * y)); log_softmax: g - exp(y) * sum(g)."""
    if y.ndim == 0:
        return softmax_backward(grad_y.reshape(1), y.reshape(1), 0, log).reshape(())
    with np.errstate(invalid="ignore", over="ignore"):
        if log:
            return grad_y - np.exp(y) * np.sum(grad_y, axis=dim, keepdims=True)
        return y * (grad_y - np.sum(grad_y * y, axis=dim, keepdims=True))
