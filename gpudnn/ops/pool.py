"""2-D max, average and adaptive average pooling: the ops ``gpudnn::max_pool2d`` /
``gpudnn::avg_pool2d`` / ``gpudnn::adaptive_avg_pool2d`` (and their backward ops) and the public
functions.

``max_pool2d`` / ``avg_pool2d`` / ``adaptive_avg_pool2d`` take torch.nn.functional's arguments and
raise torch's errors; the launchers see 4-D NCHW or channels_last tensors and (h, w) pairs only.
The output takes the input's memory format, as torch's does. ``max_pool2d(...,
return_indices=True)`` returns torch's int64 indices (h * W + w in each plane) from every backend.
"""
import math
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

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"]

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
ADAPTIVE_AVG_POOL2D = Kernels(
    "adaptive_avg_pool2d",
    reference=(reference_launcher(reference.adaptive_avg_pool2d_forward),
               reference_launcher(reference.adaptive_avg_pool2d_backward)),
    triton=(triton.adaptive_avg_pool2d_forward, triton.adaptive_avg_pool2d_backward),
    cupy=(cupy.adaptive_avg_pool2d_forward, cupy.adaptive_avg_pool2d_backward))


def saved_index_dtype(backend: str, return_indices: bool = False) -> torch.dtype:
    """dtype of the window record a backend's max-pool forward saves for its backward (opaque to
    the op, but its fake rule must know it): int32 taps for triton, int64 positions otherwise;
    torch's int64 indices from every backend with ``return_indices``."""
    return torch.int32 if backend == "triton" and not return_indices else torch.int64


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
    """An output of ``shape`` in x's memory format (torch's rule for pooling), with the strides
    ``torch.empty`` gives that format (also along size-1 dims, where layouts are ambiguous)."""
    return torch.empty(shape, dtype=dtype or x.dtype, device=x.device,
                       memory_format=suggest_memory_format(x))


def _in_format_of(t: Tensor, x: Tensor) -> Tensor:
    """``t`` with exactly ``_empty``'s strides for x's memory format (what the fake rules
    promise, whatever strides a backend chose along size-1 dims): a copy only when they
    differ."""
    expected = torch.empty(t.shape, device="meta", memory_format=suggest_memory_format(x))
    if t.stride() == expected.stride():
        return t
    return _empty(x, t.shape, t.dtype).copy_(t)


@define("max_pool2d")
def max_pool2d_op(x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int],
                  dilation: list[int], ceil_mode: bool, return_indices: bool,
                  backend: str) -> tuple[Tensor, Tensor]:
    """x [N, C, H, W] (NCHW or channels_last) -> (y in x's format, the window record the same
    backend's backward reads: see ``saved_index_dtype``; torch's int64 indices when
    ``return_indices``); pairs are (h, w)."""
    params = (kernel_size, stride, padding, dilation, ceil_mode)
    if x.shape[0] == 0:
        shape = _pool_shape(x, *params)
        return _empty(x, shape), _empty(x, shape, saved_index_dtype(backend, return_indices))
    y, saved = MAX_POOL2D.forward(backend)(x, *params, return_indices)
    return _in_format_of(y, x), _in_format_of(saved, x)


