"""``convert(module)``: swap torch.nn layers for their gpudnn twins and fuse activations."""
from __future__ import annotations

import copy

from torch import nn

from ..activations import parse_activation

def twin_classes() -> dict[type, type]:
    """torch.nn class -> its gpudnn.nn twin, for every twin ``gpudnn.nn`` defines (the torch
    class is the twin's ``torch_twin`` attribute, else its nearest torch.nn base). Exact types
    only: a user's subclass of a torch layer may override forward, so it is left alone."""
    from . import TWIN_MODULES
    table = {}
    for module in TWIN_MODULES:
        for name in module.__all__:
            cls = getattr(module, name)
            base = cls.__dict__.get("torch_twin") or next(
                b for b in cls.__mro__[1:] if b.__module__.startswith("torch.nn."))
            table[base] = cls
    return table


_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU)


def _twin_class(module: nn.Module):
    return twin_classes().get(type(module))


def _swap(module: nn.Module) -> nn.Module:
    """The same object (same parameters, buffers and hooks) as an instance of its gpudnn twin."""
    cls = _twin_class(module)
    if cls is None:
        return module
    module.__class__ = cls
    if hasattr(cls, "_gpudnn_after_convert"):
        module._gpudnn_after_convert()
    return module


def _fusable(module: nn.Module) -> bool:
    from .. import nn as gnn
    return isinstance(module, (gnn.Linear, gnn.Conv2d, gnn.ConvTranspose2d, gnn.BatchNorm1d,
                               gnn.BatchNorm2d)) and getattr(module, "activation", None) is None


def _fuse_sequential(seq: nn.Sequential, fold_batchnorm: bool) -> None:
    """Fuse Linear/Conv -> [BatchNorm] -> activation runs of a Sequential in place.

    The activation goes into the last layer of the run (the BatchNorm if there is one: in
    training it cannot be folded into the conv) and its slot becomes nn.Identity, so state_dict
    keys do not change. With ``fold_batchnorm`` an eval-mode BatchNorm2d after a Conv2d is folded
    into the conv's weight and bias and its slot becomes nn.Identity too (its keys go away).
    """
    from .. import nn as gnn
    names = list(seq._modules)
    i = 0
    while i < len(names):
        layer = seq._modules[names[i]]
        if not _fusable(layer):
            i += 1
            continue
        j = i + 1
        if (fold_batchnorm and isinstance(layer, gnn.Conv2d) and j < len(names)
                and isinstance(seq._modules[names[j]], gnn.BatchNorm2d)
                and not seq._modules[names[j]].training and not layer.training):
            from .fold import fold_batchnorm as fold
            layer = fold(layer, seq._modules[names[j]])
            seq._modules[names[i]] = layer
            seq._modules[names[j]] = nn.Identity()
            j += 1
        elif (isinstance(layer, (gnn.Linear, gnn.Conv2d, gnn.ConvTranspose2d)) and j < len(names)
              and isinstance(seq._modules[names[j]], (gnn.BatchNorm1d, gnn.BatchNorm2d))
              and _fusable(seq._modules[names[j]])):
            i, layer, j = j, seq._modules[names[j]], j + 1  # the activation goes into the BN
        if j < len(names) and isinstance(seq._modules[names[j]], _ACTIVATIONS):
            layer.activation = parse_activation(seq._modules[names[j]])
            seq._modules[names[j]] = nn.Identity()
            j += 1
        i = j


def convert(module: nn.Module, inplace: bool = False, fold_batchnorm: bool = False) -> nn.Module:
    """Replace every supported torch.nn layer of ``module`` by its gpudnn twin.

    The twins hold the same parameters and buffers (with ``inplace=False``, those of a deep
    copy), so ``state_dict`` keys and values are unchanged. Inside ``nn.Sequential``,
    Linear/Conv2d/ConvTranspose2d -> [BatchNorm] -> activation runs are fused (see
    ``_fuse_sequential``). ``fold_batchnorm=True`` (inference) also folds eval-mode
    BatchNorm2d layers into the preceding Conv2d; that removes their state_dict entries.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(module).__name__}")
    if not inplace:
        module = copy.deepcopy(module)
    for sub in list(module.modules()):  # classes change in place: same objects, same tensors
        _swap(sub)
    for sub in list(module.modules()):
        if isinstance(sub, nn.Sequential):
            _fuse_sequential(sub, fold_batchnorm)
    return module
