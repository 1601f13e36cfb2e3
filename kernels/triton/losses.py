"""Losses: cross-entropy fused with log-softmax (class indices or class probabilities, with class
weights and label smoothing), NLL (a gather), BCE on probabilities, BCE-with-logits (weight,
pos_weight) and MSE, forward and backward.

Cross-entropy forward makes one pass over the logits per row block, writing the per-row loss (or
per-program partial sums of the loss and of the mean's denominator) and the row's log-sum-exp;
label smoothing and probability targets add a second pass over the row that sums the weighted
log-probabilities once the row's max and sum are known. Backward makes one pass writing
grad = (exp(x - lse) - onehot) * g (plus the smoothing term; (p sum(w q) - w q) g for
probabilities), recomputing the probabilities from the logits and lse (for probability targets
from the row max m and log(s), so that log_p = (x - m) - log(s) keeps torch's rounding at
1e4-scale logits): they are never stored.
NLL's forward gathers one log-probability per row; its backward writes the [N, C] gradient in one
pass (zeros and -w g at the targets). Reductions finish in a tiny deterministic kernel over
per-program partials. Class indices outside [0, C) that are not ignore_index, and BCE
probabilities outside [0, 1], give NaN (a GPU kernel cannot raise; the public functions raise
torch's errors before them in eager).
"""
from __future__ import annotations

import dataclasses

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from . import _pointwise
from ._pointwise import INT32_LIMIT
from .aot import AOTConfig
from .softmax import online_max_sum, row_indices

CE_TILE = 4096
CE_MIN_BLOCK = 16
CE_MAX_BLOCK = 4096
NLL_ROWS = 1024  # rows per program of the NLL forward gather and of the weight sums
NUM_WARPS = 4
EW_BLOCK = 1024
REDUCTIONS = ("none", "mean", "sum")
# torch's clamp of BCE's logs and its floor of the BCE gradient's denominator
BCE_LOG_FLOOR = tl.constexpr(-100.0)
BCE_EPSILON = tl.constexpr(1e-12)


def _ce_grad_warps(probs: bool) -> int:
    """Warps of the gradient kernel. Measured for sm_90 with Triton 3.6 and 3.9 (every
    configuration): 4 warps spill at some multi-row shapes (64x64, 32x128: per-row values of
    several rows per thread), in the single-row 1x4096 fp32 block under 3.6 (10 spill
    instructions), and with a second term (label smoothing with weights, probability targets) in
    fp16 / bf16 (2-16); 8 warps spill in none of them but probability targets under 3.6 (2-10,
    single rows in every dtype, 256x16 to 16x256 in fp16 / bf16), where 16 spill nowhere."""
    return 16 if probs else 8


def _ce_forward_warps(rows: int, block: int, probs: bool, smooth: bool, fp32: bool) -> int:
    """The forward's second pass over a multi-row block (label smoothing, probability targets)
    keeps per-row state and the row pointers of the logits and the targets live across both
    passes. Measured for sm_90 (weights and smoothing, fp32 / bf16): 4 warps spill with
    probabilities at 256x16 (62 / 76 spill instructions), 128x32 and 32x128; 8 warps spill at
    16x256 (capped at 128 registers); 16 warps spill nowhere (<= 124 registers) but at 16x256
    under Triton 3.6 (2 instructions, fp16 / bf16 probabilities), where 32 spill nowhere in
    either. Single rows: 4 warps spill in bf16 with probabilities (6 spill instructions) and 8
    nowhere; with label smoothing of class indices Triton 3.6 spills (8 instructions) at 8 warps
    in fp16 and at 16 in fp32 (3.9 at neither)."""
    if not (probs or smooth):
        return NUM_WARPS
    if rows > 1:
        return 32 if block == 256 else 16
    return 8 if probs or fp32 else 16


# --- cross-entropy and NLL ----------------------------------------------------------------------

@triton.jit
def _ce_rows(N, ROWS: tl.constexpr, I64: tl.constexpr):
    """This program's ROWS row indices (see ``row_indices``) and which of them exist."""
    rows = row_indices(ROWS, I64)
    return rows, rows < N


@triton.jit
def _class_targets(t_ptr, w_ptr, rows, ok, s_t, s_w, ignore_index, C, HAS_W: tl.constexpr):
    """Per row: (safe: the target where it is a class to gather, else 0; valid: not ignored;
    in_range: the target is a class of [0, C); w_t: its class weight -- 1 without HAS_W -- and 0
    where not valid or out of range: sum(w_t) is the mean's denominator).

    t_ptr: [N] int64 (stride s_t); w_ptr: [C] (stride s_w) when HAS_W.
    """
    target = tl.load(t_ptr + rows * s_t, mask=ok, other=ignore_index)
    valid = ok & (target != ignore_index)
    in_range = (target >= 0) & (target < C)
    hit = valid & in_range
    safe = tl.where(hit, target, 0)
    if HAS_W:
        w_t = tl.load(w_ptr + safe * s_w, mask=hit, other=0.0).to(tl.float32)
    else:
        w_t = tl.where(hit, 1.0, 0.0)
    return safe, valid, in_range, w_t


