"""Batch normalization with a fused activation as one autograd Function.

Saves x, weight, bias and the per-channel mean and invstd; backward recomputes the
pre-activation from x (no activation-sized tensor is kept).
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..activations import Activation, parse_activation
from ._common import backward_launcher, check_tensor, forward_launcher

__all__ = ["BatchNormFunction", "batch_norm"]


class BatchNormFunction(torch.autograd.Function):
    """x [N, C, *] -> act(xhat * weight + bias); running_* updated in place when training."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training: bool,
                momentum: float, eps: float, act: Activation | None):
        y, mean, invstd = forward_launcher(
            ctx, "batch_norm_forward", x, weight, bias, running_mean, running_var)(
            x, weight, bias, running_mean, running_var, training, momentum, eps, act)
        ctx.act, ctx.training = act, training
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        grad_x, grad_weight, grad_bias = backward_launcher(ctx, "batch_norm_backward")(
            grad_y, x, weight, bias, mean, invstd, ctx.act, ctx.training,
            tuple(ctx.needs_input_grad[:3]))
        # the parameters may be float32 under a 16-bit input: their gradients take their dtype
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(bias.dtype)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None, None


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
    return BatchNormFunction.apply(input, weight, bias, running_mean, running_var, bool(training),
                                   float(momentum), float(eps), act)
