"""The GRU: the ops ``gpudnn::gru_cell`` (one step) and ``gpudnn::gru_layer`` (one direction
of one layer over a whole sequence) with their backward ops, and the public ``gru_cell`` /
``gru`` that compose them into torch.nn.GRU's multi-layer, bidirectional network (the
composition and argument checks are the LSTM's: ``_rnn.py``). Launcher signatures:
``gpudnn/reference/gru.py``.

The ops are opaque to ``torch.compile`` on every backend (``traceable=False``): the Triton step
loops read their tensors through a device pointer table and are replayed from CUDA graphs.
There are no CuPy GRU kernels (``"auto"`` picks Triton on CUDA tensors).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.triton import gru as triton
from ..reference import gru as reference
from ._library import define
from ._rnn import as_list, as_saved, grads_fake, grads_like, rnn, rnn_cell, saves, with_biases

__all__ = ["gru_cell", "gru"]

GRU_CELL = Kernels(
    "gru_cell",
    # the reference keeps its saved state at its compute precision (float32 for 16-bit inputs)
    reference=(reference_launcher(reference.gru_cell_forward, float32_outputs=(1,)),
               reference_launcher(reference.gru_cell_backward)),
    triton=(triton.gru_cell_forward, triton.gru_cell_backward))
GRU_LAYER = Kernels(
    "gru_layer",
    reference=(reference_launcher(reference.gru_layer_forward, float32_outputs=(2,)),
               reference_launcher(reference.gru_layer_backward)),
    triton=(triton.gru_layer_forward, triton.gru_layer_backward))


def _saved_fake(backend: str, x: Tensor, hidden: int) -> list[Tensor]:
    """What each backend's forward saves for its own backward (opaque to the op; the fake rule
    must know it): gates [T, B, 4H] ([B, 4H] for a cell step, x [B, I]): r, z, n, gh_n; in the
    reference's compute precision (at least float32), in the input dtype for triton."""
    dtype = torch.promote_types(x.dtype, torch.float32) if backend == "reference" else x.dtype
    return [x.new_empty((*x.shape[:-1], 4 * hidden), dtype=dtype)]


@define("gru_cell", traceable=False)
def gru_cell_op(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                b_hh: Optional[Tensor], save: bool, backend: str
                ) -> tuple[Tensor, list[Tensor]]:
    """One step: x [B, I], h [B, H] -> (h_new [B, H], saved: what this backend's backward
    reads, empty unless ``save``)."""
    h_new, saved = GRU_CELL.forward(backend)(x, h, w_ih, w_hh, b_ih, b_hh, save)
    return h_new.contiguous(), as_list(saved)


@gru_cell_op.register_fake
def _(x, h, w_ih, w_hh, b_ih, b_hh, save, backend):
    return x.new_empty(h.shape), _saved_fake(backend, x, w_hh.shape[1]) if save else []


