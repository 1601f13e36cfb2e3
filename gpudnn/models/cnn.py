"""Image classifiers: a plain CNN and a depthwise-separable (Xception-block) variant.

Both are built from ``torch.nn`` (``build_torch``: the pure-torch twin) and turned into gpudnn
networks with ``gpudnn.models.to_gpudnn`` (``gpudnn.nn.convert``), which keeps the parameters and
``state_dict`` keys and fuses each Conv -> BatchNorm -> ReLU and Linear -> ReLU run. The layers sit
flat inside ``nn.Sequential`` containers precisely so that those runs are visible to ``convert``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> list[tuple[str, nn.Module]]:
    """Conv3x3 -> BatchNorm -> ReLU (the conv has no bias: BatchNorm's shift replaces it)."""
    return [("conv", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels)),
            ("relu", nn.ReLU())]


class XceptionBlock(nn.Module):
    """Entry-flow Xception block: two depthwise-separable convs (depthwise 3x3 then pointwise
    1x1), each followed by BatchNorm, a ReLU between them, a 3x3/2 max pool, plus a strided 1x1
    conv + BatchNorm shortcut; ReLU after the sum. Halves H and W (rounding up)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(OrderedDict([
            ("depthwise1", nn.Conv2d(in_channels, in_channels, 3, padding=1,
                                     groups=in_channels, bias=False)),
            ("pointwise1", nn.Conv2d(in_channels, out_channels, 1, bias=False)),
            ("bn1", nn.BatchNorm2d(out_channels)),
            ("relu1", nn.ReLU()),
            ("depthwise2", nn.Conv2d(out_channels, out_channels, 3, padding=1,
                                     groups=out_channels, bias=False)),
            ("pointwise2", nn.Conv2d(out_channels, out_channels, 1, bias=False)),
            ("bn2", nn.BatchNorm2d(out_channels)),
            ("pool", nn.MaxPool2d(3, stride=2, padding=1)),
        ]))
        self.shortcut = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)),
            ("bn", nn.BatchNorm2d(out_channels)),
        ]))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def build_torch(in_channels: int = 1, num_classes: int = 10, image_size: int = 8,
                widths: Sequence[int] = (32, 64), hidden: int = 128, dropout: float = 0.25,
                separable: bool = False) -> nn.Sequential:
    """The classifier from ``torch.nn`` layers.

    Plain: one Conv-BN-ReLU block + 2x2 max pool per entry of ``widths``. Separable: a
    Conv-BN-ReLU stem of ``widths[0]`` channels, then one Xception block per further width.
    Head: Flatten, Dropout(dropout), Linear(hidden) + ReLU, Linear(num_classes).
    """
    widths = [int(w) for w in widths]
    if not widths or (separable and len(widths) < 2):
        raise ValueError(f"widths needs >= {2 if separable else 1} entries, got {widths}")
    layers: list[tuple[str, nn.Module]] = []
    size, channels = image_size, in_channels
    if separable:
        layers += [(f"stem_{name}", m) for name, m in conv_block(channels, widths[0])]
        channels = widths[0]
        for i, width in enumerate(widths[1:], 1):
            layers.append((f"block{i}", XceptionBlock(channels, width)))
            channels, size = width, (size + 1) // 2
    else:
        for i, width in enumerate(widths, 1):
            layers += [(f"{name}{i}", m) for name, m in conv_block(channels, width)]
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
            channels, size = width, size // 2
    if size < 1:
        raise ValueError(f"image_size {image_size} is too small for {len(widths)} poolings")
    features = nn.Sequential(OrderedDict(layers))
    classifier = nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("dropout", nn.Dropout(dropout)),
        ("fc1", nn.Linear(channels * size * size, hidden)),
        ("relu", nn.ReLU()),
        ("fc2", nn.Linear(hidden, num_classes)),
    ]))
    return nn.Sequential(OrderedDict([("features", features), ("classifier", classifier)]))
