"""Parsing the ``activation=`` argument of the fused layers into a ``kernels`` Activation."""
from __future__ import annotations

from typing import Any

import torch

from .kernels.activations import NAMES, Activation

__all__ = ["Activation", "NAMES", "parse_activation", "activation_module", "activation_args",
           "activation_of"]


def parse_activation(activation: Any) -> Activation | None:
    """``None``, a name from ``NAMES`` or a matching torch.nn module -> Activation or None."""
    if activation is None or isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        if activation not in NAMES:
            raise ValueError(f"unknown activation {activation!r}; expected None, one of {NAMES}, "
                             "or a torch.nn activation module")
        return Activation.make(activation)
    nn = torch.nn
    if isinstance(activation, nn.LeakyReLU):
        return Activation("leaky_relu", float(activation.negative_slope))
    if isinstance(activation, nn.GELU):
        if activation.approximate not in ("none", "tanh"):
            raise ValueError(f"unsupported GELU approximate={activation.approximate!r}")
        return Activation("gelu_tanh" if activation.approximate == "tanh" else "gelu")
    for cls, name in ((nn.ReLU, "relu"), (nn.Sigmoid, "sigmoid"), (nn.Tanh, "tanh"),
                      (nn.SiLU, "silu")):
        if isinstance(activation, cls):
            return Activation(name)
    raise ValueError(f"unsupported activation {activation!r}; expected None, one of {NAMES}, or "
                     "an instance of torch.nn.ReLU, LeakyReLU, Sigmoid, Tanh, GELU or SiLU")


def activation_module(act: Activation | None) -> torch.nn.Module:
    """The torch.nn module computing ``act`` (for reprs, tests and un-fusing)."""
    nn = torch.nn
    if act is None:
        return nn.Identity()
    return {
        "relu": lambda: nn.ReLU(),
        "leaky_relu": lambda: nn.LeakyReLU(act.param),
        "sigmoid": lambda: nn.Sigmoid(),
        "tanh": lambda: nn.Tanh(),
        "gelu": lambda: nn.GELU(),
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "silu": lambda: nn.SiLU(),
    }[act.name]()


def activation_args(act: Activation | None) -> tuple[str, float]:
    """``act`` as the (name, parameter) arguments of a gpudnn op ("" for the identity)."""
    return ("", 0.0) if act is None else (act.name, float(act.param))


def activation_of(name: str, param: float) -> Activation | None:
    """The inverse of ``activation_args``."""
    return Activation(name, float(param)) if name else None
