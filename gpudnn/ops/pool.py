"""2-D max and average pooling: the ops ``gpudnn::max_pool2d`` / ``gpudnn::avg_pool2d`` (and
their backward ops) and the public functions.

``max_pool2d`` / ``avg_pool2d`` take torch.nn.functional's arguments and raise torch's errors;
the launchers see 4-D NCHW or channels_last tensors and (h, w) pairs only. The output takes the
input's memory format, as torch's does.
"""
from typing import Optional

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import pool as cupy
from ..kernels.triton import pool as triton
from ..reference import pool as reference
from ._common import check_tensor, pair
from ._library import define
from ._shapes import pool_output_size
from .conv import launcher_layout, nonnegative_pair, positive_pair

__all__ = ["max_pool2d", "avg_pool2d"]

MAX_POOL2D = Kernels(
    "max_pool2d",
    reference=(reference_launcher(reference.max_pool2d_forward),
               reference_launcher(reference.max_pool2d_backward)),
    triton=(triton.max_pool2d_forward, triton.max_pool2d_backward),
    cupy=(cupy.max_pool2d_forward, cupy.max_pool2d_backward))
AVG_POOL2D = Kernels(
    "avg_pool2d",
    reference=(reference_launcher(reference.avg_pool2d_forward),
               reference_launcher(reference.avg_pool2d_backward)),
    triton=(triton.avg_pool2d_forward, triton.avg_pool2d_backward),
    cupy=(cupy.avg_pool2d_forward, cupy.avg_pool2d_backward))


def saved_index_dtype(backend: str) -> torch.dtype:
    """dtype of the window record a backend's max-pool forward saves for its backward (opaque to
    the op, but its fake rule must know it): int32 taps for triton, int64 positions otherwise."""
    return torch.int32 if backend == "triton" else torch.int64


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


def _pool_shape(x: Tensor, kernel_size, stride, padding, dilation, ceil_mode) -> tuple:
    return (x.shape[0], x.shape[1], *(pool_output_size(x.shape[2 + a], kernel_size[a], stride[a],
                                                        padding[a], dilation[a], ceil_mode)
                                      for a in range(2)))


def _empty(x: Tensor, shape, dtype=None) -> Tensor:
    """An output of ``shape`` in x's memory format (torch's rule for pooling)."""
    return x.new_empty(shape, dtype=dtype).contiguous(memory_format=suggest_memory_format(x))


@define("max_pool2d")
def max_pool2d_op(x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                  dilation: list[int], ceil_mode: bool, backend: str) -> tuple[Tensor, Tensor]:
    """x [N, C, H, W] (NCHW or channels_last) -> (y in x's format, the window record the same
    backend's backward reads: see ``saved_index_dtype``); pairs are (h, w)."""
    params = (kernel_size, stride, padding, dilation, ceil_mode)
    if x.shape[0] == 0:
        shape = _pool_shape(x, *params)
        return _empty(x, shape), _empty(x, shape, saved_index_dtype(backend))
    y, saved = MAX_POOL2D.forward(backend)(x, *params)
    fmt = suggest_memory_format(x)
    return y.contiguous(memory_format=fmt), saved.contiguous(memory_format=fmt)


