"""Sliding-window helpers shared by the NumPy conv and pool references (no torch in here).

Every op of the conv/pool families is written in terms of two primitives on an NCHW array:
``windows`` (a read-only strided view of every kernel window, im2col without copying) and its
adjoint ``scatter_windows`` (add each window back where it came from, one slice-add per kernel
tap). Plus torch's memory-format rules, so outputs come back as torch would lay them out.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided


def is_channels_last(a: np.ndarray) -> bool:
    """torch's ``suggest_memory_format() == channels_last`` for a 4-D array (its stride rules,
    ambiguous size-1 cases included: those default to NCHW exactly as torch decides)."""
    if a.ndim != 4:
        return False
    sizes = a.shape
    strides = [s // a.itemsize for s in a.strides]
    if strides[1] == 0:
        return False
    smallest = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < smallest:
            return False
        if d == 0 and smallest == strides[1]:
            return False
        smallest = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
    return True


def in_format(a: np.ndarray, channels_last: bool) -> np.ndarray:
    """A contiguous copy of the NCHW array ``a`` laid out as NCHW or as channels_last (NHWC)."""
    if channels_last:
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return np.ascontiguousarray(a)


def pad_hw(x: np.ndarray, top: int, bottom: int, left: int, right: int,
           value: float = 0.0) -> np.ndarray:
    """``x`` [N, C, H, W] padded on H and W with ``value`` (a no-op view without padding)."""
    if top == bottom == left == right == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """Read-only view [N, C, Ho, Wo, kh, kw] of the windows of the (already padded) ``xp``
    [N, C, Hp, Wp]: element [n, c, o, p, i, j] = xp[n, c, o*sh + i*dh, p*sw + j*dw]."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    n, c, hp, wp = xp.shape
    if ho > 0 and wo > 0 and ((ho - 1) * sh + (kh - 1) * dh >= hp
                              or (wo - 1) * sw + (kw - 1) * dw >= wp):
        raise ValueError(f"windows: {out_hw} windows of kernel {kernel}, stride {stride}, "
                         f"dilation {dilation} do not fit in a {hp}x{wp} image")
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(xp, shape=(n, c, ho, wo, kh, kw),
                      strides=(s_n, s_c, s_h * sh, s_w * sw, s_h * dh, s_w * dw),
                      writeable=False)


def scatter_windows(cols: np.ndarray, padded_hw: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> np.ndarray:
    """The adjoint of ``windows``: cols [N, C, Ho, Wo, kh, kw] summed into a zero array
    [N, C, Hp, Wp] at the positions ``windows`` read them from (one slice-add per tap)."""
    n, c, ho, wo, kh, kw = cols.shape
    (sh, sw), (dh, dw) = stride, dilation
    out = np.zeros((n, c) + tuple(padded_hw), dtype=cols.dtype)
    if ho == 0 or wo == 0:
        return out
    for i in range(kh):
        rows = slice(i * dh, i * dh + (ho - 1) * sh + 1, sh)
        for j in range(kw):
            out[:, :, rows, j * dw:j * dw + (wo - 1) * sw + 1:sw] += cols[:, :, :, :, i, j]
    return out