@define("gru_cell_backward", traceable=False)
def gru_cell_backward(grad_h: Tensor, x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor,
                      saved: list[Tensor], needs: list[bool], backend: str
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> gradients of (x, h, w_ih, w_hh, b_ih, b_hh), each empty unless ``needs`` it."""
    grads = GRU_CELL.backward(backend)(grad_h, x, h, w_ih, w_hh, as_saved("GRU", saved),
                                       tuple(needs))
    return grads_like(grads, with_biases(w_ih, x, h, w_ih, w_hh))


@gru_cell_backward.register_fake
def _(grad_h, x, h, w_ih, w_hh, saved, needs, backend):
    return grads_fake(needs, with_biases(w_ih, x, h, w_ih, w_hh))


def _setup_cell(ctx, inputs, output):
    x, h, w_ih, w_hh, _, _, _, backend = inputs
    _, saved = output
    ctx.backend = backend
    ctx.save_for_backward(x, h, w_ih, w_hh, *saved)


def _cell_grad(ctx, grad_h, grad_saved):
    x, h, w_ih, w_hh, *saved = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:6])
    grads = gru_cell_backward(grad_h, x, h, w_ih, w_hh, saved, needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None)


gru_cell_op.register_autograd(_cell_grad, setup_context=_setup_cell)


@define("gru_layer", traceable=False)
def gru_layer_op(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor],
                 b_hh: Optional[Tensor], reverse: bool, save: bool, backend: str
                 ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """One direction of one layer: x [T, B, I], h0 [B, H] -> (y [T, B, H], h_n [B, H], saved:
    what this backend's backward reads, empty unless ``save``); reverse runs t = T-1 .. 0."""
    y, h_n, saved = GRU_LAYER.forward(backend)(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, save)
    return y.contiguous(), h_n.contiguous(), as_list(saved)


@gru_layer_op.register_fake
def _(x, h0, w_ih, w_hh, b_ih, b_hh, reverse, save, backend):
    hidden = w_hh.shape[1]
    saved = _saved_fake(backend, x, hidden) if save else []
    return x.new_empty((x.shape[0], x.shape[1], hidden)), x.new_empty(h0.shape), saved


@define("gru_layer_backward", traceable=False)
def gru_layer_backward(grad_y: Tensor, grad_h_n: Tensor, x: Tensor, h0: Tensor, w_ih: Tensor,
                       w_hh: Tensor, y: Tensor, saved: list[Tensor], reverse: bool,
                       needs: list[bool], backend: str
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """BPTT -> gradients of (x, h0, w_ih, w_hh, b_ih, b_hh), each empty unless needed."""
    grads = GRU_LAYER.backward(backend)(grad_y, grad_h_n, x, h0, w_ih, w_hh, y,
                                        as_saved("GRU", saved), reverse, tuple(needs))
    return grads_like(grads, with_biases(w_ih, x, h0, w_ih, w_hh))


@gru_layer_backward.register_fake
def _(grad_y, grad_h_n, x, h0, w_ih, w_hh, y, saved, reverse, needs, backend):
    return grads_fake(needs, with_biases(w_ih, x, h0, w_ih, w_hh))


def _setup_layer(ctx, inputs, output):
    x, h0, w_ih, w_hh, _, _, reverse, _, backend = inputs
    y, _, saved = output
    ctx.reverse, ctx.backend = reverse, backend
    ctx.save_for_backward(x, h0, w_ih, w_hh, y, *saved)


def _layer_grad(ctx, grad_y, grad_h_n, grad_saved):
    x, h0, w_ih, w_hh, y, *saved = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:6])
    grads = gru_layer_backward(grad_y, grad_h_n, x, h0, w_ih, w_hh, y, saved, ctx.reverse,
                               needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None)


gru_layer_op.register_autograd(_layer_grad, setup_context=_setup_layer)


def gru_cell_step(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor,
                  b_ih: Optional[Tensor] = None, b_hh: Optional[Tensor] = None):
    """One step on the selected backend, no argument checks: x [B, I], h [B, H] -> (h_new,)."""
    args = (x, h, w_ih, w_hh, b_ih, b_hh)
    h_new, _ = gru_cell_op(*args, saves(*args), resolve(GRU_CELL, *args))
    return (h_new,)


def gru_layer(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Optional[Tensor] = None,
              b_hh: Optional[Tensor] = None, reverse: bool = False):
    """One direction of one layer on the selected backend, no argument checks: x [T, B, I],
    h0 [B, H] -> (y [T, B, H], h_n)."""
    args = (x, h0, w_ih, w_hh, b_ih, b_hh)
    y, h_n, _ = gru_layer_op(*args, bool(reverse), saves(*args), resolve(GRU_LAYER, *args))
    return y, h_n


# --- public functions ----------------------------------------------------------------------

def gru_cell(input: torch.Tensor, hx: torch.Tensor | None, w_ih: torch.Tensor,
             w_hh: torch.Tensor, b_ih: torch.Tensor | None = None,
             b_hh: torch.Tensor | None = None) -> torch.Tensor:
    """One GRU step like ``torch.nn.GRUCell``: input [B, I] or [I] (unbatched), hx [B, H] / [H]
    or None for zeros. Returns h'."""
    return rnn_cell("gru_cell", 3, gru_cell_step, input, (hx,), ("hx",), w_ih, w_hh, b_ih,
                    b_hh)[0]


def gru(input: torch.Tensor, hx: torch.Tensor | None, flat_weights: Sequence[torch.Tensor],
        num_layers: int, bias: bool, batch_first: bool, dropout: float, training: bool,
        bidirectional: bool):
    """torch.nn.GRU's computation: returns (output, h_n).

    input [T, B, I] ([B, T, I] when batch_first) or unbatched [T, I]; hx [num_layers * D, B, H]
    ([num_layers * D, H] unbatched) or None for zeros (D = 2 when bidirectional);
    flat_weights in torch.nn.GRU's ``_flat_weights`` order: per layer, per direction, w_ih,
    w_hh (then b_ih, b_hh when ``bias``). Dropout with probability ``dropout`` is applied to
    every layer's output except the last when ``training``.
    """
    output, (h_n,) = rnn("gru", 3, gru_layer, input, (hx,), ("hx",), flat_weights, num_layers,
                         bias, batch_first, dropout, training, bidirectional)
    return output, h_n
