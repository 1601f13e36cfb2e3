"""``GRU`` and ``GRUCell``: drop-in twins of torch.nn.GRU / torch.nn.GRUCell (same signature,
parameters, initialization and state_dict keys) running gpudnn's GRU ops."""
from __future__ import annotations

import torch

from ..ops.gru import gru, gru_cell
from ._rnn import check_cell_input, rnn_forward

__all__ = ["GRU", "GRUCell"]


class GRU(torch.nn.RNNBase):
    """torch.nn.GRU on gpudnn kernels: the same constructor, parameters, initialization and
    state_dict (both are ``RNNBase`` in mode "GRU"). PackedSequence input is not supported
    (NotImplementedError); ``proj_size`` is refused as torch.nn.GRU refuses it (ValueError).

    Not a subclass of ``torch.nn.GRU``: torch.compile refuses to trace any instance of
    torch's RNN classes (a graph break), while this one compiles into one graph like every
    other gpudnn layer. ``convert`` still maps ``torch.nn.GRU`` here (``torch_twin``)."""

    torch_twin = torch.nn.GRU

    def __init__(self, *args, **kwargs):
        if "proj_size" in kwargs:
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        super().__init__("GRU", *args, **kwargs)
        if self.proj_size != 0:  # given positionally
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")

    def forward(self, input, hx=None):
        return rnn_forward(self, gru, input, hx)


class GRUCell(torch.nn.GRUCell):
    """torch.nn.GRUCell on gpudnn kernels."""

    def forward(self, input, hx=None):
        check_cell_input(self, input)
        return gru_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