@triton.jit
def _ce_log_prob_sum(x_row, t_row, w_ptr, ok, m, log_s, C, sx_c, s_tc, s_w, eps,
                     PROBS: tl.constexpr, HAS_W: tl.constexpr, SMOOTH: tl.constexpr,
                     ROWS: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per row: sum_c log_p[c] q[c] w[c] with log_p = (x - m) - log_s (torch's log_softmax
    rounding) and torch's product order, so that a 0 probability at a -inf logit gives NaN; q: the
    target probabilities (PROBS; smoothed to q (1 - eps) + eps / C when SMOOTH) or 1 (the
    label-smoothing term of class-index targets); w: 1 without HAS_W.

    x_row, t_row: [ROWS, 1] row pointers (column strides sx_c, s_tc); w_ptr: [C] (stride s_w).
    """
    acc = tl.zeros([ROWS], tl.float32)
    cols = tl.arange(0, BLOCK_C)
    for start in range(0, C, BLOCK_C):
        c = start + cols
        in_c = c < C
        mask = ok[:, None] & in_c[None, :]
        x = tl.load(x_row + c[None, :] * sx_c, mask=mask, other=0.0).to(tl.float32)
        term = (x - m[:, None]) - log_s[:, None]
        if PROBS:
            q = tl.load(t_row + c[None, :] * s_tc, mask=mask, other=0.0).to(tl.float32)
            if SMOOTH:
                q = q * (1.0 - eps) + eps / C
            term = term * q
        if HAS_W:
            term = term * tl.load(w_ptr + c * s_w, mask=in_c, other=0.0).to(tl.float32)[None, :]
        acc += tl.sum(tl.where(mask, term, 0.0), axis=1)
    return acc


@triton.jit
def _ce_forward_kernel(x_ptr, t_ptr, w_ptr, loss_ptr, lse_ptr, ls_ptr, den_ptr, N, C, sx_n,
                       sx_c, s_t, s_tc, s_w, s_l, ignore_index, eps, PROBS: tl.constexpr,
                       HAS_W: tl.constexpr, SMOOTH: tl.constexpr, REDUCE: tl.constexpr,
                       ONLINE: tl.constexpr, ROWS: tl.constexpr, BLOCK_C: tl.constexpr,
                       I64: tl.constexpr):
    """Per row i: lse_i = logsumexp(x[i, :]) and the loss, with m_i the row max and
    s_i = sum(exp(x[i, :] - m_i)):
    class indices: (1 - eps) w_t ((m_i - x[i, t_i]) + log(s_i)) - eps / C sum_c w_c log_p[i, c]
    (0 where t_i is ignored; lse_i - x[i, t_i] would lose the loss to the rounding of lse_i at
    1e4-scale logits); PROBS: -sum_c w_c q[i, c] log_p[i, c] (``_ce_log_prob_sum``).

    x_ptr: [N, C] (strides sx_n, sx_c); t_ptr: [N] int64 (stride s_t), or [N, C] probabilities
    (PROBS: strides s_t, s_tc); w_ptr: [C] class weights (stride s_w) when HAS_W; eps: the label
    smoothing (SMOOTH); lse_ptr: [N] fp32: lse_i, or m_i for PROBS with log(s_i) at ls_ptr
    ([N] fp32). REDUCE: loss_ptr[pid] = sum of this program's losses
    and den_ptr[pid] = of its mean's denominators (its rows' target weights; its rows for PROBS),
    both [n_programs] fp32; else loss_ptr: [N] (stride s_l) per-row losses.
    """
    rows, ok = _ce_rows(N, ROWS, I64)
    x_row = x_ptr + (rows * sx_n)[:, None]
    m, s = online_max_sum(x_row, sx_c, ok, C, ROWS, BLOCK_C)  # one chunk unless ONLINE
    log_s = tl.log(s)
    if PROBS:
        t_row = t_ptr + (rows * s_t)[:, None]
        loss = -_ce_log_prob_sum(x_row, t_row, w_ptr, ok, m, log_s, C, sx_c, s_tc, s_w, eps,
                                 True, HAS_W, SMOOTH, ROWS, BLOCK_C)
        loss = tl.where(ok, loss, 0.0)
        den = tl.where(ok, 1.0, 0.0)
    else:
        safe, valid, in_range, w_t = _class_targets(t_ptr, w_ptr, rows, ok, s_t, s_w,
                                                    ignore_index, C, HAS_W)
        x_t = tl.load(x_row + (safe * sx_c)[:, None], mask=(valid & in_range)[:, None],
                      other=0.0).to(tl.float32)
        x_t = tl.sum(x_t, axis=1)  # [ROWS, 1] -> [ROWS]
        loss = w_t * ((m - x_t) + log_s)
        if SMOOTH:
            smooth = -_ce_log_prob_sum(x_row, x_row, w_ptr, ok, m, log_s, C, sx_c, 0, s_w, eps,
                                       False, HAS_W, SMOOTH, ROWS, BLOCK_C)
            loss = (1.0 - eps) * loss + (eps / C) * smooth
        loss = tl.where(valid, tl.where(in_range, loss, float("nan")), 0.0)
        den = w_t
    if PROBS:
        tl.store(lse_ptr + rows, m, mask=ok)
        tl.store(ls_ptr + rows, log_s, mask=ok)
    else:
        tl.store(lse_ptr + rows, m + log_s, mask=ok)
    if REDUCE:
        tl.store(loss_ptr + tl.program_id(0), tl.sum(loss, axis=0))
        tl.store(den_ptr + tl.program_id(0), tl.sum(den, axis=0))
    else:
        tl.store(loss_ptr + rows * s_l, loss.to(loss_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _nll_forward_kernel(x_ptr, t_ptr, w_ptr, loss_ptr, den_ptr, N, C, sx_n, sx_c, s_t, s_w, s_l,
                        ignore_index, HAS_W: tl.constexpr, REDUCE: tl.constexpr,
                        ROWS: tl.constexpr, I64: tl.constexpr):
    """loss_i = -x[i, t_i] w[t_i] (torch's order: -inf at a zero-weight target gives NaN), 0 where
    t_i is ignored: one gathered element per row.

    x_ptr: [N, C] log-probabilities (strides sx_n, sx_c); t_ptr: [N] int64 (s_t); w_ptr: [C]
    (s_w) when HAS_W. REDUCE: loss_ptr[pid], den_ptr[pid]: this program's sums of the losses and
    of the target weights ([n_programs] fp32); else loss_ptr: [N] (stride s_l).
    """
    rows, ok = _ce_rows(N, ROWS, I64)
    safe, valid, in_range, w_t = _class_targets(t_ptr, w_ptr, rows, ok, s_t, s_w, ignore_index,
                                                C, HAS_W)
    x_t = tl.load(x_ptr + rows * sx_n + safe * sx_c, mask=valid & in_range,
                  other=0.0).to(tl.float32)
    loss = tl.where(valid, tl.where(in_range, -x_t * w_t, float("nan")), 0.0)
    if REDUCE:
        tl.store(loss_ptr + tl.program_id(0), tl.sum(loss, axis=0))
        tl.store(den_ptr + tl.program_id(0), tl.sum(w_t, axis=0))
    else:
        tl.store(loss_ptr + rows * s_l, loss.to(loss_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _target_weight_kernel(t_ptr, w_ptr, den_ptr, N, C, s_t, s_w, ignore_index,
                          HAS_W: tl.constexpr, ROWS: tl.constexpr):
    """den_ptr[pid] = the summed class weights (the count, without HAS_W) of the non-ignored
    targets of this program's rows: the partials of a class-index mean's denominator.

    t_ptr: [N] int64 (stride s_t); w_ptr: [C] (s_w) when HAS_W; den_ptr: [n_programs] fp32.
    """
    rows, ok = _ce_rows(N, ROWS, True)
    _, _, _, w_t = _class_targets(t_ptr, w_ptr, rows, ok, s_t, s_w, ignore_index, C, HAS_W)
    tl.store(den_ptr + tl.program_id(0), tl.sum(w_t, axis=0))


@triton.jit
def _ce_finish_kernel(out_ptr, val_ptr, den_ptr, n_val, n_den, MEAN: tl.constexpr,
                      BLOCK: tl.constexpr):
    """out[0] = sum(val_ptr[0:n_val]), divided by sum(den_ptr[0:n_den]) when MEAN (NaN when that
    is 0: every row ignored, or zero-weight targets only, as torch's, whose label-smoothing mean
    adds the NLL part's 0 / 0 to the smoothing part's x / 0).

    out_ptr: [1]; val_ptr: [n_val] (any float dtype); den_ptr: [n_den] fp32.
    """
    total = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_val, BLOCK):
        i = start + tl.arange(0, BLOCK)
        total += tl.load(val_ptr + i, mask=i < n_val, other=0.0).to(tl.float32)
    result = tl.sum(total, axis=0)
    if MEAN:
        den = tl.zeros([BLOCK], tl.float32)
        for start in range(0, n_den, BLOCK):
            i = start + tl.arange(0, BLOCK)
            den += tl.load(den_ptr + i, mask=i < n_den, other=0.0)
        total_den = tl.sum(den, axis=0)
        result = tl.where(total_den == 0.0, float("nan"), result / total_den)
    tl.store(out_ptr, result.to(out_ptr.dtype.element_ty))


@triton.jit
def _ce_backward_kernel(g_ptr, x_ptr, t_ptr, w_ptr, wsum_ptr, lse_ptr, ls_ptr, dx_ptr, dt_ptr, N,
                        C, sx_n, sx_c, s_t, s_tc, s_w, s_g, sd_n, sd_c, se_n, se_c, ignore_index,
                        eps, g_scale, PROBS: tl.constexpr, NLL: tl.constexpr,
                        HAS_W: tl.constexpr, SMOOTH: tl.constexpr, PER_ROW: tl.constexpr,
                        NEED_X: tl.constexpr, NEED_T: tl.constexpr, ONLINE: tl.constexpr,
                        ROWS: tl.constexpr, BLOCK_C: tl.constexpr, I64: tl.constexpr):
    """Per row i with g_i = dloss/dloss_i (0 on ignored rows):
    class indices: dx[i, c] = (p - [c == t_i]) (1 - eps) w_t g_i + (p W - w_c) eps / C g_i
    (p = exp(x[i, c] - lse_i), W = sum(w)); NLL: dx[i, c] = -w_t g_i at c = t_i, else 0;
    PROBS: dx[i, c] = (p sum_k(w_k q_ik) - w_c q_ic) g_i and dt[i, c] = -w_c (1 - eps) log_p g_i
    with log_p = (x[i, c] - m_i) - log(s_i) and p = exp(log_p).

    g_ptr: [N] (stride s_g) when PER_ROW ("none"), else [1]; g = g_ptr * g_scale (for "mean" the
    caller divided by the denominator already, or passes g_scale = 1 / N). x_ptr: [N, C]
    (sx_n, sx_c; not read for NLL); t_ptr: [N] int64 (s_t) or PROBS [N, C] (s_t, s_tc); w_ptr:
    [C] (s_w) and wsum_ptr: [1] fp32 sum(w) when HAS_W; lse_ptr: [N] fp32 lse_i, or m_i for PROBS
    with log(s_i) at ls_ptr ([N] fp32); dx_ptr: [N, C] (sd_n, sd_c) when NEED_X; dt_ptr: [N, C]
    (se_n, se_c) when NEED_T (PROBS only).
    """
    rows, ok = _ce_rows(N, ROWS, I64)
    if PER_ROW:
        g = tl.load(g_ptr + rows * s_g, mask=ok, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([ROWS], tl.float32) + tl.load(g_ptr).to(tl.float32)
    g = g * g_scale
    x_row = x_ptr + (rows * sx_n)[:, None]
    dx_row = dx_ptr + (rows * sd_n)[:, None]
    cols = tl.arange(0, BLOCK_C)
    if PROBS:
        g = tl.where(ok, g, 0.0)
        m = tl.load(lse_ptr + rows, mask=ok, other=0.0)
        log_s = tl.load(ls_ptr + rows, mask=ok, other=0.0)
        t_row = t_ptr + (rows * s_t)[:, None]
        dt_row = dt_ptr + (rows * se_n)[:, None]
        total = tl.zeros([ROWS], tl.float32)  # sum_c w_c q_c
        if NEED_X:
            for start in range(0, C, BLOCK_C):
                total += _ce_weighted_target_sum(t_row, w_ptr, start + cols, ok, C, s_tc, s_w,
                                                 eps, HAS_W, SMOOTH)
        if ONLINE:
            for start in range(0, C, BLOCK_C):
                _ce_probs_grad_block(x_row, t_row, dx_row, dt_row, w_ptr, start + cols, ok, C,
                                     sx_c, s_tc, sd_c, se_c, s_w, m, log_s, total, g, eps, HAS_W,
                                     SMOOTH, NEED_X, NEED_T)
        else:
            _ce_probs_grad_block(x_row, t_row, dx_row, dt_row, w_ptr, cols, ok, C, sx_c, s_tc,
                                 sd_c, se_c, s_w, m, log_s, total, g, eps, HAS_W, SMOOTH, NEED_X,
                                 NEED_T)
    else:
        safe, valid, in_range, w_t = _class_targets(t_ptr, w_ptr, rows, ok, s_t, s_w,
                                                    ignore_index, C, HAS_W)
        # selected, not multiplied: a NaN g (mean over nothing) meets ignored rows only
        g = tl.where(valid, g, 0.0)
        nll_g = ((1.0 - eps) * w_t) * g
        smooth_g = (eps / C) * g
        if HAS_W:
            w_sum = tl.load(wsum_ptr)
        else:
            w_sum = C * 1.0
        if NLL:
            lse = tl.zeros([ROWS], tl.float32)  # no probabilities
        else:
            lse = tl.load(lse_ptr + rows, mask=ok, other=0.0)
        # class ids compared in 32 bits (-1: no class, for ignored rows)
        target = tl.where(valid & in_range, safe, -1).to(tl.int32)
        if ONLINE:
            for start in range(0, C, BLOCK_C):
                _ce_index_grad_block(x_row, dx_row, w_ptr, start + cols, ok, C, sx_c, sd_c, s_w,
                                     lse, target, nll_g, smooth_g, w_sum, NLL, HAS_W, SMOOTH)
        else:
            _ce_index_grad_block(x_row, dx_row, w_ptr, cols, ok, C, sx_c, sd_c, s_w, lse, target,
                                 nll_g, smooth_g, w_sum, NLL, HAS_W, SMOOTH)


@triton.jit
def _ce_index_grad_block(x_row, dx_row, w_ptr, c, ok, C, sx_c, sd_c, s_w, lse, target, nll_g,
                         smooth_g, w_sum, NLL: tl.constexpr, HAS_W: tl.constexpr,
                         SMOOTH: tl.constexpr):
    """One [ROWS, BLOCK_C] block (columns c) of the class-index gradient: the NLL term and the
    smoothing term apart, so that a zero-weight target under a mean over zero weight gives
    torch's NaN (0 * inf) in every column."""
    in_c = c < C
    mask = ok[:, None] & in_c[None, :]
    hot = c[None, :] == target[:, None]
    if NLL:
        dx = tl.where(hot, -nll_g[:, None], 0.0)
    else:
        x = tl.load(x_row + c[None, :] * sx_c, mask=mask, other=0.0).to(tl.float32)
        p = tl.exp(x - lse[:, None])
        dx = (p - tl.where(hot, 1.0, 0.0)) * nll_g[:, None]
        if SMOOTH:
            if HAS_W:
                w = tl.load(w_ptr + c * s_w, mask=in_c, other=0.0).to(tl.float32)[None, :]
            else:
                w = 1.0
            dx += (p * w_sum - w) * smooth_g[:, None]
    tl.store(dx_row + c[None, :] * sd_c, dx.to(dx_row.dtype.element_ty), mask=mask)


@triton.jit
def _ce_weighted_target_sum(t_row, w_ptr, c, ok, C, s_tc, s_w, eps, HAS_W: tl.constexpr,
                            SMOOTH: tl.constexpr):
    """Per row: sum over columns c of w_c q_c (q: the smoothed target probabilities)."""
    in_c = c < C
    mask = ok[:, None] & in_c[None, :]
    q = tl.load(t_row + c[None, :] * s_tc, mask=mask, other=0.0).to(tl.float32)
    if SMOOTH:
        q = q * (1.0 - eps) + eps / C
    if HAS_W:
        q = q * tl.load(w_ptr + c * s_w, mask=in_c, other=0.0).to(tl.float32)[None, :]
    return tl.sum(tl.where(mask, q, 0.0), axis=1)


@triton.jit
def _ce_probs_grad_block(x_row, t_row, dx_row, dt_row, w_ptr, c, ok, C, sx_c, s_tc, sd_c, se_c,
                         s_w, m, log_s, total, g, eps, HAS_W: tl.constexpr, SMOOTH: tl.constexpr,
                         NEED_X: tl.constexpr, NEED_T: tl.constexpr):
    """One [ROWS, BLOCK_C] block (columns c) of the probability-target gradients."""
    in_c = c < C
    mask = ok[:, None] & in_c[None, :]
    x = tl.load(x_row + c[None, :] * sx_c, mask=mask, other=0.0).to(tl.float32)
    log_p = (x - m[:, None]) - log_s[:, None]
    if HAS_W:
        w = tl.load(w_ptr + c * s_w, mask=in_c, other=0.0).to(tl.float32)[None, :]
    else:
        w = 1.0
    if NEED_X:
        q = tl.load(t_row + c[None, :] * s_tc, mask=mask, other=0.0).to(tl.float32)
        if SMOOTH:
            q = q * (1.0 - eps) + eps / C
        dx = (tl.exp(log_p) * total[:, None] - w * q) * g[:, None]
        tl.store(dx_row + c[None, :] * sd_c, dx.to(dx_row.dtype.element_ty), mask=mask)
    if NEED_T:
        dt = -(w * (1.0 - eps)) * log_p * g[:, None]
        tl.store(dt_row + c[None, :] * se_c, dt.to(dt_row.dtype.element_ty), mask=mask)


def _ce_shape(C: int) -> tuple[int, int, bool]:
    block = min(max(triton.next_power_of_2(C), CE_MIN_BLOCK), CE_MAX_BLOCK)
    return CE_TILE // block, block, C > block


def _span(t: torch.Tensor) -> int:
    return sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()))


