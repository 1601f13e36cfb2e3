"""CuPy launchers of the embedding lookup (``embedding.cu``): a gather forward and a
deterministic gather backward over the ids sorted by ``kernels.segments.sorted_segments``."""
from __future__ import annotations

import torch

from .. import alloc
from ..segments import sorted_segments
from ._runtime import blocks_for, i32, i64, launch, require_cuda, suffix, THREADS


def _check_ids(op: str, ids: torch.Tensor) -> None:
    if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or \
            ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"{op}: ids must be a 1-D int32 or int64 tensor, got "
                        f"{getattr(ids, 'dtype', type(ids).__name__)} of shape "
                        f"{tuple(getattr(ids, 'shape', ()))}")


def embedding_forward(weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    op = "embedding_forward"
    s = suffix(op, "weight", weight)
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must be [V, D], got shape {tuple(weight.shape)}")
    _check_ids(op, ids)
    device = require_cuda(op, weight=weight, ids=ids)
    (v, d), n = weight.shape, ids.shape[0]
    y = alloc.empty((n, d), dtype=weight.dtype, device=device)
    if y.numel():
        launch("embedding", f"embedding_forward_{s}", device, (blocks_for(y.numel()),),
               (THREADS,), (weight.contiguous(), ids.long().contiguous(), y, i64(n), i64(v),
                            i32(d)))
    return y


def embedding_backward(grad_y: torch.Tensor, ids: torch.Tensor, num_weights: int,
                       padding_idx: int, scale_grad_by_freq: bool) -> torch.Tensor:
    op = "embedding_backward"
    s = suffix(op, "grad_y", grad_y)
    _check_ids(op, ids)
    if grad_y.dim() != 2 or grad_y.shape[0] != ids.shape[0]:
        raise ValueError(f"{op}: grad_y must be [{ids.shape[0]}, D], got "
                         f"{tuple(grad_y.shape)}")
    device = require_cuda(op, grad_y=grad_y, ids=ids)
    d = grad_y.shape[1]
    grad_weight = alloc.empty((num_weights, d), dtype=grad_y.dtype, device=device)
    if grad_weight.numel():
        order, bounds = sorted_segments(ids.long(), num_weights)
        launch("embedding", f"embedding_backward_{s}", device, (blocks_for(grad_weight.numel()),),
               (THREADS,), (grad_y.contiguous(), order, bounds, grad_weight, i64(num_weights),
                            i32(d), i64(padding_idx), i32(bool(scale_grad_by_freq))))
    return grad_weight
