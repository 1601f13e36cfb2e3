"""Models built from gpudnn layers: ``cnn`` (CNN and Xception-block variant), ``lstm`` (char-level
LSTM language model), ``gan`` (DCGAN).

Each model module has ``build_torch(...)``, the pure ``torch.nn`` twin; ``to_gpudnn(model)`` turns
it into the gpudnn network with the same parameters (``gpudnn.nn.convert``), so tests and
benchmarks compare one network in two implementations. ``training`` holds the training tasks and
loop used by ``python -m gpudnn``.
"""
from __future__ import annotations

import copy as _copy
import importlib
from types import ModuleType

from torch import nn

from . import cnn, gan, lstm

__all__ = ["cnn", "gan", "lstm", "to_gpudnn", "nn_namespace", "optim_namespace"]


def to_gpudnn(model: nn.Module, copy: bool = True) -> nn.Module:
    """The gpudnn twin of a ``torch.nn`` model: same parameters and ``state_dict`` keys, gpudnn
    layers (fused where ``convert`` fuses). ``copy=True`` leaves ``model`` untouched and gives the
    twin its own parameter tensors (initialised to equal values)."""
    from ..nn import convert
    return convert(_copy.deepcopy(model) if copy else model, inplace=True)


def nn_namespace(use_gpudnn: bool) -> ModuleType:
    """``gpudnn.nn`` or ``torch.nn``: where to take loss modules from."""
    return importlib.import_module("gpudnn.nn") if use_gpudnn else nn


def optim_namespace(use_gpudnn: bool) -> ModuleType:
    """``gpudnn.optim`` when it is importable and ``use_gpudnn``, else ``torch.optim``."""
    import torch.optim
    if use_gpudnn:
        try:
            module = importlib.import_module("gpudnn.optim")
            if all(hasattr(module, name) for name in ("SGD", "Adam", "AdamW")):
                return module
        except ImportError:
            pass
    return torch.optim
