"""Weight-only quantized inference: the ops ``gpudnn::quant_dense`` / ``gpudnn::quant_conv2d`` and
``quantized_linear`` / ``quantized_conv2d``.

The weight is int8 or ``torch.float8_e4m3fn`` with float32 scales per output channel ([N]) or per
tensor ([1]) (``gpudnn.quantization.quantize_weight`` makes them); activations are float32,
bfloat16 or float16 (float64 on the reference). ``y = act((x @ weight^T) * scale + bias)``: the
kernels convert each weight tile in registers and scale the accumulator once per output
(``kernels/triton/quant.py``); the NumPy reference computes the same (``reference/quant.py``).
A float8 weight enters the ops as its uint8 bit patterns (a view; NumPy has no float8 type, and
torch's schema checks cannot compare float8 tensors on the CPU).

Forward only: the ops' autograd formula raises, so a backward through a quantized layer is a
``RuntimeError`` that says so (``gpudnn.quantization``'s modules refuse training mode up front).
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from ..activations import activation_args, activation_of, parse_activation
from ..backend import Kernels, reference_launcher, resolve
from ..kernels.triton import quant as triton
from ..reference import quant as reference
from ._common import autocast_to_lower, check_same, check_tensor
from ._library import define
from .conv import (CONV2D, _check_groups, _conv_forward_fake, conv2d_geometry, launcher_layout,
                   output_format)
from .dense import check_linear_shapes

__all__ = ["quantized_linear", "quantized_conv2d"]

QUANTIZED_DTYPES = (torch.int8, torch.float8_e4m3fn)

QUANT_DENSE = Kernels(
    "quant_dense",
    reference=(reference_launcher(reference.quant_dense_forward),),
    triton=(triton.quant_dense_forward,))
QUANT_CONV2D = Kernels(
    "quant_conv2d",
    reference=(reference_launcher(reference.quant_conv2d_forward),),
    triton=(triton.quant_conv2d_forward,))


def _bits(weight: Tensor) -> Tensor:
    """What the ops take: int8 as is, float8 e4m3fn as its uint8 bit patterns (a view)."""
    return weight.view(torch.uint8) if weight.dtype == torch.float8_e4m3fn else weight


def _inference_only(op, name: str) -> None:
    def setup(ctx, inputs, output):
        pass

    def backward(ctx, grad):
        raise RuntimeError(f"gpudnn::{name} has no backward: quantized layers are for inference "
                           "only. Train (or fine-tune) the float model and quantize it afterwards")

    op.register_autograd(backward, setup_context=setup)


@define("quant_dense")
def quant_dense(x: Tensor, weight: Tensor, scale: Tensor, bias: Optional[Tensor], act: str,
                act_param: float, backend: str) -> Tensor:
    """x [M, K] float, weight [N, K] int8 | uint8 (float8 e4m3fn bits), scale float32 [N] | [1],
    bias [N] | None -> y = act((x @ weight^T) * scale + bias) [M, N]."""
    return QUANT_DENSE.forward(backend)(x, weight, scale, bias, activation_of(act, act_param))


@quant_dense.register_fake
def _(x, weight, scale, bias, act, act_param, backend):
    return x.new_empty((x.shape[0], weight.shape[0]))


_inference_only(quant_dense, "quant_dense")


@define("quant_conv2d")
def quant_conv2d(x: Tensor, weight: Tensor, scale: Tensor, bias: Optional[Tensor],
                 stride: list[int], padding: list[int], dilation: list[int], groups: int,
                 act: str, act_param: float, backend: str) -> Tensor:
    """x [N, Cin, H, W] (NCHW or channels_last), weight [Cout, Cin/groups, kh, kw] int8 | uint8
    (float8 e4m3fn bits), scale float32 [Cout] | [1], bias [Cout] | None; padding (top, bottom,
    left, right) -> y = act(conv(x, weight) * scale + bias) in torch's memory format."""
    fmt = output_format(x, weight)
    params = (stride, padding, dilation, groups)
    if x.shape[0] == 0:  # nothing to launch
        return _conv_forward_fake(CONV2D, x, weight, params, "", 0.0)[0]
    y = QUANT_CONV2D.forward(backend)(x, weight, scale, bias, *params,
                                      activation_of(act, act_param))
    return y.contiguous(memory_format=fmt)


