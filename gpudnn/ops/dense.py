"""Fused linear layer: y = act(input @ weight.T + bias) as one autograd Function."""
from __future__ import annotations

import math
from typing import Any

import torch

from ..activations import Activation, parse_activation
from ._common import (autocast_to_lower, backward_launcher, check_same, check_tensor,
                      forward_launcher)

__all__ = ["DenseFunction", "linear"]


class DenseFunction(torch.autograd.Function):
    """x [M, K], weight [N, K], bias [N] | None -> act(x @ weight.T + bias) [M, N]."""

    @staticmethod
    def forward(ctx, x, weight, bias, act: Activation | None):
        y, saved = forward_launcher(ctx, "dense_forward", x, weight, bias)(x, weight, bias, act)
        ctx.act = act
        ctx.save_for_backward(x, weight, saved)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, weight, saved = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        grad_x, grad_weight, grad_bias = backward_launcher(ctx, "dense_backward")(
            grad_y, x, weight, saved, ctx.act, needs)
        return grad_x, grad_weight, grad_bias, None


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           activation: Any = None) -> torch.Tensor:
    """torch.nn.functional.linear plus a fused ``activation``; input [*, K] -> [*, N]."""
    act = parse_activation(activation)
    check_tensor("input", input)
    check_tensor("weight", weight, ndim=2)
    check_tensor("bias", bias, ndim=1, optional=True)
    if input.dim() == 0:
        raise ValueError("linear: input must have at least 1 dimension, got a 0-d tensor")
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input's last dimension {input.shape[-1]} (input shape "
                         f"{tuple(input.shape)}) does not match weight's in_features "
                         f"{weight.shape[1]} (weight shape {tuple(weight.shape)})")
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(f"linear: bias shape {tuple(bias.shape)} does not match weight's "
                         f"out_features {weight.shape[0]} (weight shape {tuple(weight.shape)})")
    input, weight, bias = autocast_to_lower(input, weight, bias)
    check_same("linear", input=input, weight=weight, bias=bias)
    lead = input.shape[:-1]
    # a view whenever the leading dims can be flattened without a copy
    x2d = input.reshape(math.prod(lead), input.shape[-1])
    y = DenseFunction.apply(x2d, weight, bias, act)
    return y.reshape(*lead, weight.shape[0])
