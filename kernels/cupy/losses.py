"""CuPy launchers of the losses (``losses.cu``): cross-entropy over class indices (one block per
row, online log-sum-exp), BCE-with-logits and MSE (elementwise), and one single-block reduction
for "sum" / "mean" (deterministic; "mean" of cross-entropy divides by the non-ignored rows)."""
from __future__ import annotations

import torch

from .. import alloc
from ._runtime import blocks_for, f32, i32, i64, launch, require_cuda, same_dtype, suffix, \
    threads_per_row, THREADS

REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}  # Reduction in losses.cu
BCE_WITH_LOGITS, MSE = 0, 1  # PointwiseLoss in losses.cu
REDUCE_THREADS = 1024


def _reduction(op: str, reduction: str) -> int:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return REDUCTIONS[reduction]


def _reduce(s: str, device, values, n: int, target, ignore_index: int, out, count_out,
            mean: bool) -> None:
    launch("losses", f"reduce_loss_{s}", device, (1,), (REDUCE_THREADS,),
           (values, i64(n), target, i64(ignore_index), out, count_out, i32(mean)))


def _check_cross_entropy(op: str, logits: torch.Tensor, target: torch.Tensor) -> str:
    s = suffix(op, "logits", logits)
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"{op}: logits must be [N, C] with C >= 1, got {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor) or target.dtype != torch.int64:
        raise TypeError(f"{op}: target must be an int64 tensor of class indices")
    if tuple(target.shape) != (logits.shape[0],):
        raise ValueError(f"{op}: target must be [{logits.shape[0]}], got {tuple(target.shape)}")
    return s


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                          reduction: str):
    s = _check_cross_entropy("cross_entropy_forward", logits, target)
    mode = _reduction("cross_entropy_forward", reduction)
    device = require_cuda("cross_entropy_forward", logits=logits, target=target)
    logits, target = logits.contiguous(), target.contiguous()
    rows, cols = logits.shape
    lse = alloc.empty((rows,), dtype=torch.float32, device=device)
    if mode == REDUCTIONS["none"]:
        loss, row_loss = alloc.empty((rows,), dtype=logits.dtype, device=device), None
    else:
        loss = alloc.empty((), dtype=logits.dtype, device=device)
        row_loss = alloc.empty((rows,), dtype=torch.float32, device=device)
    if rows:
        launch("losses", f"cross_entropy_forward_{s}", device, (rows,), (threads_per_row(cols),),
               (logits, target, row_loss, loss if row_loss is None else None, lse, i32(cols),
                i64(ignore_index)))
    if row_loss is not None:
        _reduce(s, device, row_loss, rows, target, ignore_index, loss, None,
                mode == REDUCTIONS["mean"])
    return loss, lse


def cross_entropy_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                           lse: torch.Tensor, ignore_index: int, reduction: str) -> torch.Tensor:
    s = _check_cross_entropy("cross_entropy_backward", logits, target)
    mode = _reduction("cross_entropy_backward", reduction)
    rows, cols = logits.shape
    expected = (rows,) if mode == REDUCTIONS["none"] else ()
    if tuple(grad_loss.shape) != expected or tuple(lse.shape) != (rows,):
        raise ValueError(f"cross_entropy_backward: grad_loss must be {expected} and lse "
                         f"({rows},), got {tuple(grad_loss.shape)} and {tuple(lse.shape)}")
    same_dtype("cross_entropy_backward", grad_loss=grad_loss, logits=logits)
    device = require_cuda("cross_entropy_backward", grad_loss=grad_loss, logits=logits,
                          target=target, lse=lse)
    logits, target = logits.contiguous(), target.contiguous()
    grad_logits = alloc.empty_like(logits)
    count = None
    if mode == REDUCTIONS["mean"]:
        count = alloc.empty((), dtype=torch.float32, device=device)
        _reduce(s, device, None, rows, target, ignore_index, None, count, False)
    if rows:
        launch("losses", f"cross_entropy_backward_{s}", device, (rows,),
               (threads_per_row(cols),),
               (grad_loss.contiguous(), logits, target, lse.float().contiguous(), count,
                grad_logits, i32(cols), i64(ignore_index), i32(mode)))
    return grad_logits


def _check_pointwise(op: str, x: torch.Tensor, target: torch.Tensor) -> str:
    s = suffix(op, "x", x)
    suffix(op, "target", target)
    same_dtype(op, x=x, target=target)
    if x.shape != target.shape:
        raise ValueError(f"{op}: x {tuple(x.shape)} and target {tuple(target.shape)} differ in "
                         "shape")
    return s


def _pointwise_forward(op: str, kind: int, x: torch.Tensor, target: torch.Tensor,
                       reduction: str) -> torch.Tensor:
    s = _check_pointwise(op, x, target)
    mode = _reduction(op, reduction)
    device = require_cuda(op, x=x, target=target)
    x, target = x.contiguous(), target.contiguous()
    n = x.numel()
    if mode == REDUCTIONS["none"]:
        out, values = alloc.empty_like(x), None
    else:
        out = alloc.empty((), dtype=x.dtype, device=device)
        values = alloc.empty((n,), dtype=torch.float32, device=device)
    if n:
        launch("losses", f"pointwise_loss_forward_{s}", device, (blocks_for(n),), (THREADS,),
               (x, target, values, out if values is None else None, i64(n), i32(kind)))
    if values is not None:  # also for n == 0: sum 0, mean NaN, as torch
        _reduce(s, device, values, n, None, 0, out, None, mode == REDUCTIONS["mean"])
    return out


def _pointwise_backward(op: str, kind: int, grad_loss: torch.Tensor, x: torch.Tensor,
                        target: torch.Tensor, reduction: str, needs):
    s = _check_pointwise(op, x, target)
    mode = _reduction(op, reduction)
    expected = tuple(x.shape) if mode == REDUCTIONS["none"] else ()
    if tuple(grad_loss.shape) != expected:
        raise ValueError(f"{op}: grad_loss must be {expected}, got {tuple(grad_loss.shape)}")
    same_dtype(op, grad_loss=grad_loss, x=x)
    device = require_cuda(op, grad_loss=grad_loss, x=x, target=target)
    need_x, need_t = (tuple(needs) + (False, False))[:2]
    x, target = x.contiguous(), target.contiguous()
    grad_x = alloc.empty_like(x) if need_x else None
    grad_t = alloc.empty_like(x) if need_t else None
    n = x.numel()
    if n and (need_x or need_t):
        launch("losses", f"pointwise_loss_backward_{s}", device, (blocks_for(n),), (THREADS,),
               (grad_loss.contiguous(), x, target, grad_x, grad_t, i64(n), i32(kind), i32(mode),
                f32(n)))
    return grad_x, grad_t


def bce_with_logits_forward(x, target, reduction):
    return _pointwise_forward("bce_with_logits_forward", BCE_WITH_LOGITS, x, target, reduction)


def bce_with_logits_backward(grad_loss, x, target, reduction, needs):
    return _pointwise_backward("bce_with_logits_backward", BCE_WITH_LOGITS, grad_loss, x, target,
                               reduction, needs)


def mse_loss_forward(x, target, reduction):
    return _pointwise_forward("mse_loss_forward", MSE, x, target, reduction)


def mse_loss_backward(grad_loss, x, target, reduction, needs):
    return _pointwise_backward("mse_loss_backward", MSE, grad_loss, x, target, reduction, needs)
