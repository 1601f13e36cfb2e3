"""The LSTM: the ops ``gpudnn::lstm_cell`` (one step) and ``gpudnn::lstm_layer`` (one direction
of one layer over a whole sequence) with their backward ops, and the public ``lstm_cell`` /
``lstm`` that compose them into torch.nn.LSTM's multi-layer, bidirectional network. Launcher
signatures: ``gpudnn/reference/lstm.py``.

The ops are opaque to ``torch.compile`` on every backend (``traceable=False``): the Triton step
loops read their tensors through a device pointer table and are replayed from CUDA graphs.
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import lstm as cupy
from ..kernels.triton import lstm as triton
from ..reference import lstm as reference
from ._common import autocast_to_lower, check_same, check_tensor
from ._library import absent, define, like_layout
from .dropout import dropout

__all__ = ["lstm_cell", "lstm"]

LSTM_CELL = Kernels(
    "lstm_cell",
    # the reference keeps its saved state at its compute precision (float32 for 16-bit inputs)
    reference=(reference_launcher(reference.lstm_cell_forward, float32_outputs=(2,)),
               reference_launcher(reference.lstm_cell_backward)),
    triton=(triton.lstm_cell_forward, triton.lstm_cell_backward),
    cupy=(cupy.lstm_cell_forward, cupy.lstm_cell_backward))
LSTM_LAYER = Kernels(
    "lstm_layer",
    reference=(reference_launcher(reference.lstm_layer_forward, float32_outputs=(3,)),
               reference_launcher(reference.lstm_layer_backward)),
    triton=(triton.lstm_layer_forward, triton.lstm_layer_backward),
    cupy=(cupy.lstm_layer_forward, cupy.lstm_layer_backward))


def _saved_fake(backend: str, x: Tensor, steps: int, hidden: int, cell: bool) -> list[Tensor]:
    """What each backend's forward saves for its own backward (opaque to the op; the fake rule
    must know it): (gates [T, B, 4H], cells [T, B, H]) with T = 1 for a cell step; the
    reference's cell keeps gates [B, 4H] only. dtypes: the reference's compute precision
    (at least float32), triton's gates in the input dtype and cells in float32, CuPy's both
    float32."""
    batch = x.shape[-2]
    gates = (steps, batch, 4 * hidden)
    cells = (steps, batch, hidden)
    if backend == "reference":
        dtype = torch.promote_types(x.dtype, torch.float32)
        if cell:
            return [x.new_empty((batch, 4 * hidden), dtype=dtype)]
        return [x.new_empty(gates, dtype=dtype), x.new_empty(cells, dtype=dtype)]
    gates_dtype = x.dtype if backend == "triton" else torch.float32
    return [x.new_empty(gates, dtype=gates_dtype), x.new_empty(cells, dtype=torch.float32)]


def _as_list(saved) -> list[Tensor]:
    """A backend's opaque ``saved`` (None, a tensor or a tuple of tensors) as an op output."""
    if saved is None:
        return []
    return [saved] if isinstance(saved, Tensor) else list(saved)


def _as_saved(tensors: Sequence[Tensor]):
    """The inverse of ``_as_list`` for a backward launcher."""
    if not tensors:
        raise RuntimeError("gpudnn LSTM: backward through a forward that ran with "
                           "grad_enabled=False (nothing was saved for backward)")
    return tensors[0] if len(tensors) == 1 else tuple(tensors)


def _grads(grads, inputs: tuple) -> tuple:
    """Gradients laid out like their inputs (the fake rule's promise), empty where None."""
    return tuple(like_layout(g, t) if g is not None else absent(inputs[0])
                 for g, t in zip(grads, inputs))


def _grads_fake(needs, x, h, c, w_ih, w_hh, b_ih, b_hh) -> tuple:
    return tuple(torch.empty_like(t) if need and t is not None else absent(x)
                 for need, t in zip(needs, (x, h, c, w_ih, w_hh, b_ih, b_hh)))


@define("lstm_cell", traceable=False)
def lstm_cell_op(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
                 b_ih: Optional[Tensor], b_hh: Optional[Tensor], save: bool,
                 backend: str) -> tuple[Tensor, Tensor, list[Tensor]]:
    """One step: x [B, I], h, c [B, H] -> (h_new, c_new [B, H], saved: what this backend's
    backward reads, empty unless ``save``)."""
    h_new, c_new, saved = LSTM_CELL.forward(backend)(x, h, c, w_ih, w_hh, b_ih, b_hh, save)
    return h_new.contiguous(), c_new.contiguous(), _as_list(saved)


@lstm_cell_op.register_fake
def _(x, h, c, w_ih, w_hh, b_ih, b_hh, save, backend):
    saved = _saved_fake(backend, x, 1, w_hh.shape[1], cell=True) if save else []
    return x.new_empty(h.shape), x.new_empty(c.shape), saved


