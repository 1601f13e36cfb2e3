"""Dropout, Dropout1d and Dropout2d modules (torch.nn twins); masks come from Philox, regenerated
in backward (gpudnn's streams, not torch's). ``inplace=True`` is accepted and computes out of
place."""
from __future__ import annotations

import torch

from ..ops.dropout import dropout, dropout1d, dropout2d

__all__ = ["Dropout", "Dropout1d", "Dropout2d"]


class Dropout(torch.nn.Dropout):
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout(input, self.p, self.training)


class Dropout1d(torch.nn.Dropout1d):
    """Zeroes whole channels of [N, C, L] / [C, L] inputs (one draw per (sample, channel))."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout1d(input, self.p, self.training)


class Dropout2d(torch.nn.Dropout2d):
    """Zeroes whole channels of [N, C, H, W] inputs (one draw per (sample, channel)); other
    ranks as torch (3-D taken as [N, C, L], with torch's warning)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return dropout2d(input, self.p, self.training)
