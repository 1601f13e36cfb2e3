"""``LSTM`` and ``LSTMCell``: drop-in twins of torch.nn.LSTM / torch.nn.LSTMCell (same signature,
parameters, initialization and state_dict keys) running gpudnn's LSTM ops."""
from __future__ import annotations

import torch

from ..ops.lstm import lstm, lstm_cell
from ._rnn import check_cell_input, rnn_forward

__all__ = ["LSTM", "LSTMCell"]


class LSTM(torch.nn.RNNBase):
    """torch.nn.LSTM on gpudnn kernels: the same constructor, parameters, initialization and
    state_dict (both are ``RNNBase`` in mode "LSTM"). ``proj_size != 0`` and PackedSequence
    input are not supported (NotImplementedError).

    Not a subclass of ``torch.nn.LSTM``: torch.compile refuses to trace any instance of
    torch's RNN classes (a graph break), while this one compiles into one graph like every
    other gpudnn layer. ``convert`` still maps ``torch.nn.LSTM`` here (``torch_twin``)."""

    torch_twin = torch.nn.LSTM

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)
        if self.proj_size != 0:
            raise NotImplementedError(
                f"gpudnn.nn.LSTM does not support proj_size != 0 (got proj_size={self.proj_size});"
                " use torch.nn.LSTM for projected LSTMs")

    def forward(self, input, hx=None):
        return rnn_forward(self, lstm, input, hx)


class LSTMCell(torch.nn.LSTMCell):
    """torch.nn.LSTMCell on gpudnn kernels."""

    def forward(self, input, hx=None):
        check_cell_input(self, input)
        return lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
