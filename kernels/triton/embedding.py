"""Triton embedding lookup: a gather forward and a deterministic gather backward (no atomics).

Forward: one program per [BLOCK_N ids, BLOCK_D columns] tile copies ``weight[ids[n]]`` into
``y[n]`` (a bit-exact copy in weight's dtype); an id outside [0, V) writes a NaN row, never an
out-of-bounds read.

Backward: ``kernels.segments.sorted_segments`` sorts the ids once (torch ops) and gives, for
every vocabulary row v, the slice [bounds[v], bounds[v + 1]) of sorted positions holding v. One
program per (row, BLOCK_D columns) sums its slice of ``grad_y`` rows, BLOCK_T at a time in fp32,
and writes the row once: every row of ``grad_weight`` is written exactly once (zeros where no id
names it), with a fixed summation order, so the result is the same bit for bit on every run (torch
on CUDA also sorts; its CPU kernel adds in id order). Ids out of range fall outside every slice
and contribute nothing; the ``padding_idx`` row is written as zeros; ``scale_grad_by_freq``
divides a row by its slice length.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .. import alloc
from ..limits import check_grid
from ..segments import sorted_segments
from . import _pointwise
from ._spatial import signature
from .aot import AOTConfig

NUM_WARPS = 4
ID_DTYPES = {torch.int32: "*i32", torch.int64: "*i64"}


@triton.jit
def _embedding_forward_kernel(ids_ptr, w_ptr, y_ptr, N, V, D, w_sv, w_sd,
                              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """ids [N] (int32 / int64), w [V, D] (strides w_sv, w_sd), y [N, D] contiguous."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    row_ok = rows < N
    col_ok = cols < D
    ids = tl.load(ids_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    valid = (ids >= 0) & (ids < V)
    src = tl.where(valid, ids, 0) * w_sv
    out_mask = row_ok[:, None] & col_ok[None, :]
    v = tl.load(w_ptr + src[:, None] + cols[None, :] * w_sd, mask=valid[:, None] & out_mask,
                other=float("nan"))
    tl.store(y_ptr + rows.to(tl.int64)[:, None] * D + cols[None, :], v, mask=out_mask)


@triton.jit
def _embedding_backward_kernel(dy_ptr, order_ptr, bounds_ptr, dw_ptr, D, dy_sn, dy_sd,
                               padding_idx, SCALE_BY_FREQ: tl.constexpr, BLOCK_T: tl.constexpr,
                               BLOCK_D: tl.constexpr):
    """dy [N, D] (strides dy_sn, dy_sd); order [N] int64: positions of dy sorted by id;
    bounds [V + 1] int64: row v's positions are order[bounds[v]:bounds[v + 1]]; dw [V, D]
    contiguous, one program per (row, column block)."""
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    col_ok = cols < D
    start = tl.load(bounds_ptr + row)
    end = tl.load(bounds_ptr + row + 1)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for first in range(start, end, BLOCK_T):
        pos = first + tl.arange(0, BLOCK_T)
        ok = pos < end
        src = tl.load(order_ptr + pos, mask=ok, other=0) * dy_sn
        g = tl.load(dy_ptr + src[:, None] + cols[None, :] * dy_sd,
                    mask=ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(g, axis=0)
    if SCALE_BY_FREQ:
        acc = acc / tl.maximum(end - start, 1).to(tl.float32)
    acc = tl.where(row == padding_idx, 0.0, acc)
    tl.store(dw_ptr + row.to(tl.int64) * D + cols, acc.to(dw_ptr.dtype.element_ty), mask=col_ok)


# --- heuristics ---------------------------------------------------------------------------------

def _forward_tile(d: int) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_D): 2048 elements a program (16 a thread: each carries a 64-bit
    address), up to 512 columns wide."""
    block_d = min(max(triton.next_power_of_2(d), 16), 512)
    return 2048 // block_d, block_d


def _backward_tile(d: int) -> tuple[int, int]:
    """(BLOCK_T, BLOCK_D): up to 256 columns, BLOCK_T = 2048 / BLOCK_D sorted ids a step."""
    block_d = min(max(triton.next_power_of_2(d), 16), 256)
    return max(2048 // block_d, 8), block_d


def _check(op: str, ids: torch.Tensor, *shapes: tuple) -> None:
    if ids.dim() != 1 or ids.dtype not in ID_DTYPES:
        raise TypeError(f"{op} (triton): ids must be a 1-D int32 or int64 tensor, got "
                        f"{ids.dtype} of shape {tuple(ids.shape)}")
    for shape in shapes:
        if max(shape, default=0) >= 2 ** 31:
            raise ValueError(f"{op} (triton): shape {shape} is too large for the kernels' "
                             "32-bit sizes")


# --- launchers (contract: gpudnn/launchers.py) --------------------------------------------------

def embedding_forward(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """weight [V, D], ids [N] int32/int64 -> y [N, D] contiguous, weight's dtype."""
    _pointwise.check_dtypes("embedding", weight=weight)
    _check("embedding_forward", ids, tuple(weight.shape), tuple(ids.shape))
    (v, d), n = weight.shape, ids.shape[0]
    y = alloc.empty((n, d), dtype=weight.dtype, device=weight.device)
    if n == 0 or d == 0:
        return y
    ids = ids.contiguous()  # the kernel reads ids[n] at offset n
    block_n, block_d = _forward_tile(d)
    grid = check_grid("embedding_forward", (triton.cdiv(n, block_n), triton.cdiv(d, block_d)))
    wrap_triton(_embedding_forward_kernel)[grid](
        ids, weight, y, n, v, d, weight.stride(0), weight.stride(1),
        BLOCK_N=block_n, BLOCK_D=block_d, num_warps=NUM_WARPS)
    return y


def embedding_backward(grad_y: torch.Tensor, ids: torch.Tensor, num_weights: int,
                       padding_idx: int, scale_grad_by_freq: bool) -> torch.Tensor:
    """grad_y [N, D], ids [N] -> grad_weight [num_weights, D] contiguous, grad_y's dtype;
    padding_idx in [0, V) or -1 for none."""
    _pointwise.check_dtypes("embedding", grad_y=grad_y)
    _check("embedding_backward", ids, tuple(grad_y.shape), (num_weights + 1,))
    d = grad_y.shape[1]
    grad_weight = alloc.empty((num_weights, d), dtype=grad_y.dtype, device=grad_y.device)
    if num_weights == 0 or d == 0:
        return grad_weight
    order, bounds = sorted_segments(ids, num_weights)
    block_t, block_d = _backward_tile(d)
    grid = check_grid("embedding_backward", (num_weights, triton.cdiv(d, block_d)))
    wrap_triton(_embedding_backward_kernel)[grid](
        grad_y, order, bounds, grad_weight, d, grad_y.stride(0), grad_y.stride(1),
        int(padding_idx), SCALE_BY_FREQ=bool(scale_grad_by_freq), BLOCK_T=block_t,
        BLOCK_D=block_d, num_warps=NUM_WARPS)
    return grad_weight


# --- ahead-of-time configurations ---------------------------------------------------------------

def aot_configs() -> list[AOTConfig]:
    """Every tile the heuristics pick (embedding widths 1 .. 1024+) x fp32 / fp16 / bf16; the
    forward for int32 and int64 ids, the backward with and without scale_grad_by_freq. CI's
    selection (``_pointwise.select``): fp32 and bf16, int64 ids."""
    widths = (1, 16, 32, 64, 128, 256, 512, 1024)
    configs = []
    for dtype in ("fp32", "fp16", "bf16"):
        for ids_type in ("*i64", "*i32"):
            for block_n, block_d in sorted({_forward_tile(d) for d in widths}):
                cx = dict(BLOCK_N=block_n, BLOCK_D=block_d)
                configs.append(AOTConfig(
                    _embedding_forward_kernel,
                    signature(_embedding_forward_kernel,
                              {"ids_ptr": ids_type, "w_ptr": f"*{dtype}", "y_ptr": f"*{dtype}"},
                              (), cx),
                    cx, NUM_WARPS, 3, f"forward {block_n}x{block_d} ids {ids_type[1:]}", dtype))
        for scale in (False, True):
            for block_t, block_d in sorted({_backward_tile(d) for d in widths}):
                cx = dict(SCALE_BY_FREQ=scale, BLOCK_T=block_t, BLOCK_D=block_d)
                configs.append(AOTConfig(
                    _embedding_backward_kernel,
                    signature(_embedding_backward_kernel,
                              {"dy_ptr": f"*{dtype}", "order_ptr": "*i64", "bounds_ptr": "*i64",
                               "dw_ptr": f"*{dtype}"}, (), cx),
                    cx, NUM_WARPS, 3,
                    f"backward {block_t}x{block_d}{' freq' if scale else ''}", dtype))
    return _pointwise.select(configs, lambda c: c.dtype in ("fp32", "bf16")
                             and "ids i32" not in c.label
                             and not c.constexprs.get("SCALE_BY_FREQ", False))


__all__ = ["embedding_forward", "embedding_backward", "aot_configs"]
