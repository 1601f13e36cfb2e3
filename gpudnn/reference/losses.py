"""NumPy reference of the losses: cross-entropy (class indices or class probabilities, with class
weights and label smoothing), NLL, BCE (probabilities), BCE-with-logits (with weight and
pos_weight), MSE.

Reductions: "none" (per element / row), "sum", "mean". The means divide as torch's do:
cross-entropy and NLL with class indices by the summed weights of the non-ignored rows' targets
(their count without weights; NaN when that is 0: every row ignored, or zero-weight classes
only), cross-entropy with probabilities by the number of rows, the others by the number of
elements (NaN when empty). A class index outside [0, C) that is not ignore_index gives NaN (the
GPU kernels cannot raise; the public functions raise torch's IndexError before them in eager).
"""
from __future__ import annotations

import numpy as np

# torch's clamp of BCE's logs and its floor of the BCE gradient's denominator
BCE_LOG_FLOOR = -100.0
BCE_EPSILON = 1e-12


def _reduce(values: np.ndarray, reduction: str, count) -> np.ndarray:
    if reduction == "none":
        return values
    total = np.sum(values)
    if reduction == "sum":
        return np.asarray(total, dtype=values.dtype)
    if reduction == "mean":  # NaN over nothing or zero weight: torch's label-smoothing mean
        # adds the NLL part's 0 / 0 to the smoothing part's x / 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / values.dtype.type(count) if count else np.nan
            return np.asarray(mean, dtype=values.dtype)
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _scale_of_grad(grad_loss: np.ndarray, reduction: str, count, dtype) -> np.ndarray:
    """dloss/dvalues, broadcastable to the per-element values."""
    g = np.asarray(grad_loss, dtype=dtype)
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return g / dtype.type(count)
    return g


def _class_weights(weight, classes: int, dtype) -> np.ndarray:
    return np.ones(classes, dtype) if weight is None else np.asarray(weight, dtype=dtype)


# --- class-index targets: cross-entropy and NLL --------------------------------------------------

def _targets(target: np.ndarray, ignore_index: int, classes: int):
    """(valid: not ignored, in_range: a class of [0, classes), safe: an index to gather with)."""
    valid = target != ignore_index
    in_range = (target >= 0) & (target < classes)
    return valid, in_range, np.where(valid & in_range, target, 0)


def _target_weights(target, ignore_index, weight, classes, dtype):
    """(valid, in_range, safe, w: the class weights, w_t: each row's target weight, 0 where
    ignored) -- sum(w_t) is the mean's denominator."""
    valid, in_range, safe = _targets(target, ignore_index, classes)
    w = _class_weights(weight, classes, dtype)
    w_t = np.where(valid, w[safe] if classes else 0.0, 0.0).astype(dtype)
    return valid, in_range, safe, w, w_t


def _peak_and_log_sum(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, C] -> (row maximum m [N], log(sum(exp(logits - m))) [N]): huge logits do not overflow.
    A row of -inf only or with NaN / +inf gives NaN, as torch's log_softmax."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        peak = np.max(logits, axis=1)
        return peak, np.log(np.sum(np.exp(logits - peak[:, None]), axis=1))


def _neg_log_probs(logits, peak, log_sum):
    """-log_softmax(logits) = (m - x) + log(s), as torch's log_softmax rounds it."""
    with np.errstate(invalid="ignore"):
        return (peak[:, None] - logits) + log_sum[:, None]


