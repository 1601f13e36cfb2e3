"""softmax / log_softmax over any dim: the ops ``gpudnn::softmax`` / ``gpudnn::softmax_backward``
(backward reads only the output) and ``softmax`` / ``log_softmax``."""
import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import softmax as cupy
from ..kernels.triton import softmax as triton
from ..reference import softmax as reference
from ._common import IndexValueError, autocast_to_float, check_tensor
from ._library import define, like_layout

__all__ = ["softmax", "log_softmax"]

SOFTMAX = Kernels(
    "softmax",
    reference=(reference_launcher(reference.softmax_forward),
               reference_launcher(reference.softmax_backward)),
    triton=(triton.softmax_forward, triton.softmax_backward),
    cupy=(cupy.softmax_forward, cupy.softmax_backward))


@define("softmax")
def softmax_op(x: Tensor, dim: int, log: bool, backend: str) -> Tensor:
    """y = softmax(x, dim) (log=False) or log_softmax(x, dim) (log=True); 0 <= dim < x.dim()."""
    return like_layout(SOFTMAX.forward(backend)(x, dim, log), x)


@softmax_op.register_fake
def _(x, dim, log, backend):
    return torch.empty_like(x)


@define("softmax_backward")
def softmax_backward(grad_y: Tensor, y: Tensor, dim: int, log: bool, backend: str) -> Tensor:
    """grad_x from grad_y and the forward's output y."""
    return like_layout(SOFTMAX.backward(backend)(grad_y, y, dim, log), y)


@softmax_backward.register_fake
def _(grad_y, y, dim, log, backend):
    return torch.empty_like(y)


def _setup(ctx, inputs, output):
    x, dim, log, backend = inputs
    ctx.dim, ctx.log, ctx.backend = dim, log, backend
    ctx.save_for_backward(output)


def _grad(ctx, grad_y):
    (y,) = ctx.saved_tensors
    return softmax_backward(grad_y, y, ctx.dim, ctx.log, ctx.backend), None, None, None


softmax_op.register_autograd(_grad, setup_context=_setup)


def _softmax(name: str, input, dim, dtype, log: bool) -> Tensor:
    check_tensor("input", input)
    if dim is None:
        raise TypeError(f"{name}: dim must be given (gpudnn has no implicit-dim rule)")
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{name}: dim must be an int, got {dim!r}")
    ndim = max(input.dim(), 1)
    if not -ndim <= dim < ndim:
        raise IndexValueError(f"{name}: dim {dim} out of range for input of shape "
                         f"{tuple(input.shape)} (expected in [{-ndim}, {ndim - 1}])")
    if dtype is not None:
        input = input.to(dtype)
    (input,) = autocast_to_float(input)
    if input.dim() == 0:  # torch allows dim 0 / -1 on a scalar
        return _softmax(name, input.reshape(1), 0, None, log).reshape(())
    return softmax_op(input, dim % ndim, log, resolve(SOFTMAX, input))


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
            dtype: torch.dtype | None = None) -> Tensor:
    return _softmax("softmax", input, dim, dtype, log=False)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,
                dtype: torch.dtype | None = None) -> Tensor:
    return _softmax("log_softmax", input, dim, dtype, log=True)
