"""Standalone activations: the ops ``gpudnn::activation`` / ``gpudnn::activation_backward`` and
the functional forms (relu, leaky_relu, sigmoid, tanh, gelu, silu)."""
import torch
from torch import Tensor

from ..activations import Activation, activation_args, activation_of
from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import activations as cupy
from ..kernels.triton import activations as triton
from ..reference import activations as reference
from ._common import check_tensor
from ._library import define, like_layout

__all__ = ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu"]

ACTIVATION = Kernels(
    "activation",
    reference=(reference_launcher(reference.activation_forward),
               reference_launcher(reference.activation_backward)),
    triton=(triton.activation_forward, triton.activation_backward),
    cupy=(cupy.activation_forward, cupy.activation_backward))


@define("activation")
def activation_op(x: Tensor, act: str, act_param: float, backend: str) -> Tensor:
    """y = act(x) elementwise, any shape and strides (y laid out as torch.empty_like(x))."""
    return like_layout(ACTIVATION.forward(backend)(x, activation_of(act, act_param)), x)


@activation_op.register_fake
def _(x, act, act_param, backend):
    return torch.empty_like(x)


@define("activation_backward")
def activation_backward(grad_y: Tensor, saved: Tensor, act: str, act_param: float,
                        backend: str) -> Tensor:
    """grad_x = grad_y * act'(saved); saved = y if act' is a function of y, else x."""
    grad_x = ACTIVATION.backward(backend)(grad_y, saved, activation_of(act, act_param))
    return like_layout(grad_x, grad_y)


@activation_backward.register_fake
def _(grad_y, saved, act, act_param, backend):
    return torch.empty_like(grad_y)


def _setup(ctx, inputs, output):
    x, act, act_param, backend = inputs
    ctx.act, ctx.backend = (act, act_param), backend
    ctx.save_for_backward(output if activation_of(act, act_param).from_output else x)


def _grad(ctx, grad_y):
    (saved,) = ctx.saved_tensors
    return activation_backward(grad_y, saved, *ctx.act, ctx.backend), None, None, None


activation_op.register_autograd(_grad, setup_context=_setup)


def activation(input: Tensor, act: Activation | None) -> Tensor:
    """Apply ``act`` (None: identity, returns ``input``)."""
    check_tensor("input", input)
    if act is None:
        return input
    return activation_op(input, *activation_args(act), resolve(ACTIVATION, input))


# ``inplace=True`` is accepted for signature compatibility and computes out of place: a kernel's
# output never aliases its input, and autograd sees an ordinary op.

def relu(input: Tensor, inplace: bool = False) -> Tensor:
    return activation(input, Activation("relu"))


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    return activation(input, Activation("leaky_relu", float(negative_slope)))


def sigmoid(input: Tensor) -> Tensor:
    return activation(input, Activation("sigmoid"))


def tanh(input: Tensor) -> Tensor:
    return activation(input, Activation("tanh"))


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return activation(input, Activation("gelu_tanh" if approximate == "tanh" else "gelu"))


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    return activation(input, Activation("silu"))
