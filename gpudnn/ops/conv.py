"""2-D convolution and transposed convolution: one autograd Function, the public functions.

``conv2d`` / ``conv_transpose2d`` take torch.nn.functional's arguments plus ``activation=``
(fused with the bias into the kernel's epilogue). Argument checks raise torch's errors; the
launchers then see normalized arguments only: 4-D NCHW or channels_last tensors, (h, w) pairs and
the convolution's padding as (top, bottom, left, right), so that ``padding="same"`` with an even
kernel pads asymmetrically exactly as torch does.
"""
from __future__ import annotations

from typing import Any

import torch
from torch._prims_common import suggest_memory_format
from torch.autograd.function import once_differentiable

from ..activations import parse_activation
from ._common import (autocast_to_lower, backward_launcher, check_same, check_tensor,
                      forward_launcher, pair)
from ._shapes import conv_output_size, conv_transpose2d_output_size

__all__ = ["conv2d", "conv_transpose2d"]


def launcher_layout(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` dense in the memory format torch suggests for it (NCHW or channels_last): the only
    two layouts the launchers accept (a no-op when it already is)."""
    if t is None or t.dim() != 4:
        return t
    return t.contiguous(memory_format=suggest_memory_format(t))


def output_format(*tensors: torch.Tensor) -> torch.memory_format:
    """channels_last when any operand suggests it (torch's rule for conv outputs)."""
    return torch.channels_last if any(
        suggest_memory_format(t) == torch.channels_last for t in tensors) else \
        torch.contiguous_format


def positive_pair(value: Any, name: str) -> tuple[int, int]:
    result = pair(value, name)
    if min(result) <= 0:
        raise RuntimeError(f"non-positive {name} is not supported (got {name}={value!r})")
    return result


def nonnegative_pair(value: Any, name: str) -> tuple[int, int]:
    result = pair(value, name)
    if min(result) < 0:
        raise RuntimeError(f"negative {name} is not supported (got {name}={value!r})")
    return result


def _check_groups(groups: Any) -> int:
    if not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0:
        raise RuntimeError(f"non-positive groups is not supported (got groups={groups!r})")
    return groups


def _conv_padding(padding: Any, kernel: tuple[int, int], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for an int, a pair, "valid" or "same" (torch's split: the
    extra row / column of an even kernel goes to the bottom / right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions "
                                 f"(got stride={stride})")
            total = [dilation[a] * (kernel[a] - 1) for a in range(2)]
            return (total[0] // 2, total[0] - total[0] // 2, total[1] // 2,
                    total[1] - total[1] // 2)
        raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                         "{'valid', 'same'}")
    ph, pw = nonnegative_pair(padding, "padding")
    return (ph, ph, pw, pw)


class _ConvFunction(torch.autograd.Function):
    """y = act(conv(x, weight) + bias) for ``kind`` "conv2d" or "conv_transpose2d"; ``params``
    are the launcher arguments between bias and act (see gpudnn.launchers)."""

    @staticmethod
    def forward(ctx, kind: str, x, weight, bias, params: tuple, act, out_shape: tuple[int, ...]):
        fmt = output_format(x, weight)
        ctx.kind, ctx.params, ctx.act, ctx.fmt = kind, params, act, fmt
        if x.shape[0] == 0:  # nothing to launch: an empty output, zero weight/bias gradients
            ctx.save_for_backward(x, weight, None)
            return x.new_empty(out_shape).contiguous(memory_format=fmt)
        y, saved = forward_launcher(ctx, f"{kind}_forward", x, weight, bias)(
            x, weight, bias, *params, act)
        ctx.save_for_backward(x, weight, saved)
        return y.contiguous(memory_format=fmt)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        x, weight, saved = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[1:4])
        if x.shape[0] == 0:
            grad_x = torch.zeros_like(x) if needs[0] else None
            grad_weight = torch.zeros_like(weight) if needs[1] else None
            grad_bias = weight.new_zeros(grad_y.shape[1]) if needs[2] else None
        else:
            grad_y = grad_y.contiguous(memory_format=ctx.fmt)
            grad_x, grad_weight, grad_bias = backward_launcher(ctx, f"{ctx.kind}_backward")(
                grad_y, x, weight, saved, *ctx.params, ctx.act, needs)
        return None, grad_x, grad_weight, grad_bias, None, None, None


def _prepare(op: str, input, weight, bias, groups: Any):
    """Shared checks and casts: returns (input [N, C, H, W], weight, bias, groups, unbatched)."""
    check_tensor("input", input, ndim=(3, 4))
    check_tensor("weight", weight, ndim=4)
    check_tensor("bias", bias, ndim=1, optional=True)
    groups = _check_groups(groups)
    input, weight, bias = autocast_to_lower(input, weight, bias)
    check_same(op, input=input, weight=weight, bias=bias)
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    return input, weight, bias, groups, unbatched


def _check_bias(bias, weight, channels: int) -> None:
    if bias is not None and bias.shape[0] != channels:
        raise RuntimeError(f"Given weight of size {list(weight.shape)}, expected bias to be "
                           f"1-dimensional with {channels} elements, but got bias of size "
                           f"{list(bias.shape)} instead")


def _check_output_size(input, out_hw) -> None:
    if min(out_hw) <= 0:
        raise RuntimeError(f"Given input size per channel: ({input.shape[2]} x {input.shape[3]})."
                           f" Calculated output size per channel: ({out_hw[0]} x {out_hw[1]}). "
                           "Output size is too small")


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """torch.nn.functional.conv2d with a fused ``activation`` (None, a name, or a torch module).

    input [N, Cin, H, W] or [Cin, H, W], weight [Cout, Cin/groups, kh, kw], bias [Cout] | None;
    padding an int, a pair, "valid" or "same" (stride 1 only)."""
    act = parse_activation(activation)
    input, weight, bias, groups, unbatched = _prepare("conv2d", input, weight, bias, groups)
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    kernel = tuple(weight.shape[2:])
    pad4 = _conv_padding(padding, kernel, stride, dilation)
    cout = weight.shape[0]
    if cout % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size {list(weight.shape)} instead")
    if input.shape[1] != weight.shape[1] * groups:
        raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
                           f"input{list(input.shape)} to have {weight.shape[1] * groups} "
                           f"channels, but got {input.shape[1]} channels instead")
    _check_bias(bias, weight, cout)
    padded = (input.shape[2] + pad4[0] + pad4[1], input.shape[3] + pad4[2] + pad4[3])
    dilated = tuple(dilation[a] * (kernel[a] - 1) + 1 for a in range(2))
    if padded[0] < dilated[0] or padded[1] < dilated[1]:
        raise RuntimeError(f"Calculated padded input size per channel: ({padded[0]} x "
                           f"{padded[1]}). Kernel size: ({dilated[0]} x {dilated[1]}). Kernel "
                           "size can't be greater than actual input size")
    out_hw = tuple(conv_output_size(input.shape[2 + a], kernel[a], stride[a], pad4[2 * a],
                                    pad4[2 * a + 1], dilation[a]) for a in range(2))
    y = _ConvFunction.apply("conv2d", launcher_layout(input), launcher_layout(weight), bias,
                            (stride, pad4, dilation, groups), act,
                            (input.shape[0], cout) + out_hw)
    return y.squeeze(0) if unbatched else y


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, activation=None):
    """torch.nn.functional.conv_transpose2d with a fused ``activation``.

    input [N, Cin, H, W] or [Cin, H, W], weight [Cin, Cout/groups, kh, kw], bias [Cout] | None."""
    act = parse_activation(activation)
    if isinstance(padding, str):
        raise ValueError(f"conv_transpose2d: padding must be an int or a pair of ints, got "
                         f"{padding!r} (string padding is only defined for conv2d)")
    input, weight, bias, groups, unbatched = _prepare(
        "conv_transpose2d", input, weight, bias, groups)
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    padding = nonnegative_pair(padding, "padding")
    output_padding = nonnegative_pair(output_padding, "output_padding")
    if any(output_padding[a] >= max(stride[a], dilation[a]) for a in range(2)):
        raise RuntimeError(
            "output padding must be smaller than either stride or dilation, but got "
            f"output_padding_height: {output_padding[0]} output_padding_width: "
            f"{output_padding[1]} stride_height: {stride[0]} stride_width: {stride[1]} "
            f"dilation_height: {dilation[0]} dilation_width: {dilation[1]}")
    cin = weight.shape[0]
    if cin % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} "
                           f"at dimension 0, but got weight of size {list(weight.shape)} instead")
    if input.shape[1] != cin:
        raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected "
                           f"input{list(input.shape)} to have {cin} channels, but got "
                           f"{input.shape[1]} channels instead")
    cout = weight.shape[1] * groups
    _check_bias(bias, weight, cout)
    kernel = tuple(weight.shape[2:])
    out_hw = tuple(conv_transpose2d_output_size(input.shape[2 + a], kernel[a], stride[a],
                                                padding[a], output_padding[a], dilation[a])
                   for a in range(2))
    _check_output_size(input, out_hw)
    y = _ConvFunction.apply("conv_transpose2d", launcher_layout(input), launcher_layout(weight),
                            bias, (stride, padding, output_padding, groups, dilation), act,
                            (input.shape[0], cout) + out_hw)
    return y.squeeze(0) if unbatched else y
