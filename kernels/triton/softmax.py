"""Softmax and log-softmax over any dim, forward and backward.

The tensor is viewed through its strides as [outer, R, inner] (R = the softmax dim), i.e. as
outer * inner rows of R elements; a program takes ROWS rows. Rows that fit one block are read
once and written once; longer rows use an online pass (running max and rescaled running sum)
followed by a writing pass. Semantics follow torch: -inf entries get probability 0, a row of
-inf only gives NaN, NaN anywhere in a row gives a NaN row.
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

TILE = 4096          # elements per program and block
MIN_BLOCK_R = 16
MAX_BLOCK_R = 4096   # longer rows take the online path in chunks of this size
MAX_BLOCK_R_STRIDED = 256  # rows along a non-last dim: keep >= 16 rows per program
NUM_WARPS = 4


@triton.jit
def row_indices(ROWS: tl.constexpr, I64: tl.constexpr):
    """This program's ROWS row indices program_id(0) * ROWS + [0, ROWS), int64 when I64 with the
    product included: in 32 bits it wraps past 2^31 rows to negative indices that pass the
    ``< n_rows`` masks."""
    pid = tl.program_id(0)
    if I64:
        pid = pid.to(tl.int64)
    return pid * ROWS + tl.arange(0, ROWS)


@triton.jit
def _row_bases(n_rows, inner, ROWS: tl.constexpr, I64: tl.constexpr):
    """Indices q of this program's rows, their validity, and (outer, inner) for each."""
    q = row_indices(ROWS, I64)
    ok = q < n_rows
    return ok, (q // inner), (q % inner)


@triton.jit
def online_max_sum(row_ptrs, stride, ok, R, ROWS: tl.constexpr, BLOCK_R: tl.constexpr):
    """Per row: the max m of its R elements (at row_ptrs + r * stride, rows where ``ok``) and
    s = sum(exp(x - m)), in one pass of BLOCK_R-wide chunks with a running max and a rescaled
    running sum. A row of -inf only gives m = -inf, s = 0; NaN anywhere gives s = NaN."""
    cols = tl.arange(0, BLOCK_R)
    m = tl.full([ROWS], float("-inf"), tl.float32)
    s = tl.zeros([ROWS], tl.float32)
    for start in range(0, R, BLOCK_R):
        c = start + cols
        mask = ok[:, None] & (c < R)[None, :]
        x = tl.load(row_ptrs + c[None, :] * stride, mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=1))
        # while the max is still -inf nothing has been summed: keep s (0) without -inf - -inf
        alpha = tl.where(m_new == m, 1.0, tl.exp(m - m_new))
        e = tl.where(x == float("-inf"), 0.0, tl.exp(x - m_new[:, None]))
        s = s * alpha + tl.sum(e, axis=1)
        m = m_new
    return m, s


