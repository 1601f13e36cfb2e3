"""NumPy reference of 2-D convolution and transposed convolution, forward and backward.

Everything is built from three vectorized pieces on NCHW arrays (any strides in, torch's memory
format out):

* ``_conv``: im2col through a strided window view + one batched matmul over the groups;
* ``_conv_input_grad`` (dgrad): matmul back to columns + one slice-add per kernel tap;
* ``_conv_weight_grad`` (wgrad): columns^T @ output gradient, batched over the groups.

A transposed convolution is the input gradient of a convolution whose weight is the transposed
conv's weight, so ``conv_transpose2d_forward`` is ``_conv_input_grad`` and its input gradient is
``_conv``; its weight gradient is ``_conv_weight_grad`` with the roles of input and output
swapped. Bias and the fused activation go through ``gpudnn.reference.activations``.
"""
from __future__ import annotations

import numpy as np

from ..kernels.activations import Activation
from ..ops._shapes import conv_output_size, conv_transpose2d_output_size
from ._windows import in_format, is_channels_last, pad_hw, scatter_windows, windows
from .activations import activation_grad, apply_activation, saved_for_backward

Pair = tuple[int, int]
Padding4 = tuple[int, int, int, int]  # (top, bottom, left, right)


def _output_channels_last(x: np.ndarray, weight: np.ndarray) -> bool:
    # torch (cuDNN and the CPU backends) computes in channels_last when either operand is
    return is_channels_last(x) or is_channels_last(weight)


def _columns(x: np.ndarray, kernel: Pair, stride: Pair, padding: Padding4, dilation: Pair,
             groups: int, out_hw: Pair) -> np.ndarray:
    """im2col: [G, N*Ho*Wo, Cg*kh*kw] (rows in (n, ho, wo) order, columns in (c, i, j) order)."""
    n, c = x.shape[:2]
    cg = c // groups
    (kh, kw), (ho, wo) = kernel, out_hw
    view = windows(pad_hw(x, *padding), kernel, stride, dilation, out_hw)
    view = view.reshape(n, groups, cg, ho, wo, kh, kw)
    return view.transpose(1, 0, 3, 4, 2, 5, 6).reshape(groups, n * ho * wo, cg * kh * kw)


