"""CuPy launchers of the fused dense layer (``dense.cu``).

The GEMMs are cuBLAS, called through ``torch.matmul`` on the same stream: that honours
``torch.backends.cuda.matmul.allow_tf32`` and handles bfloat16, neither of which ``cupy.matmul``
does. Everything around them is ours: the bias + activation epilogue forward, and the activation
derivative fused with the bias-gradient column reduction backward (per-block partial sums, then a
fixed-order sum: deterministic).
"""
from __future__ import annotations

import torch

from .. import alloc
from ..activations import Activation, code_of, param_of
from ._runtime import blocks_for, f32, i32, i64, launch, require_cuda, same_dtype, suffix, \
    SUFFIX, THREADS

TILE_COLS, TILE_ROWS = 32, 8  # activation_grad_bias block (dense.cu)
MAX_ROW_BLOCKS = 512


def _check(op: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    suffix(op, "x", x)
    suffix(op, "weight", weight)
    if bias is not None:
        suffix(op, "bias", bias)
    same_dtype(op, x=x, weight=weight, bias=bias)
    if x.dim() != 2 or weight.dim() != 2 or x.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: x must be [M, K] and weight [N, K], got x {tuple(x.shape)} and "
                         f"weight {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"{op}: bias must be [{weight.shape[0]}], got {tuple(bias.shape)}")


def bias_activation(z: torch.Tensor, bias: torch.Tensor | None, act: Activation | None):
    """The forward epilogue on a contiguous [rows, cols] GEMM result ``z`` (updated in place):
    (y, saved) with y = act(z + bias[col]) and saved per the launcher contract."""
    if bias is None and act is None:
        return z, None
    y = z if act is None or act.from_output else alloc.empty_like(z)
    if z.numel():
        launch("dense", f"bias_activation_forward_{SUFFIX[z.dtype]}", z.device,
               (blocks_for(z.numel()),), (THREADS,),
               (z, bias.contiguous() if bias is not None else None, y, i64(z.shape[0]),
                i32(z.shape[1]), i32(code_of(act)), f32(param_of(act))))
    return y, (None if act is None else y if act.from_output else z)


def activation_grad_bias(grad_y: torch.Tensor, saved: torch.Tensor | None,
                         act: Activation | None, need_bias: bool):
    """The backward epilogue on [rows, cols]: (grad_z = grad_y * act'(saved), the column sums of
    grad_z when ``need_bias``), one fused pass plus a fixed-order sum of per-block partials."""
    rows, cols = grad_y.shape
    grad_y = grad_y.contiguous()
    s = SUFFIX[grad_y.dtype]
    grad_z = grad_y if act is None else alloc.empty_like(grad_y)
    grad_bias = alloc.empty((cols,), dtype=grad_y.dtype, device=grad_y.device) if need_bias \
        else None
    if need_bias and rows == 0:
        grad_bias.zero_()
    if (act is not None or need_bias) and grad_y.numel():
        row_blocks = min(MAX_ROW_BLOCKS, max(1, rows // 256))
        rows_per_block = -(-rows // row_blocks)
        partial = (alloc.empty((row_blocks, cols), dtype=torch.float32, device=grad_y.device)
                   if need_bias else None)
        launch("dense", f"activation_grad_bias_{s}", grad_y.device,
               (-(-cols // TILE_COLS), row_blocks), (TILE_COLS, TILE_ROWS),
               (grad_y, saved.contiguous() if saved is not None else grad_y,
                grad_z if act is not None else None, partial, i64(rows), i32(cols),
                i64(rows_per_block), i32(code_of(act)), f32(param_of(act))))
        if need_bias:
            launch("dense", f"column_sum_{s}", grad_y.device, (blocks_for(cols),), (THREADS,),
                   (partial, grad_bias, i32(row_blocks), i32(cols)))
    return grad_z, grad_bias


def dense_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  act: Activation | None):
    _check("dense_forward", x, weight, bias)
    device = require_cuda("dense_forward", x=x, weight=weight, bias=bias)
    z = alloc.empty((x.shape[0], weight.shape[0]), dtype=x.dtype, device=device)
    torch.matmul(x, weight.t(), out=z)
    return bias_activation(z, bias, act)


def dense_backward(grad_y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                   saved: torch.Tensor | None, act: Activation | None, needs):
    _check("dense_backward", x, weight, None)
    rows, cols = x.shape[0], weight.shape[0]
    if tuple(grad_y.shape) != (rows, cols):
        raise ValueError(f"dense_backward: grad_y must be [{rows}, {cols}], got "
                         f"{tuple(grad_y.shape)}")
    if act is not None and (saved is None or saved.shape != grad_y.shape):
        raise ValueError("dense_backward: an activation needs the saved tensor of grad_y's shape")
    same_dtype("dense_backward", grad_y=grad_y, x=x, saved=saved)
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    require_cuda("dense_backward", grad_y=grad_y, x=x, weight=weight, saved=saved)
    grad_z, grad_bias = activation_grad_bias(grad_y, saved, act, need_b)
    grad_x = grad_z @ weight if need_x else None
    grad_weight = grad_z.t() @ x if need_w else None
    return grad_x, grad_weight, grad_bias
