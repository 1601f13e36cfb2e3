"""Standalone activations as one autograd Function (saves y where the derivative allows, else x)."""
from __future__ import annotations

import torch

from ..activations import Activation
from ._common import backward_launcher, check_tensor, forward_launcher

__all__ = ["ActivationFunction", "activation", "relu", "leaky_relu", "sigmoid", "tanh", "gelu",
           "silu"]


class ActivationFunction(torch.autograd.Function):
    """y = act(x) elementwise, any shape and strides."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, act: Activation) -> torch.Tensor:
        y = forward_launcher(ctx, "activation_forward", x)(x, act)
        ctx.act = act
        ctx.save_for_backward(y if act.from_output else x)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        (saved,) = ctx.saved_tensors
        grad_x = backward_launcher(ctx, "activation_backward")(grad_y, saved, ctx.act)
        return grad_x, None


def activation(input: torch.Tensor, act: Activation | None) -> torch.Tensor:
    """Apply ``act`` (None: identity, returns ``input``)."""
    check_tensor("input", input)
    if act is None:
        return input
    return ActivationFunction.apply(input, act)


# ``inplace=True`` is accepted for signature compatibility and computes out of place: a kernel's
# output never aliases its input, and autograd sees an ordinary op.

def relu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return activation(input, Activation("relu"))


def leaky_relu(input: torch.Tensor, negative_slope: float = 0.01,
               inplace: bool = False) -> torch.Tensor:
    return activation(input, Activation("leaky_relu", float(negative_slope)))


def sigmoid(input: torch.Tensor) -> torch.Tensor:
    return activation(input, Activation("sigmoid"))


def tanh(input: torch.Tensor) -> torch.Tensor:
    return activation(input, Activation("tanh"))


def gelu(input: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return activation(input, Activation("gelu_tanh" if approximate == "tanh" else "gelu"))


def silu(input: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return activation(input, Activation("silu"))
