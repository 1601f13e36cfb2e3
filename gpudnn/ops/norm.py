"""Layer normalization and group normalization with a fused activation: the ops
``gpudnn::layer_norm`` / ``gpudnn::layer_norm_backward``, ``gpudnn::group_norm`` /
``gpudnn::group_norm_backward`` and ``layer_norm`` / ``group_norm``.

The forwards save x, weight, bias and the per-row mean and rstd (fp32); backward recomputes the
pre-activation from them (no activation-sized tensor is kept).
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from ..activations import activation_args, activation_of, parse_activation
from ..backend import Kernels, reference_launcher, resolve
from ..kernels.triton import norm as triton
from ..reference import norm as reference
from ._common import autocast_to_float, check_finite, check_tensor
from ._library import absent, define, like_layout

__all__ = ["layer_norm", "group_norm"]

# mean, rstd and the parameter gradients stay (at least) float32 in the reference; the ops cast
# the parameter gradients to the parameters' dtypes. No CuPy kernels (yet): "auto" picks Triton.
LAYER_NORM = Kernels(
    "layer_norm",
    reference=(reference_launcher(reference.layer_norm_forward, float32_outputs=(1, 2)),
               reference_launcher(reference.layer_norm_backward, float32_outputs=(1, 2))),
    triton=(triton.layer_norm_forward, triton.layer_norm_backward))
GROUP_NORM = Kernels(
    "group_norm",
    reference=(reference_launcher(reference.group_norm_forward, float32_outputs=(1, 2)),
               reference_launcher(reference.group_norm_backward, float32_outputs=(1, 2))),
    triton=(triton.group_norm_forward, triton.group_norm_backward))


def _stats_like(x: Tensor, shape: tuple[int, ...]) -> Tensor:
    return x.new_empty(shape, dtype=torch.promote_types(x.dtype, torch.float32))


def _param_grads(grads, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]):
    """A launcher's (grad_x, grad_weight, grad_bias) as op outputs: grad_x in x's layout, the
    parameter gradients in the parameters' dtypes, empty where None."""
    gx, gw, gb = grads
    return (like_layout(gx, x) if gx is not None else absent(x),
            gw.to(weight.dtype) if gw is not None else absent(x),
            gb.to(bias.dtype) if gb is not None else absent(x))


def _fake_grads(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], needs):
    return (torch.empty_like(x) if needs[0] else absent(x),
            torch.empty_like(weight) if needs[1] and weight is not None else absent(x),
            torch.empty_like(bias) if needs[2] and bias is not None else absent(x))


def _setup(ctx, inputs, output):
    """Both forward ops: (x, normalized_shape or num_groups, weight, bias, eps, act, act_param,
    backend) -> x, the parameters, mean and rstd saved."""
    x, arg, weight, bias, _, act, act_param, backend = inputs
    ctx.arg, ctx.act, ctx.backend = arg, (act, act_param), backend
    ctx.save_for_backward(x, weight, bias, output[1], output[2])


def _grad_with(backward_op):
    """The autograd formula of a forward op whose backward op is ``backward_op``."""
    def grad(ctx, grad_y, grad_mean, grad_rstd):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        needs = [ctx.needs_input_grad[i] for i in (0, 2, 3)]
        grads = backward_op(grad_y, x, ctx.arg, weight, bias, mean, rstd, *ctx.act, needs,
                            ctx.backend)
        gx, gw, gb = (g if need else None for g, need in zip(grads, needs))
        return gx, None, gw, gb, None, None, None, None
    return grad


# --- layer norm ---------------------------------------------------------------------------------

