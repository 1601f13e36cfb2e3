"""NumPy reference of dropout with the Philox mask of ``tl.rand`` (regenerated in backward).

Element i (row-major logical index) is kept iff philox_uniform(seed, offset + i) >= float32(p);
kept elements are scaled by float32(1 / (1 - p)), dropped ones multiplied by 0 -- as torch's
``x * mask / (1 - p)``: a dropped NaN or inf gives NaN, a dropped negative value -0.0. Here
0 < p < 1; any shape, 0-d included.

Feature dropout (dropout1d / dropout2d) draws once per (sample, channel) of x [N, C, *]: channel
(n, c) is kept iff philox_uniform(seed, offset + n * C + c) >= float32(p) -- the same stream as
element i = n * C + c of an [N, C] dropout.
"""
from __future__ import annotations

import numpy as np

from .philox import philox_uniform


def _keep_mask(shape: tuple, p: float, seed: int, offset: int) -> np.ndarray:
    count = int(np.prod(shape, dtype=np.int64))
    offsets = np.arange(count, dtype=np.int64) + np.int64(offset)
    return (philox_uniform(seed, offsets) >= np.float32(p)).reshape(shape)


def _apply(values: np.ndarray, p: float, seed, offset: int, drawn_dims: int | None = None
           ) -> np.ndarray:
    """``drawn_dims``: the leading dims that get their own draw (all when None); the mask
    broadcasts over the others."""
    drawn = values.shape if drawn_dims is None else values.shape[:drawn_dims]
    keep = _keep_mask(drawn, p, int(seed) % 2 ** 64, offset)
    keep = keep.reshape(drawn + (1,) * (values.ndim - len(drawn)))
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


def feature_dropout_forward(x: np.ndarray, p: float, seed, offset: int) -> np.ndarray:
    """x [N, C, *]: one draw per (n, c), broadcast over the rest."""
    return _apply(x, p, seed, offset, 2)


def feature_dropout_backward(grad_y: np.ndarray, p: float, seed, offset: int) -> np.ndarray:
    return _apply(grad_y, p, seed, offset, 2)
