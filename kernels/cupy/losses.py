"""CuPy launchers of the losses (``losses.cu``): cross-entropy over class indices or class
probabilities with class weights and label smoothing (one block per row, online log-sum-exp),
NLL (a gather per row), BCE-with-logits, BCE and MSE (elementwise, weights broadcast here), and
one single-block reduction for "sum" / "mean" (deterministic; a class-index mean divides by the
summed weights of the non-ignored targets)."""
from __future__ import annotations

import torch

from .. import alloc
from ..layout import contiguous
from ._runtime import blocks_for, f32, i32, i64, launch, require_cuda, same_dtype, suffix, \
    threads_per_row, THREADS

REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}  # Reduction in losses.cu
BCE_WITH_LOGITS, MSE, BCE = 0, 1, 2  # PointwiseLoss in losses.cu
REDUCE_THREADS = 1024


def _reduction(op: str, reduction: str) -> int:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return REDUCTIONS[reduction]


def _reduce(s: str, device, values, dens, n: int, out, den_out, mean: bool) -> None:
    launch("losses", f"reduce_loss_{s}", device, (1,), (REDUCE_THREADS,),
           (values, dens, i64(n), out, den_out, i32(mean)))


def _check_rows(op: str, logits: torch.Tensor, target: torch.Tensor, weight, probs: bool) -> str:
    s = suffix(op, "logits", logits)
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"{op}: logits must be [N, C] with C >= 1, got {tuple(logits.shape)}")
    if probs:
        suffix(op, "target", target)
        same_dtype(op, logits=logits, target=target)
        if target.shape != logits.shape:
            raise ValueError(f"{op}: target probabilities must be {tuple(logits.shape)}, got "
                             f"{tuple(target.shape)}")
    else:
        if not isinstance(target, torch.Tensor) or target.dtype != torch.int64:
            raise TypeError(f"{op}: target must be an int64 tensor of class indices")
        if tuple(target.shape) != (logits.shape[0],):
            raise ValueError(f"{op}: target must be [{logits.shape[0]}], got "
                             f"{tuple(target.shape)}")
    if weight is not None:
        suffix(op, "weight", weight)
        same_dtype(op, logits=logits, weight=weight)
        if tuple(weight.shape) != (logits.shape[1],):
            raise ValueError(f"{op}: weight must be [{logits.shape[1]}], got "
                             f"{tuple(weight.shape)}")
    return s


def _ce_forward(op, logits, target, weight, label_smoothing, ignore_index, reduction, probs):
    s = _check_rows(op, logits, target, weight, probs)
    mode = _reduction(op, reduction)
    device = require_cuda(op, logits=logits, target=target, weight=weight)
    logits, target, weight = contiguous(logits, target, weight)
    rows, cols = logits.shape
    lse = alloc.empty((rows,), dtype=torch.float32, device=device)
    log_sum = alloc.empty((rows,), dtype=torch.float32, device=device) if probs else None
    if mode == REDUCTIONS["none"]:
        loss = alloc.empty((rows,), dtype=logits.dtype, device=device)
        row_loss = row_den = None
    else:
        loss = alloc.empty((), dtype=logits.dtype, device=device)
        row_loss = alloc.empty((rows,), dtype=torch.float32, device=device)
        row_den = alloc.empty((rows,), dtype=torch.float32, device=device)
    if rows:
        launch("losses", f"cross_entropy_forward_{s}", device, (rows,), (threads_per_row(cols),),
               (logits, None if probs else target, target if probs else None, weight, row_loss,
                loss if row_loss is None else None, row_den, lse, log_sum, i32(cols),
                i64(ignore_index),
                f32(label_smoothing)))
    if row_loss is not None:
        _reduce(s, device, row_loss, row_den, rows, loss, None, mode == REDUCTIONS["mean"])
    return (loss, lse, log_sum) if probs else (loss, lse)


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                          reduction: str, weight: torch.Tensor | None = None,
                          label_smoothing: float = 0.0):
    return _ce_forward("cross_entropy_forward", logits, target, weight, label_smoothing,
                       ignore_index, reduction, False)


def cross_entropy_probs_forward(logits: torch.Tensor, target: torch.Tensor, reduction: str,
                                weight: torch.Tensor | None = None,
                                label_smoothing: float = 0.0):
    return _ce_forward("cross_entropy_probs_forward", logits, target, weight, label_smoothing, 0,
                       reduction, True)


