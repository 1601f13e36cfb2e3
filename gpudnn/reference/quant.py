"""NumPy reference of weight-only quantization: the quantizer and the quantized dense / conv2d.

Weights are stored as int8 (symmetric, absmax: ``q = clip(rint(w / s), -127, 127)`` with
``s = absmax / 127``) or as float8 e4m3fn (``q = e4m3(w / s)`` with ``s = absmax / 448``, round to
nearest even), with one float32 scale per output channel (``[N]``) or per tensor (``[1]``); a zero
row gets scale 1. Everything is computed in float32, so the torch quantizer
(``gpudnn.quantization.quantize_weight``) gives the same bits.

The layers compute ``y = act((x @ q^T) * s + bias)`` (conv: the convolution of x with q, scaled
per output channel): the integer (or fp8) weights meet the activations in the reduction and the
scale comes once per output in the epilogue, which is what the Triton kernels do (they convert
each weight tile in registers; there is never a float copy of the weight). float8 weights reach
the launchers as their uint8 bit patterns (``gpudnn.ops.quant``): NumPy has no float8 type.
"""
from __future__ import annotations

import numpy as np

from ..kernels.activations import Activation
from .activations import apply_activation
from ..ops._shapes import conv_output_size
from .conv import _bias_activation, _conv, _output_channels_last

INT8_MAX = 127
E4M3_MAX = 448.0
# the largest representable magnitude of each storage format
QMAX = {"int8": float(INT8_MAX), "fp8": E4M3_MAX}


def _e4m3_table() -> np.ndarray:
    """float32 value of every e4m3fn bit pattern (0x7F / 0xFF are NaN: e4m3fn has no inf)."""
    bits = np.arange(256)
    sign = np.where(bits >> 7, -1.0, 1.0)
    exponent = (bits >> 3) & 0xF
    mantissa = bits & 0x7
    value = np.where(exponent == 0, mantissa * 2.0 ** -9,
                     (1 + mantissa / 8.0) * 2.0 ** (exponent - 7.0))
    value = sign * value
    value[(exponent == 0xF) & (mantissa == 0x7)] = np.nan
    return value.astype(np.float32)


E4M3_VALUES = _e4m3_table()
# the non-negative finite values in bit order (bits 0x00 .. 0x7E), increasing
_E4M3_POSITIVE = E4M3_VALUES[:0x7F].astype(np.float64)


def e4m3_decode(bits: np.ndarray) -> np.ndarray:
    """uint8 e4m3fn bit patterns -> float32 values."""
    return E4M3_VALUES[np.asarray(bits, dtype=np.uint8)]


def e4m3_encode(values: np.ndarray) -> np.ndarray:
    """Finite float32 values with |v| <= 448 -> uint8 e4m3fn bits, rounded to nearest, ties to
    the even bit pattern (what torch's ``.to(torch.float8_e4m3fn)`` does)."""
    v = np.asarray(values, dtype=np.float32)
    if not np.isfinite(v).all() or (np.abs(v) > E4M3_MAX).any():
        raise ValueError("e4m3_encode: values must be finite with |v| <= 448")
    mag = np.abs(v).astype(np.float64)
    hi = np.clip(np.searchsorted(_E4M3_POSITIVE, mag), 0, 0x7E)
    lo = np.maximum(hi - 1, 0)
    d_lo, d_hi = mag - _E4M3_POSITIVE[lo], _E4M3_POSITIVE[hi] - mag
    pick_hi = (d_hi < d_lo) | ((d_hi == d_lo) & (hi % 2 == 0))
    code = np.where(pick_hi, hi, lo).astype(np.uint8)
    return np.where(np.signbit(v), code | 0x80, code).astype(np.uint8)


def quantize_weight(weight: np.ndarray, dtype: str = "int8", per_channel: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """weight [N, ...] float -> (q, scale): q int8, or uint8 e4m3fn bits for ``dtype="fp8"``, of
    weight's shape; scale float32 [N] (per output channel) or [1] (per tensor)."""
    if dtype not in QMAX:
        raise ValueError(f"quantize_weight: dtype must be one of {sorted(QMAX)}, got {dtype!r}")
    w = np.asarray(weight, dtype=np.float32)
    if not np.isfinite(w).all():
        raise ValueError("quantize_weight: the weight holds NaN or inf")
    rows = w.reshape(w.shape[0], int(np.prod(w.shape[1:]))) if per_channel else w.reshape(1, -1)
    absmax = np.abs(rows).max(axis=1) if rows.size else np.zeros(rows.shape[0], np.float32)
    scale = (absmax / np.float32(QMAX[dtype])).astype(np.float32)
    scale[absmax == 0] = 1.0
    v = w / scale.reshape((-1,) + (1,) * (w.ndim - 1))
    if dtype == "int8":
        q = np.clip(np.rint(v), -INT8_MAX, INT8_MAX).astype(np.int8)
    else:
        q = e4m3_encode(np.clip(v, -E4M3_MAX, E4M3_MAX))
    return q, scale


def weight_values(q: np.ndarray) -> np.ndarray:
    """The stored weight as float32: int8 values, or uint8 holding e4m3fn bits decoded."""
    if q.dtype == np.uint8:
        return e4m3_decode(q)
    if q.dtype != np.int8:
        raise TypeError(f"quantized weight must be int8 or uint8 (e4m3fn bits), got {q.dtype}")
    return q.astype(np.float32)


def dequantize(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """q * scale (per output channel, or one scale) as float32."""
    w = weight_values(q)
    return w * np.asarray(scale, np.float32).reshape((-1,) + (1,) * (w.ndim - 1))


def quant_dense_forward(x: np.ndarray, weight: np.ndarray, scale: np.ndarray,
                        bias: np.ndarray | None, act: Activation | None) -> np.ndarray:
    """x [M, K] float, weight [N, K] int8 / e4m3 bits, scale [N] | [1], bias [N] | None ->
    y = act((x @ weight^T) * scale + bias) [M, N] in x's dtype."""
    z = x @ weight_values(weight).astype(x.dtype).T
    z = z * scale.astype(z.dtype)
    if bias is not None:
        z = z + bias.astype(z.dtype)
    return apply_activation(z, act)


def quant_conv2d_forward(x: np.ndarray, weight: np.ndarray, scale: np.ndarray,
                         bias: np.ndarray | None, stride, padding, dilation, groups: int,
                         act: Activation | None) -> np.ndarray:
    """x [N, Cin, H, W], weight [Cout, Cin/groups, kh, kw] int8 / e4m3 bits, scale [Cout] | [1],
    bias [Cout] | None; padding (top, bottom, left, right) -> y = act(conv(x, weight) * scale +
    bias) in torch's memory format for these operands."""
    kh, kw = weight.shape[2:]
    top, bottom, left, right = padding
    out_hw = (conv_output_size(x.shape[2], kh, stride[0], top, bottom, dilation[0]),
              conv_output_size(x.shape[3], kw, stride[1], left, right, dilation[1]))
    channels_last = _output_channels_last(x, weight)
    w = weight_values(weight).astype(x.dtype)
    z = _conv(x, w, stride, padding, dilation, groups, out_hw, channels_last)
    z *= scale.astype(z.dtype).reshape(1, -1, 1, 1)
    return _bias_activation(z, bias, act, channels_last)[0]
