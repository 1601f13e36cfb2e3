"""Triton max_pool2d / avg_pool2d / adaptive_avg_pool2d, forward and backward.

One forward and one backward kernel, each for both kinds (constexpr IS_MAX), over tiles of
[pixels, channels] with any NCHW / NHWC strides. Max pooling saves, per output, the tap r*KW + s
of the window's maximum (``_index_dtype``: int32, half of torch's int64 indices), or with
``return_indices`` torch's int64 flat index h * W + w of it (FLAT_INDEX). Backward
gathers instead of scattering (no atomics, deterministic): every input pixel visits the windows
that contain it through the transposed source mapping of ``_spatial.source_coords``, the same
one conv's input gradient uses.
Semantics are torch's: max pads with -inf, takes the first maximum, the last NaN, and the first
in-image tap of an all -inf window; avg divides by the window clipped to input + padding
(count_include_pad), to the input, or by divisor_override.
Adaptive average pooling's windows vary in size (torch's [floor(i * H / Ho), ceil((i + 1) * H /
Ho))), which the fixed-stride kernels above cannot express: ``_adaptive_avg_kernel`` (forward,
and backward as a gather) loads [rows, window taps] tiles instead; an empty window (H or W 0,
a 1 x 1 output) averages to NaN, as torch's mean.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ._spatial import (empty_4d, pixel_channel_tile, pixel_coords, signature, source_coords,
                       strides4, suggests_channels_last)
from . import _pointwise
from .aot import AOTConfig

POINTER_TYPES = {torch.int8: "*i8", torch.int32: "*i32", torch.int64: "*i64"}


@triton.jit
def _avg_divisor(out_h, out_w, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w,
                 COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE):
    """fp32 divisor of the average-pooling windows at output pixels (out_h, out_w) (blocks);
    +inf for a window without input pixels, so that its output / gradient share is 0."""
    h0 = out_h * stride_h - pad_h
    w0 = out_w * stride_w - pad_w
    h1 = tl.minimum(h0 + KH, H + pad_h)
    w1 = tl.minimum(w0 + KW, W + pad_w)
    full = ((h1 - h0) * (w1 - w0)).to(tl.float32)
    inside_h = tl.minimum(h1, H) - tl.maximum(h0, 0)
    inside_w = tl.minimum(w1, W) - tl.maximum(w0, 0)
    inside = (inside_h * inside_w).to(tl.float32)
    div = tl.where(COUNT_INCLUDE_PAD != 0, full, inside)
    # `* 1.0` rather than .to(): an int argument equal to 1 arrives as a constexpr
    div = tl.where(DIVISOR_OVERRIDE != 0, DIVISOR_OVERRIDE * 1.0 + 0.0 * div, div)
    return tl.where((inside_h > 0) & (inside_w > 0), div, float("inf"))


@triton.jit
def _pool_forward_kernel(
        x_ptr, y_ptr, idx_ptr, BATCH, C, H, W, OUT_H, OUT_W, KH, KW,
        x_sn, x_sc, x_sh, x_sw, y_sn, y_sc, y_sh, y_sw,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE,
        IS_MAX: tl.constexpr, FLAT_INDEX: tl.constexpr, BLOCK_P: tl.constexpr,
        BLOCK_C: tl.constexpr):
    """x [BATCH, C, H, W] (strides x_s*), y and idx [BATCH, C, OUT_H, OUT_W] (strides y_s*).
    IS_MAX: y = window max, idx = its tap (_index_dtype), or with FLAT_INDEX torch's int64 index
    h * W + w of it in its plane; else y = window sum / _avg_divisor (idx unused; dilation must
    be 1)."""
    img, op, oq, p_ok, offs_c, c_ok = pixel_channel_tile(BATCH, OUT_H, OUT_W, C, BLOCK_P, BLOCK_C)
    img = img.to(tl.int64)
    chan = (offs_c * x_sc)[None, :]
    if IS_MAX:
        best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), tl.float32)
        best_tap = tl.full((BLOCK_P, BLOCK_C), -1, tl.int32)
    else:
        total = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for tap in range(0, KH * KW):
        r = tap // KW
        s = tap - r * KW
        h, w, ok = source_coords(op, oq, r, s, H, W, stride_h, stride_w, pad_h, pad_w, dil_h,
                                 dil_w, False)
        mask = (ok & p_ok)[:, None] & c_ok[None, :]
        v = tl.load(x_ptr + (img * x_sn + h * x_sh + w * x_sw)[:, None] + chan, mask=mask,
                    other=0.0).to(tl.float32)
        if IS_MAX:
            take = mask & ((v > best) | (v != v) | (best_tap < 0))
            best = tl.where(take, v, best)
            best_tap = tl.where(take, tap, best_tap)
        else:
            total += v
    y_offs = (img * y_sn + op * y_sh + oq * y_sw)[:, None] + (offs_c * y_sc)[None, :]
    out_mask = p_ok[:, None] & c_ok[None, :]
    if IS_MAX:
        tl.store(y_ptr + y_offs, best.to(y_ptr.dtype.element_ty), mask=out_mask)
        if FLAT_INDEX:
            h0 = op[:, None] * stride_h - pad_h
            w0 = oq[:, None] * stride_w - pad_w
            r = best_tap // KW
            h = h0 + r * dil_h
            w = w0 + (best_tap - r * KW) * dil_w
            # a window with no tap in the image (a dilation steps over it): torch's index of
            # its first tap at or past 0, outside the image; the backward never reaches it
            empty = best_tap < 0
            h = tl.where(empty, tl.where(h0 < 0, h0 + (dil_h - 1 - h0) // dil_h * dil_h, h0), h)
            w = tl.where(empty, tl.where(w0 < 0, w0 + (dil_w - 1 - w0) // dil_w * dil_w, w0), w)
            best_tap = h.to(tl.int64) * W + w
        tl.store(idx_ptr + y_offs, best_tap.to(idx_ptr.dtype.element_ty), mask=out_mask)
    else:
        div = _avg_divisor(op, oq, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w,
                           COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE)
        tl.store(y_ptr + y_offs, (total / div[:, None]).to(y_ptr.dtype.element_ty),
                 mask=out_mask)


@triton.jit
def _pool_backward_kernel(
        dy_ptr, idx_ptr, dx_ptr, BATCH, C, H, W, OUT_H, OUT_W, KH, KW,
        dy_sn, dy_sc, dy_sh, dy_sw, idx_sn, idx_sc, idx_sh, idx_sw, dx_sn, dx_sc, dx_sh, dx_sw,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE,
        IS_MAX: tl.constexpr, FLAT_INDEX: tl.constexpr, BLOCK_P: tl.constexpr,
        BLOCK_C: tl.constexpr):
    """dy, idx [BATCH, C, OUT_H, OUT_W] (strides dy_s*, idx_s*; idx read when IS_MAX), dx [BATCH,
    C, H, W] (strides dx_s*). dx[h, w] = sum over the windows holding (h, w) at tap t of dy, where
    idx == t (max; with FLAT_INDEX, where idx == h * W + w) or divided by the window's divisor
    (avg)."""
    img, ip, iq, p_ok, offs_c, c_ok = pixel_channel_tile(BATCH, H, W, C, BLOCK_P, BLOCK_C)
    img = img.to(tl.int64)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for tap in range(0, KH * KW):
        r = tap // KW
        s = tap - r * KW
        oh, ow, ok = source_coords(ip, iq, r, s, OUT_H, OUT_W, stride_h, stride_w, pad_h, pad_w,
                                   dil_h, dil_w, True)
        mask = (ok & p_ok)[:, None] & c_ok[None, :]
        offs = (img * dy_sn + oh * dy_sh + ow * dy_sw)[:, None] + (offs_c * dy_sc)[None, :]
        g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if IS_MAX:
            idx_offs = (img * idx_sn + oh * idx_sh + ow * idx_sw)[:, None] \
                + (offs_c * idx_sc)[None, :]
            picked = tl.load(idx_ptr + idx_offs, mask=mask, other=-1)
            if FLAT_INDEX:
                hit = picked == (ip * W + iq).to(tl.int64)[:, None]
            else:
                hit = picked.to(tl.int32) == tap
            acc += tl.where(hit, g, 0.0)
        else:
            div = _avg_divisor(oh, ow, H, W, KH, KW, stride_h, stride_w, pad_h, pad_w,
                               COUNT_INCLUDE_PAD, DIVISOR_OVERRIDE)
            acc += g / div[:, None]
    dx_offs = (img * dx_sn + ip * dx_sh + iq * dx_sw)[:, None] + (offs_c * dx_sc)[None, :]
    tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


# --- adaptive average pooling: windows of varying size, vectorized over their taps --------------

@triton.jit
def _adaptive_bounds(o, OUT, SIZE):
    """[start, end) of torch's adaptive window o (a block) among OUT windows over SIZE positions:
    [floor(o * SIZE / OUT), ceil((o + 1) * SIZE / OUT)). With OUT and SIZE swapped: the windows
    that hold position o."""
    return (o * SIZE) // OUT, ((o + 1) * SIZE + OUT - 1) // OUT


@triton.jit
def _decode_rows(rows, C, H, W, CHANNELS_LAST: tl.constexpr):
    """(img, c, h, w) of flat indices in memory order of a [BATCH, C, H, W] tensor: NCHW, or
    NHWC (channel fastest) when CHANNELS_LAST."""
    if CHANNELS_LAST:
        chan = rows % C
        img, h, w = pixel_coords(rows // C, H, W)
    else:
        plane, h, w = pixel_coords(rows, H, W)
        chan = plane % C
        img = plane // C
    return img, chan, h, w


@triton.jit
def _adaptive_avg_kernel(
        src_ptr, dst_ptr, BATCH, C, H, W, OUT_H, OUT_W, KH, KW,
        src_sn, src_sc, src_sh, src_sw, dst_sn, dst_sc, dst_sh, dst_sw,
        BACKWARD: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr,
        BLOCK_T: tl.constexpr):
    """Adaptive average pooling of an input [BATCH, C, H, W] to [BATCH, C, OUT_H, OUT_W].

    Forward: src = x, dst = y; one row per output element, y = the sum over its window (at most
    KH x KW taps) / the window's area. Backward (a gather, no atomics): src = dy, dst = dx; one
    row per input element, dx = the sum of dy / area over the (at most KH x KW) windows holding it.
    Rows are dst's elements in its memory order (CHANNELS_LAST: channel fastest); each step
    loads BLOCK_R rows x BLOCK_T taps. Strides in elements; dst's flat index is int32."""
    if BACKWARD:
        ROWS_H, ROWS_W, COLS_H, COLS_W = H, W, OUT_H, OUT_W
    else:
        ROWS_H, ROWS_W, COLS_H, COLS_W = OUT_H, OUT_W, H, W
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < BATCH * C * ROWS_H * ROWS_W
    img, chan, rh, rw = _decode_rows(rows, C, ROWS_H, ROWS_W, CHANNELS_LAST)
    img = img.to(tl.int64)
    # the first source position of each row's taps and the end of its range
    h0, h1 = _adaptive_bounds(rh, ROWS_H, COLS_H)
    w0, w1 = _adaptive_bounds(rw, ROWS_W, COLS_W)
    base = img * src_sn + chan * src_sc
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for first in range(0, KH * KW, BLOCK_T):
        t = first + tl.arange(0, BLOCK_T)
        r = t // KW
        h = h0[:, None] + r[None, :]
        w = w0[:, None] + (t - r * KW)[None, :]
        ok = row_ok[:, None] & (h < h1[:, None]) & (w < w1[:, None])
        v = tl.load(src_ptr + base[:, None] + h * src_sh + w * src_sw, mask=ok,
                    other=0.0).to(tl.float32)
        if BACKWARD:  # each window's own area (h, w index output windows here)
            a0, a1 = _adaptive_bounds(h, OUT_H, H)
            b0, b1 = _adaptive_bounds(w, OUT_W, W)
            v = tl.where(ok, v / ((a1 - a0) * (b1 - b0)).to(tl.float32), 0.0)
        acc += tl.sum(v, axis=1)
    if not BACKWARD:  # an empty window (H or W 0) averages to NaN, as torch's mean
        area = (h1 - h0) * (w1 - w0)
        acc = tl.where(area > 0, acc / tl.maximum(area, 1).to(tl.float32), float("nan"))
    offs = img * dst_sn + chan * dst_sc + rh * dst_sh + rw * dst_sw
    tl.store(dst_ptr + offs, acc.to(dst_ptr.dtype.element_ty), mask=row_ok)


