"""CuPy launchers of dropout and feature dropout (``dropout.cu``): the Philox4x32-10 stream of
``tl.rand`` and ``gpudnn/reference/philox.py``, bit for bit, so masks agree across all three
backends. No mask is stored; backward regenerates it from (seed, offset)."""
from __future__ import annotations

import math

import numpy as np
import torch

from .. import alloc
from ._runtime import blocks_for, f32, i64, launch, require_cuda, suffix, THREADS, u64


def _apply(op: str, x: torch.Tensor, p: float, seed, offset: int,
           feature: bool = False) -> torch.Tensor:
    """seed: an int or a 0-d integer tensor (gpudnn's are drawn on the host: no device sync);
    its 64 bits go to Philox unsigned. ``feature``: one draw per (n, c) of x [N, C, *]."""
    s = suffix(op, "x", x)
    seed = int(seed) % 2 ** 64
    if not 0.0 < float(p) < 1.0:
        raise ValueError(f"{op}: p must be in (0, 1) here (the Function handles 0 and 1), got {p}")
    if feature and x.dim() < 2:
        raise ValueError(f"{op}: x must be [N, C, *], got shape {tuple(x.shape)}")
    inner = max(math.prod(x.shape[2:]), 1) if feature else 1
    device = require_cuda(op, x=x)
    x = x.contiguous()  # element i is the row-major logical index
    y = alloc.empty_like(x)
    # float32(1 / (1 - p)) rounded to x's dtype, as the reference scales
    scale = torch.tensor(float(np.float32(1.0 / (1.0 - float(p)))), dtype=x.dtype).item()
    if x.numel():
        launch("dropout", f"dropout_{s}", device, (blocks_for(x.numel()),), (THREADS,),
               (x, y, i64(x.numel()), u64(seed), i64(offset), i64(inner), f32(p), f32(scale)))
    return y


def dropout_forward(x: torch.Tensor, p: float, seed, offset: int) -> torch.Tensor:
    return _apply("dropout_forward", x, p, seed, offset)


def dropout_backward(grad_y: torch.Tensor, p: float, seed, offset: int) -> torch.Tensor:
    return _apply("dropout_backward", grad_y, p, seed, offset)


def feature_dropout_forward(x: torch.Tensor, p: float, seed, offset: int) -> torch.Tensor:
    return _apply("feature_dropout_forward", x, p, seed, offset, feature=True)


def feature_dropout_backward(grad_y: torch.Tensor, p: float, seed, offset: int) -> torch.Tensor:
    return _apply("feature_dropout_backward", grad_y, p, seed, offset, feature=True)