def _ce_i64(*tensors: torch.Tensor) -> bool:
    """Whether offsets into any of ``tensors`` (logits, target, per-row loss / grad, dx: every
    tensor the row kernels index by row) may pass int32."""
    return max(_span(t) for t in tensors) + CE_TILE > INT32_LIMIT


def _check_rows(op: str, logits: torch.Tensor, target: torch.Tensor, reduction: str,
                weight: torch.Tensor | None, probs: bool = False) -> None:
    _pointwise.check_dtypes(op, logits=logits, weight=weight,
                            target=target if probs else None)
    expected = tuple(logits.shape) if probs else tuple(logits.shape[:1])
    if logits.dim() != 2 or tuple(target.shape) != expected:
        raise ValueError(f"{op}: logits {tuple(logits.shape)} and target "
                         f"{tuple(target.shape)} are not [N, C] and {'[N, C]' if probs else '[N]'}")
    if weight is not None and tuple(weight.shape) != tuple(logits.shape[1:]):
        raise ValueError(f"{op}: weight {tuple(weight.shape)} is not [C] for logits "
                         f"{tuple(logits.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _weight_args(weight: torch.Tensor | None, like: torch.Tensor):
    """(pointer, stride, HAS_W) of an optional class-weight vector (a dummy pointer without)."""
    if weight is None:
        return like, 0, False
    return weight, weight.stride(0), True


def _finish(out: torch.Tensor, values: torch.Tensor, n_values: int, den: torch.Tensor,
            n_den: int, mean: bool) -> torch.Tensor:
    wrap_triton(_ce_finish_kernel)[(1,)](out, values, den, n_values, n_den, MEAN=mean,
                                         BLOCK=_pointwise.SUM_BLOCK, num_warps=NUM_WARPS)
    return out


def _reduced(loss: torch.Tensor, den: torch.Tensor, n_prog: int, reduction: str,
             dtype: torch.dtype) -> torch.Tensor:
    """The 0-d loss from the per-program partial sums of the losses and the denominators."""
    out = alloc.empty((), dtype=dtype, device=loss.device)
    return _finish(out, loss, n_prog, den, n_prog, reduction == "mean")


def _ce_forward(op, logits, target, weight, label_smoothing, ignore_index, reduction, probs):
    _check_rows(op, logits, target, reduction, weight, probs)
    N, C = logits.shape
    rows, block, online = _ce_shape(C)
    n_prog = triton.cdiv(N, rows)
    dev = logits.device
    reduce = reduction != "none"
    lse = alloc.empty((N,), dtype=torch.float32, device=dev)
    log_s = alloc.empty((N,), dtype=torch.float32, device=dev) if probs else lse
    if reduce:
        loss = alloc.empty((n_prog,), dtype=torch.float32, device=dev)
        den = alloc.empty((n_prog,), dtype=torch.float32, device=dev)
    else:
        loss = alloc.empty((N,), dtype=logits.dtype, device=dev)
        den = lse
    w, s_w, has_w = _weight_args(weight, logits)
    if N:
        wrap_triton(_ce_forward_kernel)[(n_prog,)](
            logits, target, w, loss, lse, log_s, den, N, C, logits.stride(0), logits.stride(1),
            target.stride(0), target.stride(1) if probs else 0, s_w, loss.stride(0),
            int(ignore_index), float(label_smoothing), PROBS=probs, HAS_W=has_w,
            SMOOTH=label_smoothing != 0.0, REDUCE=reduce, ONLINE=online, ROWS=rows,
            BLOCK_C=block, I64=_ce_i64(logits, target, loss, lse),
            num_warps=_ce_forward_warps(rows, block, probs, label_smoothing != 0.0,
                                        logits.dtype == torch.float32))
    if reduce:
        loss = _reduced(loss, den, n_prog if N else 0, reduction, logits.dtype)
    return (loss, lse, log_s) if probs else (loss, lse)


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                          reduction: str, weight: torch.Tensor | None = None,
                          label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, C], target [N] int64, weight [C] or None -> (loss: 0-d or [N], lse [N] fp32)."""
    return _ce_forward("cross_entropy", logits, target, weight, label_smoothing, ignore_index,
                       reduction, False)


def cross_entropy_probs_forward(logits: torch.Tensor, target: torch.Tensor, reduction: str,
                                weight: torch.Tensor | None = None,
                                label_smoothing: float = 0.0) -> tuple:
    """logits, target [N, C] (class probabilities), weight [C] or None -> (loss, row max [N],
    log of the row's sum of exp(x - max) [N]), both fp32."""
    return _ce_forward("cross_entropy", logits, target, weight, label_smoothing, 0, reduction,
                       True)


def _mean_grad(grad_loss: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
               ignore_index: int, C: int) -> torch.Tensor:
    """[1] fp32: grad_loss / the summed weights of the non-ignored targets (their count without
    weights): the gradient of every row of a class-index mean."""
    N = target.shape[0]
    n_prog = triton.cdiv(N, NLL_ROWS)
    den = alloc.empty((max(n_prog, 1),), dtype=torch.float32, device=target.device)
    w, s_w, has_w = _weight_args(weight, den)
    if N:
        wrap_triton(_target_weight_kernel)[(n_prog,)](target, w, den, N, C, target.stride(0), s_w,
                                                      int(ignore_index), HAS_W=has_w,
                                                      ROWS=NLL_ROWS, num_warps=NUM_WARPS)
    g = alloc.empty((1,), dtype=torch.float32, device=target.device)
    return _finish(g, grad_loss, 1, den, n_prog, True)


def _ce_backward(op, grad_loss, logits, target, lse, weight, label_smoothing, ignore_index,
                 reduction, needs, probs=False, nll=False, log_s=None):
    _check_rows(op, logits, target, reduction, weight, probs)
    need_x, need_t = (tuple(needs) + (False, False))[:2]
    dx = alloc.empty_like(logits, memory_format=torch.preserve_format) if need_x else None
    dt = alloc.empty_like(target, memory_format=torch.preserve_format) if need_t else None
    N, C = logits.shape
    if N == 0 or C == 0 or not (need_x or need_t):
        return dx, dt
    rows, block, online = _ce_shape(C)
    n_prog = triton.cdiv(N, rows)
    g, g_scale = grad_loss, 1.0
    if reduction == "mean":
        if probs:
            g_scale = 1.0 / N
        else:
            g = _mean_grad(grad_loss, target, weight, ignore_index, C)
    smooth = label_smoothing != 0.0
    w, s_w, has_w = _weight_args(weight, logits)
    w_sum = lse
    if has_w and smooth and not probs:
        w_sum = _finish(alloc.empty((1,), dtype=torch.float32, device=logits.device),
                        weight.contiguous(), C, lse, 0, False)
    per_row = reduction == "none"
    out_x, out_t = (dx if need_x else logits), (dt if need_t else logits)
    wrap_triton(_ce_backward_kernel)[(n_prog,)](
        g, logits, target, w, w_sum, lse, lse if log_s is None else log_s, out_x, out_t, N, C,
        logits.stride(0), logits.stride(1),
        target.stride(0), target.stride(1) if probs else 0, s_w,
        grad_loss.stride(0) if per_row else 0, out_x.stride(0), out_x.stride(1),
        out_t.stride(0), out_t.stride(1), int(ignore_index),
        float(label_smoothing), g_scale, PROBS=probs, NLL=nll, HAS_W=has_w, SMOOTH=smooth,
        PER_ROW=per_row, NEED_X=need_x, NEED_T=need_t, ONLINE=online, ROWS=rows, BLOCK_C=block,
        I64=_ce_i64(logits, target, out_x, out_t, lse, grad_loss),
        num_warps=_ce_grad_warps(probs))
    return dx, dt


def cross_entropy_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                           lse: torch.Tensor, ignore_index: int, reduction: str,
                           weight: torch.Tensor | None = None,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """grad_logits [N, C] (logits' layout), 0 on ignored rows (NaN there where the row is NaN)."""
    return _ce_backward("cross_entropy", grad_loss, logits, target, lse, weight,
                        label_smoothing, ignore_index, reduction, (True, False))[0]


def cross_entropy_probs_backward(grad_loss: torch.Tensor, logits: torch.Tensor,
                                 target: torch.Tensor, row_max: torch.Tensor,
                                 log_sum: torch.Tensor, reduction: str, needs,
                                 weight: torch.Tensor | None = None,
                                 label_smoothing: float = 0.0) -> tuple:
    """-> (grad_logits, grad_target), each None unless ``needs`` it."""
    return _ce_backward("cross_entropy", grad_loss, logits, target, row_max, weight,
                        label_smoothing, 0, reduction, needs, probs=True, log_s=log_sum)


def nll_loss_forward(log_probs: torch.Tensor, target: torch.Tensor, ignore_index: int,
                     reduction: str, weight: torch.Tensor | None = None) -> torch.Tensor:
    """log_probs [N, C], target [N] int64, weight [C] or None -> loss (0-d or [N])."""
    _check_rows("nll_loss", log_probs, target, reduction, weight)
    N, C = log_probs.shape
    n_prog = triton.cdiv(N, NLL_ROWS)
    dev = log_probs.device
    reduce = reduction != "none"
    if reduce:
        loss = alloc.empty((max(n_prog, 1),), dtype=torch.float32, device=dev)
        den = alloc.empty((max(n_prog, 1),), dtype=torch.float32, device=dev)
    else:
        loss = den = alloc.empty((N,), dtype=log_probs.dtype, device=dev)
    w, s_w, has_w = _weight_args(weight, log_probs)
    if N:
        wrap_triton(_nll_forward_kernel)[(n_prog,)](
            log_probs, target, w, loss, den, N, C, log_probs.stride(0), log_probs.stride(1),
            target.stride(0), s_w, loss.stride(0), int(ignore_index), HAS_W=has_w,
            REDUCE=reduce, ROWS=NLL_ROWS, I64=_ce_i64(log_probs, target, loss),
            num_warps=NUM_WARPS)
    if not reduce:
        return loss
    return _reduced(loss, den, n_prog, reduction, log_probs.dtype)


def nll_loss_backward(grad_loss: torch.Tensor, log_probs: torch.Tensor, target: torch.Tensor,
                      ignore_index: int, reduction: str,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """grad [N, C] (log_probs' layout): -w[t_i] g_i at (i, t_i), 0 elsewhere."""
    return _ce_backward("nll_loss", grad_loss, log_probs, target, log_probs, weight, 0.0,
                        ignore_index, reduction, (True, False), nll=True)[0]


# --- BCE with logits, BCE and MSE: elementwise, with an optional reduction ----------------------

BCE_WITH_LOGITS, MSE, BCE = 0, 1, 2  # KIND of the elementwise loss kernels


@triton.jit
def _log1p(e):
    """log(1 + e) for e >= -1, accurate where 1 + e rounds (log(1 + e) would give 0 for
    |e| < 2^-24, i.e. |x| > 16.6 in BCE): log(u) corrected by the rounding error of u = 1 + e,
    ((u - 1) - e) / u (Goldberg), and -inf at e = -1; plain tl ops, so the interpreter runs the
    same formula."""
    u = 1.0 + e
    return tl.where(u == 0.0, float("-inf"), tl.log(u) - ((u - 1.0) - e) / u)


@triton.jit
def _log_sigmoid(x):
    """min(x, 0) - log1p(exp(-|x|)): no overflow for any |x|."""
    return tl.minimum(x, 0.0) - _log1p(tl.exp(-tl.abs(x)))


@triton.jit
def _clamped_log(v):
    """max(v, -100) with NaN kept (tl.maximum may drop it)."""
    return tl.where(v < BCE_LOG_FLOOR, BCE_LOG_FLOOR, v)


@triton.jit
def _in_unit(v):
    return (v >= 0.0) & (v <= 1.0)


@triton.jit
def _pointwise_loss_kernel(x_ptr, t_ptr, w_ptr, pw_ptr, out_ptr, numel, s1, s2, s3, s4, s5,
                           x0, x1, x2, x3, x4, x5, t0, t1, t2, t3, t4, t5,
                           w0, w1, w2, w3, w4, w5, p0, p1, p2, p3, p4, p5,
                           o0, o1, o2, o3, o4, o5,
                           KIND: tl.constexpr, HAS_W: tl.constexpr, HAS_PW: tl.constexpr,
                           REDUCE: tl.constexpr, FLAT: tl.constexpr, I64: tl.constexpr,
                           BLOCK: tl.constexpr):
    """Elementwise loss l(x, t) times weight (HAS_W): BCE-with-logits (KIND 0; with pos_weight
    (HAS_PW) torch's (1 - t) x - ((pw - 1) t + 1) log_sigmoid(x)), squared error (KIND 1) or BCE
    on probabilities (KIND 2).

    x_ptr, t_ptr, w_ptr, pw_ptr: one logical shape (6-d sizes (., s1..s5), strides x*, t*, w*,
    p*; broadcast weights have 0 strides); REDUCE: out_ptr is [n_programs] fp32 and gets this
    program's sum; else out_ptr has the same shape (strides o*). FLAT: every tensor walked shares
    one dense layout.
    """
    i = _pointwise.block_indices(BLOCK, I64)
    mask = i < numel
    off_x = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, x0, x1, x2, x3, x4, x5)
    off_t = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, t0, t1, t2, t3, t4, t5)
    x = tl.load(x_ptr + off_x, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + off_t, mask=mask, other=0.0).to(tl.float32)
    if KIND == 0:  # torch's (1 - t) x - l log_sigmoid(x) term for term, l = (pw - 1) t + 1 (inf
        # and NaN land where torch's do), log1p added last (tiny losses keep their precision); no
        # overflow for any x
        if HAS_PW:  # torch's (1 - t) x - l log_sigmoid(x) exactly (an infinite l meets
            # log_sigmoid(x) whole, as in torch)
            off_p = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, p0, p1, p2, p3, p4, p5)
            pw = tl.load(pw_ptr + off_p, mask=mask, other=0.0).to(tl.float32)
            loss = (1.0 - t) * x - ((pw - 1.0) * t + 1.0) * _log_sigmoid(x)
        else:
            loss = ((1.0 - t) * x - tl.minimum(x, 0.0)) + _log1p(tl.exp(-tl.abs(x)))
    elif KIND == 1:
        loss = (x - t) * (x - t)
    else:  # torch's (t - 1) max(log1p(-p), -100) - t max(log(p), -100); NaN outside [0, 1]
        loss = (t - 1.0) * _clamped_log(_log1p(-x)) - t * _clamped_log(tl.log(x))
        loss = tl.where(_in_unit(x) & _in_unit(t), loss, float("nan"))
    if HAS_W:
        off_w = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, w0, w1, w2, w3, w4, w5)
        loss = loss * tl.load(w_ptr + off_w, mask=mask, other=0.0).to(tl.float32)
    if REDUCE:
        tl.store(out_ptr + tl.program_id(0), tl.sum(tl.where(mask, loss, 0.0), axis=0))
    else:
        off_o = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, o0, o1, o2, o3, o4, o5)
        tl.store(out_ptr + off_o, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _pointwise_loss_grad_kernel(g_ptr, x_ptr, t_ptr, w_ptr, pw_ptr, gx_ptr, gt_ptr, numel, scale,
                                s1, s2, s3, s4, s5,
                                g0, g1, g2, g3, g4, g5, x0, x1, x2, x3, x4, x5,
                                t0, t1, t2, t3, t4, t5, w0, w1, w2, w3, w4, w5,
                                p0, p1, p2, p3, p4, p5, a0, a1, a2, a3, a4, a5,
                                b0, b1, b2, b3, b4, b5,
                                KIND: tl.constexpr, HAS_W: tl.constexpr, HAS_PW: tl.constexpr,
                                G_SCALAR: tl.constexpr, NEED_X: tl.constexpr,
                                NEED_T: tl.constexpr, FLAT: tl.constexpr, I64: tl.constexpr,
                                BLOCK: tl.constexpr):
    """Gradients of l(x, t) times g (times weight when HAS_W):
    BCE-with-logits (KIND 0): dx = (sigmoid(x) - t) g, dt = -x g; with pos_weight (HAS_PW):
    dx = ((pw t + 1 - t) sigmoid(x) - pw t) g, dt = (log_sigmoid(-x) - pw log_sigmoid(x)) g;
    MSE (KIND 1): dx = 2 (x - t) g, dt = -dx; BCE (KIND 2): dx = (x - t) / max((1 - x) x, 1e-12) g,
    dt = -log(x / (1 - x)) g, NaN outside [0, 1].

    g_ptr: 0-d (G_SCALAR: g = g_ptr[0] * scale) or x's shape (strides g*); x_ptr, t_ptr, w_ptr,
    pw_ptr, gx_ptr, gt_ptr: one logical shape (6-d sizes (., s1..s5); strides x*, t*, w*, p*, a*
    for gx, b* for gt).
    """
    i = _pointwise.block_indices(BLOCK, I64)
    mask = i < numel
    off_x = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, x0, x1, x2, x3, x4, x5)
    off_t = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, t0, t1, t2, t3, t4, t5)
    if G_SCALAR:
        g = tl.load(g_ptr).to(tl.float32) * scale
    else:
        off_g = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, g0, g1, g2, g3, g4, g5)
        g = tl.load(g_ptr + off_g, mask=mask, other=0.0).to(tl.float32)
    if HAS_W:
        off_w = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, w0, w1, w2, w3, w4, w5)
        g = g * tl.load(w_ptr + off_w, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + off_x, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + off_t, mask=mask, other=0.0).to(tl.float32)
    if KIND == 0:
        e = tl.exp(-tl.abs(x))
        sig = tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if HAS_PW:
            off_p = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, p0, p1, p2, p3, p4, p5)
            pt = tl.load(pw_ptr + off_p, mask=mask, other=0.0).to(tl.float32)
            dx = ((pt * t + 1.0 - t) * sig - pt * t) * g
            dt = (_log_sigmoid(-x) - pt * _log_sigmoid(x)) * g
        else:
            dx = (sig - t) * g
            dt = -x * g
    elif KIND == 1:
        dx = 2.0 * (x - t) * g
        dt = -dx
    else:
        ok = _in_unit(x) & _in_unit(t)
        den = (1.0 - x) * x
        dx = tl.where(ok, (x - t) / tl.where(den < BCE_EPSILON, BCE_EPSILON, den) * g,
                      float("nan"))
        dt = tl.where(ok, -tl.log(x / (1.0 - x)) * g, float("nan"))
    if NEED_X:
        off_a = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, a0, a1, a2, a3, a4, a5)
        tl.store(gx_ptr + off_a, dx.to(gx_ptr.dtype.element_ty), mask=mask)
    if NEED_T:
        off_b = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, b0, b1, b2, b3, b4, b5)
        tl.store(gt_ptr + off_b, dt.to(gt_ptr.dtype.element_ty), mask=mask)


