"""NumPy reference of the GRU: one cell step and one layer-direction over a whole sequence,
forward and backward (backpropagation through time written out by hand). No torch in here.

Gate order is torch's: the 3H rows of ``w_ih`` / ``w_hh`` / biases are r, z, n.

    gi = x W_ih^T + b_ih          gh = h_prev W_hh^T + b_hh        (each [B, 3H]: r, z, n)
    r = sigmoid(gi_r + gh_r)      z = sigmoid(gi_z + gh_z)
    n = tanh(gi_n + r * gh_n)     h = (h_prev - n) * z + n     (= (1 - z) * n + z * h_prev)

The last line is written as torch computes it (aten's GRUCell), so NaN and inf land where
torch's do. Backward of one step, with dh the gradient reaching h (from y and the next step):

    dn = dh - dh * z              dz = dh * (h_prev - n)           da_n = dn * (1 - n^2)
    da_r = da_n * gh_n * (1 - r) * r                               da_z = dz * (1 - z) * z
    dgi = (da_r, da_z, da_n)      dgh = (da_r, da_z, da_n * r)
    dh_prev = dh * z + dgh W_hh   dx = dgi W_ih   dW_ih += dgi^T x  dW_hh += dgh^T h_prev
    db_ih += sum dgi              db_hh += sum dgh

The launcher contract (the same names and signatures in every backend; ``saved`` is opaque: only
the same backend's backward reads it, so each backend keeps what its own backward needs):

gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, save) -> (h_new, saved)
    x [B, I]; h [B, H]; w_ih [3H, I]; w_hh [3H, H]; b_ih, b_hh [3H] | None; h_new [B, H];
    saved is None when ``save`` is False (nothing for backward).
    Reference and Triton: saved = gates [B, 4H]: r, z, n and gh_n = h W_hn^T + b_hn.
gru_cell_backward(grad_h, x, h, w_ih, w_hh, saved, needs)
    -> (grad_x, grad_h, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
    grad_h [B, H] (gradient of h_new); needs: 6 bools, one per input (x, h, w_ih, w_hh, b_ih,
    b_hh); a gradient not needed is None.
gru_layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, save) -> (y, h_n, saved)
    x [T, B, I] (time-major); h0 [B, H]; y [T, B, H] where y[t] is the hidden state after
    position t; reverse=True runs t = T-1 .. 0 (the backward direction of a bidirectional
    layer), so h_n [B, H] is then the state after position 0.
    Reference and Triton: saved = gates [T, B, 4H] (r, z, n, gh_n of each position); None when
    ``save`` is False.
gru_layer_backward(grad_y, grad_h_n, x, h0, w_ih, w_hh, y, saved, reverse, needs)
    -> (grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
    grad_y [T, B, H]; grad_h_n [B, H]; needs: 6 bools as for the cell.
"""
from __future__ import annotations

import numpy as np

from .lstm import _order, _previous, _sigmoid


def _split3(a: np.ndarray):
    hidden = a.shape[-1] // 3
    return a[..., :hidden], a[..., hidden:2 * hidden], a[..., 2 * hidden:]


def _affine(x, w, b):
    """x W^T + b (b may be None)."""
    out = x @ w.T
    return out if b is None else out + b


def _gates_forward(gi: np.ndarray, gh: np.ndarray, h_prev: np.ndarray):
    """Input and hidden projections [B, 3H] and h_prev [B, H] -> (h [B, H], gates [B, 4H]:
    r, z, n, gh_n)."""
    gi_r, gi_z, gi_n = _split3(gi)
    gh_r, gh_z, gh_n = _split3(gh)
    r = _sigmoid(gi_r + gh_r)
    z = _sigmoid(gi_z + gh_z)
    n = np.tanh(gi_n + r * gh_n)
    h = (h_prev - n) * z + n
    return h, np.concatenate([r, z, n, gh_n], axis=-1)


def _gates_backward(grad_h, gates, h_prev):
    """Pointwise backward of one step: -> (dgi [B, 3H], dgh [B, 3H], the direct part dh * z of
    the gradient of h_prev [B, H])."""
    r, z, n, gh_n = np.split(gates, 4, axis=-1)
    grad_n = grad_h - grad_h * z
    grad_z = grad_h * (h_prev - n)
    grad_an = grad_n * (1.0 - n * n)
    grad_ar = grad_an * gh_n * (1.0 - r) * r
    grad_az = grad_z * (1.0 - z) * z
    return (np.concatenate([grad_ar, grad_az, grad_an], axis=-1),
            np.concatenate([grad_ar, grad_az, grad_an * r], axis=-1),
            grad_h * z)


def _param_grads(grad_gi, grad_gh, x, h_prev, needs):
    """dgi, dgh [N, 3H], x [N, I], h_prev [N, H] (N = all rows of all steps) -> the four
    parameter gradients, each one GEMM / reduction over every row."""
    return (grad_gi.T @ x if needs[2] else None,
            grad_gh.T @ h_prev if needs[3] else None,
            grad_gi.sum(axis=0) if needs[4] else None,
            grad_gh.sum(axis=0) if needs[5] else None)


def gru_cell_forward(x, h, w_ih, w_hh, b_ih, b_hh, save):
    h_new, gates = _gates_forward(_affine(x, w_ih, b_ih), _affine(h, w_hh, b_hh), h)
    return h_new, (gates if save else None)


def gru_cell_backward(grad_h, x, h, w_ih, w_hh, saved, needs):
    grad_gi, grad_gh, grad_h_direct = _gates_backward(grad_h, saved, h)
    grad_x = grad_gi @ w_ih if needs[0] else None
    grad_h_prev = grad_h_direct + grad_gh @ w_hh if needs[1] else None
    return (grad_x, grad_h_prev, *_param_grads(grad_gi, grad_gh, x, h, needs))


def gru_layer_forward(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, save):
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    # the input projection of every step in one GEMM, as the kernels do
    gi = _affine(x.reshape(steps * batch, input_size), w_ih, b_ih).reshape(
        steps, batch, 3 * hidden)
    y = np.empty((steps, batch, hidden), dtype=x.dtype)
    gates = np.empty((steps, batch, 4 * hidden), dtype=x.dtype)
    h = h0
    for t in _order(steps, reverse):
        h, gates[t] = _gates_forward(gi[t], _affine(h, w_hh, b_hh), h)
        y[t] = h
    return y, h.copy(), (gates if save else None)


def gru_layer_backward(grad_y, grad_h_n, x, h0, w_ih, w_hh, y, saved, reverse, needs):
    gates = saved
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    h_prev = _previous(y, h0, reverse)
    grad_gi = np.empty((steps, batch, 3 * hidden), dtype=x.dtype)
    grad_gh = np.empty_like(grad_gi)
    grad_h = grad_h_n.astype(x.dtype, copy=True)
    for t in reversed(_order(steps, reverse)):
        grad_gi[t], grad_gh[t], direct = _gates_backward(grad_y[t] + grad_h, gates[t],
                                                         h_prev[t])
        grad_h = direct + grad_gh[t] @ w_hh
    rows = steps * batch
    flat_gi = grad_gi.reshape(rows, 3 * hidden)
    grad_x = (flat_gi @ w_ih).reshape(x.shape) if needs[0] else None
    return (grad_x, grad_h if needs[1] else None,
            *_param_grads(flat_gi, grad_gh.reshape(rows, 3 * hidden),
                          x.reshape(rows, input_size), h_prev.reshape(rows, hidden), needs))