def _grouped_rows(dz: np.ndarray, groups: int) -> np.ndarray:
    """dz [N, Cout, Ho, Wo] -> [G, N*Ho*Wo, Cout/G] (rows in the order of ``_columns``)."""
    n, cout, ho, wo = dz.shape
    return dz.transpose(0, 2, 3, 1).reshape(n * ho * wo, groups, cout // groups).transpose(1, 0, 2)


def _conv(x: np.ndarray, weight: np.ndarray, stride: Pair, padding: Padding4, dilation: Pair,
          groups: int, out_hw: Pair, channels_last: bool) -> np.ndarray:
    """z = conv(x, weight) without bias: x [N, C, H, W], weight [Cout, C/G, kh, kw] ->
    z [N, Cout, Ho, Wo], only the first ``out_hw`` output positions."""
    n = x.shape[0]
    cout, cg, kh, kw = weight.shape
    ho, wo = out_hw
    cols = _columns(x, (kh, kw), stride, padding, dilation, groups, out_hw)
    wmat = weight.reshape(groups, cout // groups, cg * kh * kw).transpose(0, 2, 1)
    z = np.matmul(cols, wmat)  # [G, N*Ho*Wo, Cout/G]
    z_nhwc = z.reshape(groups, n, ho, wo, cout // groups).transpose(1, 2, 3, 0, 4)
    return in_format(z_nhwc.reshape(n, ho, wo, cout).transpose(0, 3, 1, 2), channels_last)


def _conv_input_grad(dz: np.ndarray, weight: np.ndarray, in_hw: Pair, stride: Pair,
                     padding: Padding4, dilation: Pair, groups: int,
                     channels_last: bool) -> np.ndarray:
    """dL/dx of z = conv(x, weight) for an x of spatial size ``in_hw``:
    dz [N, Cout, Ho, Wo], weight [Cout, Cg, kh, kw] -> [N, G*Cg, H, W]."""
    n, _, ho, wo = dz.shape
    cout, cg, kh, kw = weight.shape
    wmat = weight.reshape(groups, cout // groups, cg * kh * kw)
    dcols = np.matmul(_grouped_rows(dz, groups), wmat)  # [G, N*Ho*Wo, Cg*kh*kw]
    dcols = dcols.reshape(groups, n, ho, wo, cg, kh, kw).transpose(1, 0, 4, 2, 3, 5, 6)
    dcols = dcols.reshape(n, groups * cg, ho, wo, kh, kw)
    top, bottom, left, right = padding
    h, w = in_hw
    grad_padded = scatter_windows(dcols, (h + top + bottom, w + left + right), stride, dilation)
    return in_format(grad_padded[:, :, top:top + h, left:left + w], channels_last)


def _conv_weight_grad(dz: np.ndarray, x: np.ndarray, kernel: Pair, stride: Pair,
                      padding: Padding4, dilation: Pair, groups: int) -> np.ndarray:
    """dL/dweight of z = conv(x, weight): dz [N, Cout, Ho, Wo], x [N, C, H, W] ->
    [Cout, C/G, kh, kw]."""
    cout, (ho, wo) = dz.shape[1], dz.shape[2:]
    cols = _columns(x, kernel, stride, padding, dilation, groups, (ho, wo))
    grad = np.matmul(_grouped_rows(dz, groups).transpose(0, 2, 1), cols)  # [G, Cout/G, Cg*kh*kw]
    return grad.reshape(cout, x.shape[1] // groups, *kernel)


def _bias_activation(z: np.ndarray, bias: np.ndarray | None, act: Activation | None,
                     channels_last: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(y, saved) of y = act(z + bias); z is a fresh array (updated in place)."""
    if bias is not None:
        z += bias.reshape(1, -1, 1, 1).astype(z.dtype, copy=False)
    y = in_format(apply_activation(z, act), channels_last) if act is not None else z
    return y, saved_for_backward(z, y, act)


def _bias_grad(dz: np.ndarray) -> np.ndarray:
    return dz.sum(axis=(0, 2, 3))


def conv2d_forward(x, weight, bias, stride, padding, dilation, groups, act):
    """y = act(conv2d(x, weight) + bias): x [N, Cin, H, W], weight [Cout, Cin/groups, kh, kw],
    bias [Cout] | None; padding (top, bottom, left, right). Returns (y [N, Cout, Ho, Wo], saved)."""
    kh, kw = weight.shape[2:]
    top, bottom, left, right = padding
    out_hw = (conv_output_size(x.shape[2], kh, stride[0], top, bottom, dilation[0]),
              conv_output_size(x.shape[3], kw, stride[1], left, right, dilation[1]))
    channels_last = _output_channels_last(x, weight)
    z = _conv(x, weight, stride, padding, dilation, groups, out_hw, channels_last)
    return _bias_activation(z, bias, act, channels_last)


def conv2d_backward(grad_y, x, weight, saved, stride, padding, dilation, groups, act, needs):
    """(grad_x, grad_weight, grad_bias) of ``conv2d_forward``; ``needs`` = (x, weight, bias)."""
    dz = activation_grad(grad_y, saved, act)
    grad_x = grad_weight = grad_bias = None
    if needs[0]:
        grad_x = _conv_input_grad(dz, weight, x.shape[2:], stride, padding, dilation, groups,
                                  _output_channels_last(x, weight))
    if needs[1]:
        grad_weight = in_format(
            _conv_weight_grad(dz, x, weight.shape[2:], stride, padding, dilation, groups),
            is_channels_last(weight))
    if len(needs) > 2 and needs[2]:
        grad_bias = _bias_grad(dz)
    return grad_x, grad_weight, grad_bias


def conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation,
                             act):
    """y = act(conv_transpose2d(x, weight) + bias): x [N, Cin, H, W], weight
    [Cin, Cout/groups, kh, kw], bias [Cout] | None; padding (ph, pw), output_padding (oh, ow).
    Returns (y [N, Cout, Hout, Wout], saved)."""
    kh, kw = weight.shape[2:]
    out_hw = tuple(conv_transpose2d_output_size(x.shape[2 + a], (kh, kw)[a], stride[a],
                                                padding[a], output_padding[a], dilation[a])
                   for a in range(2))
    channels_last = _output_channels_last(x, weight)
    pad4 = (padding[0], padding[0], padding[1], padding[1])
    z = _conv_input_grad(x, weight, out_hw, stride, pad4, dilation, groups, channels_last)
    return _bias_activation(z, bias, act, channels_last)


def conv_transpose2d_backward(grad_y, x, weight, saved, stride, padding, output_padding, groups,
                              dilation, act, needs):
    """(grad_x, grad_weight, grad_bias) of ``conv_transpose2d_forward``."""
    dz = activation_grad(grad_y, saved, act)
    pad4 = (padding[0], padding[0], padding[1], padding[1])
    grad_x = grad_weight = grad_bias = None
    if needs[0]:
        # the conv over the output-sized dz can have one more position than x when
        # output_padding >= stride (allowed when it is < dilation): keep x's size
        grad_x = _conv(dz, weight, stride, pad4, dilation, groups, x.shape[2:],
                       _output_channels_last(x, weight))
    if needs[1]:
        grad_weight = in_format(
            _conv_weight_grad(x, dz, weight.shape[2:], stride, pad4, dilation, groups),
            is_channels_last(weight))
    if len(needs) > 2 and needs[2]:
        grad_bias = _bias_grad(dz)
    return grad_x, grad_weight, grad_bias
