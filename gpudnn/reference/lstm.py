"""NumPy reference of the LSTM: one cell step and one layer-direction over a whole sequence,
forward and backward (backpropagation through time written out by hand). No torch in here.

Gate order is torch's: the 4H rows of ``w_ih`` / ``w_hh`` / biases are i, f, g, o.

    i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
    a = x W_ih^T + b_ih + h_prev W_hh^T + b_hh
    c = f * c_prev + i * g        h = o * tanh(c)

The launcher contract (the same names and signatures in every backend; ``saved`` is opaque: only
the same backend's backward reads it, so each backend keeps what its own backward needs):

lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, save) -> (h_new, c_new, saved)
    x [B, I]; h, c [B, H]; w_ih [4H, I]; w_hh [4H, H]; b_ih, b_hh [4H] | None;
    h_new, c_new [B, H]; saved is None when ``save`` is False (nothing for backward).
    Reference: saved = gates [B, 4H], the post-nonlinearity i, f, g, o.
lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs)
    -> (grad_x, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
    grad_h, grad_c [B, H] (gradients of h_new and c_new); needs: 7 bools, one per input
    (x, h, c, w_ih, w_hh, b_ih, b_hh); a gradient not needed is None.
lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save) -> (y, h_n, c_n, saved)
    x [T, B, I] (time-major); h0, c0 [B, H]; y [T, B, H] where y[t] is the hidden state after
    position t; reverse=True runs t = T-1 .. 0 (the backward direction of a bidirectional
    layer), so h_n, c_n [B, H] are then the states after position 0.
    Reference: saved = (gates [T, B, 4H], cells [T, B, H]) with cells[t] the cell state after
    position t; None when ``save`` is False.
lstm_layer_backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse, needs)
    -> (grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh)
    grad_y [T, B, H]; grad_h_n, grad_c_n [B, H]; needs: 7 bools as for the cell.
"""
from __future__ import annotations

import numpy as np


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: no overflow for large |x|
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _gates_forward(pre: np.ndarray, c_prev: np.ndarray):
    """Pre-activations [B, 4H] and c_prev [B, H] -> (h, c, gates [B, 4H] post-nonlinearity)."""
    hidden = c_prev.shape[-1]
    i = _sigmoid(pre[:, :hidden])
    f = _sigmoid(pre[:, hidden:2 * hidden])
    g = np.tanh(pre[:, 2 * hidden:3 * hidden])
    o = _sigmoid(pre[:, 3 * hidden:])
    c = f * c_prev + i * g
    h = o * np.tanh(c)
    return h, c, np.concatenate([i, f, g, o], axis=1)


def _gates_backward(grad_h, grad_c, gates, c_prev, c):
    """Pointwise backward of one step: -> (gradient of the pre-activations [B, 4H],
    gradient of c_prev [B, H]). ``grad_c`` is the gradient reaching c from later steps."""
    i, f, g, o = np.split(gates, 4, axis=1)
    tanh_c = np.tanh(c)
    grad_c = grad_c + grad_h * o * (1.0 - tanh_c * tanh_c)
    grad_pre = np.concatenate([
        grad_c * g * i * (1.0 - i),
        grad_c * c_prev * f * (1.0 - f),
        grad_c * i * (1.0 - g * g),
        grad_h * tanh_c * o * (1.0 - o),
    ], axis=1)
    return grad_pre, grad_c * f


def _bias_sum(b_ih, b_hh, rows: int, dtype) -> np.ndarray:
    total = np.zeros(rows, dtype=dtype)
    if b_ih is not None:
        total = total + b_ih
    if b_hh is not None:
        total = total + b_hh
    return total


def _weight_grads(grad_pre, x, h_prev, needs):
    """grad_pre [N, 4H], x [N, I], h_prev [N, H] (N = all rows of all steps) -> the four
    parameter gradients, each one GEMM / reduction over every row."""
    grad_w_ih = grad_pre.T @ x if needs[3] else None
    grad_w_hh = grad_pre.T @ h_prev if needs[4] else None
    grad_b = grad_pre.sum(axis=0) if (needs[5] or needs[6]) else None
    return (grad_w_ih, grad_w_hh, grad_b if needs[5] else None,
            grad_b.copy() if needs[6] else None)


def lstm_cell_forward(x, h, c, w_ih, w_hh, b_ih, b_hh, save):
    pre = x @ w_ih.T + h @ w_hh.T + _bias_sum(b_ih, b_hh, w_ih.shape[0], x.dtype)
    h_new, c_new, gates = _gates_forward(pre, c)
    return h_new, c_new, (gates if save else None)


def lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs):
    grad_pre, grad_c_prev = _gates_backward(grad_h, grad_c, saved, c, c_new)
    grad_x = grad_pre @ w_ih if needs[0] else None
    grad_h_prev = grad_pre @ w_hh if needs[1] else None
    return (grad_x, grad_h_prev, grad_c_prev if needs[2] else None,
            *_weight_grads(grad_pre, x, h, needs))


def _order(steps: int, reverse: bool) -> range:
    return range(steps - 1, -1, -1) if reverse else range(steps)


def lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save):
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    # the input projection of every step in one GEMM, as the kernels do
    x_proj = (x.reshape(steps * batch, input_size) @ w_ih.T).reshape(steps, batch, 4 * hidden)
    x_proj = x_proj + _bias_sum(b_ih, b_hh, 4 * hidden, x.dtype)
    y = np.empty((steps, batch, hidden), dtype=x.dtype)
    gates = np.empty((steps, batch, 4 * hidden), dtype=x.dtype)
    cells = np.empty((steps, batch, hidden), dtype=x.dtype)
    h, c = h0, c0
    for t in _order(steps, reverse):
        h, c, gates[t] = _gates_forward(x_proj[t] + h @ w_hh.T, c)
        y[t], cells[t] = h, c
    return y, h.copy(), c.copy(), ((gates, cells) if save else None)


def _previous(seq, first, reverse):
    """The state before each position: seq shifted one step against the direction of travel
    (as long as seq, so an empty sequence gives an empty result)."""
    if reverse:
        return np.concatenate([seq[1:], first[None]], axis=0)[:len(seq)]
    return np.concatenate([first[None], seq[:-1]], axis=0)[:len(seq)]


def lstm_layer_backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse,
                        needs):
    gates, cells = saved
    steps, batch, input_size = x.shape
    hidden = h0.shape[-1]
    c_prev = _previous(cells, c0, reverse)
    grad_pre = np.empty_like(gates)
    grad_h = grad_h_n.astype(x.dtype, copy=True)
    grad_c = grad_c_n.astype(x.dtype, copy=True)
    for t in reversed(_order(steps, reverse)):
        grad_pre[t], grad_c = _gates_backward(grad_y[t] + grad_h, grad_c, gates[t], c_prev[t],
                                              cells[t])
        grad_h = grad_pre[t] @ w_hh
    rows = steps * batch
    flat_pre = grad_pre.reshape(rows, 4 * hidden)
    grad_x = (flat_pre @ w_ih).reshape(x.shape) if needs[0] else None
    h_prev = _previous(y, h0, reverse).reshape(rows, hidden)
    return (grad_x, grad_h if needs[1] else None, grad_c if needs[2] else None,
            *_weight_grads(flat_pre, x.reshape(rows, input_size), h_prev, needs))
