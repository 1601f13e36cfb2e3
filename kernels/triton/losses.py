"""Losses: cross-entropy fused with log-softmax, BCE-with-logits and MSE, forward and backward.

Cross-entropy forward makes one pass over the logits per row block, writing the per-row loss (or
a per-program partial sum) and the row's log-sum-exp; backward makes one pass writing
grad = (exp(x - lse) - onehot) * g, recomputing the probabilities from the logits and lse (they
are never stored). Reductions finish in a tiny deterministic kernel over per-program partials.
Targets outside [0, C) that are not ignore_index give a NaN loss (a GPU kernel cannot raise).
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
NUM_WARPS = 4
EW_BLOCK = 1024
REDUCTIONS = ("none", "mean", "sum")


def _ce_grad_warps(rows: int) -> int:
    """The gradient tile of a multi-row block keeps per-row values of several rows per thread:
    4 warps spill at some (ROWS, BLOCK_C) shapes (64x64, 32x128) where 8 do not; single-row
    blocks compile without spills with 4 (and spill with 8 in fp16)."""
    return 8 if rows > 1 else 4


# --- cross-entropy ------------------------------------------------------------------------------

@triton.jit
def _ce_rows(N, ROWS: tl.constexpr, I64: tl.constexpr):
    """This program's ROWS row indices (see ``row_indices``) and which of them exist."""
    rows = row_indices(ROWS, I64)
    return rows, rows < N


