"""NumPy reference of the losses: cross-entropy (class indices), BCE-with-logits, MSE.

Reductions: "none" (per element / row), "sum", "mean" (cross-entropy: over the non-ignored rows,
NaN when there are none, as torch; the others: over all elements, NaN when empty).
"""
from __future__ import annotations

import numpy as np


def _reduce(values: np.ndarray, reduction: str, count) -> np.ndarray:
    if reduction == "none":
        return values
    total = np.sum(values)
    if reduction == "sum":
        return np.asarray(total, dtype=values.dtype)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(total / values.dtype.type(count), dtype=values.dtype)
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _scale_of_grad(grad_loss: np.ndarray, reduction: str, count, dtype) -> np.ndarray:
    """dloss/dvalues, broadcastable to the per-element values."""
    g = np.asarray(grad_loss, dtype=dtype)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return g / dtype.type(count)
    return g


# --- cross-entropy -------------------------------------------------------------------------------

def _valid_rows(target: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    valid = target != ignore_index
    return valid, np.where(valid, target, 0)  # a safe index on ignored rows


def _log_sum_exp(logits: np.ndarray) -> np.ndarray:
    """[N, C] -> [N], shifted by the row maximum so that huge logits do not overflow."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        peak = np.max(logits, axis=1)
        return peak + np.log(np.sum(np.exp(logits - peak[:, None]), axis=1))


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, ignore_index: int,
                          reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """logits [N, C] (C >= 1), target [N] int -> (loss, lse [N]);
    loss_i = lse_i - logits[i, target_i]."""
    lse = _log_sum_exp(logits)
    valid, safe = _valid_rows(target, ignore_index)
    picked = logits[np.arange(len(logits)), safe]
    with np.errstate(invalid="ignore"):
        per_row = np.where(valid, lse - picked, 0.0).astype(logits.dtype)
    return _reduce(per_row, reduction, int(valid.sum())), lse


def cross_entropy_backward(grad_loss: np.ndarray, logits: np.ndarray, target: np.ndarray,
                           lse: np.ndarray, ignore_index: int, reduction: str) -> np.ndarray:
    """grad_logits [N, C] = (softmax(logits) - onehot(target)) * dloss/dloss_i, 0 on ignored rows."""
    valid, safe = _valid_rows(target, ignore_index)
    with np.errstate(invalid="ignore", over="ignore"):
        grad = np.exp(logits - lse[:, None].astype(logits.dtype))
    grad[np.arange(len(logits)), safe] -= 1.0
    scale = _scale_of_grad(grad_loss, reduction, int(valid.sum()), logits.dtype)
    if reduction == "none":
        scale = scale[:, None]
    with np.errstate(invalid="ignore"):  # a NaN scale (mean over no rows) meets ignored rows only
        return np.where(valid[:, None], grad * scale, 0.0).astype(logits.dtype)


# --- binary cross-entropy with logits ------------------------------------------------------------

def bce_with_logits_forward(x: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    """loss = max(x, 0) - x * t + log1p(exp(-|x|)): no overflow for any |x|."""
    loss = np.maximum(x, 0.0) - x * target + np.log1p(np.exp(-np.abs(x)))
    return _reduce(loss.astype(x.dtype), reduction, x.size)


def bce_with_logits_backward(grad_loss: np.ndarray, x: np.ndarray, target: np.ndarray,
                             reduction: str, needs: tuple):
    """-> (grad_x = (sigmoid(x) - t) g, grad_target = -x g)."""
    g = _scale_of_grad(grad_loss, reduction, x.size, x.dtype)
    grad_x = grad_target = None
    if needs[0]:
        e = np.exp(-np.abs(x))
        sigmoid = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        grad_x = ((sigmoid - target) * g).astype(x.dtype)
    if needs[1]:
        grad_target = (-x * g).astype(x.dtype)
    return grad_x, grad_target


# --- mean squared error --------------------------------------------------------------------------

def mse_loss_forward(x: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    diff = x - target
    return _reduce(diff * diff, reduction, x.size)


def mse_loss_backward(grad_loss: np.ndarray, x: np.ndarray, target: np.ndarray, reduction: str,
                      needs: tuple):
    """-> (grad_x = 2 (x - t) g, grad_target = -grad_x)."""
    grad_x = (2.0 * (x - target) * _scale_of_grad(grad_loss, reduction, x.size, x.dtype))
    grad_x = grad_x.astype(x.dtype)
    return (grad_x if needs[0] else None), (-grad_x if needs[1] else None)
