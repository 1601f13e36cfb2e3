"""Fused linear layer y = act(input @ weight.T + bias): the ops ``gpudnn::dense`` /
``gpudnn::dense_backward`` and ``linear``."""
import math
from typing import Any, Optional

import torch
from torch import Tensor

from ..activations import activation_args, activation_of, parse_activation
from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import dense as cupy
from ..kernels.triton import dense as triton
from ..reference import dense as reference
from ._common import autocast_to_lower, check_same, check_tensor
from ._library import absent, define

__all__ = ["linear"]

DENSE = Kernels(
    "dense",
    reference=(reference_launcher(reference.dense_forward),
               reference_launcher(reference.dense_backward)),
    triton=(triton.dense_forward, triton.dense_backward),
    cupy=(cupy.dense_forward, cupy.dense_backward))


@define("dense")
def dense(x: Tensor, weight: Tensor, bias: Optional[Tensor], act: str, act_param: float,
          backend: str) -> tuple[Tensor, Tensor]:
    """x [M, K], weight [N, K], bias [N] | None -> (y, z): y = act(x @ weight.T + bias) [M, N];
    z the pre-activation [M, N] where backward needs it (act' not a function of y), else empty."""
    activation = activation_of(act, act_param)
    y, saved = DENSE.forward(backend)(x, weight, bias, activation)
    return y, (saved if activation is not None and not activation.from_output else absent(x))


@dense.register_fake
def _(x, weight, bias, act, act_param, backend):
    activation = activation_of(act, act_param)
    y = x.new_empty((x.shape[0], weight.shape[0]))
    return y, (torch.empty_like(y) if activation is not None and not activation.from_output
               else absent(x))


@define("dense_backward")
def dense_backward(grad_y: Tensor, x: Tensor, weight: Tensor, saved: Optional[Tensor], act: str,
                   act_param: float, needs: list[bool], backend: str
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x [M, K], grad_weight [N, K], grad_bias [N]), each empty unless ``needs`` it;
    saved: y when act' is a function of y, else z (None without an activation)."""
    grads = DENSE.backward(backend)(grad_y, x, weight, saved, activation_of(act, act_param),
                                    tuple(needs))
    return tuple(g if g is not None else absent(x) for g in grads)


@dense_backward.register_fake
def _(grad_y, x, weight, saved, act, act_param, needs, backend):
    shapes = (x.shape, weight.shape, weight.shape[:1])
    return tuple(x.new_empty(shape, dtype=like.dtype) if need else absent(x)
                 for need, shape, like in zip(needs, shapes, (x, weight, weight)))


def _setup_dense(ctx, inputs, output):
    x, weight, bias, act, act_param, backend = inputs
    y, z = output
    activation = activation_of(act, act_param)
    ctx.act, ctx.backend = (act, act_param), backend
    saved = None if activation is None else (y if activation.from_output else z)
    ctx.save_for_backward(x, weight, saved)


def _dense_grad(ctx, grad_y, grad_z):
    x, weight, saved = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = dense_backward(grad_y, x, weight, saved, *ctx.act, needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None)


dense.register_autograd(_dense_grad, setup_context=_setup_dense)


def check_linear_shapes(op: str, input: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """input [*, K], weight [N, K], bias [N] | None (also the quantized linear's check)."""
    if input.dim() == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension, got a 0-d tensor")
    if input.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: input's last dimension {input.shape[-1]} (input shape "
                         f"{tuple(input.shape)}) does not match weight's in_features "
                         f"{weight.shape[1]} (weight shape {tuple(weight.shape)})")
    if bias is not None and bias.shape[0] != weight.shape[0]:
        raise ValueError(f"{op}: bias shape {tuple(bias.shape)} does not match weight's "
                         f"out_features {weight.shape[0]} (weight shape {tuple(weight.shape)})")


def linear(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           activation: Any = None) -> torch.Tensor:
    """torch.nn.functional.linear plus a fused ``activation``; input [*, K] -> [*, N]."""
    act = parse_activation(activation)
    check_tensor("input", input)
    check_tensor("weight", weight, ndim=2)
    check_tensor("bias", bias, ndim=1, optional=True)
    check_linear_shapes("linear", input, weight, bias)
    input, weight, bias = autocast_to_lower(input, weight, bias)
    check_same("linear", input=input, weight=weight, bias=bias)
    lead = input.shape[:-1]
    # a view whenever the leading dims can be flattened without a copy
    x2d = input.reshape(math.prod(lead), input.shape[-1])
    y, _ = dense(x2d, weight, bias, *activation_args(act), resolve(DENSE, x2d, weight, bias))
    return y.reshape(*lead, weight.shape[0])
