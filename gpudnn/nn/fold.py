"""Inference folding: an eval-mode BatchNorm2d after a convolution becomes part of its weight and
bias, so Conv -> BN -> activation runs as one conv kernel with a fused epilogue.

In eval mode BN is the per-channel affine map ``y = (z - mean) * scale + beta`` with
``scale = gamma / sqrt(running_var + eps)``, so ``BN(conv(x, W) + b) = conv(x, W * scale) +
(b - mean) * scale + beta`` (scale applied along the output-channel axis of W).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch._prims_common import suggest_memory_format

__all__ = ["fold_batchnorm"]


def _out_channel_scale(weight: torch.Tensor, scale: torch.Tensor, transposed: bool,
                       groups: int) -> torch.Tensor:
    """weight * scale along the output channels: axis 0 of a Conv2d weight [Cout, Cin/g, kh, kw];
    for a ConvTranspose2d weight [Cin, Cout/g, kh, kw] output channel g*Cout/g + j is column j of
    group g's rows."""
    if not transposed:
        return weight * scale.view(-1, 1, 1, 1)
    cin, cout_g = weight.shape[:2]
    grouped = weight.reshape(groups, cin // groups, cout_g, *weight.shape[2:])
    return (grouped * scale.view(groups, 1, cout_g, 1, 1)).reshape(weight.shape)


def fold_batchnorm(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``conv`` (torch or gpudnn Conv2d / ConvTranspose2d) computing ``bn(conv(x))`` for
    an eval-mode ``bn`` (torch or gpudnn BatchNorm2d with running statistics). ``conv`` and ``bn``
    are left untouched. A gpudnn ``bn`` carrying a fused activation hands it to the folded conv.

    Raises ValueError when the pair cannot be folded (bn in training mode or without running
    statistics, channel counts that differ, a conv that already applies an activation).
    """
    if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
        raise TypeError(f"fold_batchnorm: conv must be a Conv2d or ConvTranspose2d, got "
                        f"{type(conv).__name__}")
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"fold_batchnorm: bn must be a BatchNorm2d, got {type(bn).__name__}")
    if bn.training:
        raise ValueError("fold_batchnorm: bn is in training mode (it normalizes with batch "
                         "statistics then); call .eval() first")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("fold_batchnorm: bn has no running statistics "
                         "(track_running_stats=False normalizes with batch statistics)")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"fold_batchnorm: bn has {bn.num_features} features but conv has "
                         f"{conv.out_channels} output channels")
    if getattr(conv, "activation", None) is not None:
        raise ValueError("fold_batchnorm: conv already applies an activation, so bn does not "
                         "follow an affine map and cannot be folded")

    with torch.no_grad():
        # fold in float64: the folded weight is then as exact as its dtype allows
        var = bn.running_var.double()
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight = _out_channel_scale(conv.weight.double(), scale,
                                    isinstance(conv, nn.ConvTranspose2d), conv.groups)

    folded = copy.deepcopy(conv)
    dtype, device = conv.weight.dtype, conv.weight.device
    folded.weight = nn.Parameter(
        weight.to(dtype).contiguous(memory_format=suggest_memory_format(conv.weight)),
        requires_grad=conv.weight.requires_grad)
    folded.bias = nn.Parameter(shift.to(dtype=dtype, device=device),
                               requires_grad=conv.weight.requires_grad)
    bn_activation = getattr(bn, "activation", None)
    if bn_activation is not None:
        if not hasattr(folded, "activation"):
            raise ValueError("fold_batchnorm: bn applies a fused activation that a torch.nn conv "
                             "cannot carry; convert the conv to gpudnn.nn first")
        folded.activation = bn_activation
    return folded
