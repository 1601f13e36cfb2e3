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
from ._library import define
from ._rnn import as_list, as_saved, grads_fake, grads_like, rnn, rnn_cell, saves, with_biases

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


@define("lstm_cell", traceable=False)
def lstm_cell_op(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
                 b_ih: Optional[Tensor], b_hh: Optional[Tensor], save: bool,
                 backend: str) -> tuple[Tensor, Tensor, list[Tensor]]:
    """One step: x [B, I], h, c [B, H] -> (h_new, c_new [B, H], saved: what this backend's
    backward reads, empty unless ``save``)."""
    h_new, c_new, saved = LSTM_CELL.forward(backend)(x, h, c, w_ih, w_hh, b_ih, b_hh, save)
    return h_new.contiguous(), c_new.contiguous(), as_list(saved)


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
                                        as_saved("LSTM", saved), tuple(needs))
    return grads_like(grads, with_biases(w_ih, x, h, c, w_ih, w_hh))


@lstm_cell_backward.register_fake
def _(grad_h, grad_c, x, h, c, w_ih, w_hh, c_new, saved, needs, backend):
    return grads_fake(needs, with_biases(w_ih, x, h, c, w_ih, w_hh))


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
    return y.contiguous(), h_n.contiguous(), c_n.contiguous(), as_list(saved)


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
                                         as_saved("LSTM", saved), reverse, tuple(needs))
    return grads_like(grads, with_biases(w_ih, x, h0, c0, w_ih, w_hh))


@lstm_layer_backward.register_fake
def _(grad_y, grad_h_n, grad_c_n, x, h0, c0, w_ih, w_hh, y, saved, reverse, needs, backend):
    return grads_fake(needs, with_biases(w_ih, x, h0, c0, w_ih, w_hh))


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


def lstm_cell_step(x: Tensor, h: Tensor, c: Tensor, w_ih: Tensor, w_hh: Tensor,
                   b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None):
    """One step on the selected backend, no argument checks: x [B, I], h, c [B, H] ->
    (h_new, c_new)."""
    args = (x, h, c, w_ih, w_hh, b_ih, b_hh)
    h_new, c_new, _ = lstm_cell_op(*args, saves(*args), resolve(LSTM_CELL, *args))
    return h_new, c_new


def lstm_layer(x: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
               b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None,
               reverse: bool = False):
    """One direction of one layer on the selected backend, no argument checks: x [T, B, I],
    h0, c0 [B, H] -> (y [T, B, H], h_n, c_n)."""
    args = (x, h0, c0, w_ih, w_hh, b_ih, b_hh)
    y, h_n, c_n, _ = lstm_layer_op(*args, bool(reverse), saves(*args),
                                   resolve(LSTM_LAYER, *args))
    return y, h_n, c_n


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
    return rnn_cell("lstm_cell", 4, lstm_cell_step, input, _split_hx("lstm_cell", hx),
                    ("hx[0]", "hx[1]"), w_ih, w_hh, b_ih, b_hh)


def lstm(input: torch.Tensor, hx, flat_weights: Sequence[torch.Tensor], num_layers: int,
         bias: bool, batch_first: bool, dropout: float, training: bool, bidirectional: bool):
    """torch.nn.LSTM's computation: returns (output, (h_n, c_n)).

    input [T, B, I] ([B, T, I] when batch_first) or unbatched [T, I]; hx = (h0, c0) each
    [num_layers * D, B, H] ([num_layers * D, H] unbatched) or None for zeros (D = 2 when
    bidirectional); flat_weights in torch.nn.LSTM's ``_flat_weights`` order: per layer, per
    direction, w_ih, w_hh (then b_ih, b_hh when ``bias``). Dropout with probability ``dropout``
    is applied to every layer's output except the last when ``training``.
    """
    return rnn("lstm", 4, lstm_layer, input, _split_hx("lstm", hx), ("hx[0]", "hx[1]"),
               flat_weights, num_layers, bias, batch_first, dropout, training, bidirectional)
