"""Dropout with a Philox mask that is never stored: element i (row-major logical index) is kept iff
tl.rand(seed, offset + i // inner) >= float32(p), and kept elements are scaled by
float32(1 / (1 - p)). ``inner`` is 1 for dropout (one draw per element) and the number of
elements of one channel for feature dropout (dropout1d / dropout2d: one draw per (sample,
channel) of an [N, C, *] tensor).
Backward regenerates the same mask from (seed, offset). Bit-equal to the NumPy reference
(gpudnn/reference/philox.py). Indices and Philox counters are 64-bit when offset + numel passes
2**31 (the counter's high word then feeds Philox, exactly as the reference splits it).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from . import _pointwise
from ._pointwise import INT32_LIMIT
from .aot import AOTConfig

BLOCK = 1024
NUM_WARPS = 4


@triton.jit
def _dropout_kernel(x_ptr, y_ptr, numel, s1, s2, s3, s4, s5,
                    x0, x1, x2, x3, x4, x5, y0, y1, y2, y3, y4, y5,
                    p, scale, seed_ptr, offset, inner,
                    FLAT: tl.constexpr, I64: tl.constexpr, BLOCK: tl.constexpr):
    """y = x * scale where tl.rand(seed, offset + i // inner) >= p, else x * 0 (i: row-major
    logical index; inner == 1, a constexpr then, for elementwise dropout): a multiply as torch's
    x * mask / (1 - p), so a dropped NaN / inf gives NaN.

    x_ptr, y_ptr: one logical shape of numel elements, padded to 6 dims of sizes (., s1..s5) with
    element strides x*, y*; FLAT: both contiguous (storage offset == logical index).
    seed_ptr: [] int64, the Philox seed (read on the device: a compiled graph draws it as a
    tensor, and the launch never waits for the host).
    """
    seed = tl.load(seed_ptr)
    i = _pointwise.block_indices(BLOCK, I64)
    mask = i < numel
    off_x = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, x0, x1, x2, x3, x4, x5)
    off_y = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, y0, y1, y2, y3, y4, y5)
    if I64:
        counter = offset.to(tl.int64) + i // inner
    else:
        counter = offset + i // inner
    keep = tl.rand(seed, counter) >= p
    x = tl.load(x_ptr + off_x, mask=mask, other=0.0).to(tl.float32)
    y = x * tl.where(keep, scale, 0.0)
    tl.store(y_ptr + off_y, y.to(y_ptr.dtype.element_ty), mask=mask)


def _check_p(p: float) -> None:
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout launchers take 0 < p < 1 (the Function handles 0 and 1), "
                         f"got {p}")


def _seed_tensor(seed: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """The seed as the kernel reads it: [] int64 on the device (a seed of 2^63 or more keeps its
    64 bits: Philox takes them unsigned)."""
    if not isinstance(seed, torch.Tensor):
        seed = int(seed) % 2 ** 64
        seed = torch.tensor(seed - 2 ** 64 if seed >= 2 ** 63 else seed, dtype=torch.int64)
    return seed.to(device=device, dtype=torch.int64).reshape(())


def _launch(x: torch.Tensor, p: float, seed: int | torch.Tensor, offset: int,
            inner: int = 1) -> torch.Tensor:
    _check_p(p)
    _pointwise.check_dtypes("dropout", input=x)
    y = alloc.empty_like(x, memory_format=torch.preserve_format)
    n = x.numel()
    if n == 0:
        return y
    plan = _pointwise.plan([x, y], logical_order=True)
    i64 = plan.i64 or int(offset) + n + BLOCK > INT32_LIMIT
    p32 = float(np.float32(p))
    scale = float(np.float32(1.0 / (1.0 - p)))
    wrap_triton(_dropout_kernel)[(triton.cdiv(n, BLOCK),)](
        x, y, n, *plan.sizes[1:], *plan.strides[0], *plan.strides[1], p32, scale,
        _seed_tensor(seed, x.device), int(offset), int(inner), FLAT=plan.flat, I64=i64,
        BLOCK=BLOCK, num_warps=NUM_WARPS)
    return y


def dropout_forward(x: torch.Tensor, p: float, seed: int | torch.Tensor, offset: int) -> torch.Tensor:
    """x with elements dropped (probability p), the rest scaled by 1/(1-p); y takes x's layout."""
    return _launch(x, p, seed, offset)


def dropout_backward(grad_y: torch.Tensor, p: float, seed: int | torch.Tensor,
                     offset: int) -> torch.Tensor:
    """grad_x = grad_y masked and scaled by the mask that (seed, offset) regenerates."""
    return _launch(grad_y, p, seed, offset)


def _inner(x: torch.Tensor) -> int:
    """Elements of one (sample, channel) of x [N, C, *] (at least 1)."""
    if x.dim() < 2:
        raise ValueError(f"feature dropout launchers take x [N, C, *], got shape "
                         f"{tuple(x.shape)}")
    return max(math.prod(x.shape[2:]), 1)


def feature_dropout_forward(x: torch.Tensor, p: float, seed: int | torch.Tensor,
                            offset: int) -> torch.Tensor:
    """x [N, C, *] with whole channels dropped: channel (n, c) is kept iff
    tl.rand(seed, offset + n * C + c) >= p, and scaled by 1/(1-p)."""
    return _launch(x, p, seed, offset, _inner(x))


def feature_dropout_backward(grad_y: torch.Tensor, p: float, seed: int | torch.Tensor,
                             offset: int) -> torch.Tensor:
    return _launch(grad_y, p, seed, offset, _inner(grad_y))


def aot_configs() -> list[AOTConfig]:
    """Elementwise (inner == 1, a constexpr) / feature dropout, flat / strided, 32- / 64-bit
    counters, fp32 / fp16 / bf16; CI's selection (see _pointwise.aot_all) skips fp16 and the
    64-bit counters of the 16-bit dtypes."""
    configs = []
    names = list(_dropout_kernel.arg_names)
    for dtype in ("fp32", "fp16", "bf16"):
        for feature in (False, True):
            for flat in (True, False):
                for i64 in (False, True):
                    sig = {n: "i32" for n in names}
                    sig.update(x_ptr=f"*{dtype}", y_ptr=f"*{dtype}", p="fp32", scale="fp32",
                               seed_ptr="*i64",
                               FLAT="constexpr", I64="constexpr", BLOCK="constexpr")
                    constexprs = dict(FLAT=flat, I64=i64, BLOCK=BLOCK)
                    if not feature:
                        sig["inner"] = "constexpr"
                        constexprs["inner"] = 1
                    if i64:
                        sig.update(numel="i64", offset="i64")
                    label = f"{'flat' if flat else 'strided'}{' i64' if i64 else ''}"
                    # measured for sm_90: the feature variant's 64-bit i // inner on top of the
                    # 6-dim 64-bit decode spills (fp32: 74 spill instructions with triton 3.9,
                    # 210 with 3.6)
                    spills = _pointwise.STRIDED_I64_SPILLS if feature and i64 and not flat \
                        else ""
                    configs.append(AOTConfig(
                        _dropout_kernel, sig, constexprs, num_warps=NUM_WARPS, num_stages=1,
                        dtype=dtype, label=f"feature {label}" if feature else label,
                        spill_reason=spills))
    return _pointwise.select(configs, lambda c: c.dtype == "fp32" or (
        c.dtype == "bf16" and not c.constexprs["I64"]))
