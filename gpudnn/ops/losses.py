"""Losses: the ops ``gpudnn::cross_entropy`` (class indices, fused with log-softmax, with class
weights and label smoothing), ``gpudnn::cross_entropy_probs`` (class-probability targets),
``gpudnn::nll_loss`` (a gather), ``gpudnn::bce`` (probabilities), ``gpudnn::bce_with_logits``
(weight, pos_weight) and ``gpudnn::mse_loss`` with their backward ops, and the functional
forms."""
import warnings
from typing import Optional

import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import losses as cupy
from ..kernels.triton import losses as triton
from ..reference import losses as reference
from ._common import IndexValueError, autocast_to_float, check_same, check_tensor
from ._library import absent, define, like_layout

__all__ = ["cross_entropy", "nll_loss", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "mse_loss"]

REDUCTIONS = ("none", "mean", "sum")

CROSS_ENTROPY = Kernels(
    "cross_entropy",
    reference=(reference_launcher(reference.cross_entropy_forward, float32_outputs=(1,)),
               reference_launcher(reference.cross_entropy_backward)),
    triton=(triton.cross_entropy_forward, triton.cross_entropy_backward),
    cupy=(cupy.cross_entropy_forward, cupy.cross_entropy_backward))
CROSS_ENTROPY_PROBS = Kernels(
    "cross_entropy_probs",
    reference=(reference_launcher(reference.cross_entropy_probs_forward,
                                  float32_outputs=(1, 2)),
               reference_launcher(reference.cross_entropy_probs_backward)),
    triton=(triton.cross_entropy_probs_forward, triton.cross_entropy_probs_backward),
    cupy=(cupy.cross_entropy_probs_forward, cupy.cross_entropy_probs_backward))
NLL_LOSS = Kernels(
    "nll_loss",
    reference=(reference_launcher(reference.nll_loss_forward),
               reference_launcher(reference.nll_loss_backward)),
    triton=(triton.nll_loss_forward, triton.nll_loss_backward),
    cupy=(cupy.nll_loss_forward, cupy.nll_loss_backward))
BCE = Kernels(
    "bce",
    reference=(reference_launcher(reference.bce_forward),
               reference_launcher(reference.bce_backward)),
    triton=(triton.bce_forward, triton.bce_backward),
    cupy=(cupy.bce_forward, cupy.bce_backward))
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


def _not_differentiable(op: str, **tensors: Optional[Tensor]) -> None:
    """torch's error for a weight that requires grad (these losses have no gradient for it)."""
    for name, t in tensors.items():
        if t is not None and t.requires_grad and torch.is_grad_enabled():
            raise RuntimeError(f"{op}: {name} requires grad, but {op} is not differentiable with "
                               f"respect to {name} (as in torch); pass {name}.detach()")


def _check_class_weight(op: str, weight: Optional[Tensor], input: Tensor,
                        classes: int) -> None:
    """weight: None or a [classes] tensor of input's dtype on input's device (torch's rules)."""
    if weight is None:
        return
    check_tensor("weight", weight)
    if tuple(weight.shape) != (classes,):
        raise ValueError(f"{op}: weight must hold one value per class, shape ({classes},), got "
                         f"{tuple(weight.shape)}")
    if weight.device != input.device:
        raise RuntimeError(f"{op}: weight on {weight.device}, input on {input.device}")
    if weight.dtype != input.dtype:
        raise TypeError(f"{op}: weight has dtype {weight.dtype}, input {input.dtype}; torch "
                        "requires them to match")
    _not_differentiable(op, weight=weight)


def _broadcast_weight(op: str, name: str, weight: Optional[Tensor], input: Tensor
                      ) -> Optional[Tensor]:
    """weight: None or a floating tensor that broadcasts to input's shape, on input's device;
    returned in input's dtype (torch multiplies it into the loss in place)."""
    if weight is None:
        return None
    check_tensor(name, weight)
    try:
        shape = torch.broadcast_shapes(weight.shape, input.shape)
    except RuntimeError:
        shape = None
    if shape != input.shape:
        raise ValueError(f"{op}: {name} of shape {tuple(weight.shape)} does not broadcast to the "
                         f"input shape {tuple(input.shape)}")
    if weight.device != input.device:
        raise RuntimeError(f"{op}: {name} on {weight.device}, input on {input.device}")
    _not_differentiable(op, **{name: weight})
    return weight.to(input.dtype)


# --- class-index targets: cross-entropy and NLL --------------------------------------------------

