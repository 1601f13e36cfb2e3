"""Softmax and LogSoftmax modules (torch.nn twins)."""
from __future__ import annotations

import torch

from ..ops.softmax import log_softmax, softmax

__all__ = ["Softmax", "LogSoftmax"]


def _dim(module: torch.nn.Module, input: torch.Tensor) -> int:
    if module.dim is not None:
        return module.dim
    # torch.nn.Softmax(dim=None): torch's legacy implicit-dim rule (with its warning)
    return torch.nn.functional._get_softmax_dim(type(module).__name__.lower(), input.dim(), 3)


class Softmax(torch.nn.Softmax):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return softmax(input, _dim(self, input))


class LogSoftmax(torch.nn.LogSoftmax):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return log_softmax(input, _dim(self, input))
