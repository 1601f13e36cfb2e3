"""NumPy reference of 2-D max and average pooling, forward and backward, with torch's rules.

Windows are a strided view of the padded input (``_windows.windows``). Max pooling pads with
-inf and picks, like torch's kernels, the first maximum of each window in row-major tap order, the
last NaN when the window holds NaN, and the first in-image position when every value is -inf; it
saves the flat input index ``h * W + w`` of each pick (torch's ``indices``) and its backward
scatter-adds through them. Average pooling divides by torch's window size: the window clipped to
input + padding (count_include_pad), to the input alone (otherwise), or ``divisor_override``.
Adaptive average pooling averages torch's adaptive windows (``adaptive_windows``), one slice per
output position.
"""
from __future__ import annotations

import numpy as np

from ..ops._shapes import pool_output_size
from ._windows import in_format, is_channels_last, pad_hw, scatter_windows, windows

Pair = tuple[int, int]


def _output_hw(hw, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
               ceil_mode: bool) -> Pair:
    return tuple(pool_output_size(hw[a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode)
                 for a in range(2))


def _padded(x: np.ndarray, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
            out_hw: Pair, value: float) -> np.ndarray:
    """x padded on the top/left by ``padding`` and on the bottom/right as far as the last window
    reaches (ceil_mode windows may reach past the right padding)."""
    extra = [max((out_hw[a] - 1) * stride[a] + (kernel[a] - 1) * dilation[a] + 1
                 - x.shape[2 + a] - padding[a], 0) for a in range(2)]
    return pad_hw(x, padding[0], extra[0], padding[1], extra[1], value)


def _tap_positions(out: int, kernel: int, stride: int, padding: int,
                   dilation: int) -> np.ndarray:
    """[out, kernel]: the input position of each tap of each window along one axis."""
    return np.arange(out)[:, None] * stride - padding + np.arange(kernel)[None, :] * dilation


def _first_tap_inside(out: int, kernel: int, stride: int, padding: int,
                      dilation: int) -> np.ndarray:
    """[out]: the first tap of each window at or past 0 (not in the left padding): inside the
    input when the window holds an input position at all, else past its end (a dilation may step
    over a small input: torch reports that position too)."""
    return np.argmax(_tap_positions(out, kernel, stride, padding, dilation) >= 0, axis=1)


def _window_inside(size: int, out: int, kernel: int, stride: int, padding: int,
                   dilation: int) -> np.ndarray:
    """[out] bool: the window holds an input position along this axis."""
    pos = _tap_positions(out, kernel, stride, padding, dilation)
    return ((pos >= 0) & (pos < size)).any(axis=1)


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices=False):
    """y [N, C, Ho, Wo] = max over each window of x [N, C, H, W]; saved = int64 indices
    [N, C, Ho, Wo] (flat ``h * W + w`` of the maximum in x's image: torch's, so
    ``return_indices`` changes nothing here)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    ho, wo = _output_hw((h, w), kernel_size, stride, padding, dilation, ceil_mode)
    xp = _padded(x, kernel_size, stride, padding, dilation, (ho, wo), -np.inf)
    taps = windows(xp, kernel_size, stride, dilation, (ho, wo)).reshape(n, c, ho, wo, kh * kw)
    tap = np.argmax(taps, axis=-1)  # the first maximum (the first NaN if any)
    is_nan = np.isnan(taps)
    has_nan = is_nan.any(axis=-1)
    if has_nan.any():  # torch keeps the last NaN of a window
        tap = np.where(has_nan, kh * kw - 1 - np.argmax(is_nan[..., ::-1], axis=-1), tap)
    y = np.take_along_axis(taps, tap[..., None], axis=-1)[..., 0]
    # a window of -inf only: torch reports its first in-image position, never the padding
    first_inside = (_first_tap_inside(ho, kh, sh, ph, dh)[:, None] * kw
                    + _first_tap_inside(wo, kw, sw, pw, dw)[None, :])
    tap = np.where(y == -np.inf, first_inside, tap)
    row = np.arange(ho)[:, None] * sh - ph + (tap // kw) * dh
    col = np.arange(wo)[None, :] * sw - pw + (tap % kw) * dw
    indices = (row * w + col).astype(np.int64)
    return in_format(y, is_channels_last(x)), indices


def max_pool2d_backward(grad_y, x_shape, saved, kernel_size, stride, padding, dilation,
                        ceil_mode):
    """grad_x [N, C, H, W]: grad_y [N, C, Ho, Wo] added at the saved indices, except for windows
    without an input position (their index points past the image: their gradient goes
    nowhere)."""
    n, c, h, w = x_shape
    ho, wo = grad_y.shape[2:]
    inside = (_window_inside(h, ho, kernel_size[0], stride[0], padding[0], dilation[0])[:, None]
              & _window_inside(w, wo, kernel_size[1], stride[1], padding[1], dilation[1])[None])
    plane = np.arange(n * c, dtype=np.int64)[:, None] * (h * w)
    per_plane = ho * wo
    target = (plane + np.where(inside, saved, 0).reshape(n * c, per_plane)).ravel()
    weights = np.where(inside, grad_y, 0).reshape(n * c, per_plane).ravel().astype(np.float64)
    grad = np.bincount(target, weights=weights, minlength=n * c * h * w)
    grad_x = grad.astype(grad_y.dtype, copy=False).reshape(n, c, h, w)
    return in_format(grad_x, is_channels_last(grad_y))


def _window_lengths(size: int, out: int, kernel: int, stride: int, padding: int):
    """Per output position along one axis: (window length clipped to input + padding, window
    length clipped to the input), as torch's avg_pool2d kernels count them."""
    start = np.arange(out) * stride - padding
    end = np.minimum(start + kernel, size + padding)
    return end - start, np.minimum(end, size) - np.maximum(start, 0)


