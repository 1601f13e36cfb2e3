"""CuPy launchers of softmax / log-softmax (``softmax.cu``): ``dim`` is moved last and the rows
made contiguous; one block per row, warp-shuffle reductions, one pass for max and sum."""
from __future__ import annotations

import torch

from .. import alloc
from ._runtime import i32, launch, require_cuda, suffix, threads_per_row


def _dim(op: str, x: torch.Tensor, dim: int) -> int:
    ndim = max(x.dim(), 1)
    if not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise ValueError(f"{op}: dim {dim!r} out of range for a tensor of {x.dim()} dimensions")
    return dim % ndim


def _rows(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t with ``dim`` last, contiguous ([..., C] rows)."""
    return (t.reshape(1) if t.dim() == 0 else t).movedim(dim, -1).contiguous()


def _back(rows: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    if like.dim() == 0:
        return rows.reshape(())
    out = rows.movedim(-1, dim)
    return out if dim == like.dim() - 1 else out.contiguous()


def softmax_forward(x: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    s = suffix("softmax_forward", "x", x)
    dim = _dim("softmax_forward", x, dim)
    device = require_cuda("softmax_forward", x=x)
    rows = _rows(x, dim)
    y = alloc.empty_like(rows)
    cols = rows.shape[-1]
    if rows.numel():
        launch("softmax", f"softmax_forward_{s}", device, (rows.numel() // cols,),
               (threads_per_row(cols),), (rows, y, i32(cols), i32(bool(log))))
    return _back(y, x, dim)


def softmax_backward(grad_y: torch.Tensor, y: torch.Tensor, dim: int, log: bool) -> torch.Tensor:
    s = suffix("softmax_backward", "grad_y", grad_y)
    suffix("softmax_backward", "y", y)
    if grad_y.shape != y.shape or grad_y.dtype != y.dtype:
        raise ValueError(f"softmax_backward: grad_y {tuple(grad_y.shape)} {grad_y.dtype} and y "
                         f"{tuple(y.shape)} {y.dtype} differ")
    dim = _dim("softmax_backward", y, dim)
    device = require_cuda("softmax_backward", grad_y=grad_y, y=y)
    grad_rows, y_rows = _rows(grad_y, dim), _rows(y, dim)
    grad_x = alloc.empty_like(y_rows)
    cols = y_rows.shape[-1]
    if y_rows.numel():
        launch("softmax", f"softmax_backward_{s}", device, (y_rows.numel() // cols,),
               (threads_per_row(cols),), (grad_rows, y_rows, grad_x, i32(cols), i32(bool(log))))
    return _back(grad_x, y, dim)