def _target_weight_sum(s, device, target, weight, cols: int, ignore_index: int):
    """0-d fp32: the summed weights of the non-ignored targets (the class-index mean's
    denominator), from NLL's gather kernel writing the per-row target weights only."""
    rows = target.shape[0]
    dens = alloc.empty((rows,), dtype=torch.float32, device=device)
    if rows:
        launch("losses", f"nll_loss_forward_{s}", device, (blocks_for(rows),), (THREADS,),
               (None, target, weight, None, None, dens, i64(rows), i32(cols), i64(ignore_index)))
    den = alloc.empty((), dtype=torch.float32, device=device)
    _reduce(s, device, None, dens, rows, None, den, False)
    return den


def _ce_backward(op, grad_loss, logits, target, lse, weight, label_smoothing, ignore_index,
                 reduction, needs, probs=False, nll=False, log_sum=None):
    s = _check_rows(op, logits, target, weight, probs)
    mode = _reduction(op, reduction)
    rows, cols = logits.shape
    expected = (rows,) if mode == REDUCTIONS["none"] else ()
    if tuple(grad_loss.shape) != expected or (not nll and tuple(lse.shape) != (rows,)):
        raise ValueError(f"{op}: grad_loss must be {expected} and lse ({rows},), got "
                         f"{tuple(grad_loss.shape)} and {tuple(lse.shape)}")
    same_dtype(op, grad_loss=grad_loss, logits=logits)
    device = require_cuda(op, grad_loss=grad_loss, logits=logits, target=target, lse=lse,
                          weight=weight)
    need_x, need_t = (tuple(needs) + (False, False))[:2]
    logits, target, weight = contiguous(logits, target, weight)
    grad_logits = alloc.empty_like(logits) if need_x else None
    grad_target = alloc.empty_like(target) if need_t else None
    den = None
    if mode == REDUCTIONS["mean"] and not probs:
        den = _target_weight_sum(s, device, target, weight, cols, ignore_index)
    if rows and (need_x or need_t):
        launch("losses", f"cross_entropy_backward_{s}", device, (rows,),
               (threads_per_row(cols),),
               (grad_loss.contiguous(), logits, None if probs else target,
                target if probs else None, weight, None if nll else lse.float().contiguous(),
                log_sum.float().contiguous() if probs else None, den, grad_logits, grad_target,
                i32(cols), i64(ignore_index), i32(mode), f32(label_smoothing), i32(nll)))
    return grad_logits, grad_target


def cross_entropy_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                           lse: torch.Tensor, ignore_index: int, reduction: str,
                           weight: torch.Tensor | None = None,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    return _ce_backward("cross_entropy_backward", grad_loss, logits, target, lse, weight,
                        label_smoothing, ignore_index, reduction, (True, False))[0]


def cross_entropy_probs_backward(grad_loss, logits, target, row_max, log_sum, reduction, needs,
                                 weight=None, label_smoothing: float = 0.0):
    return _ce_backward("cross_entropy_probs_backward", grad_loss, logits, target, row_max,
                        weight, label_smoothing, 0, reduction, needs, probs=True,
                        log_sum=log_sum)