@quant_conv2d.register_fake
def _(x, weight, scale, bias, stride, padding, dilation, groups, act, act_param, backend):
    return _conv_forward_fake(CONV2D, x, weight, (stride, padding, dilation, groups), "", 0.0)[0]


_inference_only(quant_conv2d, "quant_conv2d")


def check_quantized_weight(op: str, weight: Any, weight_scale: Any, ndim: int) -> None:
    """A weight of ``QUANTIZED_DTYPES`` with ``ndim`` dims and a float32 scale [out] or [1]."""
    check_tensor("weight", weight, ndim=ndim, floating=False)
    check_tensor("weight_scale", weight_scale, ndim=1, floating=False)
    if weight.dtype not in QUANTIZED_DTYPES:
        raise TypeError(f"{op}: weight must be int8 or torch.float8_e4m3fn (quantized with "
                        f"gpudnn.quantization.quantize_weight), got {weight.dtype}")
    if weight_scale.dtype != torch.float32:
        raise TypeError(f"{op}: weight_scale must be float32, got {weight_scale.dtype}")
    if weight_scale.shape[0] not in (1, weight.shape[0]):
        raise ValueError(f"{op}: weight_scale must hold one scale per output channel "
                         f"({weight.shape[0]}) or one in all, got shape "
                         f"{tuple(weight_scale.shape)}")


def _check_devices(op: str, **tensors: Tensor | None) -> None:
    devices = {k: v.device for k, v in tensors.items() if v is not None}
    if len(set(devices.values())) > 1:
        raise RuntimeError(f"{op}: tensors on different devices: "
                           + ", ".join(f"{k} on {d}" for k, d in devices.items()))


def quantized_linear(input: Tensor, weight: Tensor, weight_scale: Tensor,
                     bias: Tensor | None = None, activation: Any = None) -> Tensor:
    """``linear(input, weight * weight_scale[:, None], bias)`` with the weight kept quantized:
    input [*, K] float, weight [N, K] int8 | float8_e4m3fn, weight_scale float32 [N] | [1],
    bias [N] | None, plus a fused ``activation``. Inference only (no backward)."""
    act = parse_activation(activation)
    check_tensor("input", input)
    check_quantized_weight("quantized_linear", weight, weight_scale, 2)
    check_tensor("bias", bias, ndim=1, optional=True)
    check_linear_shapes("quantized_linear", input, weight, bias)
    input, bias = autocast_to_lower(input, bias)
    check_same("quantized_linear", input=input, bias=bias)
    _check_devices("quantized_linear", input=input, weight=weight, weight_scale=weight_scale)
    lead = input.shape[:-1]
    x2d, weight = input.reshape(math.prod(lead), input.shape[-1]), _bits(weight)
    y = quant_dense(x2d, weight, weight_scale, bias, *activation_args(act),
                    resolve(QUANT_DENSE, x2d, weight, weight_scale, bias))
    return y.reshape(*lead, weight.shape[0])


def quantized_conv2d(input: Tensor, weight: Tensor, weight_scale: Tensor,
                     bias: Tensor | None = None, stride=1, padding=0, dilation=1, groups=1,
                     activation: Any = None) -> Tensor:
    """``conv2d(input, weight * weight_scale[:, None, None, None], bias, ...)`` with the weight
    kept quantized: torch.nn.functional.conv2d's arguments, weight [Cout, Cin/groups, kh, kw]
    int8 | float8_e4m3fn, weight_scale float32 [Cout] | [1], plus a fused ``activation``.
    Inference only (no backward)."""
    act = parse_activation(activation)
    check_tensor("input", input, ndim=(3, 4))
    check_quantized_weight("quantized_conv2d", weight, weight_scale, 4)
    check_tensor("bias", bias, ndim=1, optional=True)
    groups = _check_groups(groups)
    input, bias = autocast_to_lower(input, bias)
    check_same("quantized_conv2d", input=input, bias=bias)
    _check_devices("quantized_conv2d", input=input, weight=weight, weight_scale=weight_scale)
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    stride, pad4, dilation = conv2d_geometry(input, weight, bias, stride, padding, dilation,
                                             groups)
    input, weight = launcher_layout(input), launcher_layout(_bits(weight))
    y = quant_conv2d(input, weight, weight_scale, bias, list(stride), list(pad4), list(dilation),
                     groups, *activation_args(act),
                     resolve(QUANT_CONV2D, input, weight, weight_scale, bias))
    return y.squeeze(0) if unbatched else y