@define("layer_norm")
def layer_norm_op(x: Tensor, normalized_shape: list[int], weight: Optional[Tensor],
                  bias: Optional[Tensor], eps: float, act: str, act_param: float,
                  backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """x [*, *normalized_shape] -> (act(xhat * weight + bias) contiguous (as torch), mean [M],
    rstd [M]) with M the product of the leading dims; mean, rstd at least float32."""
    y, mean, rstd = LAYER_NORM.forward(backend)(x, tuple(normalized_shape), weight, bias, eps,
                                                activation_of(act, act_param))
    return y.contiguous(), mean, rstd


@layer_norm_op.register_fake
def _(x, normalized_shape, weight, bias, eps, act, act_param, backend):
    rows = math.prod(x.shape[:x.dim() - len(normalized_shape)])
    return x.new_empty(x.shape), _stats_like(x, (rows,)), _stats_like(x, (rows,))


@define("layer_norm_backward")
def layer_norm_backward(grad_y: Tensor, x: Tensor, normalized_shape: list[int],
                        weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                        rstd: Tensor, act: str, act_param: float, needs: list[bool],
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x in x's layout, grad_weight, grad_bias in the parameters' dtypes), each empty
    unless ``needs`` it."""
    grads = LAYER_NORM.backward(backend)(grad_y, x, tuple(normalized_shape), weight, bias, mean,
                                         rstd, activation_of(act, act_param), tuple(needs))
    return _param_grads(grads, x, weight, bias)


@layer_norm_backward.register_fake
def _(grad_y, x, normalized_shape, weight, bias, mean, rstd, act, act_param, needs, backend):
    return _fake_grads(x, weight, bias, needs)


layer_norm_op.register_autograd(_grad_with(layer_norm_backward), setup_context=_setup)


# --- group norm ---------------------------------------------------------------------------------

@define("group_norm")
def group_norm_op(x: Tensor, num_groups: int, weight: Optional[Tensor], bias: Optional[Tensor],
                  eps: float, act: str, act_param: float,
                  backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """x [N, C, *] -> (act(xhat * weight + bias) in x's suggested memory format (as torch),
    mean [N, G], rstd [N, G]); mean, rstd at least float32."""
    y, mean, rstd = GROUP_NORM.forward(backend)(x, num_groups, weight, bias, eps,
                                                activation_of(act, act_param))
    return y.contiguous(memory_format=suggest_memory_format(x)), mean, rstd


@group_norm_op.register_fake
def _(x, num_groups, weight, bias, eps, act, act_param, backend):
    y = x.new_empty(x.shape).contiguous(memory_format=suggest_memory_format(x))
    return y, _stats_like(x, (x.shape[0], num_groups)), _stats_like(x, (x.shape[0], num_groups))


@define("group_norm_backward")
def group_norm_backward(grad_y: Tensor, x: Tensor, num_groups: int, weight: Optional[Tensor],
                        bias: Optional[Tensor], mean: Tensor, rstd: Tensor, act: str,
                        act_param: float, needs: list[bool],
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x in x's layout, grad_weight, grad_bias in the parameters' dtypes), each empty
    unless ``needs`` it."""
    grads = GROUP_NORM.backward(backend)(grad_y, x, num_groups, weight, bias, mean, rstd,
                                         activation_of(act, act_param), tuple(needs))
    return _param_grads(grads, x, weight, bias)


@group_norm_backward.register_fake
def _(grad_y, x, num_groups, weight, bias, mean, rstd, act, act_param, needs, backend):
    return _fake_grads(x, weight, bias, needs)


group_norm_op.register_autograd(_grad_with(group_norm_backward), setup_context=_setup)


# --- public functions ---------------------------------------------------------------------------

def _check_params(op: str, input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                  eps: float) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Devices and dtypes of input and parameters (a float16 / bfloat16 input may have float32
    parameters, as torch), eps a number; under CUDA autocast everything in float32 (layer_norm
    and group_norm are on torch's CUDA float32 list; CPU autocast leaves them alone)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{op}: eps must be a float, got {eps!r}")
    check_finite(op, eps=eps)
    present = {k: t for k, t in (("input", input), ("weight", weight), ("bias", bias))
               if t is not None}
    if len({t.device for t in present.values()}) > 1:
        raise RuntimeError(f"{op}: tensors on different devices: "
                           + ", ".join(f"{k} on {t.device}" for k, t in present.items()))
    if input.device.type == "cuda":
        input, weight, bias = autocast_to_float(input, weight, bias)
        present = {k: t for k, t in (("input", input), ("weight", weight), ("bias", bias))
                   if t is not None}
    allowed = {input.dtype, torch.float32} if input.dtype in (torch.float16, torch.bfloat16) \
        else {input.dtype}
    if any(t.dtype not in allowed for t in present.values()):
        raise TypeError(f"{op}: dtypes differ: "
                        + ", ".join(f"{k} is {t.dtype}" for k, t in present.items())
                        + " (only a float16/bfloat16 input may have float32 parameters)")
    return input, weight, bias


def _normalize(name: str, op, kernels: Kernels, input: Tensor, arg, weight: Optional[Tensor],
               bias: Optional[Tensor], eps: float, act) -> Tensor:
    """The checked-shape tail of both public functions: dtypes, devices, autocast, the op."""
    input, weight, bias = _check_params(name, input, weight, bias, eps)
    y, _, _ = op(input, arg, weight, bias, float(eps), *activation_args(act),
                 resolve(kernels, input, weight, bias))
    return y


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5,
               activation: Any = None) -> Tensor:
    """torch.nn.functional.layer_norm plus a fused ``activation``: normalizes over the last
    ``len(normalized_shape)`` dims of input."""
    act = parse_activation(activation)
    check_tensor("input", input)
    check_tensor("weight", weight, optional=True)
    check_tensor("bias", bias, optional=True)
    if isinstance(normalized_shape, torch.Size):
        normalized_shape = tuple(normalized_shape)
    if not isinstance(normalized_shape, (tuple, list)) or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in normalized_shape):
        raise TypeError(f"layer_norm(): argument 'normalized_shape' (position 2) must be tuple "
                        f"of ints, not {type(normalized_shape).__name__}")
    shape = [int(n) for n in normalized_shape]
    if not shape:
        raise RuntimeError("Expected normalized_shape to be at least 1-dimensional, i.e., "
                           "containing at least one element, but got normalized_shape = []")
    if any(n < 0 for n in shape):
        raise ValueError(f"layer_norm: normalized_shape must not be negative, got {shape}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and list(t.shape) != shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got "
                               f"{name} of shape {list(t.shape)} and normalized_shape = {shape}")
    k = len(shape)
    if input.dim() < k or list(input.shape[input.dim() - k:]) != shape:
        raise RuntimeError(f"Given normalized_shape={shape}, expected input with shape "
                           f"[*, {', '.join(map(str, shape))}], but got input of size"
                           f"{list(input.shape)}")
    return _normalize("layer_norm", layer_norm_op, LAYER_NORM, input, shape, weight, bias, eps,
                      act)