@triton.jit
def _ce_forward_kernel(x_ptr, t_ptr, loss_ptr, lse_ptr, cnt_ptr, N, C, sx_n, sx_c, s_t, s_l,
                       ignore_index, REDUCE: tl.constexpr, ONLINE: tl.constexpr,
                       ROWS: tl.constexpr, BLOCK_C: tl.constexpr, I64: tl.constexpr):
    """Per row i: lse_i = logsumexp(x[i, :]); loss_i = (m_i - x[i, t_i]) + log(s_i) (0 where t_i
    is ignored) with m_i the row max and s_i = sum(exp(x[i, :] - m_i)): lse_i - x[i, t_i] would
    lose the loss to the rounding of lse_i at 1e4-scale logits.

    x_ptr: [N, C] (strides sx_n, sx_c); t_ptr: [N] int64 (stride s_t); lse_ptr: [N] fp32;
    REDUCE: loss_ptr[pid] = sum of this program's losses and cnt_ptr[pid] = its non-ignored rows
    (both [n_programs]: fp32, int32); else loss_ptr: [N] (stride s_l) per-row losses.
    """
    rows, ok = _ce_rows(N, ROWS, I64)
    target = tl.load(t_ptr + rows * s_t, mask=ok, other=ignore_index)
    x_row = x_ptr + (rows * sx_n)[:, None]
    m, s = online_max_sum(x_row, sx_c, ok, C, ROWS, BLOCK_C)  # one chunk unless ONLINE
    log_s = tl.log(s)
    lse = m + log_s
    valid = ok & (target != ignore_index)
    in_range = (target >= 0) & (target < C)
    x_t = tl.load(x_row + (tl.where(in_range, target, 0) * sx_c)[:, None],
                  mask=(valid & in_range)[:, None], other=0.0).to(tl.float32)
    x_t = tl.sum(x_t, axis=1)  # [ROWS, 1] -> [ROWS]
    loss = tl.where(valid, tl.where(in_range, (m - x_t) + log_s, float("nan")), 0.0)
    tl.store(lse_ptr + rows, lse, mask=ok)
    if REDUCE:
        tl.store(loss_ptr + tl.program_id(0), tl.sum(loss, axis=0))
        tl.store(cnt_ptr + tl.program_id(0), tl.sum(valid.to(tl.int32), axis=0))
    else:
        tl.store(loss_ptr + rows * s_l, loss.to(loss_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _ce_finish_kernel(out_ptr, val_ptr, cnt_ptr, n_val, n_cnt, MEAN: tl.constexpr,
                      BLOCK: tl.constexpr):
    """out[0] = sum(val_ptr[0:n_val]), divided by sum(cnt_ptr[0:n_cnt]) when MEAN (NaN when that
    count is 0: every row ignored, as torch).

    out_ptr: [1]; val_ptr: [n_val] (any float dtype); cnt_ptr: [n_cnt] int32.
    """
    total = tl.zeros([BLOCK], tl.float32)
    for start in range(0, n_val, BLOCK):
        i = start + tl.arange(0, BLOCK)
        total += tl.load(val_ptr + i, mask=i < n_val, other=0.0).to(tl.float32)
    result = tl.sum(total, axis=0)
    if MEAN:
        count = tl.zeros([BLOCK], tl.int64)
        for start in range(0, n_cnt, BLOCK):
            i = start + tl.arange(0, BLOCK)
            count += tl.load(cnt_ptr + i, mask=i < n_cnt, other=0).to(tl.int64)
        result = result / tl.sum(count, axis=0).to(tl.float32)
    tl.store(out_ptr, result.to(out_ptr.dtype.element_ty))


@triton.jit
def _ce_backward_kernel(g_ptr, x_ptr, t_ptr, lse_ptr, dx_ptr, N, C,
                        sx_n, sx_c, s_t, s_g, sd_n, sd_c, ignore_index,
                        PER_ROW: tl.constexpr, ONLINE: tl.constexpr, ROWS: tl.constexpr,
                        BLOCK_C: tl.constexpr, I64: tl.constexpr):
    """dx[i, c] = (exp(x[i, c] - lse_i) - [c == t_i]) * g_i, 0 on ignored rows.

    g_ptr: [N] (stride s_g) when PER_ROW ("none"), else [1]: the gradient of every row (for
    "mean" already divided by the number of non-ignored rows). x_ptr: [N, C] (sx_n, sx_c);
    t_ptr: [N] int64 (s_t); lse_ptr: [N] fp32; dx_ptr: [N, C] (sd_n, sd_c).
    """
    rows, ok = _ce_rows(N, ROWS, I64)
    target = tl.load(t_ptr + rows * s_t, mask=ok, other=ignore_index)
    valid = ok & (target != ignore_index)
    if PER_ROW:
        g = tl.load(g_ptr + rows * s_g, mask=ok, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([ROWS], tl.float32) + tl.load(g_ptr).to(tl.float32)
    g = tl.where(valid, g, 0.0)
    lse = tl.load(lse_ptr + rows, mask=ok, other=0.0)
    # class ids compared in 32 bits (-1: no class, for ignored rows)
    target = tl.where(valid & (target >= 0) & (target < C), target, -1).to(tl.int32)
    x_row = x_ptr + (rows * sx_n)[:, None]
    dx_row = dx_ptr + (rows * sd_n)[:, None]
    cols = tl.arange(0, BLOCK_C)
    if ONLINE:
        for start in range(0, C, BLOCK_C):
            _ce_grad_block(x_row, dx_row, start + cols, ok, C, sx_c, sd_c, lse, target, g)
    else:
        _ce_grad_block(x_row, dx_row, cols, ok, C, sx_c, sd_c, lse, target, g)


@triton.jit
def _ce_grad_block(x_row, dx_row, c, ok, C, sx_c, sd_c, lse, target, g):
    """One [ROWS, BLOCK_C] block of the cross-entropy gradient (columns c)."""
    mask = ok[:, None] & (c < C)[None, :]
    x = tl.load(x_row + c[None, :] * sx_c, mask=mask, other=0.0).to(tl.float32)
    p = tl.exp(x - lse[:, None])
    dx = (p - tl.where(c[None, :] == target[:, None], 1.0, 0.0)) * g[:, None]
    tl.store(dx_row + c[None, :] * sd_c, dx.to(dx_row.dtype.element_ty), mask=mask)


def _ce_shape(C: int) -> tuple[int, int, bool]:
    block = min(max(triton.next_power_of_2(C), CE_MIN_BLOCK), CE_MAX_BLOCK)
    return CE_TILE // block, block, C > block


def _ce_i64(*tensors: torch.Tensor) -> bool:
    """Whether offsets into any of ``tensors`` (logits, target, per-row loss / grad, dx: every
    tensor the row kernels index by row) may pass int32."""
    span = max(sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride())) for t in tensors)
    return span + CE_TILE > INT32_LIMIT


def _check_ce(logits: torch.Tensor, target: torch.Tensor, reduction: str) -> None:
    _pointwise.check_dtypes("cross_entropy", logits=logits)
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: logits {tuple(logits.shape)} and target "
                         f"{tuple(target.shape)} are not [N, C] and [N]")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _ce_partials(logits, target, ignore_index, reduce):
    """Run the forward kernel; returns (loss or partial sums, lse, counts, n_programs)."""
    N, C = logits.shape
    rows, block, online = _ce_shape(C)
    n_prog = triton.cdiv(N, rows)
    dev = logits.device
    lse = alloc.empty((N,), dtype=torch.float32, device=dev)
    if reduce:
        loss = alloc.empty((n_prog,), dtype=torch.float32, device=dev)
        cnt = alloc.empty((n_prog,), dtype=torch.int32, device=dev)
    else:
        loss = alloc.empty((N,), dtype=logits.dtype, device=dev)
        cnt = lse
    if N:
        wrap_triton(_ce_forward_kernel)[(n_prog,)](
            logits, target, loss, lse, cnt, N, C, logits.stride(0), logits.stride(1),
            target.stride(0), loss.stride(0), int(ignore_index), REDUCE=reduce, ONLINE=online,
            ROWS=rows, BLOCK_C=block, I64=_ce_i64(logits, target, loss, lse),
            num_warps=NUM_WARPS)
    return loss, lse, cnt, n_prog


