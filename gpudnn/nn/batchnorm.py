"""BatchNorm1d / BatchNorm2d / SyncBatchNorm with a fused activation (torch.nn twins).

The running-statistics logic (momentum=None -> cumulative average over num_batches_tracked,
track_running_stats=False -> batch statistics in eval too) is torch's _BatchNorm.forward.
SyncBatchNorm normalizes a training batch with the statistics of every process of its group
(torch.distributed; any backend, gloo on CPU included), else as BatchNorm.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch

from ..activations import parse_activation
from ..ops.batchnorm import batch_norm, sync_batch_norm
from ._fused import join_repr

__all__ = ["BatchNorm1d", "BatchNorm2d", "SyncBatchNorm"]


# torch 2.13's _NormBase takes ``bias=``; torch 2.11's (the GPU images') does not
_TORCH_TAKES_BIAS = "bias" in inspect.signature(
    torch.nn.modules.batchnorm._NormBase.__init__).parameters


def _init_norm(module: torch.nn.Module, init, *args, bias: bool) -> None:
    """torch's ``init(*args, bias=bias)``; on a torch without that keyword, its effect: an affine
    layer without a bias parameter."""
    if _TORCH_TAKES_BIAS:
        init(*args, bias=bias)
        return
    init(*args)
    if not bias and module.affine:
        module.register_parameter("bias", None)


class _FusedBatchNorm:
    """forward and extra_repr shared by the BatchNorm twins (mixed in before torch's class)."""

    activation = None  # a torch BatchNorm swapped in by gpudnn.nn.convert starts without one

    def _factor(self) -> float:
        """The running-average factor of this step (counting the step, as torch)."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def _statistics(self):
        """(use batch statistics, running_mean, running_var) as torch's _BatchNorm.forward."""
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return (use_batch_stats, self.running_mean if keep_stats else None,
                self.running_var if keep_stats else None)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        factor = self._factor()
        use_batch_stats, running_mean, running_var = self._statistics()
        return batch_norm(input, running_mean, running_var, self.weight, self.bias,
                          use_batch_stats, factor, self.eps, activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(super().extra_repr(), self.activation)


class _BatchNormTwin(_FusedBatchNorm):
    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None, dtype=None,
                 activation: Any = None, *, bias: bool = True) -> None:
        _init_norm(self, super().__init__, num_features, eps, momentum, affine,
                   track_running_stats, device, dtype, bias=bias)
        self.activation = parse_activation(activation)


class BatchNorm1d(_BatchNormTwin, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d ([N, C] or [N, C, L]) with ``activation=`` fused."""


class BatchNorm2d(_BatchNormTwin, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d ([N, C, H, W], NCHW or channels_last) with ``activation=`` fused."""


class SyncBatchNorm(_FusedBatchNorm, torch.nn.SyncBatchNorm):
    """torch.nn.SyncBatchNorm with ``activation=`` fused: in training, with torch.distributed
    initialized and more than one process in ``process_group`` (default: the world), the batch
    statistics are those of every process's batch (an all-gather of each one's mean, invstd and
    count; backward all-reduces two per-channel sums). Runs on every gpudnn backend and device
    (torch's own needs a GPU); otherwise it is BatchNorm."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None, activation: Any = None, *, bias: bool = True) -> None:
        _init_norm(self, super().__init__, num_features, eps, momentum, affine,
                   track_running_stats, process_group, device, dtype, bias=bias)
        self.activation = parse_activation(activation)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        factor = self._factor()
        use_batch_stats, running_mean, running_var = self._statistics()
        dist = torch.distributed
        world_size = 1
        group = None
        if use_batch_stats and self.training and dist.is_available() and dist.is_initialized():
            group = self.process_group or dist.group.WORLD
            world_size = dist.get_world_size(group)
        if world_size <= 1:
            return batch_norm(input, running_mean, running_var, self.weight, self.bias,
                              use_batch_stats, factor, self.eps, activation=self.activation)
        return sync_batch_norm(input, running_mean, running_var, self.weight, self.bias,
                               self.eps, factor, group, world_size, activation=self.activation)

    @classmethod
    def convert_sync_batchnorm(cls, module: torch.nn.Module, process_group=None):
        """Every BatchNorm*D layer of ``module`` (torch's or gpudnn's) as a gpudnn SyncBatchNorm
        holding the same parameters, buffers and fused activation (torch's classmethod, gpudnn's
        class)."""
        converted = module
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and \
                not isinstance(module, torch.nn.SyncBatchNorm):
            converted = cls(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group,
                            activation=getattr(module, "activation", None),
                            bias=module.bias is not None or not module.affine)
            if module.affine:
                with torch.no_grad():
                    converted.weight = module.weight
                    converted.bias = module.bias
            converted.running_mean = module.running_mean
            converted.running_var = module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
            converted.training = module.training
            if hasattr(module, "qconfig"):
                converted.qconfig = module.qconfig
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return converted