@define("cross_entropy")
def cross_entropy_op(logits: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                     reduction: str, label_smoothing: float, backend: str
                     ) -> tuple[Tensor, Tensor]:
    """logits [N, C], target [N] int64, weight [C] | None -> (loss: 0-d, or [N] for reduction
    "none"; lse [N], the log-sum-exp of each row, at least float32)."""
    return CROSS_ENTROPY.forward(backend)(logits, target, ignore_index, reduction, weight,
                                          label_smoothing)


@cross_entropy_op.register_fake
def _(logits, target, weight, ignore_index, reduction, label_smoothing, backend):
    loss = logits.new_empty(logits.shape[:1] if reduction == "none" else ())
    return loss, logits.new_empty(logits.shape[:1],
                                  dtype=torch.promote_types(logits.dtype, torch.float32))


@define("cross_entropy_backward")
def cross_entropy_backward(grad_loss: Tensor, logits: Tensor, target: Tensor, lse: Tensor,
                           weight: Optional[Tensor], ignore_index: int, reduction: str,
                           label_smoothing: float, backend: str) -> Tensor:
    """grad_logits [N, C] = (softmax - onehot) * (1 - eps) w_t grad + smoothing term, 0 on
    ignored rows."""
    return CROSS_ENTROPY.backward(backend)(grad_loss, logits, target, lse, ignore_index,
                                           reduction, weight, label_smoothing).contiguous()


@cross_entropy_backward.register_fake
def _(grad_loss, logits, target, lse, weight, ignore_index, reduction, label_smoothing, backend):
    return logits.new_empty(logits.shape)


def _setup_ce(ctx, inputs, output):
    logits, target, weight, ignore_index, reduction, label_smoothing, backend = inputs
    ctx.options = (ignore_index, reduction, label_smoothing)
    ctx.backend = backend
    ctx.save_for_backward(logits, target, weight, output[1])


def _ce_grad(ctx, grad_loss, grad_lse):
    logits, target, weight, lse = ctx.saved_tensors
    ignore_index, reduction, label_smoothing = ctx.options
    grad = cross_entropy_backward(grad_loss, logits, target, lse, weight, ignore_index, reduction,
                                  label_smoothing, ctx.backend)
    return grad, None, None, None, None, None, None


cross_entropy_op.register_autograd(_ce_grad, setup_context=_setup_ce)


@define("nll_loss")
def nll_loss_op(log_probs: Tensor, target: Tensor, weight: Optional[Tensor], ignore_index: int,
                reduction: str, backend: str) -> Tensor:
    """log_probs [N, C], target [N] int64, weight [C] | None -> loss: 0-d, or [N] for "none"."""
    return NLL_LOSS.forward(backend)(log_probs, target, ignore_index, reduction, weight)


@nll_loss_op.register_fake
def _(log_probs, target, weight, ignore_index, reduction, backend):
    return log_probs.new_empty(log_probs.shape[:1] if reduction == "none" else ())


@define("nll_loss_backward")
def nll_loss_backward(grad_loss: Tensor, log_probs: Tensor, target: Tensor,
                      weight: Optional[Tensor], ignore_index: int, reduction: str,
                      backend: str) -> Tensor:
    """grad [N, C]: -w[t_i] grad_i at (i, t_i), 0 elsewhere (log_probs gives shape and dtype)."""
    return NLL_LOSS.backward(backend)(grad_loss, log_probs, target, ignore_index, reduction,
                                      weight).contiguous()


@nll_loss_backward.register_fake
def _(grad_loss, log_probs, target, weight, ignore_index, reduction, backend):
    return log_probs.new_empty(log_probs.shape)


def _setup_nll(ctx, inputs, output):
    log_probs, target, weight, ignore_index, reduction, backend = inputs
    ctx.options, ctx.backend = (ignore_index, reduction), backend
    ctx.save_for_backward(log_probs, target, weight)


def _nll_grad(ctx, grad_loss):
    log_probs, target, weight = ctx.saved_tensors
    grad = nll_loss_backward(grad_loss, log_probs, target, weight, *ctx.options, ctx.backend)
    return grad, None, None, None, None, None


nll_loss_op.register_autograd(_nll_grad, setup_context=_setup_nll)