def cross_entropy_forward(logits: torch.Tensor, target: torch.Tensor, ignore_index: int,
                          reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [N, C], target [N] int64 -> (loss: 0-d or [N], lse [N] fp32)."""
    _check_ce(logits, target, reduction)
    reduce = reduction != "none"
    loss, lse, cnt, n_prog = _ce_partials(logits, target, ignore_index, reduce)
    if not reduce:
        return loss, lse
    out = alloc.empty((), dtype=logits.dtype, device=logits.device)
    n_part = n_prog if logits.shape[0] else 0
    wrap_triton(_ce_finish_kernel)[(1,)](out, loss, cnt, n_part, n_part, MEAN=reduction == "mean",
                            BLOCK=_pointwise.SUM_BLOCK, num_warps=NUM_WARPS)
    return out, lse


def cross_entropy_backward(grad_loss: torch.Tensor, logits: torch.Tensor, target: torch.Tensor,
                           lse: torch.Tensor, ignore_index: int, reduction: str) -> torch.Tensor:
    """grad_logits [N, C] (logits' layout) = (softmax - onehot) * grad, 0 on ignored rows."""
    _check_ce(logits, target, reduction)
    N, C = logits.shape
    dx = alloc.empty_like(logits, memory_format=torch.preserve_format)
    if N == 0 or C == 0:
        return dx
    rows, block, online = _ce_shape(C)
    n_prog = triton.cdiv(N, rows)
    g = grad_loss
    if reduction == "mean":  # g / (non-ignored rows), counted per row block then summed
        cnt = alloc.empty((n_prog,), dtype=torch.int32, device=logits.device)
        wrap_triton(_ce_count_kernel)[(n_prog,)](target, cnt, N, target.stride(0), int(ignore_index),
                                    ROWS=rows, num_warps=NUM_WARPS)
        g = alloc.empty((1,), dtype=torch.float32, device=logits.device)
        wrap_triton(_ce_finish_kernel)[(1,)](g, grad_loss, cnt, 1, n_prog, MEAN=True,
                                BLOCK=_pointwise.SUM_BLOCK, num_warps=NUM_WARPS)
    per_row = reduction == "none"
    wrap_triton(_ce_backward_kernel)[(n_prog,)](
        g, logits, target, lse, dx, N, C, logits.stride(0), logits.stride(1), target.stride(0),
        grad_loss.stride(0) if per_row else 0, dx.stride(0), dx.stride(1), int(ignore_index),
        PER_ROW=per_row, ONLINE=online, ROWS=rows, BLOCK_C=block,
        I64=_ce_i64(logits, target, dx, lse, grad_loss), num_warps=_ce_grad_warps(rows))
    return dx


@triton.jit
def _ce_count_kernel(t_ptr, cnt_ptr, N, s_t, ignore_index, ROWS: tl.constexpr):
    """cnt_ptr[pid] = number of rows of this program's block whose target is not ignore_index.

    t_ptr: [N] int64 (stride s_t); cnt_ptr: [n_programs] int32.
    """
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    target = tl.load(t_ptr + rows * s_t, mask=rows < N, other=ignore_index)
    tl.store(cnt_ptr + tl.program_id(0), tl.sum((target != ignore_index).to(tl.int32), axis=0))


# --- BCE with logits and MSE: elementwise, with an optional reduction ----------------------------

BCE, MSE = 0, 1


@triton.jit
def _log1p(e):
    """log(1 + e) for e >= 0, accurate where 1 + e rounds (log(1 + e) would give 0 for
    e < 2^-24, i.e. |x| > 16.6 in BCE): log(u) corrected by the rounding error of u = 1 + e,
    ((u - 1) - e) / u (Goldberg); plain tl ops, so the interpreter runs the same formula."""
    u = 1.0 + e
    return tl.log(u) - ((u - 1.0) - e) / u


@triton.jit
def _pointwise_loss_kernel(x_ptr, t_ptr, out_ptr, numel, s1, s2, s3, s4, s5,
                           x0, x1, x2, x3, x4, x5, t0, t1, t2, t3, t4, t5,
                           o0, o1, o2, o3, o4, o5,
                           KIND: tl.constexpr, REDUCE: tl.constexpr, FLAT: tl.constexpr,
                           I64: tl.constexpr, BLOCK: tl.constexpr):
    """Elementwise loss l(x, t): BCE-with-logits (KIND 0) or squared error (KIND 1).

    x_ptr, t_ptr: one logical shape (6-d sizes (., s1..s5), strides x*, t*); REDUCE: out_ptr is
    [n_programs] fp32 and gets this program's sum; else out_ptr has the same shape (strides o*).
    FLAT: every tensor walked shares one dense layout.
    """
    i = _pointwise.block_indices(BLOCK, I64)
    mask = i < numel
    off_x = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, x0, x1, x2, x3, x4, x5)
    off_t = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, t0, t1, t2, t3, t4, t5)
    off_o = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, o0, o1, o2, o3, o4, o5)
    x = tl.load(x_ptr + off_x, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + off_t, mask=mask, other=0.0).to(tl.float32)
    if KIND == 0:  # torch's (1 - t) x - log_sigmoid(x) term for term (inf and NaN land where
        # torch's do), log1p added last (tiny losses keep their precision); no overflow for any x
        loss = ((1.0 - t) * x - tl.minimum(x, 0.0)) + _log1p(tl.exp(-tl.abs(x)))
    else:
        loss = (x - t) * (x - t)
    if REDUCE:
        tl.store(out_ptr + tl.program_id(0), tl.sum(tl.where(mask, loss, 0.0), axis=0))
    else:
        tl.store(out_ptr + off_o, loss.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _pointwise_loss_grad_kernel(g_ptr, x_ptr, t_ptr, gx_ptr, gt_ptr, numel, scale,
                                s1, s2, s3, s4, s5,
                                g0, g1, g2, g3, g4, g5, x0, x1, x2, x3, x4, x5,
                                t0, t1, t2, t3, t4, t5, a0, a1, a2, a3, a4, a5,
                                b0, b1, b2, b3, b4, b5,
                                KIND: tl.constexpr, G_SCALAR: tl.constexpr,
                                NEED_X: tl.constexpr, NEED_T: tl.constexpr, FLAT: tl.constexpr,
                                I64: tl.constexpr, BLOCK: tl.constexpr):
    """Gradients of l(x, t) times g: BCE (KIND 0): dx = (sigmoid(x) - t) g, dt = -x g;
    MSE (KIND 1): dx = 2 (x - t) g, dt = -dx.

    g_ptr: 0-d (G_SCALAR: g = g_ptr[0] * scale) or x's shape (strides g*); x_ptr, t_ptr, gx_ptr,
    gt_ptr: one logical shape (6-d sizes (., s1..s5); strides x*, t*, a* for gx, b* for gt).
    """
    i = _pointwise.block_indices(BLOCK, I64)
    mask = i < numel
    off_g = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, g0, g1, g2, g3, g4, g5)
    off_x = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, x0, x1, x2, x3, x4, x5)
    off_t = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, t0, t1, t2, t3, t4, t5)
    off_a = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, a0, a1, a2, a3, a4, a5)
    off_b = _pointwise.element_offset(i, FLAT, s1, s2, s3, s4, s5, b0, b1, b2, b3, b4, b5)
    if G_SCALAR:
        g = tl.load(g_ptr).to(tl.float32) * scale
    else:
        g = tl.load(g_ptr + off_g, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + off_x, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + off_t, mask=mask, other=0.0).to(tl.float32)
    if KIND == 0:
        e = tl.exp(-tl.abs(x))
        sig = tl.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        dx = (sig - t) * g
        dt = -x * g
    else:
        dx = 2.0 * (x - t) * g
        dt = -dx
    if NEED_X:
        tl.store(gx_ptr + off_a, dx.to(gx_ptr.dtype.element_ty), mask=mask)
    if NEED_T:
        tl.store(gt_ptr + off_b, dt.to(gt_ptr.dtype.element_ty), mask=mask)


