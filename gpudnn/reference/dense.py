"""NumPy reference of the fused dense layer: y = act(x @ weight.T + bias)."""
from __future__ import annotations

import numpy as np

from ..kernels.activations import Activation
from .activations import activation_grad, apply_activation, saved_for_backward


def dense_forward(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                  act: Activation | None) -> tuple[np.ndarray, np.ndarray | None]:
    """x [M, K], weight [N, K], bias [N] | None -> (y [M, N], saved per the launcher contract)."""
    z = x @ weight.T
    if bias is not None:
        z = z + bias
    y = apply_activation(z, act)
    return y, saved_for_backward(z, y, act)


def dense_backward(grad_y: np.ndarray, x: np.ndarray, weight: np.ndarray,
                   saved: np.ndarray | None, act: Activation | None, needs: tuple):
    """-> (grad_x [M, K], grad_weight [N, K], grad_bias [N]); None where not needed."""
    grad_z = activation_grad(grad_y, saved, act)
    grad_x = grad_z @ weight if needs[0] else None
    grad_weight = grad_z.T @ x if needs[1] else None
    grad_bias = grad_z.sum(axis=0) if needs[2] else None
    return grad_x, grad_weight, grad_bias
