"""NumPy reference of dropout with the Philox mask of ``tl.rand`` (regenerated in backward).

Element i (row-major logical index) is kept iff philox_uniform(seed, offset + i) >= float32(p);
kept elements are scaled by float32(1 / (1 - p)). Here 0 < p < 1.
"""
from __future__ import annotations

import numpy as np

from .philox import philox_uniform


def _keep_mask(shape: tuple, p: float, seed: int, offset: int) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    offsets = np.arange(count, dtype=np.int64) + np.int64(offset)
    return (philox_uniform(seed, offsets) >= np.float32(p)).reshape(shape)


def _apply(values: np.ndarray, p: float, seed: int, offset: int) -> np.ndarray:
    keep = _keep_mask(values.shape, p, seed, offset)
    scale = values.dtype.type(np.float32(1.0 / (1.0 - p)))
    out = values * scale  # keeps values' memory layout (channels_last stays channels_last)
    out[~keep] = 0
    return out


def dropout_forward(x: np.ndarray, p: float, seed: int, offset: int) -> np.ndarray:
    return _apply(x, p, seed, offset)


def dropout_backward(grad_y: np.ndarray, p: float, seed: int, offset: int) -> np.ndarray:
    return _apply(grad_y, p, seed, offset)