@max_pool2d_op.register_fake
def _(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend):
    shape = _pool_shape(x, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty(x, shape), _empty(x, shape, saved_index_dtype(backend, return_indices))


@define("max_pool2d_backward")
def max_pool2d_backward(grad_y: Tensor, x_shape: list[int], saved: Tensor,
                        kernel_size: list[int], stride: list[int], padding: list[int],
                        dilation: list[int], ceil_mode: bool, backend: str) -> Tensor:
    """grad_x [N, C, H, W] (x_shape) in grad_y's memory format."""
    if x_shape[0] == 0:
        return _empty(grad_y, x_shape).zero_()
    grad_x = MAX_POOL2D.backward(backend)(launcher_layout(grad_y), tuple(x_shape), saved,
                                          kernel_size, stride, padding, dilation, ceil_mode)
    return _in_format_of(grad_x, grad_y)


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
    return _in_format_of(y, x)


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
    return _in_format_of(grad_x, grad_y)


@avg_pool2d_backward.register_fake
def _(grad_y, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
      divisor_override, backend):
    return _empty(grad_y, x_shape)


def _setup_max(ctx, inputs, output):
    x, *params, return_indices, backend = inputs
    ctx.x_shape, ctx.params, ctx.backend = list(x.shape), params, backend
    ctx.save_for_backward(output[1])


def _max_grad(ctx, grad_y, grad_saved):
    (saved,) = ctx.saved_tensors
    return (max_pool2d_backward(grad_y, ctx.x_shape, saved, *ctx.params, ctx.backend),) + \
        (None,) * 7


max_pool2d_op.register_autograd(_max_grad, setup_context=_setup_max)


def _setup_avg(ctx, inputs, output):
    x, *params, backend = inputs
    ctx.x_shape, ctx.params, ctx.backend = list(x.shape), params, backend


def _avg_grad(ctx, grad_y):
    return (avg_pool2d_backward(grad_y, ctx.x_shape, *ctx.params, ctx.backend),) + (None,) * 7


avg_pool2d_op.register_autograd(_avg_grad, setup_context=_setup_avg)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """torch.nn.functional.max_pool2d: input [N, C, H, W] or [C, H, W]; -inf padding.
    ``return_indices=True``: (output, torch's int64 indices h * W + w of each maximum in its
    plane), in the output's memory format."""
    input, kernel, stride, padding, dilation, out_shape, unbatched = _prepare(
        input, kernel_size, stride, padding, dilation, bool(ceil_mode))
    input = launcher_layout(input)
    y, indices = max_pool2d_op(input, list(kernel), list(stride), list(padding), list(dilation),
                               bool(ceil_mode), bool(return_indices), resolve(MAX_POOL2D, input))
    if unbatched:
        y, indices = y.squeeze(0), indices.squeeze(0)
    return (y, indices) if return_indices else y


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


# --- adaptive average pooling -------------------------------------------------------------------

def _adaptive_shape(x: Tensor, output_size) -> tuple:
    return (x.shape[0], x.shape[1], *output_size)


@define("adaptive_avg_pool2d")
def adaptive_avg_pool2d_op(x: Tensor, output_size: list[int], backend: str) -> Tensor:
    """x [N, C, H, W] (NCHW or channels_last) -> y [N, C, *output_size] in x's memory format:
    the mean of torch's adaptive windows (NaN for an empty one: H or W 0 with a 1 x 1 output)."""
    if x.shape[0] == 0:
        return _empty(x, _adaptive_shape(x, output_size))
    y = ADAPTIVE_AVG_POOL2D.forward(backend)(x, tuple(output_size))
    return _in_format_of(y, x)


@adaptive_avg_pool2d_op.register_fake
def _(x, output_size, backend):
    return _empty(x, _adaptive_shape(x, output_size))


@define("adaptive_avg_pool2d_backward")
def adaptive_avg_pool2d_backward(grad_y: Tensor, x_shape: list[int], backend: str) -> Tensor:
    """grad_x [N, C, H, W] (x_shape) in grad_y's memory format."""
    if x_shape[0] == 0:
        return _empty(grad_y, x_shape).zero_()
    grad_x = ADAPTIVE_AVG_POOL2D.backward(backend)(launcher_layout(grad_y), tuple(x_shape))
    return _in_format_of(grad_x, grad_y)


@adaptive_avg_pool2d_backward.register_fake
def _(grad_y, x_shape, backend):
    return _empty(grad_y, x_shape)


def _setup_adaptive(ctx, inputs, output):
    x, output_size, backend = inputs
    ctx.x_shape, ctx.backend = list(x.shape), backend


def _adaptive_grad(ctx, grad_y):
    return adaptive_avg_pool2d_backward(grad_y, ctx.x_shape, ctx.backend), None, None


adaptive_avg_pool2d_op.register_autograd(_adaptive_grad, setup_context=_setup_adaptive)


def adaptive_output_size(output_size, hw) -> tuple[int, int]:
    """torch's output_size argument: an int, or a pair of ints / None (None: that input size)."""
    if isinstance(output_size, int) and not isinstance(output_size, bool):
        out = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2 and all(
            v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in output_size):
        out = tuple(int(hw[a]) if v is None else int(v) for a, v in enumerate(output_size))
    else:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair of ints "
                         f"(or None), got {output_size!r}")
    if min(out) < 0:
        raise ValueError(f"adaptive_avg_pool2d: elements of output_size must be greater than or "
                         f"equal to 0, got {output_size!r}")
    return out


def adaptive_avg_pool2d(input, output_size):
    """torch.nn.functional.adaptive_avg_pool2d: input [N, C, H, W] or [C, H, W] -> [..., Ho,
    Wo]; output i along an axis of size H averages [floor(i * H / Ho), ceil((i + 1) * H / Ho)).
    As torch, a 1 x 1 output is the mean over the last two dims of any input of 2 or more dims
    (NaN where they are empty)."""
    check_tensor("input", input)
    if isinstance(output_size, (tuple, list)) and input.dim() <= len(output_size):
        # torch's own check of a sequence output_size (an int one skips it)
        raise ValueError(f"adaptive_avg_pool2d(): input of {input.dim()} dims for an output_size "
                         f"of {len(output_size)}: Input dimension should be at least "
                         f"{len(output_size) + 1}")
    out = adaptive_output_size(output_size, input.shape[-2:]) if input.dim() >= 2 else None
    mean = out == (1, 1)  # torch's own path: input.mean((-2, -1), keepdim=True)
    if input.dim() not in (3, 4) and not mean:
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor for input, but "
                           f"got {list(input.shape)}")
    for dim in (-2, -1):
        if input.shape[dim] == 0 and not mean:
            raise RuntimeError(
                f"adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch "
                f"dimensions, but input has sizes {list(input.shape)} with dimension "
                f"{input.dim() + dim} being empty")
    if input.dim() == 4:
        x = input
    elif input.dim() == 3:
        x = input.unsqueeze(0)
    else:  # the 1 x 1 mean of any other rank: the leading dims as one batch
        x = input.reshape(math.prod(input.shape[:-2]), 1, *input.shape[-2:])
    x = launcher_layout(x)
    y = adaptive_avg_pool2d_op(x, list(out), resolve(ADAPTIVE_AVG_POOL2D, x))
    return y if input.dim() == 4 else y.reshape(*input.shape[:-2], *out)
