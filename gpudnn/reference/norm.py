"""NumPy reference of layer normalization and group normalization with a fused activation.

Both normalize rows: layer norm the last ``len(normalized_shape)`` dims of x (rows = the leading
dims), group norm x [N, C, *] per (sample, group of C / G channels) (rows = N * G). Each row's
statistics are computed with a shift, the row's first element K: d = x - K, mean(d), then the
mean of (d - mean(d))^2 (biased variance), so that constant rows give exact zeros and a large
mean does not cost the deviations their precision. mean = K + mean(d), rstd = 1 / sqrt(var + eps).

Forward: y = act(xhat * weight + bias), xhat = (x - mean) * rstd, weight / bias per element of
the normalized shape (layer norm) or per channel (group norm).
Backward (the pre-activation z is recomputed from x: no activation-sized tensor is kept; xhat
from x - mean minus its row mean, the part of the mean that rounding it to the saved dtype lost),
with dz = dy * act'(z) and g = dz * weight:
    grad_x = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat))
    grad_weight = sum(dz * xhat), grad_bias = sum(dz) over every element the parameter meets.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels.activations import Activation
from .activations import activation_grad, apply_activation, saved_for_backward


def _row_statistics(rows: np.ndarray, eps: float):
    """rows [R, L] -> (mean [R], rstd [R], xhat [R, L]); an empty row (L = 0) has mean 0 and
    the rstd of a zero variance."""
    count = rows.shape[1]
    if count == 0:
        mean = np.zeros(rows.shape[0], rows.dtype)
        var = np.zeros(rows.shape[0], rows.dtype)
        dev = rows
    else:
        shift = rows[:, :1]
        with np.errstate(invalid="ignore", over="ignore"):
            d = rows - shift
            mean_d = np.mean(d, axis=1, keepdims=True)
            dev = d - mean_d
            var = np.mean(dev * dev, axis=1)
            mean = (shift + mean_d)[:, 0]
    rstd = (1.0 / np.sqrt(var + eps)).astype(rows.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        xhat = dev * rstd[:, None]
    return mean.astype(rows.dtype), rstd, xhat


def _forward(rows: np.ndarray, weight, bias, eps: float, act: Activation | None):
    """rows [R, L]; weight / bias broadcastable to rows (or None) -> (y rows, mean, rstd)."""
    mean, rstd, xhat = _row_statistics(rows, eps)
    z = xhat
    with np.errstate(invalid="ignore", over="ignore"):
        if weight is not None:
            z = z * weight.astype(rows.dtype)
        if bias is not None:
            z = z + bias.astype(rows.dtype)
    return apply_activation(z, act), mean, rstd


def _backward(grad_rows: np.ndarray, rows: np.ndarray, weight, bias, mean, rstd,
              act: Activation | None, need_x: bool):
    """-> (grad_x rows or None, dz * xhat, dz), all [R, L] (the last two for the parameters)."""
    dtype = rows.dtype
    mean = mean.astype(dtype)[:, None]
    rstd = rstd.astype(dtype)[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        # minus the row's mean of x - mean: what rounding the saved mean lost (in float32)
        d = rows - mean
        if rows.shape[1]:
            d = d - np.mean(d, axis=1, keepdims=True)
        xhat = d * rstd
        w = weight.astype(dtype) if weight is not None else None
        if act is not None:
            z = xhat * w if w is not None else xhat
            if bias is not None:
                z = z + bias.astype(dtype)
            grad_z = activation_grad(grad_rows, saved_for_backward(z, apply_activation(z, act),
                                                                   act), act)
        else:
            grad_z = grad_rows
        grad_x = None
        if need_x and rows.shape[1]:
            g = grad_z * w if w is not None else grad_z
            grad_x = (rstd * (g - np.mean(g, axis=1, keepdims=True)
                              - xhat * np.mean(g * xhat, axis=1, keepdims=True))).astype(dtype)
        elif need_x:
            grad_x = np.zeros_like(rows)
        return grad_x, grad_z * xhat, grad_z


# --- layer norm ---------------------------------------------------------------------------------

def _layer_rows(x: np.ndarray, normalized_shape) -> tuple[int, int]:
    n = math.prod(normalized_shape)
    lead = x.shape[:x.ndim - len(normalized_shape)]
    return math.prod(lead), n


def layer_norm_forward(x: np.ndarray, normalized_shape, weight, bias, eps: float,
                       act: Activation | None):
    """x [*, *normalized_shape] -> (y like x, mean [M], rstd [M]) with M = the product of the
    leading dims; weight / bias shaped normalized_shape, or None."""
    m, n = _layer_rows(x, normalized_shape)
    rows = np.ascontiguousarray(x).reshape(m, n)
    w = weight.reshape(1, n) if weight is not None else None
    b = bias.reshape(1, n) if bias is not None else None
    y, mean, rstd = _forward(rows, w, b, eps, act)
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(grad_y: np.ndarray, x: np.ndarray, normalized_shape, weight, bias,
                        mean: np.ndarray, rstd: np.ndarray, act: Activation | None, needs: tuple):
    """-> (grad_x, grad_weight, grad_bias), None where ``needs`` (x, weight, bias) says so."""
    m, n = _layer_rows(x, normalized_shape)
    rows = np.ascontiguousarray(x).reshape(m, n)
    grad_rows = np.ascontiguousarray(grad_y).reshape(m, n)
    w = weight.reshape(1, n) if weight is not None else None
    b = bias.reshape(1, n) if bias is not None else None
    grad_x, dz_xhat, dz = _backward(grad_rows, rows, w, b, mean, rstd, act, needs[0])
    shape = tuple(normalized_shape)
    return (grad_x.reshape(x.shape) if needs[0] else None,
            dz_xhat.sum(axis=0).reshape(shape).astype(x.dtype) if needs[1] else None,
            dz.sum(axis=0).reshape(shape).astype(x.dtype) if needs[2] else None)


# --- group norm ---------------------------------------------------------------------------------

def _group_rows(x: np.ndarray, num_groups: int) -> tuple[np.ndarray, int, int, int]:
    """x [N, C, *] -> (rows [N * G, C / G * S], N, C, S)."""
    n, c = x.shape[:2]
    s = math.prod(x.shape[2:])
    return np.ascontiguousarray(x).reshape(n * num_groups, (c // num_groups) * s), n, c, s


def _per_channel(v, n: int, c: int, s: int, num_groups: int):
    """[C] -> broadcastable against the group rows [N * G, C / G * S] (None stays None)."""
    if v is None:
        return None
    return np.broadcast_to(v.reshape(1, c, 1), (n, c, s)).reshape(n * num_groups,
                                                                    (c // num_groups) * s)


def group_norm_forward(x: np.ndarray, num_groups: int, weight, bias, eps: float,
                       act: Activation | None):
    """x [N, C, *] -> (y like x, mean [N, G], rstd [N, G]); weight / bias [C] or None."""
    rows, n, c, s = _group_rows(x, num_groups)
    y, mean, rstd = _forward(rows, _per_channel(weight, n, c, s, num_groups),
                             _per_channel(bias, n, c, s, num_groups), eps, act)
    return (y.reshape(x.shape), mean.reshape(n, num_groups), rstd.reshape(n, num_groups))


def group_norm_backward(grad_y: np.ndarray, x: np.ndarray, num_groups: int, weight, bias,
                        mean: np.ndarray, rstd: np.ndarray, act: Activation | None, needs: tuple):
    """-> (grad_x, grad_weight [C], grad_bias [C]), None where ``needs`` says so."""
    rows, n, c, s = _group_rows(x, num_groups)
    grad_rows = np.ascontiguousarray(grad_y).reshape(rows.shape)
    grad_x, dz_xhat, dz = _backward(
        grad_rows, rows, _per_channel(weight, n, c, s, num_groups),
        _per_channel(bias, n, c, s, num_groups), mean.reshape(-1), rstd.reshape(-1), act,
        needs[0])

    def per_channel_sum(v):
        return v.reshape(n, c, s).sum(axis=(0, 2)).astype(x.dtype)

    return (grad_x.reshape(x.shape) if needs[0] else None,
            per_channel_sum(dz_xhat) if needs[1] else None,
            per_channel_sum(dz) if needs[2] else None)