def _check_pair(op: str, x: torch.Tensor, target: torch.Tensor, reduction: str) -> None:
    _pointwise.check_dtypes(op, input=x, target=target)
    if x.shape != target.shape:
        raise ValueError(f"{op}: input {tuple(x.shape)} and target {tuple(target.shape)} differ "
                         "in shape")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _loss_forward(kind: int, op: str, x: torch.Tensor, target: torch.Tensor,
                  reduction: str) -> torch.Tensor:
    _check_pair(op, x, target, reduction)
    n = x.numel()
    reduce = reduction != "none"
    grid = (triton.cdiv(n, EW_BLOCK),)
    if reduce:
        partials = alloc.empty((grid[0],), dtype=torch.float32, device=x.device)
        plan = _pointwise.plan([x, target])
        out_strides = [0] * _pointwise.MAX_DIMS
        out = partials
    else:
        out = alloc.empty_like(x, memory_format=torch.preserve_format)
        plan = _pointwise.plan([x, target, out])
        out_strides = plan.strides[2]
    if n:
        wrap_triton(_pointwise_loss_kernel)[grid](x, target, out, n, *plan.sizes[1:], *plan.strides[0],
                                     *plan.strides[1], *out_strides, KIND=kind, REDUCE=reduce,
                                     FLAT=plan.flat, I64=plan.i64, BLOCK=EW_BLOCK,
                                     num_warps=NUM_WARPS)
    if not reduce:
        return out
    scale = (1.0 / n if n else float("nan")) if reduction == "mean" else 1.0
    return _pointwise.sum_partials(partials, x.dtype, scale)


