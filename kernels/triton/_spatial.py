"""Private helpers shared by the Triton conv and pool families (conv.py, pool.py).

* ``source_coords``: the one place that maps a destination pixel and a kernel tap to the source
  pixel it reads. Forward convolution / pooling read ``src = dst * stride - pad + tap * dil``;
  the "transposed" direction (dgrad, conv_transpose2d forward, pooling backward) reads
  ``src = (dst + pad - tap * dil) / stride`` where that division is exact.
* ``pixel_coords`` / ``pixel_channel_tile``: the one decoding of flat NHW pixel indices and of a
  program's [pixels, channels] tile.
* torch's memory-format rule (``suggest_memory_format``), so outputs come back in the format
  torch would return.
* AOT signature building from a kernel's argument names.
"""
from __future__ import annotations

import inspect

import torch
from torch._prims_common import suggest_memory_format
import triton
import triton.language as tl

from .. import alloc


@triton.jit
def source_coords(dst_h, dst_w, r, s, SRC_H, SRC_W, stride_h, stride_w, pad_h, pad_w, dil_h,
                  dil_w, TRANSPOSED: tl.constexpr):
    """Source pixel (h, w) read by destination pixel (dst_h, dst_w) at kernel tap (r, s), and
    whether it exists. dst_h/dst_w are int32 blocks; the result has their shape."""
    if TRANSPOSED:
        th = dst_h + pad_h - r * dil_h
        tw = dst_w + pad_w - s * dil_w
        # clamp before dividing: integer division of negatives differs between backends
        src_h = tl.maximum(th, 0) // stride_h
        src_w = tl.maximum(tw, 0) // stride_w
        ok = (th >= 0) & (tw >= 0) & (src_h * stride_h == th) & (src_w * stride_w == tw)
    else:
        src_h = dst_h * stride_h - pad_h + r * dil_h
        src_w = dst_w * stride_w - pad_w + s * dil_w
        ok = (src_h >= 0) & (src_w >= 0)
    ok = ok & (src_h < SRC_H) & (src_w < SRC_W)
    return src_h, src_w, ok


@triton.jit
def pixel_coords(pix, H, W):
    """(img, h, w) of flat pixel indices pix = (img * H + h) * W + w; each has pix's shape."""
    w = pix % W
    h = (pix // W) % H
    img = pix // (W * H)
    return img, h, w


@triton.jit
def pixel_channel_tile(BATCH, H, W, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """This program's tile of the [BATCH*H*W pixels, C channels] grid (pixel blocks along
    program_id(0), channel blocks along program_id(1)): its pixels' (img, h, w) and mask, its
    channels and their mask."""
    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < BATCH * H * W
    img, h, w = pixel_coords(offs_p, H, W)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    return img, h, w, p_ok, offs_c, c_ok


def suggests_channels_last(t: torch.Tensor) -> bool:
    """torch's ``suggest_memory_format(t) == channels_last`` (stride order C < W < H < N)."""
    return t.dim() == 4 and suggest_memory_format(t) == torch.channels_last


def empty_4d(shape, dtype: torch.dtype, device, channels_last: bool) -> torch.Tensor:
    """An output [N, C, H, W] from kernels.alloc, NCHW- or NHWC-strided."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return alloc.empty(tuple(shape), dtype=dtype, device=device, memory_format=fmt)


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` strided as NHWC (no copy when it already is), so channel loads are contiguous."""
    return t.contiguous(memory_format=torch.channels_last)


def strides4(t: torch.Tensor) -> tuple[int, int, int, int]:
    return tuple(int(s) for s in t.stride())


def signature(kernel, pointers: dict[str, str], floats: tuple[str, ...],
              constexprs: dict) -> dict[str, str]:
    """AOT signature of ``kernel``: pointers by name, the named fp32 scalars, constexprs, and
    every other argument an i32."""
    fn = getattr(kernel, "fn", kernel)
    sig = {}
    for name in inspect.signature(fn).parameters:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = pointers[name]
        elif name in floats:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig
