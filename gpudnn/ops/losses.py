"""Losses: the ops ``gpudnn::cross_entropy`` (class indices, fused with log-softmax),
``gpudnn::bce_with_logits`` and ``gpudnn::mse_loss`` with their backward ops, and the functional
forms."""
import warnings

import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import losses as cupy
from ..kernels.triton import losses as triton
from ..reference import losses as reference
from ._common import autocast_to_float, check_same, check_tensor
from ._library import absent, define, like_layout

__all__ = ["cross_entropy", "binary_cross_entropy_with_logits", "mse_loss"]

REDUCTIONS = ("none", "mean", "sum")

CROSS_ENTROPY = Kernels(
    "cross_entropy",
    reference=(reference_launcher(reference.cross_entropy_forward, float32_outputs=(1,)),
               reference_launcher(reference.cross_entropy_backward)),
    triton=(triton.cross_entropy_forward, triton.cross_entropy_backward),
    cupy=(cupy.cross_entropy_forward, cupy.cross_entropy_backward))
BCE_WITH_LOGITS = Kernels(
    "bce_with_logits",
    reference=(reference_launcher(reference.bce_with_logits_forward),
               reference_launcher(reference.bce_with_logits_backward)),
    triton=(triton.bce_with_logits_forward, triton.bce_with_logits_backward),
    cupy=(cupy.bce_with_logits_forward, cupy.bce_with_logits_backward))
MSE_LOSS = Kernels(
    "mse_loss",
    reference=(reference_launcher(reference.mse_loss_forward),
               reference_launcher(reference.mse_loss_backward)),
    triton=(triton.mse_loss_forward, triton.mse_loss_backward),
    cupy=(cupy.mse_loss_forward, cupy.mse_loss_backward))


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


@define("cross_entropy")
def cross_entropy_op(logits: Tensor, target: Tensor, ignore_index: int, reduction: str,
                     backend: str) -> tuple[Tensor, Tensor]:
    """logits [N, C], target [N] int64 -> (loss: 0-d, or [N] for reduction "none"; lse [N], the
    log-sum-exp of each row, at least float32)."""
    return CROSS_ENTROPY.forward(backend)(logits, target, ignore_index, reduction)


@cross_entropy_op.register_fake
def _(logits, target, ignore_index, reduction, backend):
    loss = logits.new_empty(logits.shape[:1] if reduction == "none" else ())
    return loss, logits.new_empty(logits.shape[:1],
                                  dtype=torch.promote_types(logits.dtype, torch.float32))


@define("cross_entropy_backward")
def cross_entropy_backward(grad_loss: Tensor, logits: Tensor, target: Tensor, lse: Tensor,
                           ignore_index: int, reduction: str, backend: str) -> Tensor:
    """grad_logits [N, C] = (softmax - onehot) * grad, 0 on ignored rows."""
    return CROSS_ENTROPY.backward(backend)(grad_loss, logits, target, lse, ignore_index,
                                           reduction).contiguous()


@cross_entropy_backward.register_fake
def _(grad_loss, logits, target, lse, ignore_index, reduction, backend):
    return logits.new_empty(logits.shape)


def _setup_ce(ctx, inputs, output):
    logits, target, ignore_index, reduction, backend = inputs
    ctx.ignore_index, ctx.reduction, ctx.backend = ignore_index, reduction, backend
    ctx.save_for_backward(logits, target, output[1])


def _ce_grad(ctx, grad_loss, grad_lse):
    logits, target, lse = ctx.saved_tensors
    grad = cross_entropy_backward(grad_loss, logits, target, lse, ctx.ignore_index,
                                  ctx.reduction, ctx.backend)
    return grad, None, None, None, None


cross_entropy_op.register_autograd(_ce_grad, setup_context=_setup_ce)


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
    # eager: torch's IndexError (one host sync); a compiled graph cannot branch on data, and
    # every kernel gives NaN for a target out of range instead (never a wrong finite loss)
    if not torch.compiler.is_compiling():
        out_of_range = (target != ignore_index) & ((target < 0) | (target >= classes))
        if bool(out_of_range.any()):
            bad = target[out_of_range][0].item()
            raise IndexError(f"cross_entropy: target {bad} is out of bounds for {classes} "
                             "classes")
    (input,) = autocast_to_float(input)
    # the class dim goes last so that the launcher sees [rows, C]
    logits = input.movedim(class_dim, -1).reshape(-1, classes)
    flat_target = target.reshape(-1)
    loss, _ = cross_entropy_op(logits, flat_target, int(ignore_index), reduction,
                               resolve(CROSS_ENTROPY, logits, flat_target))
    return loss.reshape(target.shape) if reduction == "none" else loss


def _pointwise_loss(name: str, kernels: Kernels):
    """The ops ``gpudnn::<name>`` / ``gpudnn::<name>_backward`` of a loss of same-shaped input and
    target (gradients for both)."""

    @define(name)
    def forward(x: Tensor, target: Tensor, reduction: str, backend: str) -> Tensor:
        return kernels.forward(backend)(x, target, reduction)

    @forward.register_fake
    def _(x, target, reduction, backend):
        return torch.empty_like(x) if reduction == "none" else x.new_empty(())

    @define(f"{name}_backward")
    def backward(grad_loss: Tensor, x: Tensor, target: Tensor, reduction: str, needs: list[bool],
                 backend: str) -> tuple[Tensor, Tensor]:
        """-> (grad_x, grad_target), each empty unless ``needs`` it."""
        grads = kernels.backward(backend)(grad_loss, x, target, reduction, tuple(needs))
        return tuple(like_layout(g, t) if g is not None else absent(x)
                     for g, t in zip(grads, (x, target)))

    @backward.register_fake
    def _(grad_loss, x, target, reduction, needs, backend):
        return tuple(torch.empty_like(t) if need else absent(x)
                     for need, t in zip(needs, (x, target)))

    def setup(ctx, inputs, output):
        x, target, reduction, backend = inputs
        ctx.reduction, ctx.backend = reduction, backend
        ctx.save_for_backward(x, target)

    def grad(ctx, grad_loss):
        x, target = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:2])
        grads = backward(grad_loss, x, target, ctx.reduction, needs, ctx.backend)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None)

    forward.register_autograd(grad, setup_context=setup)
    return forward, backward


bce_with_logits_op, bce_with_logits_backward = _pointwise_loss("bce_with_logits",
                                                               BCE_WITH_LOGITS)
mse_loss_op, mse_loss_backward = _pointwise_loss("mse_loss", MSE_LOSS)


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
    return bce_with_logits_op(input, target, reduction, resolve(BCE_WITH_LOGITS, input, target))


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
    return mse_loss_op(input, target, reduction, resolve(MSE_LOSS, input, target))