def _loss_backward(kind: int, op: str, grad_loss: torch.Tensor, x: torch.Tensor,
                   target: torch.Tensor, reduction: str, needs) -> tuple:
    _check_pair(op, x, target, reduction)
    need_x, need_t = (tuple(needs) + (False, False))[:2]
    gx = alloc.empty_like(x, memory_format=torch.preserve_format) if need_x else None
    gt = alloc.empty_like(target, memory_format=torch.preserve_format) if need_t else None
    n = x.numel()
    if n == 0 or not (need_x or need_t):
        return gx, gt
    g_scalar = reduction != "none"
    walked = [x, target] + ([] if g_scalar else [grad_loss])
    walked += [t for t in (gx, gt) if t is not None]
    plan = _pointwise.plan(walked)
    strides = iter(plan.strides)
    zeros = [0] * _pointwise.MAX_DIMS
    sx, st = next(strides), next(strides)
    sg = zeros if g_scalar else next(strides)
    sa = next(strides) if gx is not None else zeros
    sb = next(strides) if gt is not None else zeros
    scale = 1.0 / n if reduction == "mean" else 1.0
    wrap_triton(_pointwise_loss_grad_kernel)[(triton.cdiv(n, EW_BLOCK),)](
        grad_loss, x, target, gx if gx is not None else x, gt if gt is not None else x, n, scale,
        *plan.sizes[1:], *sg, *sx, *st, *sa, *sb, KIND=kind, G_SCALAR=g_scalar, NEED_X=need_x,
        NEED_T=need_t, FLAT=plan.flat, I64=plan.i64, BLOCK=EW_BLOCK, num_warps=NUM_WARPS)
    return gx, gt


