"""Output sizes of convolutions and pooling along one axis (torch's formulas), shared by the
Functions (argument checks) and the NumPy reference. Pure Python: no torch, no NumPy, so the
torch-free reference can import it."""
from __future__ import annotations


def conv_output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int,
                     dilation: int) -> int:
    """Output length of a convolution along one axis (torch's formula)."""
    return (size + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose2d_output_size(size: int, kernel: int, stride: int, padding: int,
                                 output_padding: int, dilation: int) -> int:
    """Output length of a transposed convolution along one axis (torch's formula)."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                     ceil_mode: bool) -> int:
    """Output length of a pooling along one axis, torch's ``pooling_output_shape``: with
    ``ceil_mode`` the last window must start inside the input or the left padding."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1
           + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out
