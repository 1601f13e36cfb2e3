"""2-D max and average pooling: autograd Functions and the public functions.

``max_pool2d`` / ``avg_pool2d`` take torch.nn.functional's arguments and raise torch's errors;
the launchers see 4-D NCHW or channels_last tensors and (h, w) pairs only. The output takes the
input's memory format, as torch's does.
"""
from __future__ import annotations

import torch
from torch._prims_common import suggest_memory_format
from torch.autograd.function import once_differentiable

from ._common import backward_launcher, check_tensor, forward_launcher, pair
from ._shapes import pool_output_size
from .conv import launcher_layout, nonnegative_pair, positive_pair

__all__ = ["max_pool2d", "avg_pool2d"]


def _prepare(input, kernel_size, stride, padding, dilation, ceil_mode):
    """Torch's pool2d checks; returns (input [N, C, H, W], kernel, stride, padding, dilation,
    output shape, unbatched)."""
    check_tensor("input", input, ndim=(3, 4))
    if min(input.shape[-3:]) == 0:
        raise RuntimeError("Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size "
                           f"for input, but got: {list(input.shape)}")
    kernel = pair(kernel_size, "kernel_size")
    if min(kernel) <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kH: {kernel[0]} "
                           f"kW: {kernel[1]}")
    # stride=None (or torch's empty list) means stride = kernel_size
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) \
        else positive_pair(stride, "stride")
    padding = nonnegative_pair(padding, "padding")
    dilation = positive_pair(dilation, "dilation")
    if any(padding[a] > kernel[a] // 2 for a in range(2)):
        raise RuntimeError(f"pad should be at most half of effective kernel size, but got "
                           f"pad={padding}, kernel_size={kernel} and dilation={dilation}")
    unbatched = input.dim() == 3
    if unbatched:
        input = input.unsqueeze(0)
    n, c, h, w = input.shape
    out_hw = tuple(pool_output_size((h, w)[a], kernel[a], stride[a], padding[a], dilation[a],
                                    ceil_mode) for a in range(2))
    if min(out_hw) < 1:
        raise RuntimeError(f"Given input size: ({c}x{h}x{w}). Calculated output size: "
                           f"({c}x{out_hw[0]}x{out_hw[1]}). Output size is too small")
    return input, kernel, stride, padding, dilation, (n, c) + out_hw, unbatched


class _PoolFunction(torch.autograd.Function):
    """y = pool(x) for ``kind`` "max_pool2d" or "avg_pool2d"; ``params`` are the launcher
    arguments after x (see gpudnn.launchers)."""

    @staticmethod
    def forward(ctx, kind: str, x, params: tuple, out_shape: tuple[int, ...]):
        fmt = suggest_memory_format(x)
        ctx.kind, ctx.params, ctx.x_shape = kind, params, tuple(x.shape)
        if x.shape[0] == 0:
            ctx.save_for_backward(None)
            return x.new_empty(out_shape).contiguous(memory_format=fmt)
        if kind == "max_pool2d":
            y, saved = forward_launcher(ctx, "max_pool2d_forward", x)(x, *params)
        else:
            y, saved = forward_launcher(ctx, "avg_pool2d_forward", x)(x, *params), None
        ctx.save_for_backward(saved)
        return y.contiguous(memory_format=fmt)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y):
        if ctx.x_shape[0] == 0:
            return None, grad_y.new_zeros(ctx.x_shape), None, None
        grad_y = launcher_layout(grad_y)
        if ctx.kind == "max_pool2d":
            (saved,) = ctx.saved_tensors
            grad_x = backward_launcher(ctx, "max_pool2d_backward")(
                grad_y, ctx.x_shape, saved, *ctx.params)
        else:
            grad_x = backward_launcher(ctx, "avg_pool2d_backward")(
                grad_y, ctx.x_shape, *ctx.params)
        return None, grad_x, None, None


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """torch.nn.functional.max_pool2d: input [N, C, H, W] or [C, H, W]; -inf padding."""
    if return_indices:
        raise NotImplementedError(
            "gpudnn max_pool2d does not return indices (each backend keeps its own opaque "
            "record for backward); use torch.nn.functional.max_pool2d for return_indices=True")
    input, kernel, stride, padding, dilation, out_shape, unbatched = _prepare(
        input, kernel_size, stride, padding, dilation, bool(ceil_mode))
    y = _PoolFunction.apply("max_pool2d", launcher_layout(input),
                            (kernel, stride, padding, dilation, bool(ceil_mode)), out_shape)
    return y.squeeze(0) if unbatched else y


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """torch.nn.functional.avg_pool2d: input [N, C, H, W] or [C, H, W]."""
    if divisor_override is not None:
        if not isinstance(divisor_override, int) or isinstance(divisor_override, bool):
            raise TypeError(f"divisor_override must be an int or None, got {divisor_override!r}")
        if divisor_override == 0:
            raise RuntimeError("divisor must be not zero")
    input, kernel, stride, padding, _, out_shape, unbatched = _prepare(
        input, kernel_size, stride, padding, 1, bool(ceil_mode))
    y = _PoolFunction.apply("avg_pool2d", launcher_layout(input),
                            (kernel, stride, padding, bool(ceil_mode), bool(count_include_pad),
                             divisor_override), out_shape)
    return y.squeeze(0) if unbatched else y
