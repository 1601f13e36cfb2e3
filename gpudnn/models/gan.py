"""DCGAN for small grayscale (or RGB) images: 16x16 or 32x32.

Generator: z [B, latent, 1, 1] -> ConvTranspose2d 4x4 (to 4x4) -> BN -> ReLU, then stride-2
ConvTranspose2d -> BN -> ReLU doublings, last ConvTranspose2d -> Tanh (images in [-1, 1]).
Discriminator: stride-2 Conv2d -> [BN] -> LeakyReLU(0.2) halvings (no BN on the first, as in
DCGAN), then a 4x4 Conv2d to one logit per image; trained with BCE-with-logits.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


class GAN(nn.Module):
    """Holds ``generator`` and ``discriminator`` so one ``state_dict``/``convert`` covers both."""

    def __init__(self, latent_dim: int = 32, image_size: int = 16, channels: int = 1,
                 width: int = 32):
        super().__init__()
        if image_size not in (8, 16, 32, 64):
            raise ValueError(f"image_size must be 8, 16, 32 or 64, got {image_size}")
        self.latent_dim = latent_dim
        doublings = {8: 0, 16: 1, 32: 2, 64: 3}[image_size]  # between 4x4 and image_size/2

        g: list[tuple[str, nn.Module]] = []
        c = width * 2 ** doublings
        g += [("convt0", nn.ConvTranspose2d(latent_dim, c, 4, 1, 0, bias=False)),
              ("bn0", nn.BatchNorm2d(c)), ("relu0", nn.ReLU())]
        for i in range(1, doublings + 1):
            g += [(f"convt{i}", nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False)),
                  (f"bn{i}", nn.BatchNorm2d(c // 2)), (f"relu{i}", nn.ReLU())]
            c //= 2
        g += [("convt_out", nn.ConvTranspose2d(c, channels, 4, 2, 1)), ("tanh", nn.Tanh())]
        self.generator = nn.Sequential(OrderedDict(g))

        d: list[tuple[str, nn.Module]] = []
        c = width
        d += [("conv0", nn.Conv2d(channels, c, 4, 2, 1)), ("lrelu0", nn.LeakyReLU(0.2))]
        for i in range(1, doublings + 1):
            d += [(f"conv{i}", nn.Conv2d(c, c * 2, 4, 2, 1, bias=False)),
                  (f"bn{i}", nn.BatchNorm2d(c * 2)), (f"lrelu{i}", nn.LeakyReLU(0.2))]
            c *= 2
        d += [("conv_out", nn.Conv2d(c, 1, 4, 1, 0)), ("flatten", nn.Flatten())]
        self.discriminator = nn.Sequential(OrderedDict(d))

    def noise(self, batch: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> torch.Tensor:
        """Latent vectors ``[batch, latent_dim, 1, 1]`` ~ N(0, 1) in the parameters' dtype (drawn
        in float32 on the CPU so a seed gives the same noise on every device)."""
        weight = next(self.parameters())
        z = torch.randn(batch, self.latent_dim, 1, 1, generator=generator)
        return z.to(device=device if device is not None else weight.device, dtype=weight.dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generated images for latent ``z``."""
        return self.generator(z)


def build_torch(latent_dim: int = 32, image_size: int = 16, channels: int = 1,
                width: int = 32) -> GAN:
    return GAN(latent_dim, image_size, channels, width)
