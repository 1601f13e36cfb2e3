"""Dropout module (torch.nn twin); masks come from Philox, regenerated in backward.
``inplace=True`` is accepted and computes out of place."""
from __future__ import annotations

import torch

from ..ops.dropout import dropout

__all__ = ["Dropout"]


class Dropout(torch.nn.Dropout):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout(input, self.p, self.training)
