"""CuPy launchers of 2-D max / average / adaptive average pooling (``pool.cu``) on
NCHW-contiguous planes; channels_last inputs are converted, and outputs returned channels_last
again. Backward is a gather (no atomics). Output sizes follow torch (``ceil_mode``: a last window
must start inside the input or its left padding)."""
from __future__ import annotations

import torch

from .. import alloc
from ._runtime import blocks_for, i32, i64, launch, require_cuda, suffix, THREADS


def _pair(op: str, name: str, value) -> tuple[int, int]:
    if (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    raise ValueError(f"{op}: {name} must be an (h, w) pair of ints, got {value!r}")


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                 ceil_mode: bool) -> int:
    """torch's pooling_output_shape."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _geometry(op: str, x_shape, kernel_size, stride, padding, dilation, ceil_mode):
    """(out_h, out_w, the 12 geometry ints of pool.cu)."""
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be [N, C, H, W], got shape {tuple(x_shape)}")
    kernel = _pair(op, "kernel_size", kernel_size)
    stride = kernel if stride is None or stride == () else _pair(op, "stride", stride)
    padding = _pair(op, "padding", padding)
    dilation = _pair(op, "dilation", dilation)
    if min(kernel) <= 0 or min(stride) <= 0 or min(dilation) <= 0 or min(padding) < 0:
        raise ValueError(f"{op}: kernel_size, stride, dilation must be positive and padding "
                         f"non-negative, got {kernel}, {stride}, {dilation}, {padding}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:  # torch's rule
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size "
                         f"{kernel}")
    height, width = int(x_shape[2]), int(x_shape[3])
    out = tuple(_output_size((height, width)[a], kernel[a], stride[a], padding[a], dilation[a],
                             ceil_mode) for a in range(2))
    if min(out) <= 0:
        raise ValueError(f"{op}: output size {out} is too small for input {(height, width)}")
    geometry = (height, width, out[0], out[1], kernel[0], kernel[1], stride[0], stride[1],
                padding[0], padding[1], dilation[0], dilation[1])
    return out, tuple(i32(v) for v in geometry)


def _channels_last(t: torch.Tensor) -> bool:
    return (t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))


def _in_format(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices=False):
    """(y, indices): torch's int64 flat indices (h * W + w per plane), whatever
    ``return_indices`` says."""
    op = "max_pool2d_forward"
    s = suffix(op, "x", x)
    (out_h, out_w), geometry = _geometry(op, x.shape, kernel_size, stride, padding, dilation,
                                         ceil_mode)
    device = require_cuda(op, x=x)
    channels_last = _channels_last(x)
    x = x.contiguous()
    planes = x.shape[0] * x.shape[1]
    y = alloc.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=device)
    indices = alloc.empty(y.shape, dtype=torch.int64, device=device)
    if y.numel():
        launch("pool", f"max_pool2d_forward_{s}", device, (blocks_for(y.numel()),), (THREADS,),
               (x, y, indices, i64(planes), *geometry))
    return _in_format(y, channels_last), indices


def max_pool2d_backward(grad_y, x_shape, saved, kernel_size, stride, padding, dilation,
                        ceil_mode):
    op = "max_pool2d_backward"
    s = suffix(op, "grad_y", grad_y)
    (out_h, out_w), geometry = _geometry(op, x_shape, kernel_size, stride, padding, dilation,
                                         ceil_mode)
    expected = (x_shape[0], x_shape[1], out_h, out_w)
    if tuple(grad_y.shape) != expected or tuple(saved.shape) != expected:
        raise ValueError(f"{op}: grad_y and indices must be {expected}, got "
                         f"{tuple(grad_y.shape)} and {tuple(saved.shape)}")
    device = require_cuda(op, grad_y=grad_y, saved=saved)
    channels_last = _channels_last(grad_y)
    grad_x = alloc.empty(tuple(x_shape), dtype=grad_y.dtype, device=device)
    if grad_x.numel():
        launch("pool", f"max_pool2d_backward_{s}", device, (blocks_for(grad_x.numel()),),
               (THREADS,), (grad_y.contiguous(), saved.contiguous(), grad_x,
                            i64(x_shape[0] * x_shape[1]), *geometry))
    return _in_format(grad_x, channels_last)


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    op = "avg_pool2d_forward"
    s = suffix(op, "x", x)
    (out_h, out_w), geometry = _geometry(op, x.shape, kernel_size, stride, padding, (1, 1),
                                         ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise ValueError(f"{op}: divisor_override must be non-zero")
    device = require_cuda(op, x=x)
    channels_last = _channels_last(x)
    x = x.contiguous()
    y = alloc.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype, device=device)
    if y.numel():
        launch("pool", f"avg_pool2d_forward_{s}", device, (blocks_for(y.numel()),), (THREADS,),
               (x, y, i64(x.shape[0] * x.shape[1]), *geometry, i32(bool(count_include_pad)),
                i32(divisor_override or 0)))
    return _in_format(y, channels_last)


def avg_pool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override):
    op = "avg_pool2d_backward"
    s = suffix(op, "grad_y", grad_y)
    (out_h, out_w), geometry = _geometry(op, x_shape, kernel_size, stride, padding, (1, 1),
                                         ceil_mode)
    expected = (x_shape[0], x_shape[1], out_h, out_w)
    if tuple(grad_y.shape) != expected:
        raise ValueError(f"{op}: grad_y must be {expected}, got {tuple(grad_y.shape)}")
    device = require_cuda(op, grad_y=grad_y)
    channels_last = _channels_last(grad_y)
    grad_x = alloc.empty(tuple(x_shape), dtype=grad_y.dtype, device=device)
    if grad_x.numel():
        launch("pool", f"avg_pool2d_backward_{s}", device, (blocks_for(grad_x.numel()),),
               (THREADS,), (grad_y.contiguous(), grad_x, i64(x_shape[0] * x_shape[1]),
                            *geometry, i32(bool(count_include_pad)), i32(divisor_override or 0)))
    return _in_format(grad_x, channels_last)


def _adaptive_geometry(op: str, x_shape, output_size) -> tuple:
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be [N, C, H, W], got shape {tuple(x_shape)}")
    out = _pair(op, "output_size", tuple(output_size))
    if min(out) < 0 or min(x_shape[2:]) < 0:
        raise ValueError(f"{op}: output_size {out} must be non-negative, got input "
                         f"{tuple(x_shape)}")
    return tuple(i32(v) for v in (x_shape[2], x_shape[3], out[0], out[1]))


def adaptive_avg_pool2d_forward(x, output_size):
    op = "adaptive_avg_pool2d_forward"
    s = suffix(op, "x", x)
    geometry = _adaptive_geometry(op, x.shape, output_size)
    device = require_cuda(op, x=x)
    channels_last = _channels_last(x)
    x = x.contiguous()
    y = alloc.empty((x.shape[0], x.shape[1], *output_size), dtype=x.dtype, device=device)
    if y.numel():
        launch("pool", f"adaptive_avg_pool2d_forward_{s}", device, (blocks_for(y.numel()),),
               (THREADS,), (x, y, i64(x.shape[0] * x.shape[1]), *geometry))
    return _in_format(y, channels_last)


def adaptive_avg_pool2d_backward(grad_y, x_shape):
    op = "adaptive_avg_pool2d_backward"
    s = suffix(op, "grad_y", grad_y)
    if grad_y.dim() != 4 or tuple(grad_y.shape[:2]) != tuple(x_shape[:2]):
        raise ValueError(f"{op}: grad_y must be [{x_shape[0]}, {x_shape[1]}, Ho, Wo], got "
                         f"{tuple(grad_y.shape)}")
    geometry = _adaptive_geometry(op, x_shape, grad_y.shape[2:])
    device = require_cuda(op, grad_y=grad_y)
    channels_last = _channels_last(grad_y)
    grad_x = alloc.empty(tuple(x_shape), dtype=grad_y.dtype, device=device)
    if grad_x.numel():
        launch("pool", f"adaptive_avg_pool2d_backward_{s}", device,
               (blocks_for(grad_x.numel()),), (THREADS,),
               (grad_y.contiguous(), grad_x, i64(x_shape[0] * x_shape[1]), *geometry))
    return _in_format(grad_x, channels_last)
