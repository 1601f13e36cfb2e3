"""Batch normalization with a fused activation: the ops ``gpudnn::batch_norm`` (updates the running
statistics in place when training) / ``gpudnn::batch_norm_backward`` and ``batch_norm``.

The forward saves x, weight, bias and the per-channel mean and invstd; backward recomputes the
pre-activation from x (no activation-sized tensor is kept).
"""
import math
from typing import Any, Optional

import torch
from torch import Tensor

from ..activations import activation_args, activation_of, parse_activation
from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import batchnorm as cupy
from ..kernels.triton import batchnorm as triton
from ..reference import batchnorm as reference
from ._common import check_tensor
from ._library import absent, define, like_layout

__all__ = ["batch_norm"]

BATCH_NORM = Kernels(
    "batch_norm",
    # mean, invstd and the per-channel parameter gradients stay (at least) float32
    reference=(reference_launcher(reference.batch_norm_forward, float32_outputs=(1, 2)),
               reference_launcher(reference.batch_norm_backward, float32_outputs=(1, 2))),
    triton=(triton.batch_norm_forward, triton.batch_norm_backward),
    cupy=(cupy.batch_norm_forward, cupy.batch_norm_backward))


@define("batch_norm")
def batch_norm_op(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                  running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
                  momentum: float, eps: float, act: str, act_param: float,
                  backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x [N, C, *] -> (act(xhat * weight + bias) in x's layout, mean [C], invstd [C], new
    running_mean, new running_var). Training: the batch's statistics, and the running ones
    updated with the unbiased variance, returned as new tensors (empty when not given; an op
    with an autograd formula cannot mutate its inputs: ``batch_norm`` copies them back). Eval:
    the running statistics (and two empty outputs). mean, invstd at least float32."""
    update = training and running_mean is not None
    if update:
        running_mean, running_var = running_mean.clone(), running_var.clone()
    y, mean, invstd = BATCH_NORM.forward(backend)(
        x, weight, bias, running_mean, running_var, training, momentum, eps,
        activation_of(act, act_param))
    if not update:
        running_mean, running_var = absent(x), absent(x)
    return like_layout(y, x), mean, invstd, running_mean, running_var


@batch_norm_op.register_fake
def _(x, weight, bias, running_mean, running_var, training, momentum, eps, act, act_param,
      backend):
    stats = x.new_empty(x.shape[1:2], dtype=torch.promote_types(x.dtype, torch.float32))
    update = training and running_mean is not None
    return (torch.empty_like(x), stats, torch.empty_like(stats),
            torch.empty_like(running_mean) if update else absent(x),
            torch.empty_like(running_var) if update else absent(x))


@define("batch_norm_backward")
def batch_norm_backward(grad_y: Tensor, x: Tensor, weight: Optional[Tensor],
                        bias: Optional[Tensor], mean: Tensor, invstd: Tensor, act: str,
                        act_param: float, training: bool, needs: list[bool],
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x in x's layout, grad_weight, grad_bias in the parameters' dtypes), each empty
    unless ``needs`` it."""
    gx, gw, gb = BATCH_NORM.backward(backend)(grad_y, x, weight, bias, mean, invstd,
                                              activation_of(act, act_param), training,
                                              tuple(needs))
    return (like_layout(gx, x) if gx is not None else absent(x),
            gw.to(weight.dtype) if gw is not None else absent(x),
            gb.to(bias.dtype) if gb is not None else absent(x))


@batch_norm_backward.register_fake
def _(grad_y, x, weight, bias, mean, invstd, act, act_param, training, needs, backend):
    return (torch.empty_like(x) if needs[0] else absent(x),
            torch.empty_like(weight) if needs[1] and weight is not None else absent(x),
            torch.empty_like(bias) if needs[2] and bias is not None else absent(x))


def _setup(ctx, inputs, output):
    x, weight, bias, _, _, training, _, _, act, act_param, backend = inputs
    ctx.act, ctx.training, ctx.backend = (act, act_param), training, backend
    ctx.save_for_backward(x, weight, bias, output[1], output[2])


def _grad(ctx, grad_y, grad_mean, grad_invstd, grad_running_mean, grad_running_var):
    x, weight, bias, mean, invstd = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = batch_norm_backward(grad_y, x, weight, bias, mean, invstd, *ctx.act, ctx.training,
                                needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)),) + (None,) * 8


batch_norm_op.register_autograd(_grad, setup_context=_setup)


def batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None,
               running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5, activation: Any = None) -> torch.Tensor:
    """torch.nn.functional.batch_norm plus a fused ``activation``.

    ``momentum`` is the running-average factor (a float; the modules turn momentum=None into
    torch's cumulative-average factor).
    """
    act = parse_activation(activation)
    check_tensor("input", input)
    if input.dim() == 1 and input.numel() == 0:  # torch: an empty input gives an empty output
        for name, t in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
            if t is not None and t.numel() > 0:
                raise RuntimeError(f"{name} should contain 0 elements not {t.numel()}")
        return input.clone()
    if input.dim() < 2:
        raise ValueError(f"batch_norm: input must be [N, C, *] (at least 2 dimensions), got "
                         f"shape {tuple(input.shape)}")
    channels = input.shape[1]
    params = {"weight": weight, "bias": bias, "running_mean": running_mean,
              "running_var": running_var}
    for name, t in params.items():
        check_tensor(name, t, optional=True)
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"batch_norm: {name} shape {tuple(t.shape)} does not match the "
                             f"{channels} channels of input shape {tuple(input.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must both be given or both "
                         "be None")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var must be given in evaluation "
                         "mode (training=False)")
    if training and math.prod(input.shape) // max(channels, 1) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{tuple(input.shape)}")
    if momentum is None or not isinstance(momentum, (int, float)):
        raise TypeError(f"batch_norm: momentum must be a float, got {momentum!r}")
    # like torch (autocast included: batch_norm is on none of its cast lists), a 16-bit input
    # may come with float32 parameters and statistics: it then computes in float32 and returns
    # the input's dtype
    present = {"input": input, **{k: t for k, t in params.items() if t is not None}}
    if len({t.device for t in present.values()}) > 1:
        raise RuntimeError("batch_norm: tensors on different devices: "
                           + ", ".join(f"{k} on {t.device}" for k, t in present.items()))
    allowed = {input.dtype, torch.float32} if input.dtype in (torch.float16, torch.bfloat16) \
        else {input.dtype}
    if any(t.dtype not in allowed for t in present.values()):
        raise TypeError("batch_norm: dtypes differ: "
                        + ", ".join(f"{k} is {t.dtype}" for k, t in present.items())
                        + " (only a float16/bfloat16 input may have float32 parameters)")
    y, _, _, new_mean, new_var = batch_norm_op(
        input, weight, bias, running_mean, running_var, bool(training), float(momentum),
        float(eps), *activation_args(act),
        resolve(BATCH_NORM, input, weight, bias, running_mean, running_var))
    if training and running_mean is not None:
        with torch.no_grad():
            running_mean.copy_(new_mean)
            running_var.copy_(new_var)
    return y