def cross_entropy_forward(logits: np.ndarray, target: np.ndarray, ignore_index: int,
                          reduction: str, weight: np.ndarray | None = None,
                          label_smoothing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """logits [N, C] (C >= 1), target [N] int, weight [C] or None -> (loss, lse [N]);
    loss_i = (1 - eps) w[t_i] (m_i - logits[i, t_i] + log s_i)
             + eps / C sum_c w_c (m_i - logits[i, c] + log s_i)   (0 where t_i is ignored)
    with m_i the row maximum and s_i = sum(exp(logits[i] - m_i)) (lse_i - logits[i, t_i] would
    lose the loss to the rounding of lse_i at 1e4-scale logits); eps = label_smoothing."""
    dtype = logits.dtype
    n, classes = logits.shape
    peak, log_sum = _peak_and_log_sum(logits)
    valid, in_range, safe, w, w_t = _target_weights(target, ignore_index, weight, classes, dtype)
    picked = logits[np.arange(n), safe]
    with np.errstate(invalid="ignore", over="ignore"):
        loss = w[safe] * ((peak - picked) + log_sum)
        if label_smoothing:
            smooth = np.sum(w * _neg_log_probs(logits, peak, log_sum), axis=1)
            loss = (1.0 - label_smoothing) * loss + (label_smoothing / classes) * smooth
        per_row = np.where(valid, np.where(in_range, loss, np.nan), 0.0).astype(dtype)
        lse = peak + log_sum
    return _reduce(per_row, reduction, np.sum(w_t)), lse


def cross_entropy_backward(grad_loss: np.ndarray, logits: np.ndarray, target: np.ndarray,
                           lse: np.ndarray, ignore_index: int, reduction: str,
                           weight: np.ndarray | None = None,
                           label_smoothing: float = 0.0) -> np.ndarray:
    """grad_logits [N, C] = (p - onehot(t)) ((1 - eps) w_t g) + (p W - w) (eps / C g), with
    p = softmax(logits), W = sum(w), g = dloss/dloss_i (for "mean" divided by sum(w_t)) and 0 on
    ignored rows: multiplied, as torch's log_softmax backward does, so that an ignored row of NaN
    (or of -inf only) gets NaN and any other ignored row 0; the two terms apart, so that a
    zero-weight target under a mean over zero weight gives torch's NaN (0 * inf)."""
    dtype = logits.dtype
    n, classes = logits.shape
    valid, in_range, safe, w, w_t = _target_weights(target, ignore_index, weight, classes, dtype)
    scale = _scale_of_grad(grad_loss, reduction, np.sum(w_t), dtype)
    # selected, not multiplied: a NaN scale (mean over no rows) meets ignored rows only
    g = np.where(valid, np.broadcast_to(scale, valid.shape), 0.0).astype(dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        p = np.exp(logits - lse[:, None].astype(dtype))
        onehot = np.zeros_like(p)
        onehot[np.arange(n), safe] = valid & in_range
        eps = label_smoothing
        grad = (p - onehot) * ((1.0 - eps) * w_t * g)[:, None]
        if eps:
            grad = grad + (p * np.sum(w) - w) * ((eps / classes) * g)[:, None]
    return grad.astype(dtype)


def nll_loss_forward(log_probs: np.ndarray, target: np.ndarray, ignore_index: int,
                     reduction: str, weight: np.ndarray | None = None) -> np.ndarray:
    """log_probs [N, C], target [N] int -> loss_i = -log_probs[i, t_i] w[t_i] (0 where ignored)."""
    dtype = log_probs.dtype
    n, classes = log_probs.shape
    valid, in_range, safe, w, w_t = _target_weights(target, ignore_index, weight, classes, dtype)
    with np.errstate(invalid="ignore"):
        loss = -log_probs[np.arange(n), safe] * w[safe] if classes else np.zeros(n, dtype)
        per_row = np.where(valid, np.where(in_range, loss, np.nan), 0.0).astype(dtype)
    return _reduce(per_row, reduction, np.sum(w_t))


def nll_loss_backward(grad_loss: np.ndarray, log_probs: np.ndarray, target: np.ndarray,
                      ignore_index: int, reduction: str,
                      weight: np.ndarray | None = None) -> np.ndarray:
    """grad [N, C]: -w[t_i] g_i at (i, t_i), 0 elsewhere and on ignored rows (torch's scatter:
    a zero-weight target under a mean over zero weight gets NaN there)."""
    dtype = log_probs.dtype
    n, classes = log_probs.shape
    valid, in_range, safe, w, w_t = _target_weights(target, ignore_index, weight, classes, dtype)
    scale = _scale_of_grad(grad_loss, reduction, np.sum(w_t), dtype)
    grad = np.zeros(log_probs.shape, dtype)
    rows = np.nonzero(valid & in_range)[0]
    with np.errstate(invalid="ignore", over="ignore"):
        grad[rows, safe[rows]] = -w[safe[rows]] * np.broadcast_to(scale, valid.shape)[rows]
    return grad


# --- class-probability targets -------------------------------------------------------------------

def _smoothed(target: np.ndarray, label_smoothing: float) -> np.ndarray:
    if not label_smoothing:
        return target
    return target * (1.0 - label_smoothing) + label_smoothing / target.shape[1]


def cross_entropy_probs_forward(logits: np.ndarray, target: np.ndarray, reduction: str,
                                weight: np.ndarray | None = None, label_smoothing: float = 0.0
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """logits, target [N, C] (class probabilities) -> (loss, row max m [N], log(s) [N]: s the
    sum of exp(logits - m); backward forms log_p = (x - m) - log(s) from them, as torch's
    log_softmax rounds it: x - lse would lose the target gradient to the rounding of lse at
    1e4-scale logits); loss_i = -sum_c log_p[i, c] q[i, c] w_c with q = t (1 - eps) + eps / C
    (torch's product order: a 0 probability at a -inf logit gives NaN, as torch); "mean" divides
    by N."""
    dtype = logits.dtype
    n, classes = logits.shape
    peak, log_sum = _peak_and_log_sum(logits)
    w = _class_weights(weight, classes, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        log_p = -_neg_log_probs(logits, peak, log_sum)
        per_row = (-np.sum(log_p * _smoothed(target, label_smoothing) * w, axis=1)).astype(dtype)
    return _reduce(per_row, reduction, n), peak, log_sum


def cross_entropy_probs_backward(grad_loss: np.ndarray, logits: np.ndarray, target: np.ndarray,
                                 row_max: np.ndarray, log_sum: np.ndarray, reduction: str,
                                 needs: tuple, weight: np.ndarray | None = None,
                                 label_smoothing: float = 0.0):
    """-> (grad_logits = (p sum_c(w q) - w q) g, grad_target = -w (1 - eps) log_p g), each None
    unless ``needs`` it."""
    dtype = logits.dtype
    n, classes = logits.shape
    w = _class_weights(weight, classes, dtype)
    g = np.broadcast_to(_scale_of_grad(grad_loss, reduction, n, dtype), (n,))[:, None]
    grad_x = grad_t = None
    with np.errstate(invalid="ignore", over="ignore"):
        log_p = -_neg_log_probs(logits, row_max.astype(dtype), log_sum.astype(dtype))
        if needs[0]:
            wq = w * _smoothed(target, label_smoothing)
            grad_x = ((np.exp(log_p) * np.sum(wq, axis=1)[:, None] - wq) * g).astype(dtype)
        if needs[1]:
            grad_t = (-(w * (1.0 - label_smoothing)) * log_p * g).astype(dtype)
    return grad_x, grad_t


# --- binary cross-entropy with logits ------------------------------------------------------------

def _log1p_exp_neg_abs(x):
    with np.errstate(over="ignore"):
        return np.log1p(np.exp(-np.abs(x)))


def _log_sigmoid(x):
    """min(x, 0) - log1p(exp(-|x|)): no overflow for any |x|."""
    return np.minimum(x, 0.0) - _log1p_exp_neg_abs(x)


def _weighted(loss, weight):
    return loss if weight is None else loss * weight


def bce_with_logits_forward(x: np.ndarray, target: np.ndarray, reduction: str,
                            weight: np.ndarray | None = None,
                            pos_weight: np.ndarray | None = None) -> np.ndarray:
    """loss = ((1 - t) x - min(x, 0)) + log1p(exp(-|x|)), times weight: torch's
    (1 - t) x - log_sigmoid(x) term for term, so that inf and NaN land where torch's do
    (x = -inf: -inf + inf = NaN unless t = 1, where 0 * inf is NaN; x = +inf with t = 1: NaN),
    with log1p added last so that tiny losses
    keep their precision (x = -20, t = 0: 2.06e-9, which -20 - log1p(...) would round away). No
    overflow for any |x|. With pos_weight torch's (1 - t) x - ((pw - 1) t + 1) log_sigmoid(x)
    exactly (an infinite factor meets log_sigmoid(x) whole, as in torch). weight, pos_weight:
    broadcastable to x."""
    with np.errstate(invalid="ignore", over="ignore"):
        if pos_weight is None:
            loss = ((1.0 - target) * x - np.minimum(x, 0.0)) + _log1p_exp_neg_abs(x)
        else:
            loss = (1.0 - target) * x - ((pos_weight - 1.0) * target + 1.0) * _log_sigmoid(x)
        loss = _weighted(loss, weight)
    return _reduce(np.broadcast_to(loss, x.shape).astype(x.dtype), reduction, x.size)


def bce_with_logits_backward(grad_loss: np.ndarray, x: np.ndarray, target: np.ndarray,
                             reduction: str, needs: tuple, weight: np.ndarray | None = None,
                             pos_weight: np.ndarray | None = None):
    """-> (grad_x = ((pw t + 1 - t) sigmoid(x) - pw t) g w,
    grad_target = (log_sigmoid(-x) - pw log_sigmoid(x)) g w (-x g w without pos_weight))."""
    g = _weighted(_scale_of_grad(grad_loss, reduction, x.size, x.dtype), weight)
    grad_x = grad_target = None
    with np.errstate(invalid="ignore", over="ignore"):
        if needs[0]:
            e = np.exp(-np.abs(x))
            sigmoid = np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
            if pos_weight is None:
                grad_x = (sigmoid - target) * g
            else:
                pt = pos_weight * target
                grad_x = ((pt + 1.0 - target) * sigmoid - pt) * g
            grad_x = np.broadcast_to(grad_x, x.shape).astype(x.dtype)
        if needs[1]:
            if pos_weight is None:
                grad_target = -x * g
            else:
                grad_target = (_log_sigmoid(-x) - pos_weight * _log_sigmoid(x)) * g
            grad_target = np.broadcast_to(grad_target, x.shape).astype(x.dtype)
    return grad_x, grad_target


# --- binary cross-entropy on probabilities -------------------------------------------------------

def _in_unit(v):
    return (v >= 0.0) & (v <= 1.0)


def bce_forward(p: np.ndarray, target: np.ndarray, reduction: str,
                weight: np.ndarray | None = None,
                pos_weight: np.ndarray | None = None) -> np.ndarray:
    """loss = ((t - 1) max(log1p(-p), -100) - t max(log(p), -100)) w (torch's formula); NaN
    where p or t is outside [0, 1] (torch raises there in eager; a kernel cannot)."""
    if pos_weight is not None:
        raise ValueError("binary_cross_entropy takes no pos_weight")
    with np.errstate(invalid="ignore", divide="ignore"):
        log_p = np.log(p)
        log_q = np.log1p(-p)
        log_p = np.where(log_p < BCE_LOG_FLOOR, BCE_LOG_FLOOR, log_p)  # NaN stays NaN
        log_q = np.where(log_q < BCE_LOG_FLOOR, BCE_LOG_FLOOR, log_q)
        loss = _weighted((target - 1.0) * log_q - target * log_p, weight)
        loss = np.where(_in_unit(p) & _in_unit(target), loss, np.nan)
    return _reduce(np.broadcast_to(loss, p.shape).astype(p.dtype), reduction, p.size)


def bce_backward(grad_loss: np.ndarray, p: np.ndarray, target: np.ndarray, reduction: str,
                 needs: tuple, weight: np.ndarray | None = None,
                 pos_weight: np.ndarray | None = None):
    """-> (grad_p = (p - t) / max((1 - p) p, 1e-12) g w, grad_target = -log(p / (1 - p)) g w:
    torch's formulas), NaN where p or t is outside [0, 1]."""
    if pos_weight is not None:
        raise ValueError("binary_cross_entropy takes no pos_weight")
    g = _weighted(_scale_of_grad(grad_loss, reduction, p.size, p.dtype), weight)
    ok = _in_unit(p) & _in_unit(target)
    grad_p = grad_target = None
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if needs[0]:
            den = (1.0 - p) * p
            den = np.where(den < BCE_EPSILON, BCE_EPSILON, den)
            grad_p = np.where(ok, (p - target) / den * g, np.nan)
            grad_p = np.broadcast_to(grad_p, p.shape).astype(p.dtype)
        if needs[1]:
            grad_target = np.where(ok, -np.log(p / (1.0 - p)) * g, np.nan)
            grad_target = np.broadcast_to(grad_target, p.shape).astype(p.dtype)
    return grad_p, grad_target


# --- mean squared error --------------------------------------------------------------------------

def _no_weights(op: str, weight, pos_weight) -> None:
    if weight is not None or pos_weight is not None:
        raise ValueError(f"{op} takes no weight or pos_weight")


def mse_loss_forward(x: np.ndarray, target: np.ndarray, reduction: str,
                     weight: np.ndarray | None = None,
                     pos_weight: np.ndarray | None = None) -> np.ndarray:
    _no_weights("mse_loss", weight, pos_weight)
    diff = x - target
    return _reduce(diff * diff, reduction, x.size)


def mse_loss_backward(grad_loss: np.ndarray, x: np.ndarray, target: np.ndarray, reduction: str,
                      needs: tuple, weight: np.ndarray | None = None,
                      pos_weight: np.ndarray | None = None):
    """-> (grad_x = 2 (x - t) g, grad_target = -grad_x)."""
    _no_weights("mse_loss", weight, pos_weight)
    grad_x = (2.0 * (x - target) * _scale_of_grad(grad_loss, reduction, x.size, x.dtype))
    grad_x = grad_x.astype(x.dtype)
    return (grad_x if needs[0] else None), (-grad_x if needs[1] else None)