def _check_pair(op: str, x: torch.Tensor, target: torch.Tensor, reduction: str,
                weight: torch.Tensor | None, pos_weight: torch.Tensor | None,
                kind: int) -> list[torch.Tensor | None]:
    """The weights expanded to x's shape (views, 0 strides where broadcast)."""
    _pointwise.check_dtypes(op, input=x, target=target, weight=weight, pos_weight=pos_weight)
    if x.shape != target.shape:
        raise ValueError(f"{op}: input {tuple(x.shape)} and target {tuple(target.shape)} differ "
                         "in shape")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if kind == MSE and weight is not None or kind != BCE_WITH_LOGITS and pos_weight is not None:
        raise ValueError(f"{op} takes no {'weight' if kind == MSE else 'pos_weight'}")
    expanded = []
    for name, w in (("weight", weight), ("pos_weight", pos_weight)):
        if w is not None:
            if torch.broadcast_shapes(w.shape, x.shape) != x.shape:
                raise ValueError(f"{op}: {name} {tuple(w.shape)} does not broadcast to the input "
                                 f"shape {tuple(x.shape)}")
            w = w.expand(x.shape)
        expanded.append(w)
    return expanded


def _walk(tensors: list) -> tuple:
    """The walk plan of the present tensors, and each one's 6 strides (zeros when absent)."""
    present = [t for t in tensors if t is not None]
    plan = _pointwise.plan(present)
    strides = iter(plan.strides)
    zeros = [0] * _pointwise.MAX_DIMS
    return plan, [next(strides) if t is not None else zeros for t in tensors]


