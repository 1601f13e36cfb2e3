"""Batch norm (1d and 2d; NCHW, channels_last or any strides) with a fused activation.

x is viewed through its strides as [N, C, S] (S = the collapsed spatial dims); each channel
reduces over its E = N * S elements, split into P chunks so that the reduction spreads over many
programs, each program covering BLOCK_C channels (contiguous in memory for channels_last).

Forward, training: (1) per-chunk statistics of d = x - K (K = the channel's first element:
exact, small differences) merged block by block with Chan's parallel Welford update, (2) a tiny
kernel merging the P chunks, writing mean / invstd and updating the running statistics in place
(unbiased variance), (3) y = f((x - mean) * invstd * w + b), with x - mean taken as
(x - K) - mean(d) so that a large mean does not cost the small deviations their precision.
Eval: (2) reads the running statistics, then (3).
Backward: (1) one reduction kernel for sum(dz), sum(dz * (x - mean)), sum(x - mean) per chunk,
recomputing z from x when the activation needs it, (2) a tiny finishing kernel (grad_weight,
grad_bias), (3) one kernel for dx.
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from ..layout import contiguous
from ..activations import NAMES, Activation, code_of, param_of
from ..limits import check_grid
from . import _pointwise
from ._pointwise import INT32_LIMIT
from .activations import activation_grad_from_preact, apply_activation
from .aot import AOTConfig

TILE = 2048           # elements per [BLOCK_E, BLOCK_C] tile
TARGET_PROGRAMS = 512  # reduction programs to aim for (fixed: results do not depend on the GPU)
NUM_WARPS = 4
FINISH_BLOCK_C = 128


@triton.jit
def _axis0_start(size, I64: tl.constexpr):
    """program_id(0) * size, multiplied in 64 bits when I64: past 2^31 elements a 32-bit product
    wraps to a negative start that the ``e < E`` masks let through."""
    pid = tl.program_id(0)
    if I64:
        pid = pid.to(tl.int64)
    return pid * size


@triton.jit
def _offsets(e_start, c, S, s_n, s_c, s_s, BLOCK_E: tl.constexpr, I64: tl.constexpr):
    """Element indices e = e_start + [0, BLOCK_E) (e = n * S + s) and the offsets
    [BLOCK_E, BLOCK_C] of elements (e, c) in an [N, C, S] view with strides (s_n, s_c, s_s)."""
    e = tl.arange(0, BLOCK_E)
    if I64:  # widen before adding: e_start may already be past int32
        e = e.to(tl.int64)
        c = c.to(tl.int64)
    e = e_start + e
    offs = ((e // S) * s_n + (e % S) * s_s)[:, None] + (c * s_c)[None, :]
    return e, offs


@triton.jit
def _bn_stats_kernel(x_ptr, mean_part_ptr, m2_part_ptr, C, E, S, s_n, s_c, s_s, chunk,
                     BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr, I64: tl.constexpr):
    """Per chunk p (program axis 0) and channel: mean and M2 of d = x - x[0, c, 0] over the
    chunk's elements e in [p * chunk, min((p + 1) * chunk, E)).

    x_ptr: [N, C, S] view (strides s_n, s_c, s_s), E = N * S; mean_part_ptr, m2_part_ptr: [P, C]
    fp32 contiguous.
    """
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    shift = tl.load(x_ptr + c * s_c, mask=c_ok, other=0.0).to(tl.float32)
    n_acc = tl.zeros([BLOCK_C], tl.float32)
    mean_acc = tl.zeros([BLOCK_C], tl.float32)
    m2_acc = tl.zeros([BLOCK_C], tl.float32)
    start = _axis0_start(chunk, I64)
    stop = tl.minimum(start + chunk, E)
    for block_start in range(start, stop, BLOCK_E):
        e, offs = _offsets(block_start, c, S, s_n, s_c, s_s, BLOCK_E, I64)
        mask = (e < stop)[:, None] & c_ok[None, :]
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - shift[None, :], 0.0)
        n_b = tl.minimum(stop - block_start, BLOCK_E).to(tl.float32)
        mean_b = tl.sum(d, axis=0) / n_b
        dev = tl.where(mask, d - mean_b[None, :], 0.0)
        m2_b = tl.sum(dev * dev, axis=0)
        # Chan et al.: merge (n_acc, mean_acc, m2_acc) with the block's (n_b, mean_b, m2_b)
        n_new = n_acc + n_b
        delta = mean_b - mean_acc
        mean_acc += delta * (n_b / n_new)
        m2_acc += m2_b + delta * delta * (n_acc * n_b / n_new)
        n_acc = n_new
    tl.store(mean_part_ptr + p * C + c, mean_acc, mask=c_ok)
    tl.store(m2_part_ptr + p * C + c, m2_acc, mask=c_ok)


@triton.jit
def _bn_finish_stats_kernel(x_ptr, mean_part_ptr, m2_part_ptr, rm_ptr, rv_ptr, mean_ptr,
                            invstd_ptr, shift_ptr, mean_d_ptr, C, E, s_c, P, chunk,
                            momentum, eps, TRAINING: tl.constexpr, UPDATE: tl.constexpr,
                            BLOCK_C: tl.constexpr):
    """Per channel: merge the P chunk statistics (training) or read the running ones (eval).

    x_ptr: the [N, C, S] input (only x[0, c, 0], stride s_c, is read: the shift K);
    mean_part_ptr, m2_part_ptr: [P, C] fp32; rm_ptr, rv_ptr: [C] running mean / var, updated in
    place when UPDATE (unbiased variance); mean_ptr, invstd_ptr, shift_ptr, mean_d_ptr: [C] fp32
    outputs, mean = shift + mean_d (eval: shift = running mean, mean_d = 0).
    """
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    if TRAINING:
        shift = tl.load(x_ptr + c * s_c, mask=c_ok, other=0.0).to(tl.float32)
        n_acc = tl.zeros([BLOCK_C], tl.float32)
        mean_acc = tl.zeros([BLOCK_C], tl.float32)
        m2_acc = tl.zeros([BLOCK_C], tl.float32)
        left = E.to(tl.int64)  # elements of chunks p.. (p * chunk itself can pass int32)
        for p in range(0, P):
            n_b = tl.minimum(chunk, left).to(tl.float32)
            left -= chunk
            mean_b = tl.load(mean_part_ptr + p * C + c, mask=c_ok, other=0.0)
            m2_b = tl.load(m2_part_ptr + p * C + c, mask=c_ok, other=0.0)
            n_new = n_acc + n_b
            delta = mean_b - mean_acc
            mean_acc += delta * (n_b / n_new)
            m2_acc += m2_b + delta * delta * (n_acc * n_b / n_new)
            n_acc = n_new
        var = m2_acc / n_acc
        mean = shift + mean_acc
        mean_d = mean_acc
        if UPDATE:
            rm = tl.load(rm_ptr + c, mask=c_ok, other=0.0)
            rv = tl.load(rv_ptr + c, mask=c_ok, other=0.0)
            unbiased = var * (n_acc / tl.maximum(n_acc - 1.0, 1.0))  # as the reference
            new_rm = (1.0 - momentum) * rm.to(tl.float32) + momentum * mean
            new_rv = (1.0 - momentum) * rv.to(tl.float32) + momentum * unbiased
            tl.store(rm_ptr + c, new_rm.to(rm.dtype), mask=c_ok)
            tl.store(rv_ptr + c, new_rv.to(rv.dtype), mask=c_ok)
    else:
        mean = tl.load(rm_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        var = tl.load(rv_ptr + c, mask=c_ok, other=1.0).to(tl.float32)
        shift = mean
        mean_d = tl.zeros([BLOCK_C], tl.float32)
    tl.store(mean_ptr + c, mean, mask=c_ok)
    tl.store(invstd_ptr + c, 1.0 / tl.sqrt(var + eps), mask=c_ok)
    tl.store(shift_ptr + c, shift, mask=c_ok)
    tl.store(mean_d_ptr + c, mean_d, mask=c_ok)


@triton.jit
def _bn_apply_kernel(x_ptr, y_ptr, w_ptr, b_ptr, shift_ptr, mean_d_ptr, invstd_ptr, C, E, S,
                     sx_n, sx_c, sx_s, sy_n, sy_c, sy_s, param,
                     HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
                     BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr, I64: tl.constexpr):
    """y = f(((x - shift) - mean_d) * invstd * w + b).

    x_ptr, y_ptr: [N, C, S] views (strides sx_*, sy_*); w_ptr, b_ptr: [C] (optional);
    shift_ptr, mean_d_ptr, invstd_ptr: [C] fp32.
    """
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    e_start = _axis0_start(BLOCK_E, I64)
    e, x_offs = _offsets(e_start, c, S, sx_n, sx_c, sx_s, BLOCK_E, I64)
    e, y_offs = _offsets(e_start, c, S, sy_n, sy_c, sy_s, BLOCK_E, I64)
    mask = (e < E)[:, None] & c_ok[None, :]
    shift = tl.load(shift_ptr + c, mask=c_ok, other=0.0)
    mean_d = tl.load(mean_d_ptr + c, mask=c_ok, other=0.0)
    scale = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    if HAS_W:
        scale = scale * tl.load(w_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
    z = ((x - shift[None, :]) - mean_d[None, :]) * scale[None, :]
    if HAS_B:
        z += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y = apply_activation(z, CODE, param)
    tl.store(y_ptr + y_offs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bn_grad_reduce_kernel(dy_ptr, x_ptr, w_ptr, b_ptr, mean_ptr, invstd_ptr, part_ptr,
                           C, E, S, sd_n, sd_c, sd_s, sx_n, sx_c, sx_s, chunk, param,
                           HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
                           BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr, I64: tl.constexpr):
    """Per chunk p (program axis 0) and channel: sum(dz), sum(dz * d), sum(d) with d = x - mean
    and dz = dy * f'(z), z = d * invstd * w + b recomputed from x.

    dy_ptr, x_ptr: [N, C, S] views (strides sd_*, sx_*); w_ptr, b_ptr: [C] (optional);
    mean_ptr, invstd_ptr: [C] fp32; part_ptr: [3, P, C] fp32 contiguous.
    """
    p = tl.program_id(0)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    if CODE != 0:
        scale = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
        if HAS_W:
            scale = scale * tl.load(w_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        if HAS_B:
            bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
        else:
            bias = tl.zeros([BLOCK_C], tl.float32)
    sum_dz = tl.zeros([BLOCK_E, BLOCK_C], tl.float32)
    sum_dzd = tl.zeros([BLOCK_E, BLOCK_C], tl.float32)
    sum_d = tl.zeros([BLOCK_E, BLOCK_C], tl.float32)
    start = _axis0_start(chunk, I64)
    stop = tl.minimum(start + chunk, E)
    for block_start in range(start, stop, BLOCK_E):
        e, x_offs = _offsets(block_start, c, S, sx_n, sx_c, sx_s, BLOCK_E, I64)
        e, d_offs = _offsets(block_start, c, S, sd_n, sd_c, sd_s, BLOCK_E, I64)
        mask = (e < stop)[:, None] & c_ok[None, :]
        x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + d_offs, mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - mean[None, :], 0.0)
        if CODE != 0:
            dz = activation_grad_from_preact(dy, d * scale[None, :] + bias[None, :], CODE, param)
        else:
            dz = dy
        sum_dz += dz
        sum_dzd += dz * d
        sum_d += d
    P = tl.num_programs(0)
    tl.store(part_ptr + p * C + c, tl.sum(sum_dz, axis=0), mask=c_ok)
    tl.store(part_ptr + (P + p) * C + c, tl.sum(sum_dzd, axis=0), mask=c_ok)
    tl.store(part_ptr + (2 * P + p) * C + c, tl.sum(sum_d, axis=0), mask=c_ok)


@triton.jit
def _bn_grad_finish_kernel(part_ptr, invstd_ptr, stats_ptr, gw_ptr, gb_ptr, C, E, P,
                           TRAINING: tl.constexpr, NEED_W: tl.constexpr, NEED_B: tl.constexpr,
                           BLOCK_C: tl.constexpr):
    """Per channel: sum_dz = sum(dz), sum_dzxhat = sum(dz * xhat) with xhat = (d - mean(d)) *
    invstd (mean(d) = 0 in eval, where the statistics are not the batch's).

    part_ptr: [3, P, C] fp32 partials (sum dz, sum dz*d, sum d); invstd_ptr: [C] fp32;
    stats_ptr: [3, C] fp32 out (sum_dz, sum_dzxhat, mean(d)); gw_ptr, gb_ptr: [C] grads
    (sum_dzxhat, sum_dz) when NEED_W / NEED_B.
    """
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    s_dz = tl.zeros([BLOCK_C], tl.float32)
    s_dzd = tl.zeros([BLOCK_C], tl.float32)
    s_d = tl.zeros([BLOCK_C], tl.float32)
    for p in range(0, P):
        s_dz += tl.load(part_ptr + p * C + c, mask=c_ok, other=0.0)
        s_dzd += tl.load(part_ptr + (P + p) * C + c, mask=c_ok, other=0.0)
        s_d += tl.load(part_ptr + (2 * P + p) * C + c, mask=c_ok, other=0.0)
    invstd = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    if TRAINING:
        # the saved mean is the batch mean rounded to fp32; mean(d) is what rounding left over
        mean_d = s_d / E
    else:
        mean_d = tl.zeros([BLOCK_C], tl.float32)
    s_dzxhat = (s_dzd - mean_d * s_dz) * invstd
    tl.store(stats_ptr + c, s_dz, mask=c_ok)
    tl.store(stats_ptr + C + c, s_dzxhat, mask=c_ok)
    tl.store(stats_ptr + 2 * C + c, mean_d, mask=c_ok)
    if NEED_W:
        tl.store(gw_ptr + c, s_dzxhat.to(gw_ptr.dtype.element_ty), mask=c_ok)
    if NEED_B:
        tl.store(gb_ptr + c, s_dz.to(gb_ptr.dtype.element_ty), mask=c_ok)


@triton.jit
def _bn_grad_input_kernel(dy_ptr, x_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, invstd_ptr, stats_ptr,
                          C, E, S, sd_n, sd_c, sd_s, sx_n, sx_c, sx_s, so_n, so_c, so_s, param,
                          HAS_W: tl.constexpr, HAS_B: tl.constexpr, CODE: tl.constexpr,
                          TRAINING: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_C: tl.constexpr,
                          I64: tl.constexpr):
    """dx = w invstd (dz - (sum_dz + xhat sum_dzxhat) / E) (training) or w invstd dz (eval).

    dy_ptr, x_ptr, dx_ptr: [N, C, S] views (strides sd_*, sx_*, so_*); w_ptr, b_ptr: [C]
    (optional); mean_ptr, invstd_ptr: [C] fp32; stats_ptr: [3, C] fp32 from the finish kernel.
    """
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    e_start = _axis0_start(BLOCK_E, I64)
    e, x_offs = _offsets(e_start, c, S, sx_n, sx_c, sx_s, BLOCK_E, I64)
    e, d_offs = _offsets(e_start, c, S, sd_n, sd_c, sd_s, BLOCK_E, I64)
    e, o_offs = _offsets(e_start, c, S, so_n, so_c, so_s, BLOCK_E, I64)
    mask = (e < E)[:, None] & c_ok[None, :]
    mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0)
    invstd = tl.load(invstd_ptr + c, mask=c_ok, other=0.0)
    mean_d = tl.load(stats_ptr + 2 * C + c, mask=c_ok, other=0.0)
    if HAS_W:
        w = tl.load(w_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    else:
        w = tl.full([BLOCK_C], 1.0, tl.float32)
    x = tl.load(x_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + d_offs, mask=mask, other=0.0).to(tl.float32)
    xhat = ((x - mean[None, :]) - mean_d[None, :]) * invstd[None, :]
    if CODE != 0:
        z = xhat * w[None, :]
        if HAS_B:
            z += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        dz = activation_grad_from_preact(dy, z, CODE, param)
    else:
        dz = dy
    if TRAINING:
        s_dz = tl.load(stats_ptr + c, mask=c_ok, other=0.0)
        s_dzxhat = tl.load(stats_ptr + C + c, mask=c_ok, other=0.0)
        dz = dz - (s_dz[None, :] + xhat * s_dzxhat[None, :]) / E
    dx = dz * (w * invstd)[None, :]
    tl.store(dx_ptr + o_offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# --- launchers ----------------------------------------------------------------------------------

def _view3(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(s_n, s_c, s_s) of t [N, C, *spatial] seen as [N, C, S], or None if the spatial dims do
    not collapse into one stride."""
    if t.dim() == 2:
        return t.stride(0), t.stride(1), 1
    dims = [(n, st) for n, st in zip(t.shape[2:], t.stride()[2:]) if n != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != inner * size:
            return None
    return t.stride(0), t.stride(1), (dims[-1][1] if dims else 1)


def _as_view3(t: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    v = _view3(t)
    if v is None:
        t = t.contiguous()
        v = _view3(t)
    return t, v


BLOCK_CS = (1, 4, 32)  # the channel widths _blocks picks


def _blocks(C: int, s_c: int) -> tuple[int, int]:
    """(BLOCK_E, BLOCK_C): with channels adjacent in memory (channels_last, [N, C]) a tile spans
    32 of them (4 when there are only that many), else one channel and a long run of elements."""
    if s_c == 1 and C > 1:
        block_c = 4 if C <= 4 else 32
    else:
        block_c = 1
    check_grid("batch_norm (triton)", (1, triton.cdiv(C, block_c)), ("", "channel blocks"))
    return TILE // block_c, block_c


def _chunks(E: int, C: int, block_e: int, block_c: int) -> tuple[int, int]:
    """(P, chunk): E split into P chunks of ``chunk`` elements (a multiple of BLOCK_E)."""
    per_channel = max(1, TARGET_PROGRAMS // triton.cdiv(C, block_c))
    chunk = triton.cdiv(triton.cdiv(E, per_channel), block_e) * block_e
    return triton.cdiv(E, chunk), chunk


def _i64(E: int, *tensors: torch.Tensor) -> bool:
    """Whether element indices (up to E, which stride-0 views can make larger than any span) or
    offsets in ``tensors`` may pass int32."""
    span = max(sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride())) for t in tensors)
    return max(span, E) + TILE * 64 > INT32_LIMIT


def _check(x: torch.Tensor, **per_channel: torch.Tensor | None) -> None:
    _pointwise.check_dtypes("batch_norm", input=x, **per_channel)
    if x.dim() < 2:
        raise ValueError(f"batch_norm: input must be [N, C, *], got shape {tuple(x.shape)}")
    C = x.shape[1]
    for name, t in per_channel.items():
        if t is not None and t.shape != (C,):
            raise ValueError(f"batch_norm: {name} has shape {tuple(t.shape)}, expected ({C},)")


def _batch_statistics(x, C, E, S, strides, block_e, block_c, i64, running_mean, running_var,
                      training: bool, momentum: float, eps: float):
    """(mean, invstd, shift, mean_d) [C] fp32: the batch's (training; the running statistics
    updated in place when given) or the running ones (eval). mean = shift + mean_d."""
    dev = x.device
    mean = alloc.empty((C,), dtype=torch.float32, device=dev)
    invstd = alloc.empty((C,), dtype=torch.float32, device=dev)
    shift = alloc.empty((C,), dtype=torch.float32, device=dev)
    mean_d = alloc.empty((C,), dtype=torch.float32, device=dev)
    n_cblocks = triton.cdiv(C, block_c)
    update = training and running_mean is not None and running_var is not None
    if training:
        P, chunk = _chunks(E, C, block_e, block_c)
        mean_part = alloc.empty((P, C), dtype=torch.float32, device=dev)
        m2_part = alloc.empty((P, C), dtype=torch.float32, device=dev)
        wrap_triton(_bn_stats_kernel)[(P, n_cblocks)](
            x, mean_part, m2_part, C, E, S, *strides, chunk, BLOCK_E=block_e, BLOCK_C=block_c,
            I64=i64, num_warps=NUM_WARPS)
    else:
        P, chunk, mean_part, m2_part = 0, 1, mean, mean
    rm = running_mean if running_mean is not None else mean
    rv = running_var if running_var is not None else mean
    wrap_triton(_bn_finish_stats_kernel)[(triton.cdiv(C, FINISH_BLOCK_C),)](
        x, mean_part, m2_part, rm, rv, mean, invstd, shift, mean_d, C, E, strides[1], P, chunk,
        float(momentum), float(eps), TRAINING=training, UPDATE=update, BLOCK_C=FINISH_BLOCK_C,
        num_warps=NUM_WARPS)
    return mean, invstd, shift, mean_d


def _empty_batch_statistics(C: int, eps: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """An empty batch: zero statistics (torch), invstd of a zero variance."""
    mean = alloc.empty((C,), dtype=torch.float32, device=device).zero_()
    invstd = alloc.empty((C,), dtype=torch.float32, device=device).fill_(1.0 / float(eps) ** 0.5)
    return mean, invstd


def batch_norm_forward(x, weight, bias, running_mean, running_var, training: bool,
                       momentum: float, eps: float, act: Activation | None):
    """x [N, C, *] -> (y in x's memory format, mean [C] fp32, invstd [C] fp32); in training the
    running statistics (if given) are updated in place with the unbiased variance."""
    _check(x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    C = x.shape[1]
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: eval mode needs running_mean and running_var")
    # the kernels index the per-channel vectors by channel: strided running statistics are
    # updated through contiguous copies written back
    weight, bias = contiguous(weight, bias)
    stats = contiguous(running_mean, running_var)
    y, mean, invstd = _forward(x, weight, bias, *stats, training, momentum, eps, act)
    if training:
        for given, updated in zip((running_mean, running_var), stats):
            if given is not None and updated is not given:
                given.copy_(updated)
    return y, mean, invstd


def _forward(x, weight, bias, running_mean, running_var, training: bool, momentum: float,
             eps: float, act: Activation | None):
    C = x.shape[1]
    x, (sx_n, sx_c, sx_s) = _as_view3(x)
    y = alloc.empty_like(x, memory_format=torch.preserve_format)
    y, (sy_n, sy_c, sy_s) = _as_view3(y)
    E = x.numel() // C if C else 0
    S = E // x.shape[0] if x.shape[0] else 1
    if C == 0:
        return (y, *_empty_batch_statistics(0, eps, x.device))
    if training and E == 0:  # an empty batch: zero statistics, running ones untouched (torch)
        return (y, *_empty_batch_statistics(C, eps, x.device))
    block_e, block_c = _blocks(C, sx_c)
    i64 = _i64(E, x, y)
    mean, invstd, shift, mean_d = _batch_statistics(
        x, C, E, S, (sx_n, sx_c, sx_s), block_e, block_c, i64, running_mean, running_var,
        training, momentum, eps)
    if E:
        wrap_triton(_bn_apply_kernel)[(triton.cdiv(E, block_e), triton.cdiv(C, block_c))](
            x, y, weight if weight is not None else mean, bias if bias is not None else mean,
            shift, mean_d, invstd, C, E, S, sx_n, sx_c, sx_s, sy_n, sy_c, sy_s, param_of(act),
            HAS_W=weight is not None, HAS_B=bias is not None, CODE=code_of(act),
            BLOCK_E=block_e, BLOCK_C=block_c, I64=i64, num_warps=NUM_WARPS)
    return y, mean, invstd


def _grad_sums(grad_y, x, w_arg, b_arg, mean, invstd, act, weight, bias, training, gw, gb,
               C, E, S, sd, sx, block_e, block_c, i64):
    """[3, C] fp32 (sum dz, sum dz * xhat, mean(d)) of the batch (gw / gb, when given, receive
    the parameter gradients). ``training``: mean(d) is the batch's own rounding residue, else 0
    (eval, or statistics that are not this batch's)."""
    dev = x.device
    stats = alloc.empty((3, C), dtype=torch.float32, device=dev)
    P, chunk = _chunks(E, C, block_e, block_c)
    part = alloc.empty((3, P, C), dtype=torch.float32, device=dev)
    wrap_triton(_bn_grad_reduce_kernel)[(P, triton.cdiv(C, block_c))](
        grad_y, x, w_arg, b_arg, mean, invstd, part, C, E, S, *sd, *sx, chunk, param_of(act),
        HAS_W=weight is not None, HAS_B=bias is not None, CODE=code_of(act), BLOCK_E=block_e,
        BLOCK_C=block_c, I64=i64, num_warps=NUM_WARPS)
    wrap_triton(_bn_grad_finish_kernel)[(triton.cdiv(C, FINISH_BLOCK_C),)](
        part, invstd, stats, gw if gw is not None else stats, gb if gb is not None else stats,
        C, E, P, TRAINING=training, NEED_W=gw is not None, NEED_B=gb is not None,
        BLOCK_C=FINISH_BLOCK_C, num_warps=NUM_WARPS)
    return stats


def _grad_input(grad_y, x, gx, w_arg, b_arg, mean, invstd, stats, act, weight, bias,
                training: bool, C, E, S, sd, sx, block_e, block_c, i64):
    """gx = w invstd (dz - (stats[0] + xhat stats[1]) / E) (training) or w invstd dz."""
    gx_v, (so_n, so_c, so_s) = _as_view3(gx)
    wrap_triton(_bn_grad_input_kernel)[(triton.cdiv(E, block_e), triton.cdiv(C, block_c))](
        grad_y, x, gx_v, w_arg, b_arg, mean, invstd, stats, C, E, S, *sd, *sx, so_n, so_c,
        so_s, param_of(act), HAS_W=weight is not None, HAS_B=bias is not None,
        CODE=code_of(act), TRAINING=training, BLOCK_E=block_e, BLOCK_C=block_c,
        I64=i64 or _i64(E, gx_v), num_warps=NUM_WARPS)
    if gx_v is not gx:
        gx.copy_(gx_v)


def _backward_views(grad_y, x):
    """(grad_y, x as [N, C, S] views, their strides, C, E, S, block shape, i64)."""
    C = x.shape[1]
    E = x.numel() // C if C else 0
    S = E // x.shape[0] if x.shape[0] else 1
    x, sx = _as_view3(x)
    grad_y, sd = _as_view3(grad_y)
    block_e, block_c = _blocks(C, sx[1])
    return grad_y, x, sd, sx, C, E, S, block_e, block_c, _i64(E, x, grad_y)


def batch_norm_backward(grad_y, x, weight, bias, mean, invstd, act: Activation | None,
                        training: bool, needs):
    """-> (grad_x, grad_weight, grad_bias), None where ``needs`` (x, weight, bias) says so."""
    _check(x, weight=weight, bias=bias, mean=mean, invstd=invstd)
    weight, bias, mean, invstd = contiguous(weight, bias, mean, invstd)
    if grad_y.shape != x.shape:
        raise ValueError(f"batch_norm_backward: grad_y {tuple(grad_y.shape)} and x "
                         f"{tuple(x.shape)} differ in shape")
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    need_w = need_w and weight is not None
    need_b = need_b and bias is not None
    C = x.shape[1]
    dev = x.device
    gx = alloc.empty_like(x, memory_format=torch.preserve_format) if need_x else None
    gw = alloc.empty((C,), dtype=weight.dtype, device=dev) if need_w else None
    gb = alloc.empty((C,), dtype=bias.dtype, device=dev) if need_b else None
    E = x.numel() // C if C else 0
    if C == 0 or not (need_x or need_w or need_b):
        return gx, gw, gb
    if E == 0:
        for t in (gw, gb):
            if t is not None:
                t.zero_()
        return gx, gw, gb
    grad_y, x, sd, sx, C, E, S, block_e, block_c, i64 = _backward_views(grad_y, x)
    w_arg = weight if weight is not None else mean
    b_arg = bias if bias is not None else mean
    if training or need_w or need_b:
        stats = _grad_sums(grad_y, x, w_arg, b_arg, mean, invstd, act, weight, bias, training,
                           gw, gb, C, E, S, sd, sx, block_e, block_c, i64)
    else:  # eval, dx only: mean(d) = 0 and the sums are unused
        stats = alloc.empty((3, C), dtype=torch.float32, device=dev).zero_()
    if need_x:
        _grad_input(grad_y, x, gx, w_arg, b_arg, mean, invstd, stats, act, weight, bias,
                    training, C, E, S, sd, sx, block_e, block_c, i64)
    return gx, gw, gb


# --- the stages SyncBatchNorm composes around its all-reduces -------------------------------------

def batch_norm_stats(x, eps: float):
    """x [N, C, *] -> (mean, invstd) [C] fp32 of this batch (biased variance); no output and no
    running statistics (SyncBatchNorm's local statistics)."""
    _check(x)
    C = x.shape[1]
    x, strides = _as_view3(x)
    E = x.numel() // C if C else 0
    if C == 0 or E == 0:
        return _empty_batch_statistics(C, eps, x.device)
    S = E // x.shape[0]
    block_e, block_c = _blocks(C, strides[1])
    mean, invstd, _, _ = _batch_statistics(x, C, E, S, strides, block_e, block_c, _i64(E, x),
                                           None, None, True, 0.0, eps)
    return mean, invstd


def batch_norm_backward_reduce(grad_y, x, weight, bias, mean, invstd, act: Activation | None):
    """-> (sum_dz, sum_dz_xhat) [C] fp32 over this batch, with dz the gradient at the
    pre-activation and xhat = (x - mean) * invstd for the given (global) statistics."""
    _check(x, weight=weight, bias=bias, mean=mean, invstd=invstd)
    weight, bias, mean, invstd = contiguous(weight, bias, mean, invstd)
    C = x.shape[1]
    if x.numel() == 0:
        zeros = alloc.empty((C,), dtype=torch.float32, device=x.device).zero_()
        return zeros, zeros.clone()
    grad_y, x, sd, sx, C, E, S, block_e, block_c, i64 = _backward_views(grad_y, x)
    stats = _grad_sums(grad_y, x, weight if weight is not None else mean,
                       bias if bias is not None else mean, mean, invstd, act, weight, bias,
                       False, None, None, C, E, S, sd, sx, block_e, block_c, i64)
    return stats[0].clone(), stats[1].clone()


def batch_norm_backward_elemt(grad_y, x, weight, bias, mean, invstd, act: Activation | None,
                              sum_dz, sum_dz_xhat, count: int):
    """grad_x = w invstd (dz - (sum_dz + xhat sum_dz_xhat) / count): the training-mode input
    gradient for sums and a count over every process's batch."""
    _check(x, weight=weight, bias=bias, mean=mean, invstd=invstd)
    weight, bias, mean, invstd = contiguous(weight, bias, mean, invstd)
    gx = alloc.empty_like(x, memory_format=torch.preserve_format)
    if x.numel() == 0:
        return gx
    grad_y, x, sd, sx, C, E, S, block_e, block_c, i64 = _backward_views(grad_y, x)
    # the kernel divides by its own element count E: scale the global sums by E / count
    stats = torch.stack([sum_dz.float() * (E / count), sum_dz_xhat.float() * (E / count),
                         torch.zeros_like(sum_dz, dtype=torch.float32)])
    _grad_input(grad_y, x, gx, weight if weight is not None else mean,
                bias if bias is not None else mean, mean, invstd, stats, act, weight, bias,
                True, C, E, S, sd, sx, block_e, block_c, i64)
    return gx


def aot_configs() -> list[AOTConfig]:
    """Every (BLOCK_E, BLOCK_C) of ``_blocks`` for every kernel, fp32 / fp16 / bf16 inputs (fp32
    statistics), with gelu_tanh where an activation is fused (the heaviest; the other codes
    differ in constexpr arithmetic only) and the plain forward and dx kernels in fp32; the
    64-bit index variants (I64) of the fp32 one-channel tile.
    CI's selection (see _pointwise.aot_all) leaves out fp16."""
    gelu = NAMES.index("gelu_tanh") + 1
    configs = []

    def sig_of(kernel, ptrs: dict) -> dict:
        sig = {}
        for param in kernel.params:
            name = param.name
            if name in ptrs:
                sig[name] = ptrs[name]
            elif param.is_constexpr:
                sig[name] = "constexpr"
            elif name in ("momentum", "eps", "param"):
                sig[name] = "fp32"
            else:
                sig[name] = "i32"
        return sig

    for dtype in ("fp32", "fp16", "bf16"):
        x = f"*{dtype}"
        stats = {"mean_part_ptr": "*fp32", "m2_part_ptr": "*fp32", "mean_ptr": "*fp32",
                 "invstd_ptr": "*fp32", "shift_ptr": "*fp32", "mean_d_ptr": "*fp32",
                 "part_ptr": "*fp32", "stats_ptr": "*fp32", "rm_ptr": "*fp32", "rv_ptr": "*fp32",
                 "w_ptr": "*fp32", "b_ptr": "*fp32", "gw_ptr": "*fp32", "gb_ptr": "*fp32"}
        data = {"x_ptr": x, "y_ptr": x, "dy_ptr": x, "dx_ptr": x}
        ptrs = {**stats, **data}
        codes = (gelu, 0) if dtype == "fp32" else (gelu,)
        for block_c in BLOCK_CS:
            block = dict(BLOCK_E=TILE // block_c, BLOCK_C=block_c, I64=False)
            tag = f"{TILE // block_c}x{block_c}"
            configs.append(AOTConfig(_bn_stats_kernel, sig_of(_bn_stats_kernel, ptrs), block,
                                     num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                                     label=f"stats {tag}"))
            for code in codes:
                act = NAMES[code - 1] if code else "identity"
                configs.append(AOTConfig(
                    _bn_apply_kernel, sig_of(_bn_apply_kernel, ptrs),
                    dict(block, HAS_W=True, HAS_B=True, CODE=code), num_warps=NUM_WARPS,
                    num_stages=1, dtype=dtype, label=f"apply {act} {tag}"))
                configs.append(AOTConfig(
                    _bn_grad_input_kernel, sig_of(_bn_grad_input_kernel, ptrs),
                    dict(block, HAS_W=True, HAS_B=True, CODE=code, TRAINING=True),
                    num_warps=NUM_WARPS, num_stages=1, dtype=dtype, label=f"dx {act} {tag}"))
            configs.append(AOTConfig(
                _bn_grad_reduce_kernel, sig_of(_bn_grad_reduce_kernel, ptrs),
                dict(block, HAS_W=True, HAS_B=True, CODE=gelu), num_warps=NUM_WARPS,
                num_stages=1, dtype=dtype, label=f"grad sums gelu_tanh {tag}"))
        configs.append(AOTConfig(
            _bn_finish_stats_kernel, sig_of(_bn_finish_stats_kernel, ptrs),
            dict(TRAINING=True, UPDATE=True, BLOCK_C=FINISH_BLOCK_C), num_warps=NUM_WARPS,
            num_stages=1, dtype=dtype, label="finish stats train"))
    ptrs = {k: "*fp32" for k in _bn_finish_stats_kernel.arg_names if k.endswith("_ptr")}
    configs.append(AOTConfig(_bn_finish_stats_kernel, sig_of(_bn_finish_stats_kernel, ptrs),
                             dict(TRAINING=False, UPDATE=False, BLOCK_C=FINISH_BLOCK_C),
                             num_warps=NUM_WARPS, num_stages=1, dtype="fp32",
                             label="finish stats eval"))
    ptrs = {k: "*fp32" for k in _bn_grad_finish_kernel.arg_names if k.endswith("_ptr")}
    for training in (True, False):
        configs.append(AOTConfig(_bn_grad_finish_kernel, sig_of(_bn_grad_finish_kernel, ptrs),
                                 dict(TRAINING=training, NEED_W=True, NEED_B=True,
                                      BLOCK_C=FINISH_BLOCK_C),
                                 num_warps=NUM_WARPS, num_stages=1, dtype="fp32",
                                 label=f"grad finish {'train' if training else 'eval'}"))
    # the 64-bit index paths (tensors past 2^31 elements): every kernel that has one, fp32,
    # the one-channel tile with gelu_tanh
    configs += [dataclasses.replace(c, constexprs=dict(c.constexprs, I64=True),
                                    label=f"{c.label} i64")
                for c in configs if c.dtype == "fp32" and c.constexprs.get("BLOCK_C") == 1
                and c.constexprs.get("CODE", gelu) == gelu]
    return _pointwise.select(configs, lambda c: c.dtype != "fp16")
