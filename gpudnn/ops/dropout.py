"""Dropout as an autograd Function that stores no mask: only the Philox seed and offset.

The mask is regenerated in backward from (seed, offset); the seed is drawn from torch's default
generator, so ``torch.manual_seed`` makes runs reproducible.
"""
from __future__ import annotations

import torch

from ._common import backward_launcher, check_tensor, forward_launcher

__all__ = ["DropoutFunction", "dropout"]


class DropoutFunction(torch.autograd.Function):
    """y_i = x_i / (1 - p) where tl.rand(seed, offset + i) >= p, else 0 (0 < p < 1)."""

    @staticmethod
    def forward(ctx, x, p: float, seed: int, offset: int):
        ctx.p, ctx.seed, ctx.offset = p, seed, offset
        return forward_launcher(ctx, "dropout_forward", x)(x, p, seed, offset)

    @staticmethod
    def backward(ctx, grad_y):
        grad_x = backward_launcher(ctx, "dropout_backward")(grad_y, ctx.p, ctx.seed, ctx.offset)
        return grad_x, None, None, None


def draw_seed() -> int:
    """A Philox seed from torch's default generator (reproducible under torch.manual_seed)."""
    return int(torch.randint(2 ** 31 - 1, (1,)).item())


def dropout(input: torch.Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> torch.Tensor:
    """torch.nn.functional.dropout; ``inplace=True`` is accepted and computes out of place."""
    check_tensor("input", input)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        # zeros (also where input is inf/NaN), with a zero gradient
        return input.masked_fill(torch.ones((), dtype=torch.bool, device=input.device), 0.0)
    return DropoutFunction.apply(input, p, draw_seed(), 0)
