"""What the recurrent ops (``lstm.py``, ``gru.py``) share: the glue between a backend's opaque
``saved`` state and an op's outputs, gradient layouts, argument checks, and the composition of
one-layer-direction ops into torch.nn.RNNBase's multi-layer, bidirectional network (and of
one cell step into torch.nn.*Cell's batched / unbatched call)."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from ._common import autocast_to_lower, check_same, check_tensor
from ._library import absent, like_layout
from .dropout import dropout as _dropout


# --- a backend's opaque saved state as op outputs --------------------------------------------

def as_list(saved) -> list[Tensor]:
    """A backend's opaque ``saved`` (None, a tensor or a tuple of tensors) as an op output."""
    if saved is None:
        return []
    return [saved] if isinstance(saved, Tensor) else list(saved)


def as_saved(op: str, tensors: Sequence[Tensor]):
    """The inverse of ``as_list`` for a backward launcher."""
    if not tensors:
        raise RuntimeError(f"gpudnn {op}: backward through a forward that ran with "
                           "grad_enabled=False (nothing was saved for backward)")
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def saves(*tensors) -> bool:
    """Whether a forward must save for backward: grad mode on and some input requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def with_biases(w_ih: Tensor, *inputs: Tensor) -> tuple:
    """``inputs`` followed by two placeholders shaped like the biases (b_ih, b_hh), for the
    gradient layouts of a backward op (the biases themselves are not its arguments)."""
    bias = w_ih.new_empty(w_ih.shape[:1])
    return (*inputs, bias, bias)


def grads_like(grads, inputs: tuple) -> tuple:
    """Gradients laid out like their inputs (the fake rule's promise), empty where None."""
    return tuple(like_layout(g, t) if g is not None else absent(inputs[0])
                 for g, t in zip(grads, inputs))


def grads_fake(needs, inputs: tuple) -> tuple:
    return tuple(torch.empty_like(t) if need and t is not None else absent(inputs[0])
                 for need, t in zip(needs, inputs))


# --- argument checks -----------------------------------------------------------------------

def check_weights(op: str, gates: int, input_size: int, hidden: int, w_ih, w_hh, b_ih, b_hh,
                  where: str = "") -> None:
    """w_ih [gates*H, I], w_hh [gates*H, H], b_ih, b_hh [gates*H] or None."""
    for name, t in (("w_ih", w_ih), ("w_hh", w_hh)):
        check_tensor(f"{op}: {name}{where}", t, ndim=2)
    for name, t in (("b_ih", b_ih), ("b_hh", b_hh)):
        check_tensor(f"{op}: {name}{where}", t, ndim=1, optional=True)
    rows = gates * hidden
    if w_ih.shape != (rows, input_size):
        raise ValueError(f"{op}: w_ih{where} must have shape {(rows, input_size)} "
                         f"({gates}*hidden_size, input_size), got {tuple(w_ih.shape)}")
    if w_hh.shape != (rows, hidden):
        raise ValueError(f"{op}: w_hh{where} must have shape {(rows, hidden)} "
                         f"({gates}*hidden_size, hidden_size), got {tuple(w_hh.shape)}")
    for name, t in (("b_ih", b_ih), ("b_hh", b_hh)):
        if t is not None and t.shape != (rows,):
            raise ValueError(f"{op}: {name}{where} must have shape {(rows,)}, "
                             f"got {tuple(t.shape)}")


def _initial_states(op: str, states: Sequence[Optional[Tensor]], names: Sequence[str],
                    shape: tuple, zeros_shape: tuple, unbatched_dim: int | None,
                    like: Tensor) -> list[Tensor]:
    """The given initial states checked against ``shape`` (``unbatched_dim``: where the batch
    dimension of 1 is put back), or zeros of ``zeros_shape`` when none is given."""
    if states[0] is None:
        zeros = torch.zeros(zeros_shape, dtype=like.dtype, device=like.device)
        return [zeros] * len(names)
    out = []
    for name, t in zip(names, states):
        check_tensor(f"{op}: {name}", t)
        if tuple(t.shape) != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}, got {tuple(t.shape)}")
        out.append(t.unsqueeze(unbatched_dim) if unbatched_dim is not None else t)
    return out


# --- composition ---------------------------------------------------------------------------