# --- heuristics ---------------------------------------------------------------------------------

def _tile(channels: int, channels_contiguous: bool) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C): wide along channels when they are the contiguous axis (NHWC), wide
    along pixels otherwise (NCHW)."""
    if not channels_contiguous or channels <= 4:
        return 256, 4
    return 32, 32


def _index_dtype(kernel_size) -> torch.dtype:
    """dtype of the saved argmax taps. int32 (half of torch's int64 indices); int8 would do for
    windows of up to 127 taps, but kernels.alloc cannot poison int8 outputs yet."""
    del kernel_size
    return torch.int32


def _output_size(size: int, kernel: int, stride: int, padding: int, dilation: int,
                 ceil_mode: bool) -> int:
    """torch's pooling_output_shape: with ceil_mode the last window starts inside input + pad."""
    out = (size + 2 * padding - dilation * (kernel - 1) - 1
           + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def _grid(num_pixels: int, channels: int, *tensors: torch.Tensor):
    """(grid, BLOCK_P, BLOCK_C) for a launch over num_pixels x channels, or None when empty."""
    for t in tensors:  # pixel indices and offsets inside one image are int32 in the kernels
        if t.shape[0] * t.shape[2] * t.shape[3] >= 2 ** 31 or t[:1].numel() >= 2 ** 31:
            raise ValueError(f"pool (triton): tensor of shape {tuple(t.shape)} is too large for "
                             "the kernels' int32 pixel offsets; split the batch")
    if num_pixels == 0 or channels == 0:
        return None
    block_p, block_c = _tile(channels, all(t.stride(1) == 1 for t in tensors))
    return (triton.cdiv(num_pixels, block_p), triton.cdiv(channels, block_c)), block_p, block_c


def _forward(x, y, idx, kernel_size, stride, padding, dilation, count_include_pad,
             divisor_override, is_max) -> None:
    """is_max: idx holds int32 taps, or torch's int64 flat indices when its dtype is int64."""
    batch, c, h, w = x.shape
    out_h, out_w = y.shape[2:]
    launch = _grid(batch * out_h * out_w, c, x, y)
    if launch is None:
        return
    grid, block_p, block_c = launch
    wrap_triton(_pool_forward_kernel)[grid](
        x, y, idx, batch, c, h, w, out_h, out_w, kernel_size[0], kernel_size[1],
        *strides4(x), *strides4(y), stride[0], stride[1], padding[0], padding[1],
        dilation[0], dilation[1], int(count_include_pad), int(divisor_override or 0),
        IS_MAX=is_max, FLAT_INDEX=is_max and idx.dtype == torch.int64, BLOCK_P=block_p,
        BLOCK_C=block_c, num_warps=4)


def _backward(grad_y, idx, grad_x, kernel_size, stride, padding, dilation, count_include_pad,
              divisor_override, is_max) -> None:
    batch, c, h, w = grad_x.shape
    out_h, out_w = grad_y.shape[2:]
    launch = _grid(batch * h * w, c, grad_y, grad_x)
    if launch is None:
        return
    grid, block_p, block_c = launch
    wrap_triton(_pool_backward_kernel)[grid](
        grad_y, idx, grad_x, batch, c, h, w, out_h, out_w, kernel_size[0], kernel_size[1],
        *strides4(grad_y), *strides4(idx), *strides4(grad_x), stride[0], stride[1],
        padding[0], padding[1], dilation[0], dilation[1], int(count_include_pad),
        int(divisor_override or 0), IS_MAX=is_max,
        FLAT_INDEX=is_max and idx.dtype == torch.int64, BLOCK_P=block_p, BLOCK_C=block_c,
        num_warps=4)


def _out_hw(x_hw, kernel_size, stride, padding, dilation, ceil_mode):
    return tuple(_output_size(x_hw[a], kernel_size[a], stride[a], padding[a], dilation[a],
                              ceil_mode) for a in range(2))


# --- launchers (contract: gpudnn/launchers.py) --------------------------------------------------

def max_pool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode,
                       return_indices=False):
    """(y, saved): saved holds int32 window taps, or torch's int64 flat indices (h * W + w in
    each plane) when ``return_indices``; the backward reads either."""
    batch, c, h, w = x.shape
    out_hw = _out_hw((h, w), kernel_size, stride, padding, dilation, ceil_mode)
    channels_last = suggests_channels_last(x)
    y = empty_4d((batch, c) + out_hw, x.dtype, x.device, channels_last)
    index_dtype = torch.int64 if return_indices else _index_dtype(kernel_size)
    idx = empty_4d((batch, c) + out_hw, index_dtype, x.device, channels_last)
    _forward(x, y, idx, kernel_size, stride, padding, dilation, True, None, True)
    return y, idx


def max_pool2d_backward(grad_y, x_shape, saved, kernel_size, stride, padding, dilation,
                        ceil_mode):
    grad_x = empty_4d(x_shape, grad_y.dtype, grad_y.device,
                      suggests_channels_last(grad_y))
    _backward(grad_y, saved, grad_x, kernel_size, stride, padding, dilation, True, None, True)
    return grad_x


def avg_pool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    batch, c, h, w = x.shape
    out_hw = _out_hw((h, w), kernel_size, stride, padding, (1, 1), ceil_mode)
    y = empty_4d((batch, c) + out_hw, x.dtype, x.device,
                 suggests_channels_last(x))
    _forward(x, y, y, kernel_size, stride, padding, (1, 1), count_include_pad, divisor_override,
             False)
    return y


def avg_pool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode,
                        count_include_pad, divisor_override):
    grad_x = empty_4d(x_shape, grad_y.dtype, grad_y.device,
                      suggests_channels_last(grad_y))
    _backward(grad_y, grad_y, grad_x, kernel_size, stride, padding, (1, 1), count_include_pad,
              divisor_override, False)
    return grad_x


