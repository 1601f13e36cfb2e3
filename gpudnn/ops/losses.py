"""Losses as autograd Functions: cross-entropy (class indices), BCE-with-logits, MSE."""
from __future__ import annotations

import warnings

import torch

from ._common import (autocast_to_float, backward_launcher, check_same, check_tensor,
                      forward_launcher)

__all__ = ["CrossEntropyFunction", "PointwiseLossFunction", "cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss"]

REDUCTIONS = ("none", "mean", "sum")


def _reduction(op: str, size_average, reduce, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        # torch's deprecated arguments, mapped (with torch's warning) exactly as torch maps them
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _unsupported(op: str, **options) -> None:
    for name, present in options.items():
        if present:
            raise NotImplementedError(f"{op}: {name} is not supported by gpudnn")


class CrossEntropyFunction(torch.autograd.Function):
    """logits [N, C], target [N] int64 -> loss (0-d, or [N] for reduction "none")."""

    @staticmethod
    def forward(ctx, logits, target, ignore_index: int, reduction: str):
        loss, lse = forward_launcher(ctx, "cross_entropy_forward", logits, target)(
            logits, target, ignore_index, reduction)
        ctx.ignore_index, ctx.reduction = ignore_index, reduction
        ctx.save_for_backward(logits, target, lse)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        logits, target, lse = ctx.saved_tensors
        grad_logits = backward_launcher(ctx, "cross_entropy_backward")(
            grad_loss, logits, target, lse, ctx.ignore_index, ctx.reduction)
        return grad_logits, None, None, None


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """torch.nn.functional.cross_entropy with class-index targets.

    input [C], [N, C] or [N, C, d1, ...]; target [], [N] or [N, d1, ...] (integer classes in
    [0, C) or ``ignore_index``).
    """
    _unsupported("cross_entropy", **{"weight=": weight is not None,
                                     "label_smoothing": label_smoothing != 0.0})
    reduction = _reduction("cross_entropy", size_average, reduce, reduction)
    check_tensor("input", input)
    check_tensor("target", target, floating=False)
    if target.is_floating_point():
        raise NotImplementedError("cross_entropy: probability (floating-point) targets are not "
                                  "supported by gpudnn; pass class indices")
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f"cross_entropy: target must hold integer class indices, got {target.dtype}")
    if input.dim() == 0:
        raise ValueError("cross_entropy: input must have at least 1 dimension (classes), got 0-d")
    class_dim = 0 if input.dim() == 1 else 1
    expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
    if tuple(target.shape) != tuple(expected):
        raise ValueError(f"cross_entropy: target shape {tuple(target.shape)} does not match "
                         f"input shape {tuple(input.shape)} (expected target shape "
                         f"{tuple(expected)})")
    classes = input.shape[class_dim]
    if classes == 0:
        raise ValueError(f"cross_entropy: input shape {tuple(input.shape)} has no classes")
    if input.device != target.device:
        raise RuntimeError(f"cross_entropy: input on {input.device}, target on {target.device}")
    target = target.long()
    out_of_range = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bool(out_of_range.any()):
        bad = target[out_of_range][0].item()
        raise IndexError(f"cross_entropy: target {bad} is out of bounds for {classes} classes")
    (input,) = autocast_to_float(input)
    # the class dim goes last so that the launcher sees [rows, C]
    logits = input.movedim(class_dim, -1).reshape(-1, classes)
    loss = CrossEntropyFunction.apply(logits, target.reshape(-1), int(ignore_index), reduction)
    return loss.reshape(target.shape) if reduction == "none" else loss


class PointwiseLossFunction(torch.autograd.Function):
    """loss(x, target) for ``kind`` "bce_with_logits" or "mse_loss" (same-shaped x and target;
    gradients for both)."""

    @staticmethod
    def forward(ctx, kind: str, x, target, reduction: str):
        loss = forward_launcher(ctx, f"{kind}_forward", x, target)(x, target, reduction)
        ctx.kind, ctx.reduction = kind, reduction
        ctx.save_for_backward(x, target)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        x, target = ctx.saved_tensors
        grad_x, grad_target = backward_launcher(ctx, f"{ctx.kind}_backward")(
            grad_loss, x, target, ctx.reduction, tuple(ctx.needs_input_grad[1:3]))
        return None, grad_x, grad_target, None


def binary_cross_entropy_with_logits(input: torch.Tensor, target: torch.Tensor,
                                     weight: torch.Tensor | None = None, size_average=None,
                                     reduce=None, reduction: str = "mean",
                                     pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """torch.nn.functional.binary_cross_entropy_with_logits, stable for any |input|."""
    _unsupported("binary_cross_entropy_with_logits", **{"weight=": weight is not None,
                                                        "pos_weight=": pos_weight is not None})
    reduction = _reduction("binary_cross_entropy_with_logits", size_average, reduce, reduction)
    check_tensor("input", input)
    check_tensor("target", target)
    if input.shape != target.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target size {tuple(target.shape)} "
                         f"must be the same as input size {tuple(input.shape)}")
    input, target = autocast_to_float(input, target)
    if target.dtype != input.dtype:
        target = target.to(input.dtype)
    check_same("binary_cross_entropy_with_logits", input=input, target=target)
    return PointwiseLossFunction.apply("bce_with_logits", input, target, reduction)


def mse_loss(input: torch.Tensor, target: torch.Tensor, size_average=None, reduce=None,
             reduction: str = "mean", weight: torch.Tensor | None = None) -> torch.Tensor:
    """torch.nn.functional.mse_loss; different shapes broadcast with torch's warning."""
    _unsupported("mse_loss", **{"weight=": weight is not None})
    reduction = _reduction("mse_loss", size_average, reduce, reduction)
    check_tensor("input", input)
    check_tensor("target", target)
    if input.shape != target.shape:
        warnings.warn(f"Using a target size ({target.shape}) that is different to the input size "
                      f"({input.shape}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", stacklevel=2)
        try:
            input, target = torch.broadcast_tensors(input, target)
        except RuntimeError as exc:
            raise ValueError(f"mse_loss: input shape {tuple(input.shape)} and target shape "
                             f"{tuple(target.shape)} do not broadcast") from exc
        input, target = input.contiguous(), target.contiguous()
    input, target = autocast_to_float(input, target)
    check_same("mse_loss", input=input, target=target)
    return PointwiseLossFunction.apply("mse_loss", input, target, reduction)
