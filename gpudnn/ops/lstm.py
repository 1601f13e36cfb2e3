"""LSTM autograd Functions (one cell step; one layer-direction over a whole sequence) and the
public ``lstm_cell`` / ``lstm`` that compose them into torch.nn.LSTM's multi-layer,
bidirectional network. Launcher signatures: ``gpudnn/reference/lstm.py``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ._common import (autocast_to_lower, backward_launcher, check_same, check_tensor,
                      forward_launcher)

__all__ = ["lstm_cell", "lstm", "LSTMCellFunction", "LSTMLayerFunction"]


def _flatten_saved(saved) -> tuple[list, object]:
    """An opaque ``saved`` (None, a tensor or a tuple of tensors) -> (tensor list, rebuild spec)."""
    if saved is None:
        return [], None
    if isinstance(saved, torch.Tensor):
        return [saved], "tensor"
    return list(saved), len(saved)


def _unflatten_saved(tensors: Sequence, spec):
    if spec is None:
        raise RuntimeError("gpudnn LSTM: backward through a forward that ran with "
                           "grad_enabled=False (nothing was saved for backward)")
    if spec == "tensor":
        return tensors[0]
    return tuple(tensors)


class LSTMCellFunction(torch.autograd.Function):
    """(x, h, c, w_ih, w_hh, b_ih, b_hh, grad_enabled) -> (h_new, c_new): one LSTM step.
    ``grad_enabled``: torch.is_grad_enabled() of the caller (inside forward it is always off, and
    needs_input_grad does not see no_grad), so that inference saves nothing for backward."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, w_hh, b_ih, b_hh, grad_enabled=True):
        save = grad_enabled and any(ctx.needs_input_grad[:7])
        h_new, c_new, saved = forward_launcher(
            ctx, "lstm_cell_forward", x, h, c, w_ih, w_hh, b_ih, b_hh)(
            x, h, c, w_ih, w_hh, b_ih, b_hh, save)
        tensors, ctx.saved_spec = _flatten_saved(saved)
        ctx.save_for_backward(x, h, c, w_ih, w_hh, c_new, *tensors)
        return h_new, c_new

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h, grad_c):
        x, h, c, w_ih, w_hh, c_new, *tensors = ctx.saved_tensors
        saved = _unflatten_saved(tensors, ctx.saved_spec)
        needs = tuple(ctx.needs_input_grad[:7])
        grads = backward_launcher(ctx, "lstm_cell_backward")(
            grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs)
        return (*grads, None)