def rnn_cell(op: str, gates: int, step: Callable, input: Tensor,
             states: Sequence[Optional[Tensor]], names: Sequence[str], w_ih: Tensor,
             w_hh: Tensor, b_ih: Optional[Tensor], b_hh: Optional[Tensor]) -> tuple:
    """One step like torch.nn.*Cell: input [B, I] or [I] (unbatched), the states each [B, H] /
    [H] (``names`` in messages), or all None for zeros. ``step(x, *states, w_ih, w_hh, b_ih,
    b_hh)`` -> the new states, [B, H] each. Returns the new states (unbatched: [H])."""
    check_tensor(f"{op}: input", input, ndim=(1, 2))
    check_tensor(f"{op}: w_hh", w_hh, ndim=2)
    hidden = w_hh.shape[1]
    unbatched = input.dim() == 1
    x = input.unsqueeze(0) if unbatched else input
    check_weights(op, gates, x.shape[1], hidden, w_ih, w_hh, b_ih, b_hh)
    states = _initial_states(op, states, names, (hidden,) if unbatched else (x.shape[0], hidden),
                             (x.shape[0], hidden), 0 if unbatched else None, x)
    x, *rest = autocast_to_lower(x, *states, w_ih, w_hh, b_ih, b_hh)
    states, (w_ih, w_hh, b_ih, b_hh) = rest[:len(names)], rest[len(names):]
    check_same(op, input=x, **dict(zip(names, states)), w_ih=w_ih, w_hh=w_hh, b_ih=b_ih,
               b_hh=b_hh)
    new = step(x, *states, w_ih, w_hh, b_ih, b_hh)
    return tuple(s.squeeze(0) for s in new) if unbatched else tuple(new)


def rnn(op: str, gates: int, layer: Callable, input: Tensor,
        states: Sequence[Optional[Tensor]], names: Sequence[str],
        flat_weights: Sequence[Tensor], num_layers: int, bias: bool, batch_first: bool,
        dropout: float, training: bool, bidirectional: bool) -> tuple[Tensor, tuple]:
    """torch.nn.RNNBase's network: returns (output, final states).

    input [T, B, I] ([B, T, I] when batch_first) or unbatched [T, I]; the initial states
    (``names`` in messages) each [num_layers * D, B, H] ([num_layers * D, H] unbatched), or all
    None for zeros (D = 2 when bidirectional); flat_weights in RNNBase's ``_flat_weights``
    order: per layer, per direction, w_ih, w_hh (then b_ih, b_hh when ``bias``). ``layer(x,
    *states, w_ih, w_hh, b_ih, b_hh, reverse)`` runs one layer-direction over x [T, B, I] ->
    (y [T, B, H], *final states [B, H]). Dropout with probability ``dropout`` is applied to
    every layer's output except the last when ``training``. The final states come stacked
    [num_layers * D, B, H] ([num_layers * D, H] unbatched).
    """
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
    count = num_layers * directions
    states = _initial_states(op, states, names,
                             (count, hidden) if unbatched else (count, batch, hidden),
                             (count, batch, hidden), 1 if unbatched else None, x)
    x, *rest = autocast_to_lower(x, *states, *flat_weights)
    states, flat_weights = rest[:len(names)], rest[len(names):]
    check_same(op, input=x, **dict(zip(names, states)),
               **{f"flat_weights[{k}]": w for k, w in enumerate(flat_weights)})

    finals = [[] for _ in names]
    for index_layer in range(num_layers):
        if index_layer > 0 and dropout > 0.0 and training:
            x = _dropout(x, float(dropout), training=True)
        outputs = []
        for direction in range(directions):
            index = index_layer * directions + direction
            w_ih, w_hh, *biases = flat_weights[index * per_direction:(index + 1) * per_direction]
            b_ih, b_hh = biases if bias else (None, None)
            check_weights(op, gates, x.shape[2], hidden, w_ih, w_hh, b_ih, b_hh,
                          where=f" of layer {index_layer}{' (reverse)' if direction else ''}")
            y, *final = layer(x, *(s[index] for s in states), w_ih, w_hh, b_ih, b_hh,
                              direction == 1)
            outputs.append(y)
            for kept, f in zip(finals, final):
                kept.append(f)
        x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)

    finals = tuple(torch.stack(f) for f in finals)
    if unbatched:
        return x.squeeze(1), tuple(f.squeeze(1) for f in finals)
    return (x.transpose(0, 1) if batch_first else x), finals
