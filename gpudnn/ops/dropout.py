"""Dropout that stores no mask, only a Philox seed: the ops ``gpudnn::dropout`` /
``gpudnn::dropout_backward`` and ``dropout``.

The mask is regenerated in backward from the seed; the seed is drawn from torch's default (CPU)
generator as a 0-d int64 tensor, so ``torch.manual_seed`` makes runs reproducible and a compiled
graph draws it without leaving the graph.
"""
import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import dropout as cupy
from ..kernels.triton import dropout as triton
from ..reference import dropout as reference
from ._common import check_tensor
from ._library import define, like_layout

__all__ = ["dropout"]

DROPOUT = Kernels(
    "dropout",
    reference=(reference_launcher(reference.dropout_forward),
               reference_launcher(reference.dropout_backward)),
    triton=(triton.dropout_forward, triton.dropout_backward),
    cupy=(cupy.dropout_forward, cupy.dropout_backward))


@define("dropout")
def dropout_op(x: Tensor, p: float, seed: Tensor, backend: str) -> Tensor:
    """y_i = x_i / (1 - p) where tl.rand(seed, i) >= p, else 0 (0 < p < 1; i the row-major
    logical index); seed [] int64."""
    return like_layout(DROPOUT.forward(backend)(x, p, seed, 0), x)


@dropout_op.register_fake
def _(x, p, seed, backend):
    return torch.empty_like(x)


@define("dropout_backward")
def dropout_backward(grad_y: Tensor, p: float, seed: Tensor, backend: str) -> Tensor:
    """grad_x = grad_y through the mask that ``seed`` regenerates, scaled by 1 / (1 - p)."""
    return like_layout(DROPOUT.backward(backend)(grad_y, p, seed, 0), grad_y)


@dropout_backward.register_fake
def _(grad_y, p, seed, backend):
    return torch.empty_like(grad_y)


def _setup(ctx, inputs, output):
    x, p, seed, backend = inputs
    ctx.p, ctx.backend = p, backend
    ctx.save_for_backward(seed)


def _grad(ctx, grad_y):
    (seed,) = ctx.saved_tensors
    return dropout_backward(grad_y, ctx.p, seed, ctx.backend), None, None, None


dropout_op.register_autograd(_grad, setup_context=_setup)


def draw_seed() -> Tensor:
    """A Philox seed from torch's default generator: [] int64 in [0, 2^31 - 1)."""
    return torch.randint(2 ** 31 - 1, (), dtype=torch.int64)


def dropout(input: Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> Tensor:
    """torch.nn.functional.dropout; ``inplace=True`` is accepted and computes out of place."""
    check_tensor("input", input)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:  # torch's own p=1 path: input * 0 (NaN/inf stay NaN, -x gives -0.0)
        return input * torch.zeros((), dtype=input.dtype, device=input.device)
    return dropout_op(input, p, draw_seed(), resolve(DROPOUT, input))
