"""Layer norm and group norm with a fused activation: one row kernel for both.

Both normalize rows. A row r is addressed through strides as

    base(r) = (r // G) * s_o + (r % G) * s_g          (G rows share an outer index)
    elem(j) = (j // B) * s_a + (j % B) * s_b          (j in [0, L): an [L / B, B] grid)

and the affine parameters of element j of row r sit at (r % G) * p_g + (j // B) * p_a +
(j % B) * p_b. Layer norm: rows = the collapsed leading dims (stride s_o), L = the collapsed
normalized dims (stride s_b), parameter j (SPLIT=False: no division at all). Group norm over
x [N, C, S] (S = the collapsed spatial dims): rows = N * G, L = C / G * S, the row's channels
walked spatial-fastest for NCHW (B = S) or channel-fastest for channels_last (B = C / G), so that
consecutive j are adjacent in memory either way; parameter = channel.

A program takes ROWS rows of a [ROWS, BLOCK] tile. A row that fits one block is read once:
statistics with a shift (the row's first element K: d = x - K, mean(d), mean((d - mean(d))^2),
exact zeros for constant rows), then normalize, affine, activation, store. Longer rows (ONLINE)
take a first pass merging per-block (mean, M2) with Chan's update and a second, writing pass.
Statistics in fp32 whatever the storage dtype; mean and rstd [rows] fp32 are saved. Row bases
are 64-bit when I64; offsets within a row stay 32-bit (the launchers copy a tensor whose rows
span more to a contiguous one).

Backward recomputes z = xhat * w + b from x, mean and rstd (dz = dy * act'(z), g = dz * w), with
xhat = ((x - mean) - res) * rstd, res = the row's mean of x - mean: what rounding the saved mean
to fp32 lost (a mean of 1e4 and a spread of 1e-2 would otherwise cost xhat 5%); then
dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) per row. A row that fits one block is read
once; longer rows take three passes (res, the two means, dx). Layer norm's grad_weight / grad_bias
(sums over rows of dz * xhat and dz per column) come from the same kernel: each program owns a
contiguous range of rows (a fixed target of programs: results do not depend on the GPU) and
writes one row of fp32 partial sums, which a finishing kernel adds up in a fixed order. Group
norm's come from a per-(sample, channel) reduction over the spatial dims ([BLOCK_S, BLOCK_C]
tiles, channels adjacent for channels_last), finished by the same kernel over the samples.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import triton
import triton.language as tl
from torch._prims_common import suggest_memory_format
from torch.library import wrap_triton

from .. import alloc
from ..layout import contiguous
from ..activations import NAMES, Activation, code_of, param_of
from ..limits import check_grid
from . import _pointwise
from ._pointwise import INT32_LIMIT
from .activations import activation_grad_from_preact, apply_activation
from .aot import AOTConfig
from .batchnorm import BLOCK_CS as SUMS_BLOCK_CS, TILE as SUMS_TILE, _blocks as _sums_blocks
from .softmax import _collapse, row_indices

# every launch: num_stages=1, as aot_configs() lists them (no software pipelining of the loops)

TILE = 4096            # elements of a [ROWS, BLOCK] tile (BLOCK 8192: one row, twice the warps)
MIN_BLOCK = 16
MAX_BLOCK = 8192       # the longest row the forward reads in one block (a 70B model's hidden
                       # size, a UNet's 8 channels x 32 x 32 group)
MAX_BLOCK_BACKWARD = 4096  # the backward's (at 8192, 16 warps cap it at 128 registers: spills)
ONLINE_BLOCK = 2048    # longer rows take the online path in blocks of this size
WARPS = 8              # per TILE elements (16 a thread: at 32 group norm's index math and the
                       # backward's ~8 fp32 values an element spill; the 2048-element online
                       # tile takes 4, at 8 ptxas settles on 80 registers and spills)
TARGET_PROGRAMS = 512  # layer norm backward: programs that write parameter partials
MAX_ROW = INT32_LIMIT - MAX_BLOCK  # longest row the kernels index (element j is 32-bit)
# element offsets within a row are 32-bit (I64 widens the row bases only): a tensor whose rows
# span more is copied to a contiguous one (not INT32_LIMIT: tests lower that one to force I64)
ROW_SPAN_LIMIT = INT32_LIMIT
FINISH_P, FINISH_K = 64, 32  # the finishing sum's [partials, columns] tile


# --- addressing ---------------------------------------------------------------------------------

@triton.jit
def _row_base(r, G, s_o, s_g, SPLIT: tl.constexpr):
    """Storage offsets of the first elements of rows r."""
    if SPLIT:
        base = (r // G) * s_o + (r % G) * s_g
    else:
        base = r * s_o
    return base


@triton.jit
def _offsets(r, j, G, B, s_o, s_g, s_a, s_b, SPLIT: tl.constexpr):
    """[ROWS, BLOCK] storage offsets of elements j of rows r (see the module docstring)."""
    if SPLIT:
        elem = (j // B) * s_a + (j % B) * s_b
    else:
        elem = j * s_b
    return _row_base(r, G, s_o, s_g, SPLIT)[:, None] + elem[None, :]


@triton.jit
def _affine(ptr, r, j, mask, G, B, p_g, p_a, p_b, SPLIT: tl.constexpr, BLOCK: tl.constexpr,
            ROWS: tl.constexpr, DEFAULT: tl.constexpr):
    """The [ROWS, BLOCK] fp32 parameters of elements j of rows r (one [BLOCK] load broadcast
    over the rows for layer norm, a per-element gather of channels for group norm)."""
    if SPLIT:
        p = ((r % G).to(tl.int32) * p_g)[:, None] + ((j // B) * p_a + (j % B) * p_b)[None, :]
        v = tl.load(ptr + p, mask=mask, other=DEFAULT).to(tl.float32)
    else:
        v = tl.load(ptr + j, mask=j < B, other=DEFAULT).to(tl.float32)
        v = tl.broadcast_to(v[None, :], [ROWS, BLOCK])
    return v


@triton.jit
def _cols(start, BLOCK: tl.constexpr, I64: tl.constexpr):
    """start + [0, BLOCK), in int64 when I64."""
    j = tl.arange(0, BLOCK)
    if I64:
        j = j.to(tl.int64)
    return start + j


# --- forward ------------------------------------------------------------------------------------

@triton.jit
def _epilogue(y_ptr, w_ptr, b_ptr, xhat, r, j, mask, G, B, p_g, p_a, p_b, sy_o, sy_g, sy_a,
              sy_b, param, HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
              SPLIT: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """Store y = f(xhat * w + b) for elements j of rows r."""
    z = xhat
    if HAS_W:
        z = z * _affine(w_ptr, r, j, mask, G, B, p_g, p_a, p_b, SPLIT, BLOCK, ROWS, 1.0)
    if HAS_B:
        z = z + _affine(b_ptr, r, j, mask, G, B, p_g, p_a, p_b, SPLIT, BLOCK, ROWS, 0.0)
    y = apply_activation(z, CODE, param)
    tl.store(y_ptr + _offsets(r, j, G, B, sy_o, sy_g, sy_a, sy_b, SPLIT),
             y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _norm_forward_kernel(x_ptr, y_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr,
                         n_rows, L, G, B, p_g, p_a, p_b,
                         sx_o, sx_g, sx_a, sx_b, sy_o, sy_g, sy_a, sy_b, eps, param,
                         HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
                         SPLIT: tl.constexpr, ONLINE: tl.constexpr, ROWS: tl.constexpr,
                         BLOCK: tl.constexpr, I64: tl.constexpr):
    """y = f(((x - K) - mean_d) * rstd * w + b) per row; mean = K + mean_d and rstd [n_rows] fp32.

    x_ptr, y_ptr: rows addressed by (s*_o, s*_g, s*_a, s*_b); w_ptr, b_ptr: the affine
    parameters (optional); L >= 1 elements per row.
    """
    r = row_indices(ROWS, I64)
    ok = r < n_rows
    shift = tl.load(x_ptr + _row_base(r, G, sx_o, sx_g, SPLIT), mask=ok,
                    other=0.0).to(tl.float32)
    if not ONLINE:
        j = tl.arange(0, BLOCK)
        mask = ok[:, None] & (j < L)[None, :]
        x = tl.load(x_ptr + _offsets(r, j, G, B, sx_o, sx_g, sx_a, sx_b, SPLIT), mask=mask,
                    other=0.0).to(tl.float32)
        d = tl.where(mask, x - shift[:, None], 0.0)
        mean_d = tl.sum(d, axis=1) / L
        dev = tl.where(mask, d - mean_d[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(dev * dev, axis=1) / L + eps)
        _epilogue(y_ptr, w_ptr, b_ptr, dev * rstd[:, None], r, j, mask, G, B, p_g, p_a, p_b,
                  sy_o, sy_g, sy_a, sy_b, param, HAS_W, HAS_B, CODE, SPLIT, ROWS, BLOCK)
    else:
        n_acc = tl.zeros([ROWS], tl.float32)
        mean_acc = tl.zeros([ROWS], tl.float32)
        m2_acc = tl.zeros([ROWS], tl.float32)
        for start in range(0, L, BLOCK):
            j = start + tl.arange(0, BLOCK)
            mask = ok[:, None] & (j < L)[None, :]
            x = tl.load(x_ptr + _offsets(r, j, G, B, sx_o, sx_g, sx_a, sx_b, SPLIT), mask=mask,
                        other=0.0).to(tl.float32)
            d = tl.where(mask, x - shift[:, None], 0.0)
            n_b = tl.minimum(L - start, BLOCK).to(tl.float32)
            mean_b = tl.sum(d, axis=1) / n_b
            dev = tl.where(mask, d - mean_b[:, None], 0.0)
            m2_b = tl.sum(dev * dev, axis=1)
            # Chan et al.; delta * (delta * f), not delta^2 * f: f = 0 on the first block, where
            # delta^2 may overflow and inf * 0 would poison a finite row with NaN
            n_new = n_acc + n_b
            delta = mean_b - mean_acc
            mean_acc += delta * (n_b / n_new)
            m2_acc += m2_b + delta * (delta * (n_acc * n_b / n_new))
            n_acc = n_new
        mean_d = mean_acc
        rstd = 1.0 / tl.sqrt(m2_acc / L + eps)
        for start in range(0, L, BLOCK):
            j = start + tl.arange(0, BLOCK)
            mask = ok[:, None] & (j < L)[None, :]
            x = tl.load(x_ptr + _offsets(r, j, G, B, sx_o, sx_g, sx_a, sx_b, SPLIT), mask=mask,
                        other=0.0).to(tl.float32)
            xhat = ((x - shift[:, None]) - mean_d[:, None]) * rstd[:, None]
            _epilogue(y_ptr, w_ptr, b_ptr, xhat, r, j, mask, G, B, p_g, p_a, p_b, sy_o, sy_g,
                      sy_a, sy_b, param, HAS_W, HAS_B, CODE, SPLIT, ROWS, BLOCK)
    tl.store(mean_ptr + r, shift + mean_d, mask=ok)
    tl.store(rstd_ptr + r, rstd, mask=ok)


# --- backward -----------------------------------------------------------------------------------

@triton.jit
def _grad_tile(dy_ptr, x_ptr, w_ptr, b_ptr, r, j, mask, mean, res, rstd, L, G, B, p_g, p_a,
               p_b, sd_o, sd_g, sd_a, sd_b, sx_o, sx_g, sx_a, sx_b, param,
               HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
               SPLIT: tl.constexpr, OWN_RES: tl.constexpr, ROWS: tl.constexpr,
               BLOCK: tl.constexpr):
    """(xhat, dz, g = dz * w, res) of a [ROWS, BLOCK] tile, 0 outside ``mask``; xhat =
    ((x - mean) - res) * rstd with res the row's mean of x - mean, the part of the mean that
    rounding it to fp32 lost (OWN_RES: computed here, the tile holding whole rows)."""
    x = tl.load(x_ptr + _offsets(r, j, G, B, sx_o, sx_g, sx_a, sx_b, SPLIT), mask=mask,
                other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + _offsets(r, j, G, B, sd_o, sd_g, sd_a, sd_b, SPLIT), mask=mask,
                 other=0.0).to(tl.float32)
    d = tl.where(mask, x - mean[:, None], 0.0)
    if OWN_RES:
        res = tl.sum(d, axis=1) / L
    xhat = tl.where(mask, (d - res[:, None]) * rstd[:, None], 0.0)
    if HAS_W:
        w = _affine(w_ptr, r, j, mask, G, B, p_g, p_a, p_b, SPLIT, BLOCK, ROWS, 1.0)
    if CODE != 0:
        z = xhat
        if HAS_W:
            z = z * w
        if HAS_B:
            z = z + _affine(b_ptr, r, j, mask, G, B, p_g, p_a, p_b, SPLIT, BLOCK, ROWS, 0.0)
        dz = tl.where(mask, activation_grad_from_preact(dy, z, CODE, param), 0.0)
    else:
        dz = dy
    if HAS_W:
        g = dz * w
    else:
        g = dz
    return xhat, dz, g, res


@triton.jit
def _norm_backward_kernel(dy_ptr, x_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, res_ptr,
                          part_ptr, n_rows, L, G, B, p_g, p_a, p_b, rows_per_program,
                          sd_o, sd_g, sd_a, sd_b, sx_o, sx_g, sx_a, sx_b,
                          so_o, so_g, so_a, so_b, param,
                          HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
                          SPLIT: tl.constexpr, ONLINE: tl.constexpr, NEED_X: tl.constexpr,
                          COL_SUMS: tl.constexpr, RES_OUT: tl.constexpr, ROWS: tl.constexpr,
                          BLOCK: tl.constexpr, I64: tl.constexpr):
    """dx = rstd (g - mean(g) - xhat mean(g xhat)) (NEED_X) for the rows [p * rows_per_program,
    ...) of program p; COL_SUMS (layer norm): part[0, p, :L] = sum over those rows of dz * xhat
    and part[1, p, :L] = sum of dz (part_ptr: [2, programs, L] fp32); RES_OUT: res[row] = the
    row's mean of x - mean (see _grad_tile), for the group norm parameter sums.

    dy_ptr, x_ptr, dx_ptr: rows addressed by (s*_o, s*_g, s*_a, s*_b); mean_ptr, rstd_ptr,
    res_ptr: [n_rows] fp32.
    """
    p = tl.program_id(0)
    P = tl.num_programs(0)
    if I64:
        p = p.to(tl.int64)
    first = p * rows_per_program
    stop = tl.minimum(first + rows_per_program, n_rows)
    cols = tl.arange(0, BLOCK)
    if COL_SUMS and not ONLINE:
        acc_dzx = tl.zeros([ROWS, BLOCK], tl.float32)
        acc_dz = tl.zeros([ROWS, BLOCK], tl.float32)
    for row0 in range(first, stop, ROWS):
        r = row0 + tl.arange(0, ROWS)
        ok = r < stop
        mean = tl.load(mean_ptr + r, mask=ok, other=0.0)
        rstd = tl.load(rstd_ptr + r, mask=ok, other=0.0)
        res = tl.zeros([ROWS], tl.float32)
        if not ONLINE:
            mask = ok[:, None] & (cols < L)[None, :]
            xhat, dz, g, res = _grad_tile(dy_ptr, x_ptr, w_ptr, b_ptr, r, cols, mask, mean, res,
                                          rstd, L, G, B, p_g, p_a, p_b, sd_o, sd_g, sd_a, sd_b,
                                          sx_o, sx_g, sx_a, sx_b, param, HAS_W, HAS_B, CODE,
                                          SPLIT, True, ROWS, BLOCK)
            if NEED_X:
                c1 = tl.sum(g, axis=1) / L
                c2 = tl.sum(g * xhat, axis=1) / L
                dx = rstd[:, None] * (g - c1[:, None] - xhat * c2[:, None])
                tl.store(dx_ptr + _offsets(r, cols, G, B, so_o, so_g, so_a, so_b, SPLIT),
                         dx.to(dx_ptr.dtype.element_ty), mask=mask)
            if COL_SUMS:
                acc_dzx += dz * xhat
                acc_dz += dz
        else:
            for start in range(0, L, BLOCK):  # the residue of the rounded mean
                j = start + cols
                mask = ok[:, None] & (j < L)[None, :]
                x = tl.load(x_ptr + _offsets(r, j, G, B, sx_o, sx_g, sx_a, sx_b, SPLIT),
                            mask=mask, other=0.0).to(tl.float32)
                res += tl.sum(tl.where(mask, x - mean[:, None], 0.0), axis=1)
            res = res / L
            if NEED_X:
                c1 = tl.zeros([ROWS], tl.float32)
                c2 = tl.zeros([ROWS], tl.float32)
                for start in range(0, L, BLOCK):
                    j = start + cols
                    mask = ok[:, None] & (j < L)[None, :]
                    xhat, dz, g, res = _grad_tile(dy_ptr, x_ptr, w_ptr, b_ptr, r, j, mask, mean,
                                                  res, rstd, L, G, B, p_g, p_a, p_b, sd_o, sd_g,
                                                  sd_a, sd_b, sx_o, sx_g, sx_a, sx_b, param,
                                                  HAS_W, HAS_B, CODE, SPLIT, False, ROWS, BLOCK)
                    c1 += tl.sum(g, axis=1)
                    c2 += tl.sum(g * xhat, axis=1)
                c1 = c1 / L
                c2 = c2 / L
            if NEED_X or COL_SUMS:
                for start in range(0, L, BLOCK):
                    j = start + cols
                    mask = ok[:, None] & (j < L)[None, :]
                    xhat, dz, g, res = _grad_tile(dy_ptr, x_ptr, w_ptr, b_ptr, r, j, mask, mean,
                                                  res, rstd, L, G, B, p_g, p_a, p_b, sd_o, sd_g,
                                                  sd_a, sd_b, sx_o, sx_g, sx_a, sx_b, param,
                                                  HAS_W, HAS_B, CODE, SPLIT, False, ROWS, BLOCK)
                    if NEED_X:
                        dx = rstd[:, None] * (g - c1[:, None] - xhat * c2[:, None])
                        tl.store(dx_ptr + _offsets(r, j, G, B, so_o, so_g, so_a, so_b, SPLIT),
                                 dx.to(dx_ptr.dtype.element_ty), mask=mask)
                    if COL_SUMS:
                        # this program's own row of partials, read back (except on its first
                        # rows) after a barrier: another thread of the program may have stored
                        # an element this one loads
                        tl.debug_barrier()
                        part_mask = (j < L) & ((j * 0 + row0) != first)
                        old_dzx = tl.load(part_ptr + p * L + j, mask=part_mask, other=0.0)
                        old_dz = tl.load(part_ptr + (P + p) * L + j, mask=part_mask, other=0.0)
                        tl.store(part_ptr + p * L + j, old_dzx + tl.sum(dz * xhat, axis=0),
                                 mask=j < L)
                        tl.store(part_ptr + (P + p) * L + j, old_dz + tl.sum(dz, axis=0),
                                 mask=j < L)
        if RES_OUT:
            tl.store(res_ptr + r, res, mask=ok)
    if COL_SUMS and not ONLINE:
        tl.store(part_ptr + p * L + cols, tl.sum(acc_dzx, axis=0), mask=cols < L)
        tl.store(part_ptr + (P + p) * L + cols, tl.sum(acc_dz, axis=0), mask=cols < L)


@triton.jit
def _gn_param_sums_kernel(dy_ptr, x_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, res_ptr, part_ptr,
                          C, S, G, Cg, sd_n, sd_c, sd_s, sx_n, sx_c, sx_s, param,
                          HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
                          BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, I64: tl.constexpr):
    """part[0, n, c] = sum_s dz * xhat and part[1, n, c] = sum_s dz for sample n (program axis
    0) and channels c of block program_id(1), with xhat = ((x - mean) - res) * rstd from the
    (n, c // Cg) statistics.

    dy_ptr, x_ptr: [N, C, S] views (strides sd_*, sx_*); mean_ptr, rstd_ptr, res_ptr: [N, G]
    fp32 (res: the backward row kernel's RES_OUT); part_ptr: [2, N, C] fp32.
    """
    n = tl.program_id(0)
    N = tl.num_programs(0)
    if I64:
        n = n.to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    mean = tl.load(mean_ptr + n * G + c // Cg, mask=c_ok, other=0.0)
    rstd = tl.load(rstd_ptr + n * G + c // Cg, mask=c_ok, other=0.0)
    res = tl.load(res_ptr + n * G + c // Cg, mask=c_ok, other=0.0)
    if CODE != 0:
        if HAS_W:
            w = tl.load(w_ptr + c, mask=c_ok, other=1.0).to(tl.float32)
        else:
            w = tl.full([BLOCK_C], 1.0, tl.float32)
        if HAS_B:
            bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BLOCK_C], tl.float32)
    acc_dzx = tl.zeros([BLOCK_S, BLOCK_C], tl.float32)
    acc_dz = tl.zeros([BLOCK_S, BLOCK_C], tl.float32)
    for start in range(0, S, BLOCK_S):
        s = _cols(start, BLOCK_S, I64)
        mask = (s < S)[:, None] & c_ok[None, :]
        x = tl.load(x_ptr + n * sx_n + s[:, None] * sx_s + c[None, :] * sx_c, mask=mask,
                    other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + n * sd_n + s[:, None] * sd_s + c[None, :] * sd_c, mask=mask,
                     other=0.0).to(tl.float32)
        xhat = tl.where(mask, ((x - mean[None, :]) - res[None, :]) * rstd[None, :], 0.0)
        if CODE != 0:
            z = xhat * w[None, :] + bias[None, :]
            dz = tl.where(mask, activation_grad_from_preact(dy, z, CODE, param), 0.0)
        else:
            dz = dy
        acc_dzx += dz * xhat
        acc_dz += dz
    tl.store(part_ptr + n * C + c, tl.sum(acc_dzx, axis=0), mask=c_ok)
    tl.store(part_ptr + (N + n) * C + c, tl.sum(acc_dz, axis=0), mask=c_ok)


@triton.jit
def _sum_partials_kernel(part_ptr, gw_ptr, gb_ptr, P, K, NEED_W: tl.constexpr,
                         NEED_B: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """gw[k] = sum_p part[0, p, k], gb[k] = sum_p part[1, p, k], over [BLOCK_P, BLOCK_K] tiles
    in a fixed order (deterministic).

    part_ptr: [2, P, K] fp32; gw_ptr, gb_ptr: [K] in the parameters' dtype.
    """
    k = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    ok = k < K
    s_w = tl.zeros([BLOCK_P, BLOCK_K], tl.float32)
    s_b = tl.zeros([BLOCK_P, BLOCK_K], tl.float32)
    K64 = tl.cast(K, tl.int64)  # 2 * P * K may pass int32 where each of P, K does not
    for start in range(0, P, BLOCK_P):
        p = start + tl.arange(0, BLOCK_P)
        mask = (p < P)[:, None] & ok[None, :]
        offs = (p * K64)[:, None] + k[None, :]
        if NEED_W:
            s_w += tl.load(part_ptr + offs, mask=mask, other=0.0)
        if NEED_B:
            s_b += tl.load(part_ptr + P * K64 + offs, mask=mask, other=0.0)
    if NEED_W:
        tl.store(gw_ptr + k, tl.sum(s_w, axis=0).to(gw_ptr.dtype.element_ty), mask=ok)
    if NEED_B:
        tl.store(gb_ptr + k, tl.sum(s_b, axis=0).to(gb_ptr.dtype.element_ty), mask=ok)


# --- launchers ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Rows:
    """How the row kernels see one problem: n_rows rows of L elements, the (G, B, p_g, p_a,
    p_b) geometry, SPLIT, and per tensor its (s_o, s_g, s_a, s_b) strides (``strides``)."""

    n_rows: int
    L: int
    G: int
    B: int
    p_g: int
    p_a: int
    p_b: int
    split: bool

    def geometry(self) -> tuple[int, ...]:
        return (self.n_rows, self.L, self.G, self.B, self.p_g, self.p_a, self.p_b)


def _block_shape(L: int, backward: bool = False) -> tuple[int, int, bool]:
    """(ROWS, BLOCK, ONLINE) for rows of L elements, forward or backward."""
    if L > (MAX_BLOCK_BACKWARD if backward else MAX_BLOCK):
        return 1, ONLINE_BLOCK, True
    block = max(triton.next_power_of_2(L), MIN_BLOCK)
    return max(TILE // block, 1), block, False


def _warps(rows: int, block: int) -> int:
    """WARPS per TILE elements of the [rows, block] tile."""
    return max(WARPS * rows * block // TILE, 1)


def _i64(*tensors: torch.Tensor) -> bool:
    """Whether element indices or offsets in ``tensors``, or in the [2, *, *] fp32 parameter
    partials of a problem of their size (up to twice their elements), may pass int32."""
    span = max(max(2 * t.numel(), sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))
                   + 1) for t in tensors)
    return span + 2 * TILE > INT32_LIMIT


# layer norm: [M, N] rows, (s_o, s_g, s_a, s_b) = (s_m, 0, 0, s_n)

def _ln_strides(t: torch.Tensor, k: int) -> tuple[int, int, int, int] | None:
    """(s_m, 0, 0, s_n) of t seen as [M, N] (leading dims / the last k dims), or None (the
    dims do not collapse, or a row spans more than 32-bit offsets)."""
    shape, strides = list(t.shape), list(t.stride())
    s_m = _collapse(shape[:t.dim() - k], strides[:t.dim() - k])
    s_n = _collapse(shape[t.dim() - k:], strides[t.dim() - k:])
    if s_m is None or s_n is None or \
            (math.prod(shape[t.dim() - k:]) - 1) * abs(s_n) > ROW_SPAN_LIMIT:
        return None
    return s_m, 0, 0, s_n


def _ln_view(t: torch.Tensor, k: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """t (a contiguous copy if _ln_strides refuses it) and its strides."""
    strides = _ln_strides(t, k)
    if strides is None:
        t = t.contiguous()
        strides = _ln_strides(t, k)
    return t, strides


def _check_ln(x, normalized_shape, **params) -> tuple[int, int, int]:
    _pointwise.check_dtypes("layer_norm", input=x, **params)
    k = len(normalized_shape)
    if k == 0 or x.dim() < k or tuple(x.shape[x.dim() - k:]) != tuple(normalized_shape):
        raise ValueError(f"layer_norm: input shape {tuple(x.shape)} does not end with "
                         f"normalized_shape {tuple(normalized_shape)}")
    for name, t in params.items():
        if t is not None and name in ("weight", "bias") and \
                tuple(t.shape) != tuple(normalized_shape):
            raise ValueError(f"layer_norm: {name} has shape {tuple(t.shape)}, expected "
                             f"{tuple(normalized_shape)}")
    n = math.prod(normalized_shape)
    m = math.prod(x.shape[:x.dim() - k])
    if n > MAX_ROW:
        raise ValueError(f"layer_norm (triton): rows of {n} elements are longer than the "
                         "kernels index (2^31); use the 'reference' backend")
    return k, m, n


def _empty_rows(mean: torch.Tensor, rstd: torch.Tensor, eps: float) -> None:
    """Statistics of empty rows: mean 0, the rstd of a zero variance."""
    mean.zero_()
    rstd.fill_(1.0 / math.sqrt(eps))


def _statistics(shape: tuple[int, ...], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Allocated (mean, rstd) fp32 of ``shape`` (one element per row)."""
    return (alloc.empty(shape, dtype=torch.float32, device=device),
            alloc.empty(shape, dtype=torch.float32, device=device))


def _forward(x, y, weight, bias, mean, rstd, rows: _Rows, sx, sy, eps, act, i64) -> None:
    n_rows_per, block, online = _block_shape(rows.L)
    grid = check_grid("norm forward (triton)", (triton.cdiv(rows.n_rows, n_rows_per),),
                      ("row blocks",))
    wrap_triton(_norm_forward_kernel)[grid](
        x, y, weight if weight is not None else mean, bias if bias is not None else mean,
        mean, rstd, *rows.geometry(), *sx, *sy, float(eps), param_of(act),
        HAS_W=weight is not None, HAS_B=bias is not None, CODE=code_of(act), SPLIT=rows.split,
        ONLINE=online, ROWS=n_rows_per, BLOCK=block, I64=i64,
        num_warps=_warps(n_rows_per, block), num_stages=1)


def _programs(n_rows: int, rows_per_tile: int, col_sums: bool) -> tuple[int, int]:
    """(programs, rows per program) of the backward row kernel: one tile of rows each, or (with
    column sums to write) at most TARGET_PROGRAMS programs of whole tiles."""
    tiles = triton.cdiv(n_rows, rows_per_tile)
    if not col_sums:
        return tiles, rows_per_tile
    per = triton.cdiv(tiles, min(tiles, TARGET_PROGRAMS)) * rows_per_tile
    return triton.cdiv(n_rows, per), per


def _backward_rows(grad_y, x, dx, weight, bias, mean, rstd, rows: _Rows, sd, sx, so, act,
                   col_sums: bool, i64: bool, res=None) -> torch.Tensor | None:
    """Launch the backward row kernel (dx into ``dx`` when given, each row's mean residue into
    ``res`` when given); -> the [2, programs, L] partials when ``col_sums``."""
    rows_per_tile, block, online = _block_shape(rows.L, backward=True)
    programs, per = _programs(rows.n_rows, rows_per_tile, col_sums)
    check_grid("norm backward (triton)", (programs,), ("row blocks",))
    part = alloc.empty((2, programs, rows.L), dtype=torch.float32, device=x.device) \
        if col_sums else mean
    wrap_triton(_norm_backward_kernel)[(programs,)](
        grad_y, x, dx if dx is not None else x, weight if weight is not None else mean,
        bias if bias is not None else mean, mean, rstd, res if res is not None else mean, part,
        *rows.geometry(), per, *sd, *sx, *(so if so is not None else sx), param_of(act),
        HAS_W=weight is not None, HAS_B=bias is not None, CODE=code_of(act), SPLIT=rows.split,
        ONLINE=online, NEED_X=dx is not None, COL_SUMS=col_sums, RES_OUT=res is not None,
        ROWS=rows_per_tile, BLOCK=block, I64=i64,
        num_warps=_warps(rows_per_tile, block), num_stages=1)
    return part if col_sums else None


def _finish_sums(part: torch.Tensor, gw, gb) -> None:
    """gw / gb (when given) = the sums over axis 1 of the [2, P, K] partials."""
    _, P, K = part.shape
    wrap_triton(_sum_partials_kernel)[(triton.cdiv(K, FINISH_K),)](
        part, gw if gw is not None else part, gb if gb is not None else part, P, K,
        NEED_W=gw is not None, NEED_B=gb is not None, BLOCK_P=FINISH_P, BLOCK_K=FINISH_K,
        num_warps=4, num_stages=1)


def _grads(weight, bias, needs, like_x):
    """Allocated (grad_x, grad_weight, grad_bias), None where not needed (or no parameter)."""
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    gx = alloc.empty_like(like_x, memory_format=torch.preserve_format) if need_x else None
    gw = alloc.empty_like(weight) if need_w and weight is not None else None
    gb = alloc.empty_like(bias) if need_b and bias is not None else None
    return gx, gw, gb


def _zero(*tensors) -> None:
    for t in tensors:
        if t is not None:
            t.zero_()


def layer_norm_forward(x, normalized_shape, weight, bias, eps: float, act: Activation | None):
    """x [*, *normalized_shape] -> (y contiguous, mean [M] fp32, rstd [M] fp32), M = the
    product of the leading dims; weight / bias shaped normalized_shape (or None)."""
    k, m, n = _check_ln(x, normalized_shape, weight=weight, bias=bias)
    weight, bias = contiguous(weight, bias)  # (their gradients then contiguous too)
    y = alloc.empty(x.shape, dtype=x.dtype, device=x.device)
    mean, rstd = _statistics((m,), x.device)
    if m == 0:
        return y, mean, rstd
    if n == 0:
        _empty_rows(mean, rstd, eps)
        return y, mean, rstd
    x, sx = _ln_view(x, k)
    rows = _Rows(m, n, 1, n, 0, 0, 1, False)
    _forward(x, y, weight, bias, mean, rstd, rows, sx, (n, 0, 0, 1), eps, act, _i64(x, y))
    return y, mean, rstd


def layer_norm_backward(grad_y, x, normalized_shape, weight, bias, mean, rstd,
                        act: Activation | None, needs):
    """-> (grad_x in x's layout where its dims collapse to [M, N], else contiguous;
    grad_weight, grad_bias), None where ``needs`` (x, weight, bias) says so."""
    k, m, n = _check_ln(x, normalized_shape, weight=weight, bias=bias, grad_y=grad_y)
    weight, bias = contiguous(weight, bias)  # (their gradients then contiguous too)
    if grad_y.shape != x.shape:
        raise ValueError(f"layer_norm_backward: grad_y {tuple(grad_y.shape)} and x "
                         f"{tuple(x.shape)} differ in shape")
    gx, gw, gb = _grads(weight, bias, needs, x)
    if m == 0 or n == 0 or not (gx is not None or gw is not None or gb is not None):
        _zero(gw, gb)
        return gx, gw, gb
    x, sx = _ln_view(x, k)
    grad_y, sd = _ln_view(grad_y, k)
    dx = gx
    if gx is not None:
        so = _ln_strides(gx, k)
        if so is None:
            dx = alloc.empty(x.shape, dtype=x.dtype, device=x.device)
            so = _ln_strides(dx, k)
    else:
        so = None
    rows = _Rows(m, n, 1, n, 0, 0, 1, False)
    col_sums = gw is not None or gb is not None
    i64 = _i64(*(t for t in (x, grad_y, dx) if t is not None))
    part = _backward_rows(grad_y, x, dx, weight, bias, mean, rstd, rows, sd, sx, so, act,
                          col_sums, i64)
    if dx is not gx:
        gx.copy_(dx)
    if part is not None:
        _finish_sums(part, gw, gb)
    return gx, gw, gb


# group norm: x [N, C, S]

def _gn_strides3(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(s_n, s_c, s_s) of t [N, C, *] seen as [N, C, S], or None."""
    s_s = _collapse(list(t.shape[2:]), list(t.stride()[2:]))
    if s_s is None:
        return None
    return t.stride(0), t.stride(1), s_s if t.dim() > 2 else 1


def _gn_view(t: torch.Tensor, cg: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """t [N, C, *] and its (s_n, s_c, s_s): a copy in its suggested memory format if the
    spatial dims do not collapse into one stride, a contiguous one if a group of ``cg``
    channels spans more than 32-bit offsets."""
    view = _gn_strides3(t)
    if view is None:
        t = t.contiguous(memory_format=suggest_memory_format(t))
        view = _gn_strides3(t)
    S = math.prod(t.shape[2:])
    if (cg - 1) * abs(view[1]) + (S - 1) * abs(view[2]) > ROW_SPAN_LIMIT:
        t = t.contiguous()
        view = _gn_strides3(t)
    return t, view


def _gn_rows(C: int, S: int, G: int, view: tuple[int, int, int]) -> tuple[_Rows, int]:
    """The row geometry of x [N, C, S] (view: its strides) in G groups, walked channel-fastest
    when channels are closer in memory than spatial positions; -> (rows without n_rows set,
    1 if channel-fastest else 0)."""
    cg = C // G
    _, s_c, s_s = view
    channel_fastest = S == 1 or (cg > 1 and abs(s_c) < abs(s_s))
    if channel_fastest:  # j = s * Cg + c_local
        return _Rows(0, cg * S, G, cg, cg, 0, 1, True), 1
    return _Rows(0, cg * S, G, S, cg, 1, 0, True), 0  # j = c_local * S + s


def _gn_strides(view: tuple[int, int, int], cg: int, channel_fastest: int):
    s_n, s_c, s_s = view
    if channel_fastest:
        return (s_n, cg * s_c, s_s, s_c)
    return (s_n, cg * s_c, s_c, s_s)


def _check_gn(x, num_groups, **params) -> tuple[int, int, int]:
    _pointwise.check_dtypes("group_norm", input=x, **params)
    if x.dim() < 2:
        raise ValueError(f"group_norm: input must be [N, C, *], got shape {tuple(x.shape)}")
    C = x.shape[1]
    if num_groups <= 0 or C % num_groups:
        raise ValueError(f"group_norm: {C} channels do not split into num_groups={num_groups}")
    for name, t in params.items():
        if t is not None and name in ("weight", "bias") and tuple(t.shape) != (C,):
            raise ValueError(f"group_norm: {name} has shape {tuple(t.shape)}, expected ({C},)")
    S = math.prod(x.shape[2:])
    if (C // num_groups) * S > MAX_ROW:
        raise ValueError("group_norm (triton): groups of more than 2^31 elements are not "
                         "supported; use the 'reference' backend")
    return x.shape[0], C, S


def group_norm_forward(x, num_groups: int, weight, bias, eps: float, act: Activation | None):
    """x [N, C, *] -> (y in x's suggested memory format (contiguous where a group spans more
    than 32-bit offsets), mean [N, G] fp32, rstd [N, G] fp32); weight / bias [C] (or None)."""
    N, C, S = _check_gn(x, num_groups, weight=weight, bias=bias)
    weight, bias = contiguous(weight, bias)  # (their gradients then contiguous too)
    G = num_groups
    y = alloc.empty(x.shape, dtype=x.dtype, device=x.device,
                    memory_format=suggest_memory_format(x))
    mean, rstd = _statistics((N, G), x.device)
    if N * C == 0:
        return y, mean, rstd
    if S == 0:
        _empty_rows(mean, rstd, eps)
        return y, mean, rstd
    cg = C // G
    x, vx = _gn_view(x, cg)
    y, vy = _gn_view(y, cg)  # (the op returns it in x's suggested format)
    rows, fastest = _gn_rows(C, S, G, vx)
    rows = dataclasses.replace(rows, n_rows=N * G)
    _forward(x, y, weight, bias, mean, rstd, rows, _gn_strides(vx, cg, fastest),
             _gn_strides(vy, cg, fastest), eps, act, _i64(x, y))
    return y, mean, rstd


def group_norm_backward(grad_y, x, num_groups: int, weight, bias, mean, rstd,
                        act: Activation | None, needs):
    """-> (grad_x in x's layout where its spatial dims collapse, else x's suggested format;
    grad_weight [C], grad_bias [C]), None where ``needs`` says so."""
    N, C, S = _check_gn(x, num_groups, weight=weight, bias=bias, grad_y=grad_y)
    weight, bias = contiguous(weight, bias)  # (their gradients then contiguous too)
    if grad_y.shape != x.shape:
        raise ValueError(f"group_norm_backward: grad_y {tuple(grad_y.shape)} and x "
                         f"{tuple(x.shape)} differ in shape")
    G = num_groups
    gx, gw, gb = _grads(weight, bias, needs, x)
    if N * C * S == 0 or not (gx is not None or gw is not None or gb is not None):
        _zero(gw, gb)
        return gx, gw, gb
    mean, rstd = mean.reshape(N * G), rstd.reshape(N * G)
    cg = C // G
    x, vx = _gn_view(x, cg)
    grad_y, vd = _gn_view(grad_y, cg)
    i64 = _i64(x, grad_y, *(t for t in (gx,) if t is not None))
    need_params = gw is not None or gb is not None
    # the row kernel: dx, and each row's mean residue for the parameter sums
    dx, vo = _gn_view(gx, cg) if gx is not None else (None, None)
    res = alloc.empty((N * G,), dtype=torch.float32, device=x.device) if need_params else None
    rows, fastest = _gn_rows(C, S, G, vx)
    rows = dataclasses.replace(rows, n_rows=N * G)
    _backward_rows(grad_y, x, dx, weight, bias, mean, rstd, rows, _gn_strides(vd, cg, fastest),
                   _gn_strides(vx, cg, fastest),
                   _gn_strides(vo, cg, fastest) if vo is not None else None, act, False, i64,
                   res)
    if dx is not gx:
        gx.copy_(dx)
    if need_params:
        # per-channel reductions over the spatial positions of one sample: batch norm's tiles
        block_s, block_c = _sums_blocks(C, vx[1])
        grid = check_grid("group_norm backward (triton)", (N, triton.cdiv(C, block_c)),
                          ("samples", "channel blocks"))
        part = alloc.empty((2, N, C), dtype=torch.float32, device=x.device)
        wrap_triton(_gn_param_sums_kernel)[grid](
            grad_y, x, weight if weight is not None else mean,
            bias if bias is not None else mean, mean, rstd, res, part, C, S, G, cg, *vd, *vx,
            param_of(act), HAS_W=weight is not None, HAS_B=bias is not None, CODE=code_of(act),
            BLOCK_S=block_s, BLOCK_C=block_c, I64=i64, num_warps=4, num_stages=1)
        _finish_sums(part, gw, gb)
    return gx, gw, gb


# --- ahead-of-time configurations ---------------------------------------------------------------

def _signature(kernel, ptrs: dict[str, str]) -> dict[str, str]:
    sig = {}
    for param in kernel.params:
        if param.name in ptrs:
            sig[param.name] = ptrs[param.name]
        elif param.is_constexpr:
            sig[param.name] = "constexpr"
        elif param.name in ("eps", "param"):
            sig[param.name] = "fp32"
        else:
            sig[param.name] = "i32"
    return sig


def _i64_signature(c: AOTConfig) -> dict[str, str]:
    """The signature of a 64-bit variant as the JIT types it for tensors past 2^31 elements:
    the row count and the rows' outer strides i64 (row lengths, parameter strides and the
    strides within a row stay below 2^31, see ROW_SPAN_LIMIT); every int of the group norm
    parameter sums."""
    wide = ("n_rows", "sx_o", "sx_g", "sy_o", "sy_g", "sd_o", "sd_g", "so_o", "so_g")
    return {k: ("i64" if v == "i32" and (c.kernel is _gn_param_sums_kernel or k in wide)
                else v) for k, v in c.signature.items()}


def aot_configs() -> list[AOTConfig]:
    """Every (ROWS, BLOCK, ONLINE) of ``_block_shape`` for the forward and backward row kernels
    (the backward's single blocks up to MAX_BLOCK_BACKWARD),
    layer norm (SPLIT=False, backward with column sums) and group norm (SPLIT=True, dx only),
    fp32 / fp16 / bf16 inputs (16-bit ones with 16-bit or fp32 parameters) with fp32
    statistics, affine, gelu_tanh (the heaviest activation: the
    codes differ in constexpr arithmetic only) and the identity in fp32; every (BLOCK_S,
    BLOCK_C) of the group norm parameter sums; the finishing sum per parameter dtype; the
    64-bit index variants (I64) of the fp32 gelu_tanh ones. CI's selection (see
    _pointwise.aot_all): fp32 at every block shape, bf16 at the smallest and the largest single
    blocks and online (with fp32 parameters at the largest and online), I64 at the largest
    single blocks and online, no fp16."""
    gelu = NAMES.index("gelu_tanh") + 1
    shapes = []
    block = MIN_BLOCK
    while block <= MAX_BLOCK:
        shapes.append((max(TILE // block, 1), block, False))
        block *= 2
    shapes.append((1, ONLINE_BLOCK, True))
    backward_shapes = [t for t in shapes if t[2] or t[1] <= MAX_BLOCK_BACKWARD]
    configs = []
    # (input dtype, parameter dtype): 16-bit inputs come with 16-bit or float32 parameters
    for dtype, param_dtype in (("fp32", "fp32"), ("fp16", "fp16"), ("bf16", "bf16"),
                               ("fp16", "fp32"), ("bf16", "fp32")):
        data = {n: f"*{dtype}" for n in ("x_ptr", "y_ptr", "dy_ptr", "dx_ptr")}
        params = {n: f"*{param_dtype}" for n in ("w_ptr", "b_ptr", "gw_ptr", "gb_ptr")}
        ptrs = {**data, **params, "mean_ptr": "*fp32", "rstd_ptr": "*fp32", "res_ptr": "*fp32",
                "part_ptr": "*fp32"}
        codes = (gelu, 0) if dtype == "fp32" else (gelu,)
        mixed = " fp32 params" if param_dtype != dtype else ""
        for rows, block, online in shapes:
            tag = f"{rows}x{block}{' online' if online else ''}{mixed}"
            for split, family in ((False, "layer_norm"), (True, "group_norm")):
                for code in codes:
                    act = NAMES[code - 1] if code else "identity"
                    common = dict(HAS_W=True, HAS_B=True, CODE=code, SPLIT=split, ONLINE=online,
                                  ROWS=rows, BLOCK=block, I64=False)
                    configs.append(AOTConfig(
                        _norm_forward_kernel, _signature(_norm_forward_kernel, ptrs), common,
                        num_warps=_warps(rows, block), num_stages=1, dtype=dtype,
                        label=f"{family} fwd {act} {tag}"))
                    if (rows, block, online) not in backward_shapes:
                        continue
                    configs.append(AOTConfig(
                        _norm_backward_kernel, _signature(_norm_backward_kernel, ptrs),
                        dict(common, NEED_X=True, COL_SUMS=not split),
                        num_warps=_warps(rows, block),
                        num_stages=1, dtype=dtype, label=f"{family} bwd {act} {tag}"))
        for block_c in SUMS_BLOCK_CS:
            configs.append(AOTConfig(
                _gn_param_sums_kernel, _signature(_gn_param_sums_kernel, ptrs),
                dict(HAS_W=True, HAS_B=True, CODE=gelu, BLOCK_S=SUMS_TILE // block_c,
                     BLOCK_C=block_c, I64=False), num_warps=4, num_stages=1, dtype=dtype,
                label=f"group_norm param sums gelu_tanh {SUMS_TILE // block_c}x{block_c}"
                      f"{mixed}"))
        if not mixed:  # (it reads fp32 partials only: one per parameter dtype)
            configs.append(AOTConfig(
                _sum_partials_kernel, _signature(_sum_partials_kernel, ptrs),
                dict(NEED_W=True, NEED_B=True, BLOCK_P=FINISH_P, BLOCK_K=FINISH_K),
                num_warps=4, num_stages=1, dtype=dtype, label="norm finish sums"))
    configs += [dataclasses.replace(c, constexprs=dict(c.constexprs, I64=True),
                                    label=f"{c.label} i64", signature=_i64_signature(c))
                for c in configs if c.dtype == "fp32" and c.constexprs.get("CODE") == gelu
                and "I64" in c.constexprs]

    # measured with GPUDNN_AOT_ALL=1 under Triton 3.6 and 3.9 (every other configuration: none)
    for i, c in enumerate(configs):
        k = c.constexprs
        if c.kernel is _norm_backward_kernel and k["SPLIT"] and k["ONLINE"] and k["I64"]:
            reason = ("triton 3.6 spills 3 registers (64-bit row bases) in the online group norm "
                      "backward of tensors past 2^31 elements; 3.9 does not")
        elif c.kernel is _norm_backward_kernel and not k["SPLIT"] and k["I64"] and \
                k["BLOCK"] == 512:
            reason = ("triton 3.9 spills 12 registers in the 8x512 layer norm backward with "
                      "64-bit row bases (tensors past 2^31 elements only); 3.6 does not")
        elif c.kernel is _norm_forward_kernel and c.dtype == "fp16" and k["BLOCK"] == MIN_BLOCK \
                and not k["SPLIT"]:
            reason = ("triton 3.6 spills 32 registers in the fp16 layer norm forward of 16-element "
                      "rows (256 rows a program); 3.9 and bf16 / fp32 do not")
        else:
            continue
        configs[i] = dataclasses.replace(c, spill_reason=reason)

    def keep(c) -> bool:
        block = c.constexprs.get("BLOCK")
        largest = (None, MAX_BLOCK_BACKWARD, MAX_BLOCK, ONLINE_BLOCK)
        if c.constexprs.get("I64"):
            return block in largest
        if c.dtype == "fp32":
            return True
        if "fp32 params" in c.label:  # bf16 input, fp32 parameters: the largest blocks
            return c.dtype == "bf16" and block in largest
        return c.dtype == "bf16" and (block in largest or block == MIN_BLOCK)
    return _pointwise.select(configs, keep)
