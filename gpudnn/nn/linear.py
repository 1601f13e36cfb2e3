"""Linear with a fused activation (a torch.nn.Linear twin: same init and state_dict keys)."""
from __future__ import annotations

from typing import Any

import torch

from ..activations import parse_activation
from ..ops.dense import linear
from ._fused import join_repr

__all__ = ["Linear"]


class Linear(torch.nn.Linear):
    """torch.nn.Linear computing ``activation(input @ weight.T + bias)`` in one fused op."""

    activation = None  # a torch.nn.Linear swapped in by gpudnn.nn.convert starts without one

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype=None, activation: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation = parse_activation(activation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return linear(input, self.weight, self.bias, activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(super().extra_repr(), self.activation)