class LSTMLayerFunction(torch.autograd.Function):
    """(x [T, B, I], h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, grad_enabled) ->
    (y [T, B, H], h_n, c_n): one direction of one layer over the whole sequence
    (``grad_enabled`` as for LSTMCellFunction)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, grad_enabled=True):
        save = grad_enabled and any(ctx.needs_input_grad[:7])
        y, h_n, c_n, saved = forward_launcher(
            ctx, "lstm_layer_forward", x, h0, c0, w_ih, w_hh, b_ih, b_hh)(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save)
        tensors, ctx.saved_spec = _flatten_saved(saved)
        ctx.reverse = reverse
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, y, *tensors)
        return y, h_n, c_n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_h_n, grad_c_n):
        x, h0, c0, w_ih, w_hh, y, *tensors = ctx.saved_tensors
        saved = _unflatten_saved(tensors, ctx.saved_spec)
        needs = tuple(ctx.needs_input_grad[:7])
        grads = backward_launcher(ctx, "lstm_layer_backward")(
            grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, ctx.reverse, needs)
        return (*grads, None, None)


# --- argument checks -----------------------------------------------------------------------

def _check_weights(op: str, input_size: int, hidden: int, w_ih, w_hh, b_ih, b_hh,
                   where: str = "") -> None:
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh)):
        check_tensor(f"{op}: {name}{where}", t, ndim=2)
    for name, t in (("b_ih", b_ih), ("b_hh", b_hh)):
        check_tensor(f"{op}: {name}{where}", t, ndim=1, optional=True)
    if w_ih.shape != (4 * hidden, input_size):
        raise ValueError(f"{op}: w_ih{where} must have shape {(4 * hidden, input_size)} "
                         f"(4*hidden_size, input_size), got {tuple(w_ih.shape)}")
    if w_hh.shape != (4 * hidden, hidden):
        raise ValueError(f"{op}: w_hh{where} must have shape {(4 * hidden, hidden)} "
                         f"(4*hidden_size, hidden_size), got {tuple(w_hh.shape)}")
    for name, t in (("b_ih", b_ih), ("b_hh", b_hh)):
        if t is not None and t.shape != (4 * hidden,):
            raise ValueError(f"{op}: {name}{where} must have shape {(4 * hidden,)}, "
                             f"got {tuple(t.shape)}")


def _check_state(op: str, name: str, t, expected: tuple) -> None:
    check_tensor(f"{op}: {name}", t)
    if tuple(t.shape) != expected:
        raise ValueError(f"{op}: {name} must have shape {expected}, got {tuple(t.shape)}")


def _split_hx(op: str, hx):
    if hx is None:
        return None, None
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise TypeError(f"{op}: hx must be None or a pair (h, c) of tensors, got "
                        f"{type(hx).__name__}")
    return hx[0], hx[1]


# --- public functions ----------------------------------------------------------------------

def lstm_cell(input: torch.Tensor, hx, w_ih: torch.Tensor, w_hh: torch.Tensor,
              b_ih: torch.Tensor | None = None, b_hh: torch.Tensor | None = None):
    """One LSTM step like ``torch.nn.LSTMCell``: input [B, I] or [I] (unbatched), hx = (h, c)
    each [B, H] / [H], or None for zeros. Returns (h', c')."""
    op = "lstm_cell"
    check_tensor(f"{op}: input", input, ndim=(1, 2))
    check_tensor(f"{op}: w_hh", w_hh, ndim=2)
    hidden = w_hh.shape[1]
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    _check_weights(op, x.shape[1], hidden, w_ih, w_hh, b_ih, b_hh)
    h, c = _split_hx(op, hx)
    state_shape = (hidden,) if unbatched else (x.shape[0], hidden)
    if h is None:
        h = c = torch.zeros((x.shape[0], hidden), dtype=x.dtype, device=x.device)
    else:
        _check_state(op, "hx[0]", h, state_shape)
        _check_state(op, "hx[1]", c, state_shape)
        if unbatched:
            h, c = h.unsqueeze(0), c.unsqueeze(0)
    x, h, c, w_ih, w_hh, b_ih, b_hh = autocast_to_lower(x, h, c, w_ih, w_hh, b_ih, b_hh)
    check_same(op, input=x, h=h, c=c, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh)
    h_new, c_new = LSTMCellFunction.apply(x, h, c, w_ih, w_hh, b_ih, b_hh,
                                          torch.is_grad_enabled())
    if unbatched:
        h_new, c_new = h_new.squeeze(0), c_new.squeeze(0)
    return h_new, c_new


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    from ..functional import dropout  # the dropout op lives in its own family
    return dropout(x, p, training=True)


def lstm(input: torch.Tensor, hx, flat_weights: Sequence[torch.Tensor], num_layers: int,
         bias: bool, batch_first: bool, dropout: float, training: bool, bidirectional: bool):
    """torch.nn.LSTM's computation: returns (output, (h_n, c_n)).

    input [T, B, I] ([B, T, I] when batch_first) or unbatched [T, I]; hx = (h0, c0) each
    [num_layers * D, B, H] ([num_layers * D, H] unbatched) or None for zeros (D = 2 when
    bidirectional); flat_weights in torch.nn.LSTM's ``_flat_weights`` order: per layer, per
    direction, w_ih, w_hh (then b_ih, b_hh when ``bias``). Dropout with probability ``dropout``
    is applied to every layer's output except the last when ``training``.
    """
    op = "lstm"
    check_tensor(f"{op}: input", input, ndim=(2, 3))
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"{op}: num_layers must be a positive int, got {num_layers!r}")
    if not 0.0 <= float(dropout) <= 1.0:
        raise ValueError(f"{op}: dropout must be in [0, 1], got {dropout!r}")
    directions = 2 if bidirectional else 1
    per_direction = 4 if bias else 2
    flat_weights = list(flat_weights)
    expected = num_layers * directions * per_direction
    if len(flat_weights) != expected:
        raise ValueError(f"{op}: expected {expected} weight tensors for num_layers={num_layers}, "
                         f"bias={bias}, bidirectional={bidirectional}; got {len(flat_weights)}")
    check_tensor(f"{op}: flat_weights[1] (w_hh of layer 0)", flat_weights[1], ndim=2)
    hidden = flat_weights[1].shape[1]

    unbatched = input.dim() == 2
    x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if batch_first else input)
    steps, batch = x.shape[0], x.shape[1]
    if steps == 0:
        raise ValueError(f"{op}: the sequence length must be > 0, got input of shape "
                         f"{tuple(input.shape)}")
    h0, c0 = _split_hx(op, hx)
    state_shape = ((num_layers * directions, hidden) if unbatched
                   else (num_layers * directions, batch, hidden))
    if h0 is None:
        h0 = c0 = torch.zeros((num_layers * directions, batch, hidden), dtype=x.dtype,
                              device=x.device)
    else:
        _check_state(op, "hx[0]", h0, state_shape)
        _check_state(op, "hx[1]", c0, state_shape)
        if unbatched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    x, h0, c0, *flat_weights = autocast_to_lower(x, h0, c0, *flat_weights)
    check_same(op, input=x, h0=h0, c0=c0, **{f"flat_weights[{k}]": w
                                             for k, w in enumerate(flat_weights)})

    h_n, c_n = [], []
    for layer in range(num_layers):
        if layer > 0 and dropout > 0.0 and training:
            x = _dropout(x, float(dropout))
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, *biases = flat_weights[index * per_direction:(index + 1) * per_direction]
            b_ih, b_hh = biases if bias else (None, None)
            _check_weights(op, x.shape[2], hidden, w_ih, w_hh, b_ih, b_hh,
                           where=f" of layer {layer}{' (reverse)' if direction else ''}")
            y, h, c = LSTMLayerFunction.apply(x, h0[index], c0[index], w_ih, w_hh, b_ih, b_hh,
                                              direction == 1, torch.is_grad_enabled())
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)

    h_n, c_n = torch.stack(h_n), torch.stack(c_n)
    if unbatched:
        return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    return (x.transpose(0, 1) if batch_first else x), (h_n, c_n)