def nll_loss_forward(log_probs: torch.Tensor, target: torch.Tensor, ignore_index: int,
                     reduction: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    s = _check_rows("nll_loss_forward", log_probs, target, weight, False)
    mode = _reduction("nll_loss_forward", reduction)
    device = require_cuda("nll_loss_forward", log_probs=log_probs, target=target, weight=weight)
    log_probs, target, weight = contiguous(log_probs, target, weight)
    rows, cols = log_probs.shape
    if mode == REDUCTIONS["none"]:
        out, row_loss, row_den = alloc.empty((rows,), dtype=log_probs.dtype, device=device), \
            None, None
    else:
        out = alloc.empty((), dtype=log_probs.dtype, device=device)
        row_loss = alloc.empty((rows,), dtype=torch.float32, device=device)
        row_den = alloc.empty((rows,), dtype=torch.float32, device=device)
    if rows:
        launch("losses", f"nll_loss_forward_{s}", device, (blocks_for(rows),), (THREADS,),
               (log_probs, target, weight, row_loss, out if row_loss is None else None, row_den,
                i64(rows), i32(cols), i64(ignore_index)))
    if row_loss is not None:
        _reduce(s, device, row_loss, row_den, rows, out, None, mode == REDUCTIONS["mean"])
    return out


def nll_loss_backward(grad_loss: torch.Tensor, log_probs: torch.Tensor, target: torch.Tensor,
                      ignore_index: int, reduction: str,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    return _ce_backward("nll_loss_backward", grad_loss, log_probs, target, log_probs, weight,
                        0.0, ignore_index, reduction, (True, False), nll=True)[0]


def _check_pointwise(op: str, x: torch.Tensor, target: torch.Tensor, weight, pos_weight,
                     kind: int) -> tuple:
    """-> (suffix, weight and pos_weight broadcast to x's shape, contiguous)."""
    s = suffix(op, "x", x)
    suffix(op, "target", target)
    same_dtype(op, x=x, target=target)
    if x.shape != target.shape:
        raise ValueError(f"{op}: x {tuple(x.shape)} and target {tuple(target.shape)} differ in "
                         "shape")
    if kind == MSE and weight is not None or kind != BCE_WITH_LOGITS and pos_weight is not None:
        raise ValueError(f"{op} takes no {'weight' if kind == MSE else 'pos_weight'}")
    expanded = []
    for name, w in (("weight", weight), ("pos_weight", pos_weight)):
        if w is not None:
            suffix(op, name, w)
            same_dtype(op, x=x, **{name: w})
            if torch.broadcast_shapes(w.shape, x.shape) != x.shape:
                raise ValueError(f"{op}: {name} {tuple(w.shape)} does not broadcast to x "
                                 f"{tuple(x.shape)}")
            w = w.expand(x.shape).contiguous()
        expanded.append(w)
    return (s, *expanded)


def _pointwise_forward(op: str, kind: int, x: torch.Tensor, target: torch.Tensor,
                       reduction: str, weight=None, pos_weight=None) -> torch.Tensor:
    s, weight, pos_weight = _check_pointwise(op, x, target, weight, pos_weight, kind)
    mode = _reduction(op, reduction)
    device = require_cuda(op, x=x, target=target, weight=weight, pos_weight=pos_weight)
    x, target = x.contiguous(), target.contiguous()
    n = x.numel()
    if mode == REDUCTIONS["none"]:
        out, values = alloc.empty_like(x), None
    else:
        out = alloc.empty((), dtype=x.dtype, device=device)
        values = alloc.empty((n,), dtype=torch.float32, device=device)
    if n:
        launch("losses", f"pointwise_loss_forward_{s}", device, (blocks_for(n),), (THREADS,),
               (x, target, weight, pos_weight, values, out if values is None else None, i64(n),
                i32(kind)))
    if values is not None:  # also for n == 0: sum 0, mean NaN, as torch
        _reduce(s, device, values, None, n, out, None, mode == REDUCTIONS["mean"])
    return out


def _pointwise_backward(op: str, kind: int, grad_loss: torch.Tensor, x: torch.Tensor,
                        target: torch.Tensor, reduction: str, needs, weight=None,
                        pos_weight=None):
    s, weight, pos_weight = _check_pointwise(op, x, target, weight, pos_weight, kind)
    mode = _reduction(op, reduction)
    expected = tuple(x.shape) if mode == REDUCTIONS["none"] else ()
    if tuple(grad_loss.shape) != expected:
        raise ValueError(f"{op}: grad_loss must be {expected}, got {tuple(grad_loss.shape)}")
    same_dtype(op, grad_loss=grad_loss, x=x)
    device = require_cuda(op, grad_loss=grad_loss, x=x, target=target, weight=weight,
                          pos_weight=pos_weight)
    need_x, need_t = (tuple(needs) + (False, False))[:2]
    x, target = x.contiguous(), target.contiguous()
    grad_x = alloc.empty_like(x) if need_x else None
    grad_t = alloc.empty_like(x) if need_t else None
    n = x.numel()
    if n and (need_x or need_t):
        launch("losses", f"pointwise_loss_backward_{s}", device, (blocks_for(n),), (THREADS,),
               (grad_loss.contiguous(), x, target, weight, pos_weight, grad_x, grad_t, i64(n),
                i32(kind), i32(mode), f32(n)))
    return grad_x, grad_t


def bce_with_logits_forward(x, target, reduction, weight=None, pos_weight=None):
    return _pointwise_forward("bce_with_logits_forward", BCE_WITH_LOGITS, x, target, reduction,
                              weight, pos_weight)


def bce_with_logits_backward(grad_loss, x, target, reduction, needs, weight=None,
                             pos_weight=None):
    return _pointwise_backward("bce_with_logits_backward", BCE_WITH_LOGITS, grad_loss, x, target,
                               reduction, needs, weight, pos_weight)


def bce_forward(p, target, reduction, weight=None, pos_weight=None):
    return _pointwise_forward("bce_forward", BCE, p, target, reduction, weight, pos_weight)


def bce_backward(grad_loss, p, target, reduction, needs, weight=None, pos_weight=None):
    return _pointwise_backward("bce_backward", BCE, grad_loss, p, target, reduction, needs,
                               weight, pos_weight)


def mse_loss_forward(x, target, reduction, weight=None, pos_weight=None):
    return _pointwise_forward("mse_loss_forward", MSE, x, target, reduction, weight, pos_weight)


def mse_loss_backward(grad_loss, x, target, reduction, needs, weight=None, pos_weight=None):
    return _pointwise_backward("mse_loss_backward", MSE, grad_loss, x, target, reduction, needs,
                               weight, pos_weight)
