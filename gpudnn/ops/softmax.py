"""softmax / log_softmax over any dim as one autograd Function (saves only the output)."""
from __future__ import annotations

import torch

from ._common import autocast_to_float, backward_launcher, check_tensor, forward_launcher

__all__ = ["SoftmaxFunction", "softmax", "log_softmax"]


class SoftmaxFunction(torch.autograd.Function):
    """y = softmax(x, dim) (log=False) or log_softmax(x, dim) (log=True); dim >= 0."""

    @staticmethod
    def forward(ctx, x, dim: int, log: bool):
        y = forward_launcher(ctx, "softmax_forward", x)(x, dim, log)
        ctx.dim, ctx.log = dim, log
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        (y,) = ctx.saved_tensors
        return backward_launcher(ctx, "softmax_backward")(grad_y, y, ctx.dim, ctx.log), None, None


def _softmax(name: str, input, dim, dtype, log: bool) -> torch.Tensor:
    check_tensor("input", input)
    if dim is None:
        raise TypeError(f"{name}: dim must be given (gpudnn has no implicit-dim rule)")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{name}: dim must be an int, got {dim!r}")
    ndim = max(input.dim(), 1)
    if not -ndim <= dim < ndim:
        raise IndexError(f"{name}: dim {dim} out of range for input of shape "
                         f"{tuple(input.shape)} (expected in [{-ndim}, {ndim - 1}])")
    if dtype is not None:
        input = input.to(dtype)
    (input,) = autocast_to_float(input)
    if input.dim() == 0:  # torch allows dim 0 / -1 on a scalar
        return SoftmaxFunction.apply(input.reshape(1), 0, log).reshape(())
    return SoftmaxFunction.apply(input, dim % ndim, log)


def softmax(input: torch.Tensor, dim: int | None = None, _stacklevel: int = 3,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    return _softmax("softmax", input, dim, dtype, log=False)


def log_softmax(input: torch.Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: torch.dtype | None = None) -> torch.Tensor:
    return _softmax("log_softmax", input, dim, dtype, log=True)
