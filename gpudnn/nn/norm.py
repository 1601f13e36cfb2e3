"""LayerNorm and GroupNorm with a fused activation (torch.nn twins: same constructor, init,
parameters and state_dict; ``activation=`` added)."""
from __future__ import annotations

from typing import Any

import torch

from ..activations import parse_activation
from ..ops.norm import group_norm, layer_norm
from ._fused import join_repr

__all__ = ["LayerNorm", "GroupNorm"]


class LayerNorm(torch.nn.LayerNorm):
    """torch.nn.LayerNorm computing ``activation(layer_norm(input) * weight + bias)`` in one
    fused op (normalized over the last ``len(normalized_shape)`` dims)."""

    activation = None  # a torch.nn.LayerNorm swapped in by gpudnn.nn.convert starts without one

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None, activation: Any = None) -> None:
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.activation = parse_activation(activation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps,
                          activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(super().extra_repr(), self.activation)


class GroupNorm(torch.nn.GroupNorm):
    """torch.nn.GroupNorm ([N, C, *], NCHW or channels_last) computing
    ``activation(group_norm(input) * weight + bias)`` in one fused op."""

    activation = None  # a torch.nn.GroupNorm swapped in by gpudnn.nn.convert starts without one

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None, activation: Any = None, *,
                 bias: bool = True) -> None:
        # bias=False is torch 2.13's keyword (older torch has no such argument: passed only
        # when asked for)
        extra = {} if bias else {"bias": False}
        super().__init__(num_groups, num_channels, eps, affine, device, dtype, **extra)
        self.activation = parse_activation(activation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps,
                          activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(super().extra_repr(), self.activation)
