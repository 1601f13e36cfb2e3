"""What the recurrent twins (``lstm.py``, ``gru.py``) share: torch.nn.RNNBase's forward on a
gpudnn network function."""
from __future__ import annotations

from typing import Callable

import torch
from torch.nn.utils.rnn import PackedSequence


def rnn_forward(module: torch.nn.RNNBase, network: Callable, input, hx):
    """``network(input, hx, flat_weights, num_layers, bias, batch_first, dropout, training,
    bidirectional)`` (``gpudnn.functional.lstm`` / ``gru``) on ``module``'s parameters, after
    RNNBase's input checks; PackedSequence input is a NotImplementedError."""
    name = type(module).__name__
    if isinstance(input, PackedSequence):
        raise NotImplementedError(
            f"gpudnn.nn.{name} does not support PackedSequence input; pad the batch "
            "(torch.nn.utils.rnn.pad_packed_sequence) and pass a tensor, or use "
            f"torch.nn.{name}")
    if isinstance(input, torch.Tensor) and input.dim() not in (2, 3):
        raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D tensor")
    if isinstance(input, torch.Tensor) and input.shape[-1] != module.input_size:
        raise ValueError(f"{name}: input.size(-1) must be equal to input_size "
                         f"{module.input_size}, got input of shape {tuple(input.shape)}")
    weights = [getattr(module, n) for n in module._flat_weights_names]
    return network(input, hx, weights, module.num_layers, module.bias, module.batch_first,
                   module.dropout, module.training, module.bidirectional)


def check_cell_input(module: torch.nn.Module, input) -> None:
    """torch.nn.*Cell's input check (1D or 2D)."""
    if isinstance(input, torch.Tensor) and input.dim() not in (1, 2):
        raise ValueError(f"{type(module).__name__}: Expected input to be 1D or 2D, got "
                         f"{input.dim()}D tensor")
