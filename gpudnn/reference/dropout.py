"""NumPy reference of dropout with the Philox mask of ``tl.rand`` (regenerated in backward).

Element i (row-major logical index) is kept iff philox_uniform(seed, offset + i) >= float32(p);
kept elements are scaled by float32(1 / (1 - p)), dropped ones multiplied by 0 -- as torch's
``x * mask / (1 - p)``: a dropped NaN or inf gives NaN, a dropped negative value -0.0. Here
0 < p < 1; any shape, 0-d included.
"""
from __future__ import annotations

import numpy as np

from .philox import philox_uniform


def _keep_mask(shape: tuple, p: float, seed: int, offset: int) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    offsets = np.arange(count, dtype=np.int64) + np.int64(offset)
    return (philox_uniform(seed, offsets) >= np.float32(p)).reshape(shape)


def _apply(values: np.ndarray, p: float, seed, offset: int) -> np.ndarray:
    keep = _keep_mask(values.shape, p, int(seed) % 2 ** 64, offset)
    scale = values.dtype.type(np.float32(1.0 / (1.0 - p)))
    factor = np.where(keep, scale, values.dtype.type(0))
    # an ndarray of values' memory layout (channels_last stays channels_last), 0-d too (a ufunc
    # on 0-d operands returns a scalar)
    return np.multiply(values, factor, out=np.empty_like(values))


def dropout_forward(x: np.ndarray, p: float, seed, offset: int) -> np.ndarray:
    """seed: an int or a 0-d integer array (what the torch boundary makes of a seed tensor)."""
    return _apply(x, p, seed, offset)


def dropout_backward(grad_y: np.ndarray, p: float, seed, offset: int) -> np.ndarray:
    return _apply(grad_y, p, seed, offset)