@max_pool2d_op.register_fake
def _(x, kernel_size, stride, padding, dilation, ceil_mode, backend):
    shape = _pool_shape(x, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty(x, shape), _empty(x, shape, saved_index_dtype(backend))


@define("max_pool2d_backward")
def max_pool2d_backward(grad_y: Tensor, x_shape: list[int], saved: Tensor,
                        kernel_size: list[int], stride: list[int], padding: list[int],
                        dilation: list[int], ceil_mode: bool, backend: str) -> Tensor:
    """grad_x [N, C, H, W] (x_shape) in grad_y's memory format."""
    if x_shape[0] == 0:
        return _empty(grad_y, x_shape).zero_()
    grad_x = MAX_POOL2D.backward(backend)(launcher_layout(grad_y), tuple(x_shape), saved,
                                          kernel_size, stride, padding, dilation, ceil_mode)
    return grad_x.contiguous(memory_format=suggest_memory_format(grad_y))


@max_pool2d_backward.register_fake
def _(grad_y, x_shape, saved, kernel_size, stride, padding, dilation, ceil_mode, backend):
    return _empty(grad_y, x_shape)


@define("avg_pool2d")
def avg_pool2d_op(x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                  ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int],
                  backend: str) -> Tensor:
    """x [N, C, H, W] -> y in x's memory format."""
    params = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    if x.shape[0] == 0:
        return _empty(x, _pool_shape(x, kernel_size, stride, padding, (1, 1), ceil_mode))
    y = AVG_POOL2D.forward(backend)(x, *params)
    return y.contiguous(memory_format=suggest_memory_format(x))


@avg_pool2d_op.register_fake
def _(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, backend):
    return _empty(x, _pool_shape(x, kernel_size, stride, padding, (1, 1), ceil_mode))


@define("avg_pool2d_backward")
def avg_pool2d_backward(grad_y: Tensor, x_shape: list[int], kernel_size: list[int],
                        stride: list[int], padding: list[int], ceil_mode: bool,
                        count_include_pad: bool, divisor_override: Optional[int],
                        backend: str) -> Tensor:
    """grad_x [N, C, H, W] (x_shape) in grad_y's memory format."""
    if x_shape[0] == 0:
        return _empty(grad_y, x_shape).zero_()
    grad_x = AVG_POOL2D.backward(backend)(launcher_layout(grad_y), tuple(x_shape), kernel_size,
                                          stride, padding, ceil_mode, count_include_pad,
                                          divisor_override)
    return grad_x.contiguous(memory_format=suggest_memory_format(grad_y))


@avg_pool2d_backward.register_fake
def _(grad_y, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
      divisor_override, backend):
    return _empty(grad_y, x_shape)


def _setup_max(ctx, inputs, output):
    x, *params, backend = inputs
    ctx.x_shape, ctx.params, ctx.backend = list(x.shape), params, backend
    ctx.save_for_backward(output[1])


def _max_grad(ctx, grad_y, grad_saved):
    (saved,) = ctx.saved_tensors
    return (max_pool2d_backward(grad_y, ctx.x_shape, saved, *ctx.params, ctx.backend),) + \
        (None,) * 6


max_pool2d_op.register_autograd(_max_grad, setup_context=_setup_max)


def _setup_avg(ctx, inputs, output):
    x, *params, backend = inputs
    ctx.x_shape, ctx.params, ctx.backend = list(x.shape), params, backend


def _avg_grad(ctx, grad_y):
    return (avg_pool2d_backward(grad_y, ctx.x_shape, *ctx.params, ctx.backend),) + (None,) * 7


avg_pool2d_op.register_autograd(_avg_grad, setup_context=_setup_avg)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """torch.nn.functional.max_pool2d: input [N, C, H, W] or [C, H, W]; -inf padding."""
    if return_indices:
        raise NotImplementedError(
            "gpudnn max_pool2d does not return indices (each backend keeps its own opaque "
            "record for backward); use torch.nn.functional.max_pool2d for return_indices=True")
    input, kernel, stride, padding, dilation, out_shape, unbatched = _prepare(
        input, kernel_size, stride, padding, dilation, bool(ceil_mode))
    input = launcher_layout(input)
    y, _ = max_pool2d_op(input, list(kernel), list(stride), list(padding), list(dilation),
                         bool(ceil_mode), resolve(MAX_POOL2D, input))
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
    input = launcher_layout(input)
    y = avg_pool2d_op(input, list(kernel), list(stride), list(padding), bool(ceil_mode),
                      bool(count_include_pad), divisor_override, resolve(AVG_POOL2D, input))
    return y.squeeze(0) if unbatched else y