def _class_rows(op: str, input: Tensor, target: Tensor, ignore_index: int, weight) -> tuple:
    """Checks of class-index targets; -> (rows [M, C] with the class dim last, flat target [M]
    int64, the loss shape of reduction "none")."""
    check_tensor("input", input)
    check_tensor("target", target, floating=False)
    if target.dtype == torch.bool or target.is_complex() or target.is_floating_point():
        raise TypeError(f"{op}: target must hold integer class indices, got {target.dtype}")
    if input.dim() == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension (classes), got 0-d")
    class_dim = 0 if input.dim() == 1 else 1
    expected = input.shape[:class_dim] + input.shape[class_dim + 1:]
    if tuple(target.shape) != tuple(expected):
        raise ValueError(f"{op}: target shape {tuple(target.shape)} does not match input shape "
                         f"{tuple(input.shape)} (expected target shape {tuple(expected)})")
    classes = input.shape[class_dim]
    if classes == 0:
        raise ValueError(f"{op}: input shape {tuple(input.shape)} has no classes")
    if input.device != target.device:
        raise RuntimeError(f"{op}: input on {input.device}, target on {target.device}")
    _check_class_weight(op, weight, input, classes)
    target = target.long()
    # eager: torch's IndexError (IndexValueError, also a ValueError; one host sync); a compiled
    # graph cannot branch on data, and every kernel gives NaN for a target out of range instead
    # (never a wrong finite loss)
    if not torch.compiler.is_compiling():
        out_of_range = (target != ignore_index) & ((target < 0) | (target >= classes))
        if bool(out_of_range.any()):
            bad = target[out_of_range][0].item()
            raise IndexValueError(f"{op}: target {bad} is out of bounds for {classes} classes")
    # the class dim goes last so that the launchers see [rows, C]
    rows = input.movedim(class_dim, -1).reshape(-1, classes)
    return rows, target.reshape(-1), tuple(expected)


# --- class-probability targets -------------------------------------------------------------------

@define("cross_entropy_probs")
def cross_entropy_probs_op(logits: Tensor, target: Tensor, weight: Optional[Tensor],
                           reduction: str, label_smoothing: float, backend: str
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """logits, target [N, C] (class probabilities), weight [C] | None -> (loss: 0-d, or [N] for
    "none"; the row max [N] and log(sum(exp(x - max))) [N], at least float32: backward's
    log-probabilities (x - max) - log_sum keep torch's rounding)."""
    return CROSS_ENTROPY_PROBS.forward(backend)(logits, target, reduction, weight,
                                                label_smoothing)


@cross_entropy_probs_op.register_fake
def _(logits, target, weight, reduction, label_smoothing, backend):
    loss = logits.new_empty(logits.shape[:1] if reduction == "none" else ())
    stat = torch.promote_types(logits.dtype, torch.float32)
    return (loss, logits.new_empty(logits.shape[:1], dtype=stat),
            logits.new_empty(logits.shape[:1], dtype=stat))


@define("cross_entropy_probs_backward")
def cross_entropy_probs_backward(grad_loss: Tensor, logits: Tensor, target: Tensor,
                                 row_max: Tensor, log_sum: Tensor, weight: Optional[Tensor],
                                 reduction: str, label_smoothing: float, needs: list[bool],
                                 backend: str) -> tuple[Tensor, Tensor]:
    """-> (grad_logits, grad_target) [N, C], each empty unless ``needs`` it."""
    grads = CROSS_ENTROPY_PROBS.backward(backend)(grad_loss, logits, target, row_max, log_sum,
                                                  reduction, tuple(needs), weight,
                                                  label_smoothing)
    return tuple(g.contiguous() if g is not None else absent(logits) for g in grads)


@cross_entropy_probs_backward.register_fake
def _(grad_loss, logits, target, row_max, log_sum, weight, reduction, label_smoothing, needs,
      backend):
    return tuple(logits.new_empty(logits.shape) if need else absent(logits) for need in needs)


def _setup_ce_probs(ctx, inputs, output):
    logits, target, weight, reduction, label_smoothing, backend = inputs
    ctx.options, ctx.backend = (reduction, label_smoothing), backend
    ctx.save_for_backward(logits, target, weight, output[1], output[2])


def _ce_probs_grad(ctx, grad_loss, grad_max, grad_log_sum):
    logits, target, weight, row_max, log_sum = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:2])
    grads = cross_entropy_probs_backward(grad_loss, logits, target, row_max, log_sum, weight,
                                         *ctx.options, needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None)


cross_entropy_probs_op.register_autograd(_ce_probs_grad, setup_context=_setup_ce_probs)