def bce_with_logits_forward(x: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """max(x, 0) - x t + log1p(exp(-|x|)), elementwise or reduced ("mean", "sum")."""
    return _loss_forward(BCE, "binary_cross_entropy_with_logits", x, target, reduction)


def bce_with_logits_backward(grad_loss: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                             reduction: str, needs) -> tuple:
    return _loss_backward(BCE, "binary_cross_entropy_with_logits", grad_loss, x, target,
                          reduction, needs)


def mse_loss_forward(x: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """(x - t)^2, elementwise or reduced ("mean", "sum")."""
    return _loss_forward(MSE, "mse_loss", x, target, reduction)


def mse_loss_backward(grad_loss: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
                      reduction: str, needs) -> tuple:
    return _loss_backward(MSE, "mse_loss", grad_loss, x, target, reduction, needs)


def aot_configs() -> list[AOTConfig]:
    """Cross-entropy: every (ROWS, BLOCK_C, ONLINE) of ``_ce_shape``, with and without a
    reduction; BCE / MSE: flat and strided, forward ('none' or reduced) and backward; the
    finishing and counting kernels; fp32 / fp16 / bf16. CI's selection (see _pointwise.aot_all):
    fp32 cross-entropy (both reductions) at block widths 16, 64, 128, 256, 4096 and online, bf16
    at 4096 and online; every BCE / MSE form in fp32 and the flat ones in bf16; fp32 and bf16
    finishing kernels; the 64-bit index variants (I64) of fp32 cross-entropy at 4096."""
    shapes = []
    block = CE_MIN_BLOCK
    while block <= CE_MAX_BLOCK:
        shapes.append(_ce_shape(block))
        block *= 2
    shapes.append(_ce_shape(CE_MAX_BLOCK + 1))
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        ptr = f"*{dtype}"
        for rows, block, online in shapes:
            tag = f"{rows}x{block}{' online' if online else ''}"
            for reduce in (True, False):
                sig = {n: "i32" for n in _ce_forward_kernel.arg_names}
                sig.update(x_ptr=ptr, t_ptr="*i64", loss_ptr="*fp32" if reduce else ptr,
                           lse_ptr="*fp32", cnt_ptr="*i32" if reduce else "*fp32",
                           REDUCE="constexpr", ONLINE="constexpr", ROWS="constexpr",
                           BLOCK_C="constexpr", I64="constexpr")
                configs.append(AOTConfig(_ce_forward_kernel, sig,
                                         dict(REDUCE=reduce, ONLINE=online, ROWS=rows,
                                              BLOCK_C=block, I64=False),
                                         num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                                         label=f"ce fwd {'reduce' if reduce else 'none'} {tag}"))
                sig = {n: "i32" for n in _ce_backward_kernel.arg_names}
                sig.update(g_ptr="*fp32" if reduce else ptr, x_ptr=ptr, t_ptr="*i64",
                           lse_ptr="*fp32", dx_ptr=ptr, PER_ROW="constexpr", ONLINE="constexpr",
                           ROWS="constexpr", BLOCK_C="constexpr", I64="constexpr")
                configs.append(AOTConfig(_ce_backward_kernel, sig,
                                         dict(PER_ROW=not reduce, ONLINE=online, ROWS=rows,
                                              BLOCK_C=block, I64=False),
                                         num_warps=_ce_grad_warps(rows), num_stages=1,
                                         dtype=dtype,
                                         label=f"ce bwd {'reduced' if reduce else 'none'} {tag}"))
        for kind, name in ((BCE, "bce"), (MSE, "mse")):
            for flat in (True, False):
                for reduce in (False, True):
                    sig = {n: "i32" for n in _pointwise_loss_kernel.arg_names}
                    sig.update(x_ptr=ptr, t_ptr=ptr, out_ptr="*fp32" if reduce else ptr,
                               KIND="constexpr", REDUCE="constexpr", FLAT="constexpr",
                               I64="constexpr", BLOCK="constexpr")
                    configs.append(AOTConfig(
                        _pointwise_loss_kernel, sig,
                        dict(KIND=kind, REDUCE=reduce, FLAT=flat, I64=False, BLOCK=EW_BLOCK),
                        num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                        label=f"{name} fwd {'reduce' if reduce else 'none'} "
                              f"{'flat' if flat else 'strided'}"))
                for g_scalar in (False, True):
                    sig = {n: "i32" for n in _pointwise_loss_grad_kernel.arg_names}
                    sig.update(g_ptr=ptr, x_ptr=ptr, t_ptr=ptr, gx_ptr=ptr, gt_ptr=ptr,
                               scale="fp32", KIND="constexpr", G_SCALAR="constexpr",
                               NEED_X="constexpr", NEED_T="constexpr", FLAT="constexpr",
                               I64="constexpr", BLOCK="constexpr")
                    configs.append(AOTConfig(
                        _pointwise_loss_grad_kernel, sig,
                        dict(KIND=kind, G_SCALAR=g_scalar, NEED_X=True, NEED_T=True, FLAT=flat,
                             I64=False, BLOCK=EW_BLOCK),
                        num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                        label=f"{name} bwd {'reduced' if g_scalar else 'none'} "
                              f"{'flat' if flat else 'strided'}"))
        configs += _pointwise.sum_partials_aot((dtype,))
        finish_sig = {"out_ptr": "", "val_ptr": "", "cnt_ptr": "*i32", "n_val": "i32",
                      "n_cnt": "i32", "MEAN": "constexpr", "BLOCK": "constexpr"}
        for mean in (False, True):  # the loss reduction: fp32 partials -> the loss dtype
            configs.append(AOTConfig(_ce_finish_kernel,
                                     dict(finish_sig, out_ptr=ptr, val_ptr="*fp32"),
                                     dict(MEAN=mean, BLOCK=_pointwise.SUM_BLOCK),
                                     num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                                     label=f"ce finish {'mean' if mean else 'sum'}"))
        # the mean's backward: grad_loss / count into fp32
        configs.append(AOTConfig(_ce_finish_kernel,
                                 dict(finish_sig, out_ptr="*fp32", val_ptr=ptr),
                                 dict(MEAN=True, BLOCK=_pointwise.SUM_BLOCK), num_warps=NUM_WARPS,
                                 num_stages=1, dtype=dtype, label="ce mean grad scale"))
    count_sig = {"t_ptr": "*i64", "cnt_ptr": "*i32", "N": "i32", "s_t": "i32",
                 "ignore_index": "i32", "ROWS": "constexpr"}
    all_rows = sorted({rows for rows, _, _ in shapes})
    for rows in all_rows:
        configs.append(AOTConfig(_ce_count_kernel, count_sig, dict(ROWS=rows),
                                 num_warps=NUM_WARPS, num_stages=1, dtype="i64",
                                 label=f"ce count {rows} rows"))

    # the 64-bit index paths: fp32 cross-entropy at the largest single block
    configs += [dataclasses.replace(c, constexprs=dict(c.constexprs, I64=True),
                                    label=f"{c.label} i64",
                                    spill_reason="64-bit row offsets, only for logits past 2^31 "
                                                 "elements: a couple of spills (the reduced "
                                                 "backward) are noise next to reading 8 GiB")
                for c in configs if c.kernel in (_ce_forward_kernel, _ce_backward_kernel)
                and c.dtype == "fp32" and c.constexprs["BLOCK_C"] == CE_MAX_BLOCK
                and not c.constexprs["ONLINE"]]

    def keep(c):
        k = c.constexprs
        if c.kernel is _ce_count_kernel:
            return k["ROWS"] in (all_rows[0], all_rows[-1])
        if c.dtype == "fp16":
            return False
        if c.kernel in (_ce_forward_kernel, _ce_backward_kernel):
            largest = k["BLOCK_C"] == CE_MAX_BLOCK
            if c.dtype == "fp32":
                return largest or k["BLOCK_C"] in (CE_MIN_BLOCK, 64, 128, 256)
            return largest
        if c.kernel in (_pointwise_loss_kernel, _pointwise_loss_grad_kernel):
            return c.dtype == "fp32" or k["FLAT"]
        return True
    # BCE / MSE past 2^31 elements (fp32 and bf16, flat and strided)
    pointwise_i64 = _pointwise.i64_variants(
        [c for c in configs if c.kernel in (_pointwise_loss_kernel, _pointwise_loss_grad_kernel)
         and c.dtype != "fp16" and not c.constexprs.get("I64")], _pointwise.STRIDED_I64_SPILLS)
    return _pointwise.select(configs, keep) + pointwise_i64
