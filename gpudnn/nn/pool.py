"""MaxPool2d, AvgPool2d and AdaptiveAvgPool2d: torch.nn's layers on gpudnn's pooling."""
from __future__ import annotations

import torch

from ..ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d (``return_indices=True``: (output, torch's int64 indices))."""

    def forward(self, input):
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                          ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """torch.nn.AvgPool2d."""

    def forward(self, input):
        return avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                          self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(torch.nn.AdaptiveAvgPool2d):
    """torch.nn.AdaptiveAvgPool2d."""

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)
