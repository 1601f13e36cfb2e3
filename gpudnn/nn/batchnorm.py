"""BatchNorm1d / BatchNorm2d with a fused activation (torch.nn twins).

The running-statistics logic (momentum=None -> cumulative average over num_batches_tracked,
track_running_stats=False -> batch statistics in eval too) is torch's _BatchNorm.forward.
"""
from __future__ import annotations

from typing import Any

import torch

from ..activations import parse_activation
from ..ops.batchnorm import batch_norm
from ._fused import join_repr

__all__ = ["BatchNorm1d", "BatchNorm2d"]


class _FusedBatchNorm:
    """__init__, forward and extra_repr shared by the BatchNorm twins (mixed in before torch's
    class, whose __init__ it calls with torch's arguments)."""

    activation = None  # a torch BatchNorm swapped in by gpudnn.nn.convert starts without one

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 activation: Any = None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)
        self.activation = parse_activation(activation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        # eval with running stats uses them; without (track_running_stats=False), batch stats
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return batch_norm(input, self.running_mean if keep_stats else None,
                          self.running_var if keep_stats else None, self.weight, self.bias,
                          use_batch_stats, factor, self.eps, activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(super().extra_repr(), self.activation)


class BatchNorm1d(_FusedBatchNorm, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d ([N, C] or [N, C, L]) with ``activation=`` fused."""


class BatchNorm2d(_FusedBatchNorm, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d ([N, C, H, W], NCHW or channels_last) with ``activation=`` fused."""