def _loss_forward(kind: int, op: str, x: torch.Tensor, target: torch.Tensor, reduction: str,
                  weight: torch.Tensor | None = None,
                  pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    w, pw = _check_pair(op, x, target, reduction, weight, pos_weight, kind)
    n = x.numel()
    reduce = reduction != "none"
    grid = (triton.cdiv(n, EW_BLOCK),)
    if reduce:
        out = alloc.empty((grid[0],), dtype=torch.float32, device=x.device)
        plan, strides = _walk([x, target, w, pw, None])
    else:
        out = alloc.empty_like(x, memory_format=torch.preserve_format)
        plan, strides = _walk([x, target, w, pw, out])
    if n:
        wrap_triton(_pointwise_loss_kernel)[grid](
            x, target, w if w is not None else x, pw if pw is not None else x, out, n,
            *plan.sizes[1:], *(s for st in strides for s in st), KIND=kind, HAS_W=w is not None,
            HAS_PW=pw is not None, REDUCE=reduce, FLAT=plan.flat, I64=plan.i64, BLOCK=EW_BLOCK,
            num_warps=NUM_WARPS)
    if not reduce:
        return out
    scale = (1.0 / n if n else float("nan")) if reduction == "mean" else 1.0
    return _pointwise.sum_partials(out, x.dtype, scale)


def _loss_backward(kind: int, op: str, grad_loss: torch.Tensor, x: torch.Tensor,
                   target: torch.Tensor, reduction: str, needs,
                   weight: torch.Tensor | None = None,
                   pos_weight: torch.Tensor | None = None) -> tuple:
    w, pw = _check_pair(op, x, target, reduction, weight, pos_weight, kind)
    need_x, need_t = (tuple(needs) + (False, False))[:2]
    gx = alloc.empty_like(x, memory_format=torch.preserve_format) if need_x else None
    gt = alloc.empty_like(target, memory_format=torch.preserve_format) if need_t else None
    n = x.numel()
    if n == 0 or not (need_x or need_t):
        return gx, gt
    g_scalar = reduction != "none"
    plan, strides = _walk([None if g_scalar else grad_loss, x, target, w, pw, gx, gt])
    scale = 1.0 / n if reduction == "mean" else 1.0
    wrap_triton(_pointwise_loss_grad_kernel)[(triton.cdiv(n, EW_BLOCK),)](
        grad_loss, x, target, w if w is not None else x, pw if pw is not None else x,
        gx if gx is not None else x, gt if gt is not None else x, n, scale, *plan.sizes[1:],
        *(s for st in strides for s in st), KIND=kind, HAS_W=w is not None,
        HAS_PW=pw is not None, G_SCALAR=g_scalar, NEED_X=need_x, NEED_T=need_t, FLAT=plan.flat,
        I64=plan.i64, BLOCK=EW_BLOCK, num_warps=NUM_WARPS)
    return gx, gt


def bce_with_logits_forward(x: torch.Tensor, target: torch.Tensor, reduction: str,
                            weight: torch.Tensor | None = None,
                            pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """((1 - t) x - min(x, 0)) + log1p(exp(-|x|)), with pos_weight
    (1 - t) x - ((pos_weight - 1) t + 1) log_sigmoid(x), times weight; elementwise or reduced
    ("mean", "sum"); weight, pos_weight broadcast to x."""
    return _loss_forward(BCE_WITH_LOGITS, "binary_cross_entropy_with_logits", x, target,
                         reduction, weight, pos_weight)


def bce_with_logits_backward(grad_loss: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                             reduction: str, needs, weight: torch.Tensor | None = None,
                             pos_weight: torch.Tensor | None = None) -> tuple:
    return _loss_backward(BCE_WITH_LOGITS, "binary_cross_entropy_with_logits", grad_loss, x,
                          target, reduction, needs, weight, pos_weight)


def bce_forward(p: torch.Tensor, target: torch.Tensor, reduction: str,
                weight: torch.Tensor | None = None,
                pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(t - 1) max(log1p(-p), -100) - t max(log(p), -100), times weight; NaN outside [0, 1]."""
    return _loss_forward(BCE, "binary_cross_entropy", p, target, reduction, weight, pos_weight)


def bce_backward(grad_loss: torch.Tensor, p: torch.Tensor, target: torch.Tensor,
                 reduction: str, needs, weight: torch.Tensor | None = None,
                 pos_weight: torch.Tensor | None = None) -> tuple:
    return _loss_backward(BCE, "binary_cross_entropy", grad_loss, p, target, reduction, needs,
                          weight, pos_weight)


def mse_loss_forward(x: torch.Tensor, target: torch.Tensor, reduction: str,
                     weight: torch.Tensor | None = None,
                     pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """(x - t)^2, elementwise or reduced ("mean", "sum")."""
    return _loss_forward(MSE, "mse_loss", x, target, reduction, weight, pos_weight)


def mse_loss_backward(grad_loss: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                      reduction: str, needs, weight: torch.Tensor | None = None,
                      pos_weight: torch.Tensor | None = None) -> tuple:
    return _loss_backward(MSE, "mse_loss", grad_loss, x, target, reduction, needs, weight,
                          pos_weight)


def _ce_aot(dtype: str, shapes) -> list[AOTConfig]:
    """Every cross-entropy / NLL row-kernel configuration of one logits dtype: forward (class
    indices or probabilities, with or without weights and smoothing, reduced or per row),
    backward (the same, plus NLL and the probability targets' needs), the NLL gather."""
    ptr = f"*{dtype}"
    configs = []
    options = [(w, s) for w in (False, True) for s in (False, True)]
    for rows, block, online in shapes:
        tag = f"{rows}x{block}{' online' if online else ''}"
        for probs in (False, True):
            target = ptr if probs else "*i64"
            for has_w, smooth in options:
                opt = f"{'probs' if probs else 'index'}{' w' if has_w else ''}" \
                      f"{' smooth' if smooth else ''}"
                for reduce in (True, False):
                    sig = {n: "i32" for n in _ce_forward_kernel.arg_names}
                    sig.update(x_ptr=ptr, t_ptr=target, w_ptr=ptr,
                               loss_ptr="*fp32" if reduce else ptr, lse_ptr="*fp32",
                               ls_ptr="*fp32", den_ptr="*fp32", eps="fp32")
                    sig.update({k: "constexpr" for k in ("PROBS", "HAS_W", "SMOOTH", "REDUCE",
                                                         "ONLINE", "ROWS", "BLOCK_C", "I64")})
                    configs.append(AOTConfig(
                        _ce_forward_kernel, sig,
                        dict(PROBS=probs, HAS_W=has_w, SMOOTH=smooth, REDUCE=reduce,
                             ONLINE=online, ROWS=rows, BLOCK_C=block, I64=False),
                        num_warps=_ce_forward_warps(rows, block, probs, smooth,
                                                    dtype == "fp32"),
                        num_stages=1,
                        dtype=dtype, label=f"ce fwd {opt} {'reduce' if reduce else 'none'} {tag}"))
                needs = [(True, True), (True, False), (False, True)] if probs else [(True, False)]
                kinds = [False, True] if not probs and not smooth else [False]
                for nll in kinds:
                    for need_x, need_t in needs:
                        for per_row in (False, True):
                            sig = {n: "i32" for n in _ce_backward_kernel.arg_names}
                            sig.update(g_ptr=ptr if per_row else "*fp32", x_ptr=ptr,
                                       t_ptr=target, w_ptr=ptr,
                                       wsum_ptr=ptr if nll else "*fp32",
                                       lse_ptr=ptr if nll else "*fp32",
                                       ls_ptr=ptr if nll else "*fp32", dx_ptr=ptr, dt_ptr=ptr,
                                       eps="fp32", g_scale="fp32")
                            sig.update({k: "constexpr" for k in (
                                "PROBS", "NLL", "HAS_W", "SMOOTH", "PER_ROW", "NEED_X",
                                "NEED_T", "ONLINE", "ROWS", "BLOCK_C", "I64")})
                            name = "nll" if nll else "ce"
                            configs.append(AOTConfig(
                                _ce_backward_kernel, sig,
                                dict(PROBS=probs, NLL=nll, HAS_W=has_w, SMOOTH=smooth,
                                     PER_ROW=per_row, NEED_X=need_x, NEED_T=need_t,
                                     ONLINE=online, ROWS=rows, BLOCK_C=block, I64=False),
                                num_warps=_ce_grad_warps(probs), num_stages=1,
                                dtype=dtype,
                                label=f"{name} bwd {opt}{' dx' if need_x else ''}"
                                      f"{' dt' if need_t else ''} "
                                      f"{'none' if per_row else 'reduced'} {tag}"))
    for has_w in (False, True):
        for reduce in (True, False):
            sig = {n: "i32" for n in _nll_forward_kernel.arg_names}
            sig.update(x_ptr=ptr, t_ptr="*i64", w_ptr=ptr, loss_ptr="*fp32" if reduce else ptr,
                       den_ptr="*fp32" if reduce else ptr, HAS_W="constexpr",
                       REDUCE="constexpr", ROWS="constexpr", I64="constexpr")
            configs.append(AOTConfig(_nll_forward_kernel, sig,
                                     dict(HAS_W=has_w, REDUCE=reduce, ROWS=NLL_ROWS, I64=False),
                                     num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                                     label=f"nll fwd{' w' if has_w else ''} "
                                           f"{'reduce' if reduce else 'none'}"))
        sig = {n: "i32" for n in _target_weight_kernel.arg_names}
        sig.update(t_ptr="*i64", w_ptr=ptr, den_ptr="*fp32", HAS_W="constexpr",
                   ROWS="constexpr")
        configs.append(AOTConfig(_target_weight_kernel, sig, dict(HAS_W=has_w, ROWS=NLL_ROWS),
                                 num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                                 label=f"target weights{' w' if has_w else ''}"))
    finish_sig = {"out_ptr": "", "val_ptr": "", "den_ptr": "*fp32", "n_val": "i32",
                  "n_den": "i32", "MEAN": "constexpr", "BLOCK": "constexpr"}
    for mean in (False, True):  # the loss reduction: fp32 partials -> the loss dtype
        configs.append(AOTConfig(_ce_finish_kernel, dict(finish_sig, out_ptr=ptr, val_ptr="*fp32"),
                                 dict(MEAN=mean, BLOCK=_pointwise.SUM_BLOCK), num_warps=NUM_WARPS,
                                 num_stages=1, dtype=dtype,
                                 label=f"ce finish {'mean' if mean else 'sum'}"))
    # the mean's backward (grad_loss / denominator) and the weights' sum, into fp32
    for mean, label in ((True, "ce mean grad scale"), (False, "ce weight sum")):
        configs.append(AOTConfig(_ce_finish_kernel, dict(finish_sig, out_ptr="*fp32", val_ptr=ptr),
                                 dict(MEAN=mean, BLOCK=_pointwise.SUM_BLOCK), num_warps=NUM_WARPS,
                                 num_stages=1, dtype=dtype, label=label))
    return configs


def _pointwise_aot(dtype: str) -> list[AOTConfig]:
    ptr = f"*{dtype}"
    configs = []
    variants = [(BCE_WITH_LOGITS, "bce_with_logits", [(False, False), (True, False),
                                                      (False, True), (True, True)]),
                (MSE, "mse", [(False, False)]), (BCE, "bce", [(False, False), (True, False)])]
    for kind, name, options in variants:
        for has_w, has_pw in options:
            opt = f"{' w' if has_w else ''}{' pw' if has_pw else ''}"
            for flat in (True, False):
                layout = "flat" if flat else "strided"
                for reduce in (False, True):
                    sig = {n: "i32" for n in _pointwise_loss_kernel.arg_names}
                    sig.update(x_ptr=ptr, t_ptr=ptr, w_ptr=ptr, pw_ptr=ptr,
                               out_ptr="*fp32" if reduce else ptr)
                    sig.update({k: "constexpr" for k in ("KIND", "HAS_W", "HAS_PW", "REDUCE",
                                                         "FLAT", "I64", "BLOCK")})
                    configs.append(AOTConfig(
                        _pointwise_loss_kernel, sig,
                        dict(KIND=kind, HAS_W=has_w, HAS_PW=has_pw, REDUCE=reduce, FLAT=flat,
                             I64=False, BLOCK=EW_BLOCK),
                        num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                        label=f"{name}{opt} fwd {'reduce' if reduce else 'none'} {layout}"))
                for g_scalar in (False, True):
                    sig = {n: "i32" for n in _pointwise_loss_grad_kernel.arg_names}
                    sig.update(g_ptr=ptr, x_ptr=ptr, t_ptr=ptr, w_ptr=ptr, pw_ptr=ptr,
                               gx_ptr=ptr, gt_ptr=ptr, scale="fp32")
                    sig.update({k: "constexpr" for k in ("KIND", "HAS_W", "HAS_PW", "G_SCALAR",
                                                         "NEED_X", "NEED_T", "FLAT", "I64",
                                                         "BLOCK")})
                    configs.append(AOTConfig(
                        _pointwise_loss_grad_kernel, sig,
                        dict(KIND=kind, HAS_W=has_w, HAS_PW=has_pw, G_SCALAR=g_scalar,
                             NEED_X=True, NEED_T=True, FLAT=flat, I64=False, BLOCK=EW_BLOCK),
                        num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                        label=f"{name}{opt} bwd {'reduced' if g_scalar else 'none'} {layout}"))
    return configs


def aot_configs() -> list[AOTConfig]:
    """Cross-entropy / NLL: every (ROWS, BLOCK_C, ONLINE) of ``_ce_shape`` with every target kind,
    weight, smoothing and reduction; the NLL gather, the weight sums and the finishing kernels;
    BCE-with-logits (with and without weight / pos_weight), BCE (with and without weight) and
    MSE: flat and strided, forward ('none' or reduced) and backward; fp32 / fp16 / bf16.

    CI's selection (see _pointwise.aot_all): plain fp32 cross-entropy (both reductions) at block
    widths 16, 64, 128, 256, 4096 and online, bf16 at 4096 and online; every option (weights,
    smoothing, NLL; probabilities plain and with both, with both gradients) in fp32 at 4096 and
    online, weights with smoothing also at the 256x16 tile and in bf16; every elementwise form
    in fp32 and the unweighted flat ones in bf16; the small kernels in fp32 and bf16; the 64-bit
    index variants (I64) of plain fp32 cross-entropy at 4096, of the NLL gather and of the
    unweighted elementwise forms."""
    shapes = []
    block = CE_MIN_BLOCK
    while block <= CE_MAX_BLOCK:
        shapes.append(_ce_shape(block))
        block *= 2
    shapes.append(_ce_shape(CE_MAX_BLOCK + 1))
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        configs += _ce_aot(dtype, shapes)
        configs += _pointwise_aot(dtype)
        configs += _pointwise.sum_partials_aot((dtype,))

    def plain(k):
        return not (k.get("PROBS") or k.get("NLL") or k.get("HAS_W") or k.get("SMOOTH"))

    # the 64-bit index paths: plain fp32 cross-entropy at the largest single block, NLL's gather
    configs += [dataclasses.replace(c, constexprs=dict(c.constexprs, I64=True),
                                    label=f"{c.label} i64",
                                    spill_reason="64-bit row offsets, only for logits past 2^31 "
                                                 "elements: a couple of spills (the reduced "
                                                 "backward) are noise next to reading 8 GiB")
                for c in configs if c.dtype == "fp32" and (
                    c.kernel is _nll_forward_kernel or
                    c.kernel in (_ce_forward_kernel, _ce_backward_kernel)
                    and c.constexprs["BLOCK_C"] == CE_MAX_BLOCK
                    and not c.constexprs["ONLINE"] and plain(c.constexprs))]

    def keep(c):
        k = c.constexprs
        if c.dtype == "fp16":
            return False
        if c.kernel in (_ce_forward_kernel, _ce_backward_kernel):
            largest = k["BLOCK_C"] == CE_MAX_BLOCK
            if not plain(k):  # the heaviest options also at the widest multi-row tile and bf16
                heaviest = k["HAS_W"] and k["SMOOTH"]
                if k["PROBS"] and (k["HAS_W"] != k["SMOOTH"] or not k.get("NEED_X", True)
                                   or not k.get("NEED_T", True)):
                    return False  # probabilities: plain and with both options, both gradients
                if c.dtype == "fp32":
                    return largest or heaviest and k["BLOCK_C"] == CE_MIN_BLOCK
                return largest and heaviest
            if c.dtype == "fp32":
                return largest or k["BLOCK_C"] in (CE_MIN_BLOCK, 64, 128, 256)
            return largest
        if c.kernel in (_pointwise_loss_kernel, _pointwise_loss_grad_kernel):
            return c.dtype == "fp32" or k["FLAT"] and not (k["HAS_W"] or k["HAS_PW"])
        return True
    # the elementwise losses past 2^31 elements (fp32 and bf16, flat and strided)
    pointwise_i64 = _pointwise.i64_variants(
        [c for c in configs if c.kernel in (_pointwise_loss_kernel, _pointwise_loss_grad_kernel)
         and c.dtype != "fp16" and not c.constexprs.get("I64")
         and not (c.constexprs["HAS_W"] or c.constexprs["HAS_PW"])],
        _pointwise.STRIDED_I64_SPILLS)
    return _pointwise.select(configs, keep) + pointwise_i64