def _avg_divisors(hw, out_hw, kernel_size, stride, padding, count_include_pad,
                  divisor_override) -> np.ndarray:
    """[Ho, Wo] divisor of each window; +inf where a window holds no input (its output is 0)."""
    (full_h, inside_h), (full_w, inside_w) = (
        _window_lengths(hw[a], out_hw[a], kernel_size[a], stride[a], padding[a])
        for a in range(2))
    if divisor_override is not None:
        div = np.full((out_hw[0], out_hw[1]), float(divisor_override))
    elif count_include_pad:
        div = np.outer(full_h, full_w).astype(np.float64)
    else:
        div = np.outer(inside_h, inside_w).astype(np.float64)
    empty = (inside_h[:, None] <= 0) | (inside_w[None, :] <= 0)
    return np.where(empty, np.inf, div)


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    """y [N, C, Ho, Wo] = sum over each window of x [N, C, H, W] / the window's divisor."""
    h, w = x.shape[2:]
    out_hw = _output_hw((h, w), kernel_size, stride, padding, (1, 1), ceil_mode)
    xp = _padded(x, kernel_size, stride, padding, (1, 1), out_hw, 0.0)
    sums = windows(xp, kernel_size, stride, (1, 1), out_hw).sum(axis=(-2, -1))
    div = _avg_divisors((h, w), out_hw, kernel_size, stride, padding, count_include_pad,
                        divisor_override)
    return in_format((sums / div).astype(x.dtype, copy=False), is_channels_last(x))


def avg_pool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override):
    """grad_x [N, C, H, W]: each window's grad_y / divisor spread over the window."""
    n, c, h, w = x_shape
    ho, wo = grad_y.shape[2:]
    div = _avg_divisors((h, w), (ho, wo), kernel_size, stride, padding, count_include_pad,
                        divisor_override)
    share = (grad_y / div).astype(grad_y.dtype, copy=False)
    cols = np.broadcast_to(share[..., None, None], share.shape + tuple(kernel_size))
    hp = max((ho - 1) * stride[0] + kernel_size[0], h + padding[0])
    wp = max((wo - 1) * stride[1] + kernel_size[1], w + padding[1])
    grad_padded = scatter_windows(cols, (hp, wp), stride, (1, 1))
    grad_x = grad_padded[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w]
    return in_format(grad_x, is_channels_last(grad_y))


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's adaptive pooling windows along one axis: [start, end) of output i is
    [floor(i * size / out), ceil((i + 1) * size / out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def adaptive_avg_pool2d_forward(x, output_size):
    """y [N, C, Ho, Wo]: the mean of x [N, C, H, W] over each adaptive window (NaN where it is
    empty)."""
    n, c, h, w = x.shape
    ho, wo = output_size
    y = np.empty((n, c, ho, wo), dtype=x.dtype)
    for i, (h0, h1) in enumerate(adaptive_windows(h, ho)):
        for j, (w0, w1) in enumerate(adaptive_windows(w, wo)):
            with np.errstate(invalid="ignore"):  # an empty window (H or W 0): NaN, as torch
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / ((h1 - h0) * (w1 - w0))
    return in_format(y, is_channels_last(x))


def adaptive_avg_pool2d_backward(grad_y, x_shape):
    """grad_x [N, C, H, W]: each window's grad_y / its area spread over the window."""
    n, c, h, w = x_shape
    ho, wo = grad_y.shape[2:]
    grad_x = np.zeros((n, c, h, w), dtype=grad_y.dtype)
    for i, (h0, h1) in enumerate(adaptive_windows(h, ho)):
        for j, (w0, w1) in enumerate(adaptive_windows(w, wo)):
            if h1 > h0 and w1 > w0:
                grad_x[:, :, h0:h1, w0:w1] += grad_y[:, :, i:i + 1, j:j + 1] / (
                    (h1 - h0) * (w1 - w0))
    return in_format(grad_x, is_channels_last(grad_y))