def cross_entropy(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """torch.nn.functional.cross_entropy: class indices or class probabilities, class weights,
    label smoothing.

    input [C], [N, C] or [N, C, d1, ...]; target: class indices [], [N] or [N, d1, ...] (integers
    in [0, C) or ``ignore_index``), or class probabilities of input's shape (floating point).
    The weighted mean of class indices divides by the summed weights of the non-ignored targets
    (NaN when that is 0), that of probabilities by the number of rows, as torch's.
    """
    reduction = _reduction("cross_entropy", size_average, reduce, reduction)
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got "
                         f"{label_smoothing}")
    check_tensor("input", input)
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        return _cross_entropy_probs(input, target, weight, ignore_index, reduction,
                                    float(label_smoothing))
    (input, weight) = autocast_to_float(input, weight)
    logits, flat_target, shape = _class_rows("cross_entropy", input, target, ignore_index, weight)
    loss, _ = cross_entropy_op(logits, flat_target, weight, int(ignore_index), reduction,
                               float(label_smoothing),
                               resolve(CROSS_ENTROPY, logits, flat_target, weight))
    return loss.reshape(shape) if reduction == "none" else loss


def _cross_entropy_probs(input, target, weight, ignore_index, reduction, label_smoothing):
    op = "cross_entropy"
    if ignore_index != -100:
        raise ValueError(f"{op}: ignore_index is not supported for floating-point (probability) "
                         "targets")
    if input.dim() == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension (classes), got 0-d")
    if target.shape != input.shape:
        raise ValueError(f"{op}: probability target shape {tuple(target.shape)} must match the "
                         f"input shape {tuple(input.shape)}")
    if input.device != target.device:
        raise RuntimeError(f"{op}: input on {input.device}, target on {target.device}")
    class_dim = 0 if input.dim() == 1 else 1
    classes = input.shape[class_dim]
    if classes == 0:
        raise ValueError(f"{op}: input shape {tuple(input.shape)} has no classes")
    input, target, weight = autocast_to_float(input, target, weight)
    _check_class_weight(op, weight, input, classes)
    if target.dtype != input.dtype:
        target = target.to(input.dtype)
    logits = input.movedim(class_dim, -1).reshape(-1, classes)
    probs = target.movedim(class_dim, -1).reshape(-1, classes)
    loss = cross_entropy_probs_op(logits, probs, weight, reduction, label_smoothing,
                                  resolve(CROSS_ENTROPY_PROBS, logits, probs, weight))[0]
    shape = input.shape[:class_dim] + input.shape[class_dim + 1:]
    return loss.reshape(shape) if reduction == "none" else loss


def nll_loss(input: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
             size_average=None, ignore_index: int = -100, reduce=None,
             reduction: str = "mean") -> torch.Tensor:
    """torch.nn.functional.nll_loss: input log-probabilities [C], [N, C] or [N, C, d1, ...],
    target class indices [], [N] or [N, d1, ...]; loss_i = -w[t_i] input[i, t_i], the weighted
    mean divides by the summed weights of the non-ignored targets (NaN when that is 0)."""
    reduction = _reduction("nll_loss", size_average, reduce, reduction)
    check_tensor("input", input)
    (input, weight) = autocast_to_float(input, weight)
    log_probs, flat_target, shape = _class_rows("nll_loss", input, target, ignore_index, weight)
    loss = nll_loss_op(log_probs, flat_target, weight, int(ignore_index), reduction,
                       resolve(NLL_LOSS, log_probs, flat_target, weight))
    return loss.reshape(shape) if reduction == "none" else loss


# --- elementwise losses --------------------------------------------------------------------------

def _pointwise_loss(name: str, kernels: Kernels):
    """The ops ``gpudnn::<name>`` / ``gpudnn::<name>_backward`` of a loss of same-shaped input and
    target (gradients for both), with an optional weight and pos_weight broadcast to them."""

    @define(name)
    def forward(x: Tensor, target: Tensor, weight: Optional[Tensor], pos_weight: Optional[Tensor],
                reduction: str, backend: str) -> Tensor:
        loss = kernels.forward(backend)(x, target, reduction, weight, pos_weight)
        return like_layout(loss, x) if reduction == "none" else loss

    @forward.register_fake
    def _(x, target, weight, pos_weight, reduction, backend):
        return torch.empty_like(x) if reduction == "none" else x.new_empty(())

    @define(f"{name}_backward")
    def backward(grad_loss: Tensor, x: Tensor, target: Tensor, weight: Optional[Tensor],
                 pos_weight: Optional[Tensor], reduction: str, needs: list[bool],
                 backend: str) -> tuple[Tensor, Tensor]:
        """-> (grad_x, grad_target), each empty unless ``needs`` it."""
        grads = kernels.backward(backend)(grad_loss, x, target, reduction, tuple(needs), weight,
                                          pos_weight)
        return tuple(like_layout(g, t) if g is not None else absent(x)
                     for g, t in zip(grads, (x, target)))

    @backward.register_fake
    def _(grad_loss, x, target, weight, pos_weight, reduction, needs, backend):
        return tuple(torch.empty_like(t) if need else absent(x)
                     for need, t in zip(needs, (x, target)))

    def setup(ctx, inputs, output):
        x, target, weight, pos_weight, reduction, backend = inputs
        ctx.reduction, ctx.backend = reduction, backend
        ctx.save_for_backward(x, target, weight, pos_weight)

    def grad(ctx, grad_loss):
        x, target, weight, pos_weight = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:2])
        grads = backward(grad_loss, x, target, weight, pos_weight, ctx.reduction, needs,
                         ctx.backend)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None)

    forward.register_autograd(grad, setup_context=setup)
    return forward, backward


