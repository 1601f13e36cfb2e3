"""NumPy reference of batch normalization over x [N, C, *] with a fused activation.

Training normalizes with the biased batch variance (two-pass: mean first, then the mean of the
squared deviations, exact at mean 1e4 / std 1e-2) and updates the running statistics in place
with the unbiased one; eval normalizes with the running statistics. Backward recomputes the
pre-activation z = xhat * weight + bias from x, so no activation-sized tensor is kept.
"""
from __future__ import annotations

import numpy as np

from ..kernels.activations import Activation
from .activations import activation_grad, apply_activation, saved_for_backward


def _axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """[C] -> [1, C, 1, ...], broadcastable against x."""
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def _normalized(x, mean, invstd):
    return (x - _per_channel(mean, x)) * _per_channel(invstd, x)


def _affine(xhat, weight, bias):
    z = xhat
    if weight is not None:
        z = z * _per_channel(weight.astype(xhat.dtype), xhat)
    if bias is not None:
        z = z + _per_channel(bias.astype(xhat.dtype), xhat)
    return z


def batch_norm_forward(x: np.ndarray, weight, bias, running_mean, running_var, training: bool,
                       momentum: float, eps: float, act: Activation | None):
    """-> (y like x, mean [C], invstd [C]); running_* [C] are updated in place when training."""
    axes = _axes(x)
    count = x.size // x.shape[1] if x.shape[1] else 0
    if training:
        if count == 0:  # an empty batch: nothing to normalize, running stats untouched (torch)
            mean = np.zeros(x.shape[1], x.dtype)
            var = np.zeros(x.shape[1], x.dtype)
        else:
            mean = np.mean(x, axis=axes)
            deviation = x - _per_channel(mean, x)
            var = np.mean(deviation * deviation, axis=axes)
            if running_mean is not None:
                running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean
            if running_var is not None:
                unbiased = var * (count / max(count - 1, 1))
                running_var[...] = (1.0 - momentum) * running_var + momentum * unbiased
    else:
        mean = running_mean.astype(x.dtype)
        var = running_var.astype(x.dtype)
    invstd = (1.0 / np.sqrt(var + eps)).astype(x.dtype)
    y = apply_activation(_affine(_normalized(x, mean, invstd), weight, bias), act)
    return y, mean, invstd


def batch_norm_backward(grad_y: np.ndarray, x: np.ndarray, weight, bias, mean: np.ndarray,
                        invstd: np.ndarray, act: Activation | None, training: bool, needs: tuple):
    """-> (grad_x, grad_weight, grad_bias), None where not needed.

    With dz the gradient at the pre-activation and xhat the normalized input:
    grad_bias = sum(dz), grad_weight = sum(dz * xhat), and grad_x =
    w * invstd * (dz - mean(dz) - xhat * mean(dz * xhat)) in training (the batch statistics
    depend on x), w * invstd * dz in eval.
    """
    axes = _axes(x)
    grad_z, xhat = _grad_z(grad_y, x, weight, bias, mean, invstd, act)
    sum_dz = np.sum(grad_z, axis=axes)
    sum_dz_xhat = np.sum(grad_z * xhat, axis=axes)
    grad_x = None
    if needs[0]:
        scale = invstd.astype(x.dtype)
        if weight is not None:
            scale = scale * weight.astype(x.dtype)
        if training:
            count = max(x.size // max(x.shape[1], 1), 1)
            grad_x = _per_channel(scale, x) * (
                grad_z - _per_channel(sum_dz / count, x) - xhat * _per_channel(sum_dz_xhat / count, x))
        else:
            grad_x = _per_channel(scale, x) * grad_z
        grad_x = grad_x.astype(x.dtype)
    grad_weight = sum_dz_xhat.astype(x.dtype) if needs[1] else None
    grad_bias = sum_dz.astype(x.dtype) if needs[2] else None
    return grad_x, grad_weight, grad_bias


# --- the stages SyncBatchNorm composes around its all-reduces -------------------------------------

def batch_norm_stats(x: np.ndarray, eps: float):
    """-> (mean, invstd) [C] of this batch (biased variance); zeros and 1/sqrt(eps) when empty."""
    count = x.size // x.shape[1] if x.shape[1] else 0
    if count == 0:
        return np.zeros(x.shape[1], x.dtype), np.full(x.shape[1], 1.0 / np.sqrt(eps), x.dtype)
    mean = np.mean(x, axis=_axes(x))
    deviation = x - _per_channel(mean, x)
    var = np.mean(deviation * deviation, axis=_axes(x))
    return mean, (1.0 / np.sqrt(var + eps)).astype(x.dtype)


def _grad_z(grad_y, x, weight, bias, mean, invstd, act):
    """(dz, xhat): the gradient at the pre-activation, recomputed from x."""
    xhat = _normalized(x, mean.astype(x.dtype), invstd.astype(x.dtype))
    if act is None:
        return grad_y, xhat
    z = _affine(xhat, weight, bias)
    return activation_grad(grad_y, saved_for_backward(z, apply_activation(z, act), act), act), xhat


def batch_norm_backward_reduce(grad_y, x, weight, bias, mean, invstd, act: Activation | None):
    """-> (sum dz, sum dz * xhat) [C] over this batch, for the given statistics."""
    dz, xhat = _grad_z(grad_y, x, weight, bias, mean, invstd, act)
    return np.sum(dz, axis=_axes(x)), np.sum(dz * xhat, axis=_axes(x))


def batch_norm_backward_elemt(grad_y, x, weight, bias, mean, invstd, act: Activation | None,
                              sum_dz, sum_dz_xhat, count: int):
    """grad_x = w invstd (dz - (sum_dz + xhat sum_dz_xhat) / count)."""
    dz, xhat = _grad_z(grad_y, x, weight, bias, mean, invstd, act)
    scale = invstd.astype(x.dtype)
    if weight is not None:
        scale = scale * weight.astype(x.dtype)
    grad_x = _per_channel(scale, x) * (dz - (_per_channel(sum_dz, x)
                                             + xhat * _per_channel(sum_dz_xhat, x)) / count)
    return grad_x.astype(x.dtype)
