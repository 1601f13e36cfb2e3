"""``LSTM`` and ``LSTMCell``: drop-in twins of torch.nn.LSTM / torch.nn.LSTMCell (same signature,
parameters, initialization and state_dict keys) running gpudnn's LSTM ops."""
from __future__ import annotations

import torch
from torch.nn.utils.rnn import PackedSequence

from ..ops.lstm import lstm, lstm_cell

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
        if isinstance(input, PackedSequence):
            raise NotImplementedError(
                "gpudnn.nn.LSTM does not support PackedSequence input; pad the batch "
                "(torch.nn.utils.rnn.pad_packed_sequence) and pass a tensor, or use torch.nn.LSTM")
        if isinstance(input, torch.Tensor) and input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D tensor")
        if isinstance(input, torch.Tensor) and input.shape[-1] != self.input_size:
            raise ValueError(f"LSTM: input.size(-1) must be equal to input_size "
                             f"{self.input_size}, got input of shape {tuple(input.shape)}")
        weights = [getattr(self, name) for name in self._flat_weights_names]
        return lstm(input, hx, weights, self.num_layers, self.bias, self.batch_first,
                    self.dropout, self.training, self.bidirectional)


class LSTMCell(torch.nn.LSTMCell):
    """torch.nn.LSTMCell on gpudnn kernels."""

    def forward(self, input, hx=None):
        if isinstance(input, torch.Tensor) and input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D "
                             "tensor")
        return lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
