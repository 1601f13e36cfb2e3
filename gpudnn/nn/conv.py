"""Conv2d and ConvTranspose2d: torch.nn's layers (signature, init, state_dict) on gpudnn's
convolution, with an ``activation=`` keyword fused into the kernel's epilogue."""
from __future__ import annotations

import torch
import torch.nn.functional as torch_functional

from ..activations import parse_activation
from ..ops.conv import conv2d, conv_transpose2d
from ._fused import join_repr

__all__ = ["Conv2d", "ConvTranspose2d"]


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d plus ``activation`` (None, a name or a torch activation module)."""

    activation = None  # a torch.nn.Conv2d swapped in by gpudnn.nn.convert starts without one

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None,
                 activation=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        self.activation = parse_activation(activation)

    def _conv_forward(self, input, weight, bias):
        if self.padding_mode != "zeros":
            # like torch: pad with the mode first (padding="same" included), then no padding
            input = torch_functional.pad(input, self._reversed_padding_repeated_twice,
                                         mode=self.padding_mode)
            return conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups,
                          activation=self.activation)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                      activation=self.activation)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return join_repr(super().extra_repr(), self.activation)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d plus ``activation``; ``forward(input, output_size=None)``."""

    activation = None  # see Conv2d

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=None, activation=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding,
                         groups, bias, dilation, padding_mode, device, dtype)
        self.activation = parse_activation(activation)

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only 'zeros' padding mode is supported for ConvTranspose2d")
        if input.dim() not in (3, 4):
            raise ValueError(f"ConvTranspose2d: input must have 3 or 4 dimensions, got shape "
                             f"{tuple(input.shape)}")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                output_padding, self.groups, self.dilation,
                                activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(super().extra_repr(), self.activation)
