"""Dropout that stores no mask, only a Philox seed: the ops ``gpudnn::dropout`` /
``gpudnn::dropout_backward`` and ``dropout``; channel-wise ``gpudnn::feature_dropout`` (one draw
per (sample, channel)) and ``dropout1d`` / ``dropout2d``.

The mask is regenerated in backward from the seed; the seed is drawn from torch's default (CPU)
generator as a 0-d int64 tensor, so ``torch.manual_seed`` makes runs reproducible and a compiled
graph draws it without leaving the graph. The masks are gpudnn's Philox streams, not torch's: the
same seed drops the same proportion but not the same elements as torch (by design).
"""
import warnings

import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import dropout as cupy
from ..kernels.triton import dropout as triton
from ..reference import dropout as reference
from ._common import check_tensor
from ._library import define, like_layout

__all__ = ["dropout", "dropout1d", "dropout2d"]

DROPOUT = Kernels(
    "dropout",
    reference=(reference_launcher(reference.dropout_forward),
               reference_launcher(reference.dropout_backward)),
    triton=(triton.dropout_forward, triton.dropout_backward),
    cupy=(cupy.dropout_forward, cupy.dropout_backward))
FEATURE_DROPOUT = Kernels(
    "feature_dropout",
    reference=(reference_launcher(reference.feature_dropout_forward),
               reference_launcher(reference.feature_dropout_backward)),
    triton=(triton.feature_dropout_forward, triton.feature_dropout_backward),
    cupy=(cupy.feature_dropout_forward, cupy.feature_dropout_backward))


def _dropout_ops(name: str, kernels: Kernels, what: str):
    """The ops ``gpudnn::<name>`` / ``gpudnn::<name>_backward``: y = x * mask / (1 - p), the
    mask drawn from ``seed`` (a [] int64 tensor) by ``kernels``; ``what`` says per what."""

    def body(x: Tensor, p: float, seed: Tensor, backend: str) -> Tensor:
        return like_layout(kernels.forward(backend)(x, p, seed, 0), x)

    body.__doc__ = (f"y = x / (1 - p) where tl.rand(seed, j) >= p, else x * 0, with j {what} "
                    "(0 < p < 1); seed [] int64.")
    forward = define(name)(body)

    @forward.register_fake
    def _(x, p, seed, backend):
        return torch.empty_like(x)

    @define(f"{name}_backward")
    def backward(grad_y: Tensor, p: float, seed: Tensor, backend: str) -> Tensor:
        """grad_x = grad_y through the mask that ``seed`` regenerates, scaled by 1 / (1 - p)."""
        return like_layout(kernels.backward(backend)(grad_y, p, seed, 0), grad_y)

    @backward.register_fake
    def _(grad_y, p, seed, backend):
        return torch.empty_like(grad_y)

    def setup(ctx, inputs, output):
        x, p, seed, backend = inputs
        ctx.p, ctx.backend = p, backend
        ctx.save_for_backward(seed)

    def grad(ctx, grad_y):
        (seed,) = ctx.saved_tensors
        return backward(grad_y, ctx.p, seed, ctx.backend), None, None, None

    forward.register_autograd(grad, setup_context=setup)
    return forward, backward


dropout_op, dropout_backward = _dropout_ops(
    "dropout", DROPOUT, "the row-major logical index of the element")
feature_dropout_op, feature_dropout_backward = _dropout_ops(
    "feature_dropout", FEATURE_DROPOUT, "n * C + c for element (n, c, ...) of x [N, C, *]")


def draw_seed() -> Tensor:
    """A Philox seed from torch's default generator: [] int64 in [0, 2^31 - 1)."""
    return torch.randint(2 ** 31 - 1, (), dtype=torch.int64)


def dropout(input: Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> Tensor:
    """torch.nn.functional.dropout; ``inplace=True`` is accepted and computes out of place."""
    p = _check_p(input, p)
    if not training or p == 0.0:
        return input
    if p == 1.0:  # torch's own p=1 path: input * 0 (NaN/inf stay NaN, -x gives -0.0)
        return input * torch.zeros((), dtype=input.dtype, device=input.device)
    return dropout_op(input, p, draw_seed(), resolve(DROPOUT, input))


def _check_p(input: Tensor, p: float) -> float:
    check_tensor("input", input)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return p


def _feature_dropout(input: Tensor, p: float, training: bool) -> Tensor:
    """torch's feature_dropout: one draw per (n, c) of input [N, C, *]; p == 0 or eval: the
    input itself; p == 1: input * 0 (NaN stays NaN)."""
    if not training or p == 0.0 or input.numel() == 0:
        return input
    if p == 1.0:
        return input * torch.zeros((), dtype=input.dtype, device=input.device)
    if input.dim() < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    return feature_dropout_op(input, p, draw_seed(), resolve(FEATURE_DROPOUT, input))


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """torch.nn.functional.dropout1d: input [N, C, L] or [C, L]; whole channels are zeroed
    (one draw per (sample, channel)). ``inplace=True`` computes out of place."""
    p = _check_p(input, p)
    if input.dim() not in (2, 3):
        raise RuntimeError(
            f"dropout1d: Expected 2D or 3D input, but received a {input.dim()}D input. Note that "
            "dropout1d exists to provide channel-wise dropout on inputs with 1 spatial "
            "dimension, a channel dimension, and an optional batch dimension (i.e. 2D or 3D "
            "inputs).")
    if input.dim() == 2:
        return _feature_dropout(input.unsqueeze(0), p, training).squeeze(0)
    return _feature_dropout(input, p, training)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """torch.nn.functional.dropout2d: input [N, C, H, W]; whole channels are zeroed (one draw
    per (sample, channel)). As torch: a 3-D input is taken as [N, C, L] (with torch's warning),
    other ranks warn and draw per (dim 0, dim 1). ``inplace=True`` computes out of place."""
    p = _check_p(input, p)
    if input.dim() not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {input.dim()}-D input to dropout2d, which is deprecated and "
            "will result in an error in a future release. To retain the behavior and silence "
            "this warning, please use dropout instead. Note that dropout2d exists to provide "
            "channel-wise dropout on inputs with 2 spatial dimensions, a channel dimension, and "
            "an optional batch dimension (i.e. 3D or 4D inputs).", stacklevel=2)
    if input.dim() == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D "
            "dropout behavior is desired - input is interpreted as shape (N, C, L), where C is "
            "the channel dim. This behavior will change in a future release to interpret the "
            "input as one without a batch dimension, i.e. shape (C, H, W). To maintain the 1D "
            "channel-wise dropout behavior, please switch to using dropout1d instead.",
            stacklevel=2)
    return _feature_dropout(input, p, training)