@triton.jit
def _softmax_forward_kernel(x_ptr, y_ptr, n_rows, R, inner,
                            sx_o, sx_i, sx_r, sy_o, sy_i, sy_r,
                            LOG: tl.constexpr, ONLINE: tl.constexpr, ROWS: tl.constexpr,
                            BLOCK_R: tl.constexpr, I64: tl.constexpr):
    """y = softmax(x) (log_softmax when LOG) along R.

    x_ptr, y_ptr: [outer, R, inner] with strides (sx_o, sx_r, sx_i) and (sy_o, sy_r, sy_i);
    n_rows = outer * inner.
    """
    ok, o, j = _row_bases(n_rows, inner, ROWS, I64)
    x_base = x_ptr + (o * sx_o + j * sx_i)[:, None]
    y_base = y_ptr + (o * sy_o + j * sy_i)[:, None]
    cols = tl.arange(0, BLOCK_R)
    if not ONLINE:
        mask = ok[:, None] & (cols < R)[None, :]
        x = tl.load(x_base + cols[None, :] * sx_r, mask=mask, other=float("-inf")).to(tl.float32)
        m = tl.max(x, axis=1)
        e = tl.exp(x - m[:, None])  # a row of -inf only: -inf - -inf = NaN, as torch
        s = tl.sum(tl.where(mask, e, 0.0), axis=1)
        if LOG:
            y = x - m[:, None] - tl.log(s)[:, None]
        else:
            y = e / s[:, None]
        tl.store(y_base + cols[None, :] * sy_r, y.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        m, s = online_max_sum(x_base, sx_r, ok, R, ROWS, BLOCK_R)
        log_s = tl.log(s)
        for start in range(0, R, BLOCK_R):
            c = start + cols
            mask = ok[:, None] & (c < R)[None, :]
            x = tl.load(x_base + c[None, :] * sx_r, mask=mask,
                        other=float("-inf")).to(tl.float32)
            if LOG:
                y = x - m[:, None] - log_s[:, None]
            else:
                y = tl.exp(x - m[:, None]) / s[:, None]
            tl.store(y_base + c[None, :] * sy_r, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_backward_kernel(dy_ptr, y_ptr, dx_ptr, n_rows, R, inner,
                             sd_o, sd_i, sd_r, sy_o, sy_i, sy_r, sx_o, sx_i, sx_r,
                             LOG: tl.constexpr, ONLINE: tl.constexpr, ROWS: tl.constexpr,
                             BLOCK_R: tl.constexpr, I64: tl.constexpr):
    """dx = y (dy - sum(dy y)), or dx = dy - exp(y) sum(dy) when LOG (y = log_softmax).

    dy_ptr, y_ptr, dx_ptr: [outer, R, inner] with strides (s*_o, s*_r, s*_i); n_rows = outer*inner.
    """
    ok, o, j = _row_bases(n_rows, inner, ROWS, I64)
    dy_base = dy_ptr + (o * sd_o + j * sd_i)[:, None]
    y_base = y_ptr + (o * sy_o + j * sy_i)[:, None]
    dx_base = dx_ptr + (o * sx_o + j * sx_i)[:, None]
    cols = tl.arange(0, BLOCK_R)
    if not ONLINE:
        mask = ok[:, None] & (cols < R)[None, :]
        dy = tl.load(dy_base + cols[None, :] * sd_r, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_base + cols[None, :] * sy_r, mask=mask, other=0.0).to(tl.float32)
        if LOG:
            dx = dy - tl.exp(y) * tl.sum(dy, axis=1)[:, None]
        else:
            dx = y * (dy - tl.sum(dy * y, axis=1)[:, None])
        tl.store(dx_base + cols[None, :] * sx_r, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([ROWS, BLOCK_R], tl.float32)
        for start in range(0, R, BLOCK_R):
            c = start + cols
            mask = ok[:, None] & (c < R)[None, :]
            dy = tl.load(dy_base + c[None, :] * sd_r, mask=mask, other=0.0).to(tl.float32)
            if LOG:
                acc += dy
            else:
                y = tl.load(y_base + c[None, :] * sy_r, mask=mask, other=0.0).to(tl.float32)
                acc += dy * y
        total = tl.sum(acc, axis=1)[:, None]
        for start in range(0, R, BLOCK_R):
            c = start + cols
            mask = ok[:, None] & (c < R)[None, :]
            dy = tl.load(dy_base + c[None, :] * sd_r, mask=mask, other=0.0).to(tl.float32)
            y = tl.load(y_base + c[None, :] * sy_r, mask=mask, other=0.0).to(tl.float32)
            if LOG:
                dx = dy - tl.exp(y) * total
            else:
                dx = y * (dy - total)
            tl.store(dx_base + c[None, :] * sx_r, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _collapse(sizes: list[int], strides: list[int]) -> int | None:
    """Stride of the single dim that (sizes, strides) collapse into, or None if they do not."""
    dims = [(s, st) for s, st in zip(sizes, strides) if s != 1]
    for (_, outer), (size, inner) in zip(dims, dims[1:]):
        if outer != inner * size:
            return None
    return dims[-1][1] if dims else 0


def _view3(t: torch.Tensor, dim: int) -> tuple[int, int, int] | None:
    """(outer stride, R stride, inner stride) of t seen as [outer, R, inner], or None."""
    shape, strides = list(t.shape), list(t.stride())
    so = _collapse(shape[:dim], strides[:dim])
    si = _collapse(shape[dim + 1:], strides[dim + 1:])
    if so is None or si is None:
        return None
    return so, strides[dim], si


def _block_shape(R: int, inner: int) -> tuple[int, int, bool]:
    """(ROWS, BLOCK_R, ONLINE) for rows of length R, R-stride 1 when inner == 1."""
    cap = MAX_BLOCK_R if inner == 1 else MAX_BLOCK_R_STRIDED
    block_r = min(max(triton.next_power_of_2(R), MIN_BLOCK_R), cap)
    return TILE // block_r, block_r, R > block_r


def _prepare(tensors: list[torch.Tensor], dim: int) -> tuple[list[torch.Tensor], list]:
    """Views [outer, R, inner] of every tensor (copying any that cannot be viewed so)."""
    views, out = [], []
    for t in tensors:
        v = _view3(t, dim)
        if v is None:
            t = t.contiguous()
            v = _view3(t, dim)
        out.append(t)
        views.append(v)
    return out, views


def _launch(kernel, inputs: list[torch.Tensor], dim: int, log: bool) -> torch.Tensor:
    _pointwise.check_dtypes("softmax", **{f"input {i}": t for i, t in enumerate(inputs)})
    like = inputs[-1]
    if like.dim() == 0:
        inputs = [t.reshape(1) for t in inputs]
        dim = 0
    dim = dim % inputs[0].dim() if inputs[0].dim() else 0
    result = alloc.empty_like(inputs[-1], memory_format=torch.preserve_format)
    if result.numel() == 0:
        return result.reshape(like.shape)
    tensors, views = _prepare([*inputs, result], dim)
    if tensors[-1] is not result:  # the output itself cannot be viewed: write a contiguous one
        result = tensors[-1] = alloc.empty(result.shape, dtype=result.dtype, device=result.device)
    shape = list(result.shape)
    R = shape[dim]
    inner = 1
    for s in shape[dim + 1:]:
        inner *= s
    n_rows = result.numel() // R
    rows, block_r, online = _block_shape(R, inner)
    span = max(sum((s - 1) * st for s, st in zip(t.shape, t.stride())) for t in tensors)
    i64 = max(result.numel(), span) + TILE > INT32_LIMIT
    args = [a for v in views for a in (v[0], v[2], v[1])]
    wrap_triton(kernel)[(triton.cdiv(n_rows, rows),)](*tensors, n_rows, R, inner, *args, LOG=log,
                                         ONLINE=online, ROWS=rows, BLOCK_R=block_r, I64=i64,
                                         num_warps=NUM_WARPS)
    return result.reshape(like.shape)


def softmax_forward(x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    """softmax (log_softmax when ``log``) of x along ``dim``; any shape and strides."""
    return _launch(_softmax_forward_kernel, [x], dim, log)


def softmax_backward(grad_y: torch.Tensor, y: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    """grad_x from grad_y and the forward output y (softmax or log_softmax along ``dim``)."""
    if grad_y.shape != y.shape:
        raise ValueError(f"softmax_backward: grad_y {tuple(grad_y.shape)} and y "
                         f"{tuple(y.shape)} differ in shape")
    return _launch(_softmax_backward_kernel, [grad_y, y], dim, log)


def aot_configs() -> list[AOTConfig]:
    """Every (ROWS, BLOCK_R, ONLINE) that ``_block_shape`` can return, forward and backward,
    softmax and log_softmax, fp32 / fp16 / bf16. CI's selection (see _pointwise.aot_all): fp32
    softmax at the smallest, a middle and the largest single block and both online paths;
    log_softmax and bf16 at the largest single block and the online path; the 64-bit index
    variant (I64) of fp32 softmax at the largest single block."""
    shapes = []
    block = MIN_BLOCK_R
    while block <= MAX_BLOCK_R:
        shapes.append((TILE // block, block, False))
        block *= 2
    shapes += [(TILE // MAX_BLOCK_R, MAX_BLOCK_R, True),
               (TILE // MAX_BLOCK_R_STRIDED, MAX_BLOCK_R_STRIDED, True)]
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for rows, block_r, online in shapes:
            for log in (False, True):
                for kernel, n_ptrs, n_strides, what in ((_softmax_forward_kernel, 2, 6, "fwd"),
                                                        (_softmax_backward_kernel, 3, 9, "bwd")):
                    names = list(kernel.arg_names)
                    sig = {n: f"*{dtype}" for n in names[:n_ptrs]}
                    sig.update({n: "i32" for n in names[n_ptrs:n_ptrs + 3 + n_strides]})
                    sig.update({n: "constexpr" for n in ("LOG", "ONLINE", "ROWS", "BLOCK_R",
                                                          "I64")})
                    configs.append(AOTConfig(
                        kernel, sig, dict(LOG=log, ONLINE=online, ROWS=rows, BLOCK_R=block_r,
                                          I64=False),
                        num_warps=NUM_WARPS, num_stages=1, dtype=dtype,
                        label=f"{what} {'log' if log else ''}softmax {rows}x{block_r}"
                              f"{' online' if online else ''}"))

    # the 64-bit index paths: fp32 softmax forward and backward at the largest single block
    configs += [dataclasses.replace(c, constexprs=dict(c.constexprs, I64=True),
                                    label=f"{c.label} i64")
                for c in configs if c.dtype == "fp32" and not c.constexprs["LOG"]
                and not c.constexprs["ONLINE"] and c.constexprs["BLOCK_R"] == MAX_BLOCK_R]

    # measured with GPUDNN_AOT_ALL=1 under triton 3.6 (3.9: no spills)
    for i, c in enumerate(configs):
        k = c.constexprs
        if c.kernel is _softmax_forward_kernel and c.dtype == "fp32" and k["LOG"] \
                and not k["ONLINE"] and k["ROWS"] in (4, 8, 16):
            configs[i] = dataclasses.replace(c, spill_reason=(
                "triton 3.6 spills one register (a store/load pair) in the fp32 log_softmax "
                "forward with 4-16 rows per program; 3.9 does not"))

    def keep(c):
        k = c.constexprs
        largest = k["BLOCK_R"] == MAX_BLOCK_R
        if c.dtype == "fp32" and not k["LOG"]:
            return k["ONLINE"] or k["BLOCK_R"] in (MIN_BLOCK_R, MAX_BLOCK_R_STRIDED, MAX_BLOCK_R)
        return c.dtype != "fp16" and largest
    return _pointwise.select(configs, keep)
