"""Shared bits of the modules that fuse an activation (Linear, BatchNorm, Conv)."""
from __future__ import annotations

from ..activations import Activation
from ..kernels.activations import default_param


def activation_repr(act: Activation | None) -> str:
    """``activation=relu``; the parameter is shown when it is not the default."""
    if act is None:
        return ""
    text = act.name
    if act.param != default_param(act.name):
        text += f"({act.param:g})"
    return f"activation={text}"


def join_repr(base: str, act: Activation | None) -> str:
    extra = activation_repr(act)
    return f"{base}, {extra}" if base and extra else (base or extra)