bce_op, bce_backward = _pointwise_loss("bce", BCE)
bce_with_logits_op, bce_with_logits_backward = _pointwise_loss("bce_with_logits",
                                                               BCE_WITH_LOGITS)
mse_loss_op, mse_loss_backward = _pointwise_loss("mse_loss", MSE_LOSS)


def _same_shape_pair(op: str, input: Tensor, target: Tensor) -> None:
    check_tensor("input", input)
    check_tensor("target", target)
    if input.shape != target.shape:
        raise ValueError(f"{op}: target size {tuple(target.shape)} must be the same as input size "
                         f"{tuple(input.shape)}")


def binary_cross_entropy(input: torch.Tensor, target: torch.Tensor,
                         weight: torch.Tensor | None = None, size_average=None, reduce=None,
                         reduction: str = "mean") -> torch.Tensor:
    """torch.nn.functional.binary_cross_entropy on probabilities: torch's clamp of the logs to
    >= -100; in eager torch's RuntimeError for input or target outside [0, 1] (a compiled graph
    cannot check data: the kernels give NaN there instead); weight broadcasts to input."""
    op = "binary_cross_entropy"
    reduction = _reduction(op, size_average, reduce, reduction)
    _same_shape_pair(op, input, target)
    if input.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        raise RuntimeError(
            "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to "
            "autocast (as in torch): combine the sigmoid before it with the loss as "
            "gpudnn.functional.binary_cross_entropy_with_logits or gpudnn.nn.BCEWithLogitsLoss, "
            "which are safe to autocast")
    input, target, weight = autocast_to_float(input, target, weight)
    if target.dtype != input.dtype:
        target = target.to(input.dtype)
    check_same(op, input=input, target=target)
    weight = _broadcast_weight(op, "weight", weight, input)
    if not torch.compiler.is_compiling() and input.numel():
        # torch's checks (one host sync); NaN fails them, as in torch
        bad = torch.stack([~((input >= 0) & (input <= 1)).all(),
                           ~((target >= 0) & (target <= 1)).all()]).tolist()
        for name, out_of_range in zip(("input", "target"), bad):
            if out_of_range:
                raise RuntimeError(f"{op}: all elements of {name} should be between 0 and 1")
    return bce_op(input, target, weight, None, reduction, resolve(BCE, input, target, weight))


def binary_cross_entropy_with_logits(input: torch.Tensor, target: torch.Tensor,
                                     weight: torch.Tensor | None = None, size_average=None,
                                     reduce=None, reduction: str = "mean",
                                     pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """torch.nn.functional.binary_cross_entropy_with_logits, stable for any |input|; weight and
    pos_weight broadcast to input (pos_weight typically [C], over the last dim)."""
    op = "binary_cross_entropy_with_logits"
    reduction = _reduction(op, size_average, reduce, reduction)
    _same_shape_pair(op, input, target)
    input, target, weight, pos_weight = autocast_to_float(input, target, weight, pos_weight)
    if target.dtype != input.dtype:
        target = target.to(input.dtype)
    check_same(op, input=input, target=target)
    weight = _broadcast_weight(op, "weight", weight, input)
    pos_weight = _broadcast_weight(op, "pos_weight", pos_weight, input)
    return bce_with_logits_op(input, target, weight, pos_weight, reduction,
                              resolve(BCE_WITH_LOGITS, input, target, weight, pos_weight))


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
    return mse_loss_op(input, target, None, None, reduction, resolve(MSE_LOSS, input, target))