def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5,
               activation: Any = None) -> Tensor:
    """torch.nn.functional.group_norm plus a fused ``activation``: input [N, C, *] normalized
    per sample over each of ``num_groups`` groups of C / num_groups channels."""
    act = parse_activation(activation)
    check_tensor("input", input)
    check_tensor("weight", weight, optional=True)
    check_tensor("bias", bias, optional=True)
    if isinstance(num_groups, bool) or not isinstance(num_groups, int):
        raise TypeError(f"group_norm(): argument 'num_groups' must be int, not "
                        f"{type(num_groups).__name__}")
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received "
                           f"{input.dim()}")
    if num_groups <= 0:
        raise ValueError(f"group_norm: num_groups must be a positive integer, got {num_groups}")
    channels = input.shape[1]
    if channels % num_groups:
        raise RuntimeError(f"Expected number of channels in input to be divisible by "
                           f"num_groups, but got input of shape {list(input.shape)} and "
                           f"num_groups={num_groups}")
    # torch's own check (a group of one value per sample normalizes to 0), whatever the mode
    grouped = [input.shape[0] * channels // num_groups, num_groups, *input.shape[2:]]
    if grouped[0] * math.prod(grouped[2:]) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{grouped}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dim() != 1 or t.numel() != channels):
            raise RuntimeError(f"Expected {name} to be a vector of size equal to the number of "
                               f"channels in input, but got {name} of shape {list(t.shape)} "
                               f"and input of shape {list(input.shape)}")
    return _normalize("group_norm", group_norm_op, GROUP_NORM, input, num_groups, weight, bias,
                      eps, act)