@define("lstm_cell_backward", traceable=False)
def lstm_cell_backward(grad_h: Tensor, grad_c: Tensor, x: Tensor, h: Tensor, c: Tensor,
                       w_ih: Tensor, w_hh: Tensor, c_new: Tensor, saved: list[Tensor],
                       needs: list[bool], backend: str
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> gradients of (x, h, c, w_ih, w_hh, b_ih, b_hh), each empty unless ``needs`` it."""
    grads = LSTM_CELL.backward(backend)(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new,
                                        _as_saved(saved), tuple(needs))
    bias = w_ih.new_empty(w_ih.shape[:1])
    return _grads(grads, (x, h, c, w_ih, w_hh, bias, bias))


@lstm_cell_backward.register_fake
def _(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs, backend):
    bias = w_ih.new_empty(w_ih.shape[:1])
    return _grads_fake(needs, x, h, c, w_ih, w_hh, bias, bias)


def _setup_cell(ctx, inputs, output):
    x, h, c, w_ih, w_hh, _, _, _, backend = inputs
    h_new, c_new, saved = output
    ctx.backend, ctx.saved_count = backend, len(saved)
    ctx.save_for_backward(x, h, c, w_ih, w_hh, c_new, *saved)


def _cell_grad(ctx, grad_h, grad_c, grad_saved):
    x, h, c, w_ih, w_hh, c_new, *saved = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:7])
    grads = lstm_cell_backward(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs,
                               ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None)


lstm_cell_op.register_autograd(_cell_grad, setup_context=_setup_cell)


@define("lstm_layer", traceable=False)
def lstm_layer_op(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Optional[Tensor], b_hh: Optional[Tensor], reverse: bool, save: bool,
                  backend: str) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """One direction of one layer: x [T, B, I], h0, c0 [B, H] -> (y [T, B, H], h_n, c_n [B, H],
    saved: what this backend's backward reads, empty unless ``save``); reverse runs
    t = T-1 .. 0."""
    y, h_n, c_n, saved = LSTM_LAYER.forward(backend)(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse,
                                                     save)
    return y.contiguous(), h_n.contiguous(), c_n.contiguous(), _as_list(saved)


@lstm_layer_op.register_fake
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse, save, backend):
    hidden = w_hh.shape[1]
    saved = _saved_fake(backend, x, x.shape[0], hidden, cell=False) if save else []
    return (x.new_empty((x.shape[0], x.shape[1], hidden)), x.new_empty(h0.shape),
            x.new_empty(c0.shape), saved)


@define("lstm_layer_backward", traceable=False)
def lstm_layer_backward(grad_y: Tensor, grad_h_n: Tensor, grad_c_n: Tensor, x: Tensor,
                        h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor, y: Tensor,
                        saved: list[Tensor], reverse: bool, needs: list[bool], backend: str
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT -> gradients of (x, h0, c0, w_ih, w_hh, b_ih, b_hh), each empty unless needed."""
    grads = LSTM_LAYER.backward(backend)(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y,
                                         _as_saved(saved), reverse, tuple(needs))
    bias = w_ih.new_empty(w_ih.shape[:1])
    return _grads(grads, (x, h0, c0, w_ih, w_hh, bias, bias))


@lstm_layer_backward.register_fake
def _(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse, needs, backend):
    bias = w_ih.new_empty(w_ih.shape[:1])
    return _grads_fake(needs, x, h0, c0, w_ih, w_hh, bias, bias)


def _setup_layer(ctx, inputs, output):
    x, h0, c0, w_ih, w_hh, _, _, reverse, _, backend = inputs
    y, _, _, saved = output
    ctx.reverse, ctx.backend = reverse, backend
    ctx.save_for_backward(x, h0, c0, w_ih, w_hh, y, *saved)


def _layer_grad(ctx, grad_y, grad_h_n, grad_c_n, grad_saved):
    x, h0, c0, w_ih, w_hh, y, *saved = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:7])
    grads = lstm_layer_backward(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved,
                                ctx.reverse, needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None)


lstm_layer_op.register_autograd(_layer_grad, setup_context=_setup_layer)


def _saves(*tensors) -> bool:
    """Whether a forward must save for backward: grad mode on and some input requires grad."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def lstm_cell_step(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
                   b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None):
    """One step on the selected backend, no argument checks: x [B, I], h, c [B, H] ->
    (h_new, c_new)."""
    args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    h_new, c_new, _ = lstm_cell_op(*args, _saves(*args), resolve(LSTM_CELL, *args))
    return h_new, c_new


def lstm_layer(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
               b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
               reverse: bool = False):
    """One direction of one layer on the selected backend, no argument checks: x [T, B, I],
    h0, c0 [B, H] -> (y [T, B, H], h_n, c_n)."""
    args = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    y, h_n, c_n, _ = lstm_layer_op(*args, bool(reverse), _saves(*args),
                                   resolve(LSTM_LAYER, *args))
    return y, h_n, c_n


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
    h_new, c_new = lstm_cell_step(x, h, c, w_ih, w_hh, b_ih, b_hh)
    if unbatched:
        h_new, c_new = h_new.squeeze(0), c_new.squeeze(0)
    return h_new, c_new


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
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
            y, h, c = lstm_layer(x, h0[index], c0[index], w_ih, w_hh, b_ih, b_hh,
                                 reverse=direction == 1)
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)

    h_n, c_n = torch.stack(h_n), torch.stack(c_n)
    if unbatched:
        return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    return (x.transpose(0, 1) if batch_first else x), (h_n, c_n)
