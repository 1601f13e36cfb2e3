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


def _peak_and_log_sum(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, C] -> (row maximum m [N], log(sum(exp(logits - m))) [N]): huge logits do not overflow.
    A row of -inf only or with NaN / +inf gives NaN, as torch's log_softmax."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        peak = np.max(logits, axis=1)
        return peak, np.log(np.sum(np.exp(logits - peak[:, None]), axis=1))


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, ignore_index: int,
                          reduction: str) -> tuple[np.ndarray, np.ndarray]:
    """logits [N, C] (C >= 1), target [N] int -> (loss, lse [N]);
    loss_i = (m_i - logits[i, target_i]) + log(sum(exp(logits[i] - m_i))) (m_i: the row maximum;
    lse_i - logits[i, target_i] would lose the loss to the rounding of lse_i at 1e4-scale
    logits)."""
    peak, log_sum = _peak_and_log_sum(logits)
    valid, safe = _valid_rows(target, ignore_index)
    picked = logits[np.arange(len(logits)), safe]
    with np.errstate(invalid="ignore"):
        per_row = np.where(valid, (peak - picked) + log_sum, 0.0).astype(logits.dtype)
        lse = peak + log_sum
    return _reduce(per_row, reduction, int(valid.sum())), lse


def cross_entropy_backward(grad_loss: np.ndarray, logits: np.ndarray, target: np.ndarray,
                           lse: np.ndarray, ignore_index: int, reduction: str) -> np.ndarray:
    """grad_logits [N, C] = (softmax(logits) - onehot(target)) * dloss/dloss_i, with
    dloss/dloss_i = 0 on ignored rows: multiplied, as torch's log_softmax backward does, so an
    ignored row of NaN (or of -inf only) gets NaN and any other ignored row 0."""
    valid, safe = _valid_rows(target, ignore_index)
    with np.errstate(invalid="ignore", over="ignore"):
        grad = np.exp(logits - lse[:, None].astype(logits.dtype))
    grad[np.arange(len(logits)), safe] -= valid.astype(grad.dtype)  # no one-hot on ignored rows
    scale = _scale_of_grad(grad_loss, reduction, int(valid.sum()), logits.dtype)
    # selected, not multiplied: a NaN scale (mean over no rows) meets ignored rows only
    row_scale = np.where(valid, np.broadcast_to(scale, valid.shape), 0.0).astype(logits.dtype)
    with np.errstate(invalid="ignore"):
        return (grad * row_scale[:, None]).astype(logits.dtype)


# --- binary cross-entropy with logits ------------------------------------------------------------

def bce_with_logits_forward(x: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    """loss = ((1 - t) x - min(x, 0)) + log1p(exp(-|x|)): torch's (1 - t) x - log_sigmoid(x) term
    for term, so that inf and NaN land where torch's do (x = -inf: -inf + inf = NaN unless t = 1,
    where 0 * inf is NaN; x = +inf with t = 1: NaN), with log1p added last so that tiny losses
    keep their precision (x = -20, t = 0: 2.06e-9, which -20 - log1p(...) would round away). No
    overflow for any |x|."""
    with np.errstate(invalid="ignore", over="ignore"):
        loss = ((1.0 - target) * x - np.minimum(x, 0.0)) + np.log1p(np.exp(-np.abs(x)))
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