def _max_window(size: int, out: int) -> int:
    """The longest of torch's ``out`` adaptive windows over ``size`` positions (0 if none)."""
    return max((-((-(i + 1) * size) // out) - (i * size) // out for i in range(out)), default=0)


def _adaptive_tile(taps: int, backward: bool) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_T): taps a step from {1, 4, 16, 64, 256} (longer windows loop), 1024
    elements a step forward and 512 backward (every element carries its own window arithmetic,
    backward also its window's area: larger steps spill), at most 512 rows."""
    block_t = next(b for b in (1, 4, 16, 64, 256) if b >= taps or b == 256)
    return min((512 if backward else 1024) // block_t, 512), block_t


def _adaptive(src, dst, out_hw, kh, kw, backward: bool) -> None:
    batch, c, h, w = (dst if backward else src).shape
    rows = dst.numel()
    if rows >= 2 ** 31 or src.numel() >= 2 ** 31 or \
            max((out_hw[0] + 1) * h, (out_hw[1] + 1) * w) >= 2 ** 31:
        raise ValueError(f"adaptive_avg_pool2d (triton): tensors of shape {tuple(src.shape)} "
                         f"and {tuple(dst.shape)} are too large for the kernel's int32 indices; "
                         "split the batch")
    if rows == 0:
        return
    if backward and kh * kw == 0:  # no window holds any position: a zero gradient
        dst.zero_()
        return
    block_r, block_t = _adaptive_tile(kh * kw, backward)
    wrap_triton(_adaptive_avg_kernel)[(triton.cdiv(rows, block_r),)](
        src, dst, batch, c, h, w, out_hw[0], out_hw[1], kh, kw, *strides4(src), *strides4(dst),
        BACKWARD=backward, CHANNELS_LAST=suggests_channels_last(dst), BLOCK_R=block_r,
        BLOCK_T=block_t, num_warps=4)


def adaptive_avg_pool2d_forward(x, output_size):
    """y [N, C, Ho, Wo] in x's memory format: the mean of each adaptive window."""
    batch, c, h, w = x.shape
    out_h, out_w = output_size
    y = empty_4d((batch, c, out_h, out_w), x.dtype, x.device, suggests_channels_last(x))
    _adaptive(x, y, (out_h, out_w), _max_window(h, out_h), _max_window(w, out_w), False)
    return y


def adaptive_avg_pool2d_backward(grad_y, x_shape):
    """grad_x [N, C, H, W] (x_shape) in grad_y's memory format."""
    out_h, out_w = grad_y.shape[2:]
    grad_x = empty_4d(x_shape, grad_y.dtype, grad_y.device, suggests_channels_last(grad_y))
    # the windows holding one position: the adaptive windows of the swapped problem
    _adaptive(grad_y, grad_x, (out_h, out_w), _max_window(out_h, x_shape[2]),
              _max_window(out_w, x_shape[3]), True)
    return grad_x


# --- ahead-of-time configurations ---------------------------------------------------------------

def aot_configs() -> list[AOTConfig]:
    """Every tile the heuristic picks x both kernels x both kinds x fp32/fp16/bf16 (x every
    index dtype for max pooling: the int32 taps and return_indices' int64 flat indices), and the
    adaptive kernel's tiles x forward/backward x NCHW/NHWC x fp32/fp16/bf16. CI's selection
    (``_pointwise.select``) keeps the adaptive kernel's fp32 configurations only (the others
    differ from them by their loads' and stores' conversions)."""
    tiles = sorted({_tile(c, contiguous) for c in (1, 4, 5, 16, 17, 64)
                    for contiguous in (False, True)})
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for kernel, data_ptrs in ((_pool_forward_kernel, ("x_ptr", "y_ptr")),
                                  (_pool_backward_kernel, ("dy_ptr", "dx_ptr"))):
            index_types = sorted({POINTER_TYPES[_index_dtype((k, k))] for k in (1, 11, 12)}
                                 | {POINTER_TYPES[torch.int64]})
            for is_max, index_types in ((True, index_types), (False, (f"*{dtype}",))):
                for index_type in index_types:
                    for block_p, block_c in tiles:
                        cx = dict(IS_MAX=is_max, FLAT_INDEX=is_max and index_type == "*i64",
                                  BLOCK_P=block_p, BLOCK_C=block_c)
                        ptrs = {name: f"*{dtype}" for name in data_ptrs}
                        ptrs["idx_ptr"] = index_type
                        kind = "max" if is_max else "avg"
                        configs.append(AOTConfig(
                            kernel, signature(kernel, ptrs, (), cx), cx, 4, 3,
                            f"{kind} {block_p}x{block_c} idx {index_type[1:]}", dtype))
        for backward in (False, True):
            adaptive_tiles = sorted({_adaptive_tile(taps, backward)
                                     for taps in (1, 3, 4, 9, 16, 49, 64, 81, 1000)})
            for channels_last in (False, True):
                for block_r, block_t in adaptive_tiles:
                    cx = dict(BACKWARD=backward, CHANNELS_LAST=channels_last, BLOCK_R=block_r,
                              BLOCK_T=block_t)
                    ptrs = {"src_ptr": f"*{dtype}", "dst_ptr": f"*{dtype}"}
                    configs.append(AOTConfig(
                        _adaptive_avg_kernel, signature(_adaptive_avg_kernel, ptrs, (), cx), cx,
                        4, 3, f"adaptive {'backward' if backward else 'forward'} "
                        f"{'nhwc' if channels_last else 'nchw'} {block_r}x{block_t}", dtype))
    return _pointwise.select(configs, lambda c: c.kernel is not _adaptive_avg_kernel
                             or c.dtype == "fp32")


__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
           "avg_pool2d_backward", "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
           "aot_configs"]
