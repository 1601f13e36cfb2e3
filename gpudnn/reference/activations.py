"""NumPy reference of the fused activations: value and derivative of every name in ``NAMES``.

``ACTIVATIONS[name] = (value(z, param), derivative(saved, param))``; the derivative takes the
output y where ``Activation.from_output`` and the pre-activation z otherwise. ``apply_activation``
and ``activation_grad`` are the helpers every fused reference op (dense, batchnorm, conv) uses.
Everything computes in the input's dtype (Python-float constants keep float32 float32).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..kernels.activations import NAMES, Activation

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715

# erf has no NumPy ufunc (and SciPy is not a dependency): below |x| = 3 the all-positive series
# erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)) (no cancellation), above
# it the continued fraction of erfc. Both are vectorized over elements (the loops run over terms)
# and accurate to a few ulp of float64.
_ERF_SERIES_TERMS = 80
_ERFC_FRACTION_DEPTH = 120
_ERF_SPLIT = 3.0


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in float64 internally, returned in ``x``'s dtype."""
    x = np.asarray(x)
    a = np.abs(x.astype(np.float64))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        small = np.minimum(a, _ERF_SPLIT)
        term = small.copy(order="K")
        total = small.copy(order="K")
        sq2 = 2.0 * small * small
        for n in range(1, _ERF_SERIES_TERMS):
            term = term * sq2 / (2 * n + 1)
            total = total + term
        series = (2.0 / math.sqrt(math.pi)) * np.exp(-small * small) * total
        large = np.maximum(a, _ERF_SPLIT)
        fraction = large.copy(order="K")
        for k in range(_ERFC_FRACTION_DEPTH, 0, -1):
            fraction = large + (0.5 * k) / fraction
        erfc_large = np.exp(-large * large) / (math.sqrt(math.pi) * fraction)
        result = np.where(a < _ERF_SPLIT, series, 1.0 - erfc_large)
    result = np.where(np.isnan(a), np.nan, result)
    return (np.sign(x) * result).astype(x.dtype if x.dtype.kind == "f" else np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # exp of -|z| only: no overflow for any z
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _gelu_tanh_inner(z):
    return _SQRT_2_OVER_PI * (z + _GELU_TANH_C * z * z * z)


def _relu(z, param):
    # torch's clamp_min(z, 0): NaN stays NaN, -0.0 stays -0.0 (np.maximum would give +0.0)
    return np.where(z < 0, z.dtype.type(0), z)


def _relu_grad(y, param):
    # torch's threshold_backward: 0 where y <= 0, else 1 -- so 1 at NaN (NaN <= 0 is false);
    # activation_grad selects rather than multiplies by it (a NaN / inf grad_y gives 0 at y <= 0)
    return np.where(y <= 0, 0.0, 1.0).astype(y.dtype)


def _leaky_relu(z, param):
    return np.where(z > 0, z, z * param)


def _leaky_relu_grad(saved, param):
    # saved is y when the slope is positive (same sign as z), z otherwise; torch's
    # leaky_relu_backward takes the slope where not saved > 0, so at NaN too
    return np.where(saved > 0, 1.0, param).astype(saved.dtype)


def _sigmoid_grad(y, param):
    return y * (1.0 - y)


def _tanh_grad(y, param):
    return 1.0 - y * y


def _gelu(z, param):
    return 0.5 * z * (1.0 + erf(z * _SQRT_HALF))


def _gelu_grad(z, param):
    cdf = 0.5 * (1.0 + erf(z * _SQRT_HALF))
    return cdf + z * (_INV_SQRT_2PI * np.exp(-0.5 * z * z))


def _gelu_tanh(z, param):
    return 0.5 * z * (1.0 + np.tanh(_gelu_tanh_inner(z)))


def _gelu_tanh_grad(z, param):
    t = np.tanh(_gelu_tanh_inner(z))
    inner_grad = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_TANH_C * z * z)
    return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * inner_grad


def _silu(z, param):
    return z * _sigmoid(z)


def _silu_grad(z, param):
    s = _sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


# name -> (value of the pre-activation, derivative of the saved tensor)
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "relu": (_relu, _relu_grad),
    "leaky_relu": (_leaky_relu, _leaky_relu_grad),
    "sigmoid": (lambda z, param: _sigmoid(z), _sigmoid_grad),
    "tanh": (lambda z, param: np.tanh(z), _tanh_grad),
    "gelu": (_gelu, _gelu_grad),
    "gelu_tanh": (_gelu_tanh, _gelu_tanh_grad),
    "silu": (_silu, _silu_grad),
}
assert tuple(ACTIVATIONS) == NAMES, "the reference must cover kernels.activations.NAMES exactly"


def apply_activation(z: np.ndarray, act: Activation | None) -> np.ndarray:
    """y = act(z) (z itself for None), in z's dtype."""
    if act is None:
        return z
    with np.errstate(over="ignore", invalid="ignore"):
        return np.asarray(ACTIVATIONS[act.name][0](z, act.param), dtype=z.dtype)


def saved_for_backward(z: np.ndarray, y: np.ndarray, act: Activation | None) -> np.ndarray | None:
    """The one tensor a fused op keeps: None, y (derivative from the output) or z."""
    if act is None:
        return None
    return y if act.from_output else z


def activation_grad(grad_y: np.ndarray, saved: np.ndarray | None,
                    act: Activation | None) -> np.ndarray:
    """dL/dz = dL/dy * act'(z), the derivative taken from ``saved`` (see saved_for_backward)."""
    if act is None:
        return grad_y
    dtype = np.result_type(grad_y, saved)
    with np.errstate(over="ignore", invalid="ignore"):
        deriv = ACTIVATIONS[act.name][1](saved, act.param)
        if act.name == "relu":  # torch selects: 0 where y <= 0 even for a NaN / inf grad_y
            return np.asarray(np.where(deriv == 0, 0.0, grad_y), dtype=dtype)
        return np.asarray(grad_y * deriv, dtype=dtype)


def activation_forward(x: np.ndarray, act: Activation | None) -> np.ndarray:
    return np.array(apply_activation(x, act), copy=True)


def activation_backward(grad_y: np.ndarray, saved: np.ndarray, act: Activation | None) -> np.ndarray:
    return np.array(activation_grad(grad_y, saved, act), copy=True)
