"""Triton conv2d / conv_transpose2d: implicit GEMM (no im2col buffer) and a direct depthwise kernel.

Three loops serve all six directions:

* ``_conv_gemm_kernel``: dst[pixel, co] = sum_{tap, ci} src[source pixel, ci] * w[ci, co, tap].
  Forward direction (``src = dst * stride - pad + tap * dil``): conv2d forward and
  conv_transpose2d's input gradient. Transposed direction (``src = (dst + pad - tap * dil) /
  stride``): conv2d's input gradient (dgrad) and conv_transpose2d's forward. Which weight axis is
  the reduction axis is just a choice of strides.
* ``_conv_wgrad_kernel``: dw[a, b, tap] = sum_pixels A[pixel, a] * B[pixel * stride - pad +
  tap * dil, b]. conv2d: A = grad_y, B = x; conv_transpose2d: A = x, B = grad of its output
  (the roles swap, the loop does not change).
* ``_depthwise_kernel`` / ``_depthwise_wgrad_kernel`` for groups == in_channels: a GEMM whose K is
  the kernel area wastes the tensor cores, so these are direct per-channel loops.

Tensors are used as NHWC internally (channel loads contiguous); outputs come back in the memory
format torch returns. fp32 accumulation always; fp32 inputs use tf32 only when
``torch.backends.cudnn.allow_tf32`` says so. The activation is applied in the forward epilogue
and its derivative where backward loads grad_y (registry: ``kernels/triton/activations.py``).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from ..layout import contiguous
from ..limits import check_grid
from ..activations import Activation, code_of, param_of
from ._spatial import (empty_4d, nhwc, pixel_channel_tile, pixel_coords, signature, source_coords,
                       strides4, suggests_channels_last)
from .activations import activation_grad, apply_activation
from .aot import AOTConfig

# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _store_output(acc, bias_ptr, dst_ptr, z_ptr, act_param, img, dst_h, dst_w, pix_ok, chan,
                  chan_ok, dst_sn, dst_sc, dst_sh, dst_sw, HAS_BIAS, ACT: tl.constexpr,
                  EPILOGUE_ACT: tl.constexpr, STORE_Z: tl.constexpr):
    """The fused epilogue of a [pixels, channels] fp32 tile acc: + bias[chan] (when
    HAS_BIAS != 0), stored to z (when STORE_Z), the activation applied (when EPILOGUE_ACT) and
    stored to dst. Pixels (img, dst_h, dst_w) with mask pix_ok, channels chan with mask chan_ok;
    dst and z share the strides dst_s*."""
    if HAS_BIAS != 0:
        bias = tl.load(bias_ptr + chan, mask=chan_ok, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    d_offs = (img * dst_sn + dst_h * dst_sh + dst_w * dst_sw)[:, None] + (chan * dst_sc)[None, :]
    d_mask = pix_ok[:, None] & chan_ok[None, :]
    if STORE_Z:
        tl.store(z_ptr + d_offs, acc.to(z_ptr.dtype.element_ty), mask=d_mask)
    if EPILOGUE_ACT:
        acc = apply_activation(acc, ACT, act_param)
    tl.store(dst_ptr + d_offs, acc.to(dst_ptr.dtype.element_ty), mask=d_mask)


@triton.jit
def _conv_gemm_kernel(
        src_ptr, src_saved_ptr, w_ptr, bias_ptr, scale_ptr, dst_ptr, z_ptr, act_param,
        scale_stride, BATCH, SRC_H, SRC_W, DST_H, DST_W, SRC_G, DST_G, KH, KW, HAS_BIAS,
        TRANSPOSED, PHASES_H, PHASES_W,
        src_sn, src_sc, src_sh, src_sw, dst_sn, dst_sc, dst_sh, dst_sw,
        w_sk, w_sn, w_sr, w_ss, w_sg,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        ACT: tl.constexpr, EPILOGUE_ACT: tl.constexpr, STORE_Z: tl.constexpr,
        SRC_ACT_GRAD: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        W_QUANT: tl.constexpr):
    """Implicit-GEMM convolution, one group per program_id(2).

    src [BATCH, groups*SRC_G, SRC_H, SRC_W] (strides src_s*; src_saved has the same shape and
    strides and is read only when SRC_ACT_GRAD: then src is grad_y and the operand is
    activation_grad(src, src_saved)); w: element (k, n, r, s) of group g at
    w_ptr + g*w_sg + k*w_sk + n*w_sn + r*w_sr + s*w_ss, k < SRC_G, n < DST_G, r < KH, s < KW;
    bias [groups*DST_G] (read when HAS_BIAS != 0); dst, z [BATCH, groups*DST_G, DST_H, DST_W]
    (strides dst_s*; z = pre-activation, written when STORE_Z). TRANSPOSED != 0 selects the
    transposed source mapping (see source_coords).

    W_QUANT (weight-only quantized inference, kernels/triton/quant.py): 1 = w holds int8 values,
    2 = uint8 float8-e4m3fn bit patterns. Each weight tile is converted to the source dtype in
    registers, and the fp32 accumulator is multiplied by scale[channel * scale_stride] before
    the epilogue (scale_stride 1: per output channel, 0: one scale); 0 = float weights (scale
    unused).

    program_id(0) = pid_m * PHASES_H * PHASES_W + phase: a program covers only destination pixels
    (h, w) with h % PHASES_H, w % PHASES_W equal to its phase. In the transposed direction
    (PHASES = stride) all of them read the same kernel taps, so the other taps are skipped
    whole instead of being multiplied as masked zeros (a 4x4 stride-2 transposed conv reads 4 of
    its 16 taps per pixel). The forward direction has one phase.
    """
    phases = PHASES_H * PHASES_W
    phase = tl.program_id(0) % phases
    pid_m = tl.program_id(0) // phases
    pid_n = tl.program_id(1)
    g = tl.program_id(2)
    phase_h = phase // PHASES_W
    phase_w = phase % PHASES_W
    # destination rows / columns of this phase (0 when the phase lies past the image)
    rows_h = tl.maximum(DST_H - phase_h + PHASES_H - 1, 0) // PHASES_H
    rows_w = tl.maximum(DST_W - phase_w + PHASES_W - 1, 0) // PHASES_W
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < BATCH * rows_h * rows_w
    dst_q = phase_w + (offs_m % tl.maximum(rows_w, 1)) * PHASES_W
    dst_p = phase_h + ((offs_m // tl.maximum(rows_w, 1)) % tl.maximum(rows_h, 1)) * PHASES_H
    img = offs_m // tl.maximum(rows_w * rows_h, 1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < DST_G
    offs_k = tl.arange(0, BLOCK_K)

    src_group = src_ptr + g * SRC_G * src_sc
    saved_group = src_saved_ptr + g * SRC_G * src_sc
    w_group = w_ptr + g * w_sg
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for tap in range(0, KH * KW):
        r = tap // KW
        s = tap - r * KW
        # does this tap land on a source pixel for this phase? (always, with one phase)
        tap_used = ((phase_h + pad_h - r * dil_h) % PHASES_H == 0) & \
            ((phase_w + pad_w - s * dil_w) % PHASES_W == 0)
        if tap_used:
            if TRANSPOSED != 0:
                src_h, src_w, ok = source_coords(dst_p, dst_q, r, s, SRC_H, SRC_W, stride_h,
                                                 stride_w, pad_h, pad_w, dil_h, dil_w, True)
            else:
                src_h, src_w, ok = source_coords(dst_p, dst_q, r, s, SRC_H, SRC_W, stride_h,
                                                 stride_w, pad_h, pad_w, dil_h, dil_w, False)
            ok = ok & m_ok
            row = img * src_sn + src_h * src_sh + src_w * src_sw
            w_tap = w_group + r * w_sr + s * w_ss
            for k0 in range(0, SRC_G, BLOCK_K):
                kk = k0 + offs_k
                k_ok = kk < SRC_G
                a_offs = row[:, None] + (kk * src_sc)[None, :]
                a_mask = ok[:, None] & k_ok[None, :]
                a = tl.load(src_group + a_offs, mask=a_mask, other=0.0)
                if SRC_ACT_GRAD:
                    saved = tl.load(saved_group + a_offs, mask=a_mask, other=0.0)
                    a = activation_grad(a.to(tl.float32), saved.to(tl.float32), ACT,
                                        act_param).to(src_ptr.dtype.element_ty)
                b = tl.load(w_tap + kk[:, None] * w_sk + offs_n[None, :] * w_sn,
                            mask=k_ok[:, None] & n_ok[None, :], other=0)
                if W_QUANT == 2:
                    b = b.to(tl.float8e4nv, bitcast=True)
                if W_QUANT != 0:
                    b = b.to(src_ptr.dtype.element_ty)
                acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if W_QUANT != 0:
        chan_scale = tl.load(scale_ptr + (g * DST_G + offs_n) * scale_stride, mask=n_ok,
                             other=0.0)
        acc = acc * chan_scale[None, :]
    _store_output(acc, bias_ptr, dst_ptr, z_ptr, act_param, img, dst_p, dst_q, m_ok,
                  g * DST_G + offs_n, n_ok, dst_sn, dst_sc, dst_sh, dst_sw, HAS_BIAS, ACT,
                  EPILOGUE_ACT, STORE_Z)


@triton.jit
def _conv_wgrad_kernel(
        a_ptr, b_ptr, saved_ptr, out_ptr, act_param,
        BATCH, A_H, A_W, B_H, B_W, A_G, B_G, KH, KW, GROUPS, PIX_PER_SPLIT,
        a_sn, a_sc, a_sh, a_sw, b_sn, b_sc, b_sh, b_sw,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        ACT: tl.constexpr, ACT_ON_B: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """Weight gradient as a GEMM over pixels, split along the pixels by program_id(2).

    A [BATCH, GROUPS*A_G, A_H, A_W], B [BATCH, GROUPS*B_G, B_H, B_W] (strides a_s*, b_s*);
    saved has the shape and strides of B when ACT_ON_B else of A, and when ACT != 0 the operand
    it shadows is replaced by activation_grad(operand, saved). out [SPLIT, GROUPS*A_G, B_G, KH,
    KW] fp32 contiguous: out[split, g*A_G + a, b, r, s] = sum over this split's pixels (n, p, q)
    of A[n, g*A_G + a, p, q] * B[n, g*B_G + b, p*stride_h - pad_h + r*dil_h, q*stride_w - pad_w
    + s*dil_w].
    """
    pid_mn = tl.program_id(0)
    pid_gt = tl.program_id(1)
    split = tl.program_id(2)
    num_n = tl.cdiv(B_G, BLOCK_N)
    pid_m = pid_mn // num_n
    pid_n = pid_mn % num_n
    g = pid_gt // (KH * KW)
    tap = pid_gt % (KH * KW)
    r = tap // KW
    s = tap % KW
    offs_a = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    a_ok = offs_a < A_G
    offs_b = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    b_ok = offs_b < B_G
    a_chan = (g * A_G + offs_a) * a_sc
    b_chan = (g * B_G + offs_b) * b_sc
    num_pix = BATCH * A_H * A_W
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, PIX_PER_SPLIT, BLOCK_K):
        pix = split * PIX_PER_SPLIT + k0 + tl.arange(0, BLOCK_K)
        pix_ok = pix < num_pix
        img, p, q = pixel_coords(pix, A_H, A_W)
        a_offs = a_chan[:, None] + (img * a_sn + p * a_sh + q * a_sw)[None, :]
        a_mask = a_ok[:, None] & pix_ok[None, :]
        a = tl.load(a_ptr + a_offs, mask=a_mask, other=0.0)
        bh, bw, b_in = source_coords(p, q, r, s, B_H, B_W, stride_h, stride_w, pad_h, pad_w,
                                     dil_h, dil_w, False)
        b_offs = (img * b_sn + bh * b_sh + bw * b_sw)[:, None] + b_chan[None, :]
        b_mask = (b_in & pix_ok)[:, None] & b_ok[None, :]
        b = tl.load(b_ptr + b_offs, mask=b_mask, other=0.0)
        if ACT != 0:
            if ACT_ON_B:
                saved = tl.load(saved_ptr + b_offs, mask=b_mask, other=0.0)
                b = activation_grad(b.to(tl.float32), saved.to(tl.float32), ACT,
                                    act_param).to(b_ptr.dtype.element_ty)
            else:
                saved = tl.load(saved_ptr + a_offs, mask=a_mask, other=0.0)
                a = activation_grad(a.to(tl.float32), saved.to(tl.float32), ACT,
                                    act_param).to(a_ptr.dtype.element_ty)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    taps = KH * KW
    out_offs = split * (GROUPS * A_G * B_G * taps) \
        + ((g * A_G + offs_a) * (B_G * taps))[:, None] + (offs_b * taps)[None, :] + tap
    tl.store(out_ptr + out_offs, acc, mask=a_ok[:, None] & b_ok[None, :])


@triton.jit
def _depthwise_kernel(
        src_ptr, src_saved_ptr, w_ptr, bias_ptr, dst_ptr, z_ptr, act_param,
        BATCH, SRC_H, SRC_W, DST_H, DST_W, DST_C, MULT, KH, KW, HAS_BIAS,
        src_sn, src_sc, src_sh, src_sw, dst_sn, dst_sc, dst_sh, dst_sw,
        w_sc, w_sr, w_ss,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        TRANSPOSED: tl.constexpr, ACT: tl.constexpr, EPILOGUE_ACT: tl.constexpr,
        STORE_Z: tl.constexpr, SRC_ACT_GRAD: tl.constexpr,
        BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Depthwise convolution (groups == in_channels, out_channels = MULT * in_channels), direct.

    w [in_channels*MULT, 1, KH, KW] (strides w_sc, -, w_sr, w_ss). Forward (TRANSPOSED False):
    src = x [BATCH, DST_C/MULT, SRC_H, SRC_W], dst = y [BATCH, DST_C, DST_H, DST_W],
    y[c] = sum_tap x[c // MULT] * w[c]. Input gradient (TRANSPOSED True): src = grad_y
    [BATCH, DST_C*MULT, SRC_H, SRC_W], dst = grad_x [BATCH, DST_C, DST_H, DST_W],
    grad_x[c] = sum_{tap, m < MULT} grad_y[c*MULT + m] * w[c*MULT + m]; src_saved (same shape
    and strides as src) is read when SRC_ACT_GRAD. bias [DST_C]; z like dst (when STORE_Z).
    """
    img, dst_p, dst_q, p_ok, offs_c, c_ok = pixel_channel_tile(BATCH, DST_H, DST_W, DST_C,
                                                              BLOCK_P, BLOCK_C)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for tap in range(0, KH * KW):
        r = tap // KW
        s = tap - r * KW
        src_h, src_w, ok = source_coords(dst_p, dst_q, r, s, SRC_H, SRC_W, stride_h, stride_w,
                                         pad_h, pad_w, dil_h, dil_w, TRANSPOSED)
        row = img * src_sn + src_h * src_sh + src_w * src_sw
        mask = (ok & p_ok)[:, None] & c_ok[None, :]
        if TRANSPOSED:
            for m in range(0, MULT):
                chan = offs_c * MULT + m
                offs = row[:, None] + (chan * src_sc)[None, :]
                v = tl.load(src_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                if SRC_ACT_GRAD:
                    saved = tl.load(src_saved_ptr + offs, mask=mask, other=0.0)
                    v = activation_grad(v, saved.to(tl.float32), ACT, act_param)
                wv = tl.load(w_ptr + chan * w_sc + r * w_sr + s * w_ss, mask=c_ok, other=0.0)
                acc += v * wv.to(tl.float32)[None, :]
        else:
            offs = row[:, None] + ((offs_c // MULT) * src_sc)[None, :]
            v = tl.load(src_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            wv = tl.load(w_ptr + offs_c * w_sc + r * w_sr + s * w_ss, mask=c_ok, other=0.0)
            acc += v * wv.to(tl.float32)[None, :]

    _store_output(acc, bias_ptr, dst_ptr, z_ptr, act_param, img, dst_p, dst_q, p_ok, offs_c,
                  c_ok, dst_sn, dst_sc, dst_sh, dst_sw, HAS_BIAS, ACT, EPILOGUE_ACT, STORE_Z)


@triton.jit
def _load_pixels(src_ptr, saved_ptr, act_param, pix, num_pix, H, W, offs_c, c_ok,
                 s_sn, s_sc, s_sh, s_sw, ACT: tl.constexpr):
    """The fp32 [pixels, channels] tile of src [BATCH, C, H, W] (strides s_s*; saved: same shape
    and strides, read when ACT != 0 to apply activation_grad) at flat pixels pix < num_pix and
    channels offs_c (mask c_ok), 0 outside; with the pixels' (img, h, w) and their mask."""
    pix_ok = pix < num_pix
    img, h, w = pixel_coords(pix, H, W)
    offs = (img * s_sn + h * s_sh + w * s_sw)[:, None] + (offs_c * s_sc)[None, :]
    mask = pix_ok[:, None] & c_ok[None, :]
    v = tl.load(src_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if ACT != 0:
        saved = tl.load(saved_ptr + offs, mask=mask, other=0.0)
        v = activation_grad(v, saved.to(tl.float32), ACT, act_param)
    return v, img, h, w, pix_ok


@triton.jit
def _depthwise_wgrad_kernel(
        dy_ptr, saved_ptr, x_ptr, out_ptr, act_param,
        BATCH, DY_H, DY_W, X_H, X_W, C_OUT, MULT, KH, KW, PIX_PER_SPLIT,
        dy_sn, dy_sc, dy_sh, dy_sw, x_sn, x_sc, x_sh, x_sw,
        stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
        ACT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Depthwise weight gradient, split along the pixels by program_id(2).

    dy [BATCH, C_OUT, DY_H, DY_W] (saved: same shape and strides, read when ACT != 0),
    x [BATCH, C_OUT/MULT, X_H, X_W]; out [SPLIT, C_OUT, KH*KW] fp32 contiguous:
    out[split, c, tap] = sum over this split's pixels of dy[c] * x[c // MULT] at the tap.
    """
    pid_c = tl.program_id(0)
    tap = tl.program_id(1)
    split = tl.program_id(2)
    r = tap // KW
    s = tap % KW
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C_OUT
    num_pix = BATCH * DY_H * DY_W
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, PIX_PER_SPLIT, BLOCK_P):
        pix = split * PIX_PER_SPLIT + k0 + tl.arange(0, BLOCK_P)
        g, img, p, q, pix_ok = _load_pixels(dy_ptr, saved_ptr, act_param, pix, num_pix, DY_H,
                                            DY_W, offs_c, c_ok, dy_sn, dy_sc, dy_sh, dy_sw, ACT)
        xh, xw, x_in = source_coords(p, q, r, s, X_H, X_W, stride_h, stride_w, pad_h, pad_w,
                                     dil_h, dil_w, False)
        x_offs = (img * x_sn + xh * x_sh + xw * x_sw)[:, None] + ((offs_c // MULT) * x_sc)[None, :]
        xv = tl.load(x_ptr + x_offs, mask=(x_in & pix_ok)[:, None] & c_ok[None, :], other=0.0)
        acc += g * xv.to(tl.float32)
    total = tl.sum(acc, axis=0)
    out_offs = split * C_OUT * KH * KW + offs_c * (KH * KW) + tap
    tl.store(out_ptr + out_offs, total, mask=c_ok)


@triton.jit
def _channel_sum_kernel(
        src_ptr, saved_ptr, out_ptr, act_param, BATCH, H, W, C, PIX_PER_SPLIT,
        s_sn, s_sc, s_sh, s_sw,
        ACT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Bias gradient: out[split, c] = sum over this split's pixels of src[n, c, h, w]
    (activation_grad(src, saved) when ACT != 0). src, saved [BATCH, C, H, W] (strides s_s*),
    out [SPLIT, C] fp32 contiguous."""
    pid_c = tl.program_id(0)
    split = tl.program_id(1)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    num_pix = BATCH * H * W
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, PIX_PER_SPLIT, BLOCK_P):
        pix = split * PIX_PER_SPLIT + k0 + tl.arange(0, BLOCK_P)
        v, _, _, _, _ = _load_pixels(src_ptr, saved_ptr, act_param, pix, num_pix, H, W, offs_c,
                                     c_ok, s_sn, s_sc, s_sh, s_sw, ACT)
        acc += v
    tl.store(out_ptr + split * C + offs_c, tl.sum(acc, axis=0), mask=c_ok)


# ---------------------------------------------------------------------------------------------
# heuristics (no autotuning; aot_configs() enumerates every value they return)
# ---------------------------------------------------------------------------------------------

_TARGET_PROGRAMS = 264  # two waves of an H100's 132 SMs: below that, split the reduction


def _gemm_tile(dst_g: int, src_g: int, dtype: torch.dtype,
               precision: str) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the implicit GEMM: M covers output pixels, N the
    output channels of a group, K walks the input channels of a group one kernel tap at a time.
    BLOCK_N stops at 64 and fp32 K-steps at 16: the gathered operand tiles live in registers, and
    larger ones spill on sm_90 (checked by aot_configs / tests/test_aot.py); so does the FMA
    (ieee fp32) dot beyond 64x32."""
    if dtype == torch.float32 and precision == "ieee":
        return 64, 32, 16, 4
    block_n = 32 if dst_g <= 32 else 64
    block_k = 16 if src_g <= 16 or dtype == torch.float32 else 32
    block_m = 64 if block_n == 32 else 128
    return block_m, block_n, block_k, 4 if block_m == 64 else 8


def _wgrad_tile(a_g: int, b_g: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the weight-gradient GEMM (K = pixels)."""
    block_m = 64 if a_g <= 64 else 128
    block_k = 16 if dtype == torch.float32 else 32
    return block_m, 64, block_k, 8 if block_m == 128 else 4


def _depthwise_tile(channels: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of the depthwise kernels: channels are the contiguous axis."""
    return (64, 32) if channels <= 32 else (32, 64)


_REDUCE_BLOCK = (64, 32)  # (BLOCK_P, BLOCK_C) of the bias-gradient reduction
_MIN_PIX_PER_SPLIT = 256


def _split(num_pix: int, tiles: int, block: int) -> tuple[int, int]:
    """(number of splits, pixels per split) for a reduction over num_pix pixels that already has
    ``tiles`` independent programs; pixels per split is a multiple of ``block``."""
    splits = max(1, min(triton.cdiv(_TARGET_PROGRAMS, max(tiles, 1)),
                        triton.cdiv(num_pix, _MIN_PIX_PER_SPLIT)))
    per = triton.cdiv(triton.cdiv(num_pix, splits), block) * block
    return triton.cdiv(num_pix, per), per


def _precision(dtype: torch.dtype) -> str:
    return "tf32" if dtype == torch.float32 and torch.backends.cudnn.allow_tf32 else "ieee"


# ---------------------------------------------------------------------------------------------
# shared launch helpers
# ---------------------------------------------------------------------------------------------


def _act_flags(act: Activation | None) -> tuple[int, float, bool]:
    """(constexpr code, parameter, whether backward's saved tensor is the pre-activation)."""
    return code_of(act), param_of(act), act is not None and not act.from_output


def _gemm(src, src_saved, weight, w_strides, bias, dst, z, groups, kernel_hw, stride, pad, dil,
          transposed: bool, act: Activation | None, epilogue_act: bool,
          scale: torch.Tensor | None = None) -> None:
    """dst (and z) = implicit GEMM of src with ``weight`` seen through
    w_strides = (k, n, r, s, group) strides. src, src_saved NHWC-strided. ``scale``: the
    float32 dequantization scales ([dst channels] or [1]) of an int8 / e4m3-bits (uint8) weight."""
    batch, src_c, src_h, src_w = src.shape
    _, dst_c, dst_h, dst_w = dst.shape
    src_g, dst_g = src_c // groups, dst_c // groups
    if batch * dst_h * dst_w == 0 or dst_g == 0:
        return
    code, param, _ = _act_flags(act)
    precision = _precision(src.dtype)
    block_m, block_n, block_k, warps = _gemm_tile(dst_g, src_g, src.dtype, precision)
    phases = stride if transposed else (1, 1)
    rows_per_phase = batch * triton.cdiv(dst_h, phases[0]) * triton.cdiv(dst_w, phases[1])
    grid = check_grid("conv", (phases[0] * phases[1] * triton.cdiv(rows_per_phase, block_m),
                               triton.cdiv(dst_g, block_n), groups),
                      ("pixel blocks", "output-channel blocks per group", "groups"))
    w_quant = 0 if scale is None else 2 if weight.dtype == torch.uint8 else 1
    wrap_triton(_conv_gemm_kernel)[grid](
        src, src if src_saved is None else src_saved, weight, dst if bias is None else bias,
        dst if scale is None else scale, dst, dst if z is None else z, param,
        0 if scale is None or scale.numel() == 1 else 1,
        batch, src_h, src_w, dst_h, dst_w, src_g, dst_g, kernel_hw[0], kernel_hw[1],
        int(bias is not None), int(transposed), phases[0], phases[1],
        *strides4(src), *strides4(dst), *w_strides,
        stride[0], stride[1], pad[0], pad[1], dil[0], dil[1],
        ACT=code, EPILOGUE_ACT=epilogue_act and code != 0, STORE_Z=z is not None,
        SRC_ACT_GRAD=src_saved is not None and code != 0, PRECISION=precision,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, W_QUANT=w_quant, num_warps=warps,
        num_stages=3)


def _wgrad(a, b, saved, act_on_b: bool, groups, kernel_hw, stride, pad, dil,
           act: Activation | None) -> torch.Tensor:
    """fp32 [groups*A_G, B_G, kh, kw]: sum over A's pixels of A x B gathered at each tap."""
    batch, a_c, a_h, a_w = a.shape
    _, b_c, b_h, b_w = b.shape
    a_g, b_g = a_c // groups, b_c // groups
    kh, kw = kernel_hw
    num_pix = batch * a_h * a_w
    if num_pix == 0 or a_g == 0 or b_g == 0:
        return torch.zeros((a_c, b_g, kh, kw), dtype=torch.float32, device=a.device)
    code, param, _ = _act_flags(act)
    block_m, block_n, block_k, warps = _wgrad_tile(a_g, b_g, a.dtype)
    tiles = triton.cdiv(a_g, block_m) * triton.cdiv(b_g, block_n)
    splits, per_split = _split(num_pix, tiles * groups * kh * kw, block_k)
    out = alloc.empty((splits, a_c, b_g, kh, kw), dtype=torch.float32, device=a.device)
    grid = check_grid("conv weight gradient", (tiles, groups * kh * kw, splits),
                      ("channel tiles", "groups x kernel taps", "pixel splits"))
    wrap_triton(_conv_wgrad_kernel)[grid](
        a, b, a if saved is None else saved, out, param,
        batch, a_h, a_w, b_h, b_w, a_g, b_g, kh, kw, groups, per_split,
        *strides4(a), *strides4(b), stride[0], stride[1], pad[0], pad[1], dil[0], dil[1],
        ACT=code if saved is not None else 0, ACT_ON_B=act_on_b,
        PRECISION=_precision(a.dtype), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
        num_warps=warps, num_stages=3)
    return out.sum(0) if splits > 1 else out[0]


def _bias_grad(grad, saved, act: Activation | None) -> torch.Tensor:
    batch, c, h, w = grad.shape
    num_pix = batch * h * w
    if num_pix == 0:
        return torch.zeros((c,), dtype=grad.dtype, device=grad.device)
    code, param, _ = _act_flags(act)
    block_p, block_c = _REDUCE_BLOCK
    tiles = triton.cdiv(c, block_c)
    splits, per_split = _split(num_pix, tiles, block_p)
    out = alloc.empty((splits, c), dtype=torch.float32, device=grad.device)
    grid = check_grid("conv bias gradient", (tiles, splits), ("channel blocks", "pixel splits"))
    wrap_triton(_channel_sum_kernel)[grid](
        grad, grad if saved is None else saved, out, param, batch, h, w, c, per_split,
        *strides4(grad), ACT=code if saved is not None else 0, BLOCK_P=block_p,
        BLOCK_C=block_c, num_warps=4)
    return out.sum(0).to(grad.dtype)


def _depthwise(src, src_saved, weight, bias, dst, z, mult, kernel_hw, stride, pad, dil,
               transposed: bool, act: Activation | None, epilogue_act: bool) -> None:
    batch, _, src_h, src_w = src.shape
    _, dst_c, dst_h, dst_w = dst.shape
    num_p = batch * dst_h * dst_w
    if num_p == 0 or dst_c == 0:
        return
    code, param, _ = _act_flags(act)
    block_p, block_c = _depthwise_tile(dst_c)
    grid = check_grid("depthwise conv", (triton.cdiv(num_p, block_p), triton.cdiv(dst_c, block_c)),
                      ("pixel blocks", "channel blocks"))
    wrap_triton(_depthwise_kernel)[grid](
        src, src if src_saved is None else src_saved, weight, dst if bias is None else bias,
        dst, dst if z is None else z, param,
        batch, src_h, src_w, dst_h, dst_w, dst_c, mult, kernel_hw[0], kernel_hw[1],
        int(bias is not None), *strides4(src), *strides4(dst),
        weight.stride(0), weight.stride(2), weight.stride(3),
        stride[0], stride[1], pad[0], pad[1], dil[0], dil[1],
        TRANSPOSED=transposed, ACT=code, EPILOGUE_ACT=epilogue_act and code != 0,
        STORE_Z=z is not None, SRC_ACT_GRAD=src_saved is not None and code != 0,
        BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4)


def _depthwise_wgrad(dy, saved, x, mult, kernel_hw, stride, pad, dil,
                     act: Activation | None) -> torch.Tensor:
    batch, c_out, dy_h, dy_w = dy.shape
    _, _, x_h, x_w = x.shape
    kh, kw = kernel_hw
    num_pix = batch * dy_h * dy_w
    if num_pix == 0:
        return torch.zeros((c_out, 1, kh, kw), dtype=torch.float32, device=dy.device)
    code, param, _ = _act_flags(act)
    block_p, block_c = _depthwise_tile(c_out)
    tiles = triton.cdiv(c_out, block_c)
    splits, per_split = _split(num_pix, tiles * kh * kw, block_p)
    out = alloc.empty((splits, c_out, kh * kw), dtype=torch.float32, device=dy.device)
    grid = check_grid("depthwise conv weight gradient", (tiles, kh * kw, splits),
                      ("channel blocks", "kernel taps", "pixel splits"))
    wrap_triton(_depthwise_wgrad_kernel)[grid](
        dy, dy if saved is None else saved, x, out, param,
        batch, dy_h, dy_w, x_h, x_w, c_out, mult, kh, kw, per_split,
        *strides4(dy), *strides4(x), stride[0], stride[1], pad[0], pad[1], dil[0], dil[1],
        ACT=code if saved is not None else 0, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4)
    return (out.sum(0) if splits > 1 else out[0]).view(c_out, 1, kh, kw)


def _is_depthwise(in_channels: int, groups: int) -> bool:
    return groups > 1 and groups == in_channels


def _output_format(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True when torch's convolution returns channels_last for these operands."""
    return suggests_channels_last(x) or suggests_channels_last(weight)


def _weight_grad_like(grad_w32: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    fmt = torch.channels_last if suggests_channels_last(weight) else torch.contiguous_format
    return grad_w32.to(weight.dtype).contiguous(memory_format=fmt)


def _check_int32(*shapes) -> None:
    """The kernels use int32 offsets (64-bit address arithmetic on whole tiles costs the registers
    the MMA operands need): refuse tensors that 32 bits cannot index, never wrap silently."""
    for shape in shapes:
        if math.prod(shape) >= 2 ** 31:
            raise ValueError(f"conv (triton): a tensor of shape {tuple(shape)} has 2^31 or more "
                             "elements, which the int32 offsets of these kernels cannot address; "
                             "split the batch")


# ---------------------------------------------------------------------------------------------
# launchers (contract: gpudnn/launchers.py)
# ---------------------------------------------------------------------------------------------

def conv2d_forward(x, weight, bias, stride, padding, dilation, groups, act):
    _, _, save_z = _act_flags(act)
    y, z = conv2d_forward_scaled(x, weight, None, bias, stride, padding, dilation, groups, act,
                                 save_z)
    return y, (None if act is None else z if save_z else y)


def conv2d_forward_scaled(x, weight, scale, bias, stride, padding, dilation, groups, act,
                          save_z: bool = False):
    """(y, z or None): conv2d_forward's computation, also for a quantized weight (``scale`` not
    None: weight int8 or uint8 e4m3fn bits, scale float32 [Cout] | [1], see _conv_gemm_kernel's
    W_QUANT; every group count runs the implicit GEMM then). z (the pre-activation) only when
    ``save_z``."""
    batch, in_c, h, w = x.shape
    out_c, _, kh, kw = weight.shape
    pt, pb, pl, pr = padding
    bias, scale = contiguous(bias, scale)  # the epilogue reads them at the channel index
    out_h = (h + pt + pb - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + pl + pr - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    _check_int32(x.shape, (batch, out_c, out_h, out_w))
    channels_last = _output_format(x, weight)
    y = empty_4d((batch, out_c, out_h, out_w), x.dtype, x.device, channels_last)
    z = empty_4d(y.shape, x.dtype, x.device, channels_last) if save_z else None
    src = nhwc(x)
    if scale is None and _is_depthwise(in_c, groups):
        _depthwise(src, None, weight, bias, y, z, out_c // in_c, (kh, kw), stride, (pt, pl),
                   dilation, False, act, True)
    else:
        wt = nhwc(weight)  # [Cout, Cin/g, kh, kw] with Cin/g contiguous: K loads coalesce
        w_strides = (wt.stride(1), wt.stride(0), wt.stride(2), wt.stride(3),
                     (out_c // groups) * wt.stride(0))
        _gemm(src, None, wt, w_strides, bias, y, z, groups, (kh, kw), stride, (pt, pl),
              dilation, False, act, True, scale)
    return y, z


def _grad_source(grad_y, saved, act):
    """grad_y and the saved tensor as NHWC operands (both with identical strides)."""
    gy = nhwc(grad_y)
    return gy, (nhwc(saved) if act is not None else None)


def conv2d_backward(grad_y, x, weight, saved, stride, padding, dilation, groups, act, needs):
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    in_c = x.shape[1]
    out_c, _, kh, kw = weight.shape
    pt, _, pl, _ = padding
    _check_int32(x.shape, grad_y.shape)
    gy, sv = _grad_source(grad_y, saved, act)
    grad_x = grad_w = grad_b = None
    if need_x:
        grad_x = empty_4d(x.shape, x.dtype, x.device, _output_format(x, weight))
        if _is_depthwise(in_c, groups):
            _depthwise(gy, sv, weight, None, grad_x, None, out_c // in_c, (kh, kw), stride,
                       (pt, pl), dilation, True, act, False)
        else:
            wt = nhwc(weight)
            # reduction over output channels (k), producing input channels (n)
            w_strides = (wt.stride(0), wt.stride(1), wt.stride(2), wt.stride(3),
                         (out_c // groups) * wt.stride(0))
            _gemm(gy, sv, wt, w_strides, None, grad_x, None, groups, (kh, kw), stride, (pt, pl),
                  dilation, True, act, False)
    if need_w:
        xs = nhwc(x)
        if _is_depthwise(in_c, groups):
            gw = _depthwise_wgrad(gy, sv, xs, out_c // in_c, (kh, kw), stride, (pt, pl),
                                  dilation, act)
        else:
            gw = _wgrad(gy, xs, sv, False, groups, (kh, kw), stride, (pt, pl), dilation, act)
        grad_w = _weight_grad_like(gw, weight)
    if need_b:
        grad_b = _bias_grad(gy, sv, act)
    return grad_x, grad_w, grad_b


def _transpose_out_hw(h, w, weight, stride, padding, output_padding, dilation):
    kh, kw = weight.shape[2:]
    out_h = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    out_w = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    return out_h, out_w


def conv_transpose2d_forward(x, weight, bias, stride, padding, output_padding, groups, dilation,
                             act):
    batch, in_c, h, w = x.shape
    _, out_c_g, kh, kw = weight.shape
    out_c = out_c_g * groups
    bias, = contiguous(bias)  # the epilogue reads it at the channel index
    out_h, out_w = _transpose_out_hw(h, w, weight, stride, padding, output_padding, dilation)
    _check_int32(x.shape, (batch, out_c, out_h, out_w))
    channels_last = _output_format(x, weight)
    y = empty_4d((batch, out_c, out_h, out_w), x.dtype, x.device, channels_last)
    _, _, save_z = _act_flags(act)
    z = empty_4d(y.shape, x.dtype, x.device, channels_last) if save_z else None
    wt = nhwc(weight)  # [Cin, Cout/g, kh, kw], Cout/g contiguous
    # conv2d's dgrad loop: reduce over x's channels (weight axis 0), produce weight axis 1
    w_strides = (wt.stride(0), wt.stride(1), wt.stride(2), wt.stride(3),
                 (in_c // groups) * wt.stride(0))
    _gemm(nhwc(x), None, wt, w_strides, bias, y, z, groups, (kh, kw), stride, padding, dilation,
          True, act, True)
    return y, (None if act is None else z if save_z else y)


def conv_transpose2d_backward(grad_y, x, weight, saved, stride, padding, output_padding, groups,
                              dilation, act, needs):
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    in_c = x.shape[1]
    _, _, kh, kw = weight.shape
    _check_int32(x.shape, grad_y.shape)
    gy, sv = _grad_source(grad_y, saved, act)
    grad_x = grad_w = grad_b = None
    if need_x:
        grad_x = empty_4d(x.shape, x.dtype, x.device, _output_format(x, weight))
        wt = nhwc(weight)
        # conv2d's forward loop: reduce over grad_y's channels (weight axis 1)
        w_strides = (wt.stride(1), wt.stride(0), wt.stride(2), wt.stride(3),
                     (in_c // groups) * wt.stride(0))
        _gemm(gy, sv, wt, w_strides, None, grad_x, None, groups, (kh, kw), stride, padding,
              dilation, False, act, False)
    if need_w:
        # conv2d's wgrad loop with the roles swapped: A = x, B = grad of the output
        gw = _wgrad(nhwc(x), gy, sv, True, groups, (kh, kw), stride, padding, dilation, act)
        grad_w = _weight_grad_like(gw, weight)
    if need_b:
        grad_b = _bias_grad(gy, sv, act)
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------------------------------------
# ahead-of-time configurations
# ---------------------------------------------------------------------------------------------

_PROBES = (1, 16, 17, 32, 33, 64, 65, 512)  # both sides of every threshold of the heuristics
_VARIANTS = (("fp32", "ieee"), ("fp32", "tf32"), ("fp16", "ieee"), ("bf16", "ieee"))
_TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def aot_configs() -> list[AOTConfig]:
    """Every tile the heuristics pick, for fp32 (ieee and tf32), fp16 and bf16, without an
    activation; plus gelu_tanh, the heaviest epilogue / operand transform (the other codes only
    differ in constexpr arithmetic), on every kernel at its largest tile, fp32-tf32 and bf16."""
    heavy = Activation.make("gelu_tanh")
    configs: list[AOTConfig] = []

    def add(kernel, pointers, cx, warps, label, dtype, mma=""):
        configs.append(AOTConfig(kernel, signature(kernel, pointers, ("act_param",), cx), cx,
                                 warps, 3, label, dtype, mma))

    for dtype, prec in _VARIANTS:
        tdtype, ptr = _TORCH_DTYPES[dtype], f"*{dtype}"
        mma = "" if prec == "ieee" and dtype == "fp32" else "HGMMA"
        gemm_tiles = sorted({_gemm_tile(d, k, tdtype, prec) for d in _PROBES for k in _PROBES})
        wgrad_tiles = sorted({_wgrad_tile(a, b, tdtype) for a in _PROBES for b in _PROBES})
        acts = [(0, False)] + ([(heavy.code, True)] if prec == "tf32" or dtype == "bf16" else [])
        gemm_ptrs = {n: ptr for n in ("src_ptr", "src_saved_ptr", "w_ptr", "bias_ptr", "dst_ptr",
                                      "z_ptr")}
        gemm_ptrs["scale_ptr"] = "*fp32"
        for code, _ in acts:
            # with an activation: the forward epilogue (storing z) and the backward operand
            # transform, largest tile only
            modes = [(False, False, False)] if code == 0 else [(True, True, False),
                                                               (False, False, True)]
            for tile in (gemm_tiles if code == 0 else gemm_tiles[-1:]):
                bm, bn, bk, warps = tile
                for epi, store_z, grad in modes:
                    cx = dict(ACT=code, EPILOGUE_ACT=epi, STORE_Z=store_z, SRC_ACT_GRAD=grad,
                              PRECISION=prec, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, W_QUANT=0)
                    add(_conv_gemm_kernel, gemm_ptrs, cx, warps,
                        f"gemm {bm}x{bn}x{bk} {prec} act{code}{' grad' if grad else ''}", dtype,
                        mma)
            for tile in (wgrad_tiles if code == 0 else wgrad_tiles[-1:]):
                bm, bn, bk, warps = tile
                for on_b in ((False,) if code == 0 else (False, True)):
                    cx = dict(ACT=code, ACT_ON_B=on_b, PRECISION=prec, BLOCK_M=bm, BLOCK_N=bn,
                              BLOCK_K=bk)
                    add(_conv_wgrad_kernel, {"a_ptr": ptr, "b_ptr": ptr, "saved_ptr": ptr,
                                             "out_ptr": "*fp32"}, cx, warps,
                        f"wgrad {bm}x{bn}x{bk} {prec} act{code}{' on B' if on_b else ''}",
                        dtype, mma)
        if prec == "tf32":
            continue  # the kernels below have no tl.dot
        dw_tiles = sorted({_depthwise_tile(c) for c in _PROBES})
        for code, _ in acts:
            for bp, bc in (dw_tiles if code == 0 else dw_tiles[-1:]):
                for transposed in (False, True):
                    cx = dict(TRANSPOSED=transposed, ACT=code, EPILOGUE_ACT=code != 0 and not
                              transposed, STORE_Z=code != 0 and not transposed,
                              SRC_ACT_GRAD=code != 0 and transposed, BLOCK_P=bp, BLOCK_C=bc)
                    add(_depthwise_kernel, gemm_ptrs, cx, 4,
                        f"depthwise {'dgrad' if transposed else 'fwd'} {bp}x{bc} act{code}", dtype)
                cx = dict(ACT=code, BLOCK_P=bp, BLOCK_C=bc)
                add(_depthwise_wgrad_kernel, {"dy_ptr": ptr, "saved_ptr": ptr, "x_ptr": ptr,
                                              "out_ptr": "*fp32"}, cx, 4,
                    f"depthwise wgrad {bp}x{bc} act{code}", dtype)
            bp, bc = _REDUCE_BLOCK
            add(_channel_sum_kernel, {"src_ptr": ptr, "saved_ptr": ptr, "out_ptr": "*fp32"},
                dict(ACT=code, BLOCK_P=bp, BLOCK_C=bc), 4, f"bias grad {bp}x{bc} act{code}",
                dtype)
    return configs


__all__ = ["conv2d_forward", "conv2d_backward", "conv_transpose2d_forward",
           "conv_transpose2d_backward", "aot_configs"]
