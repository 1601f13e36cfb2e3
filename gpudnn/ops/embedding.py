"""Embedding lookup: the ops ``gpudnn::embedding`` / ``gpudnn::embedding_backward`` and
``embedding`` (torch.nn.functional.embedding's signature).

Forward is a gather of weight rows; backward sums the output gradient into the rows the ids name
(every backend deterministically: sorted ids, one writer per weight row, no atomics).
``padding_idx``'s row gets no gradient; ``scale_grad_by_freq`` divides each row's gradient by the
number of times its id occurs in the batch, as torch. ``max_norm`` (torch renormalizes the weight
in place inside the lookup) and ``sparse=True`` gradients are refused with NotImplementedError.

Ids out of range: eager mode raises torch's IndexError (``IndexValueError``, also a ValueError;
one host sync, as cross_entropy's target check); a compiled graph cannot branch on data, so there
every backend returns a NaN row for such an id (never a read out of bounds, never a plausible
wrong value) and gives it no gradient.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import embedding as cupy
from ..kernels.triton import embedding as triton
from ..reference import embedding as reference
from ._common import IndexValueError, check_tensor
from ._library import define

__all__ = ["embedding"]

EMBEDDING = Kernels(
    "embedding",
    reference=(reference_launcher(reference.embedding_forward),
               reference_launcher(reference.embedding_backward)),
    triton=(triton.embedding_forward, triton.embedding_backward),
    cupy=(cupy.embedding_forward, cupy.embedding_backward))

ID_DTYPES = (torch.int32, torch.int64)


@define("embedding")
def embedding_op(weight: Tensor, ids: Tensor, padding_idx: int, scale_grad_by_freq: bool,
                 backend: str) -> Tensor:
    """weight [V, D], ids [N] int32/int64 -> y [N, D] contiguous in weight's dtype
    (padding_idx, -1 for none, and scale_grad_by_freq are for the backward)."""
    return EMBEDDING.forward(backend)(weight, ids).contiguous()


@embedding_op.register_fake
def _(weight, ids, padding_idx, scale_grad_by_freq, backend):
    return weight.new_empty((ids.shape[0], weight.shape[1]))


@define("embedding_backward")
def embedding_backward(grad_y: Tensor, ids: Tensor, num_weights: int, padding_idx: int,
                       scale_grad_by_freq: bool, backend: str) -> Tensor:
    """grad_weight [num_weights, D] contiguous in grad_y's dtype."""
    return EMBEDDING.backward(backend)(grad_y, ids, num_weights, padding_idx,
                                       scale_grad_by_freq).contiguous()


@embedding_backward.register_fake
def _(grad_y, ids, num_weights, padding_idx, scale_grad_by_freq, backend):
    return grad_y.new_empty((num_weights, grad_y.shape[1]))


def _setup(ctx, inputs, output):
    weight, ids, padding_idx, scale_grad_by_freq, backend = inputs
    ctx.num_weights, ctx.backend = weight.shape[0], backend
    ctx.options = (padding_idx, scale_grad_by_freq)
    ctx.save_for_backward(ids)


def _grad(ctx, grad_y):
    (ids,) = ctx.saved_tensors
    grad_weight = embedding_backward(grad_y, ids, ctx.num_weights, *ctx.options, ctx.backend)
    return grad_weight, None, None, None, None


embedding_op.register_autograd(_grad, setup_context=_setup)


def normalize_padding_idx(padding_idx, num_weights: int) -> int:
    """torch's padding_idx rule: None -> -1 (none), negative counts from the end, anything
    outside [-V, V) a ValueError (torch raises an AssertionError)."""
    if padding_idx is None:
        return -1
    if not isinstance(padding_idx, int) or isinstance(padding_idx, bool):
        raise TypeError(f"padding_idx must be an int or None, got {padding_idx!r}")
    if not -num_weights <= padding_idx < num_weights:
        raise ValueError(f"padding_idx must be within num_embeddings ({num_weights}), got "
                         f"{padding_idx}")
    return padding_idx + num_weights if padding_idx < 0 else padding_idx


def refuse_unsupported(max_norm, sparse) -> None:
    """NotImplementedError for the two options gpudnn's embedding does not implement."""
    if max_norm is not None:
        raise NotImplementedError(
            "gpudnn embedding does not support max_norm (torch renormalizes the weight rows in "
            "place during the lookup); use torch.nn.Embedding / torch.nn.functional.embedding "
            "for max_norm")
    if sparse:
        raise NotImplementedError(
            "gpudnn embedding does not produce sparse gradients (sparse=True); use sparse=False "
            "(a dense weight gradient) or torch.nn.Embedding")


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """torch.nn.functional.embedding: input (int32 / int64 ids, any shape), weight [V, D] ->
    [*input.shape, D]."""
    check_tensor("input", input, floating=False)
    check_tensor("weight", weight)
    if input.dtype not in ID_DTYPES:
        raise TypeError(f"embedding: input must hold int64 or int32 indices, got {input.dtype}")
    if weight.dim() != 2:
        raise ValueError(f"embedding: 'weight' must be 2-D [num_embeddings, embedding_dim], got "
                         f"shape {tuple(weight.shape)}")
    if input.device != weight.device:
        raise RuntimeError(f"embedding: input on {input.device}, weight on {weight.device}")
    refuse_unsupported(max_norm, sparse)
    num_weights = weight.shape[0]
    padding = normalize_padding_idx(padding_idx, num_weights)
    # eager: torch's IndexError (one host sync); a compiled graph cannot branch on data, and
    # every kernel gives a NaN row for an id out of range instead
    if not torch.compiler.is_compiling() and input.numel():
        out_of_range = (input < 0) | (input >= num_weights)
        if bool(out_of_range.any()):
            bad = input[out_of_range][0].item()
            raise IndexValueError(f"embedding: input holds index {bad}, out of range for an "
                                  f"embedding of {num_weights} rows (index out of range in self)")
    ids = input.reshape(-1)
    y = embedding_op(weight, ids, padding, bool(scale_grad_by_freq),
                     resolve(EMBEDDING, weight, ids))
    return y.reshape(*input.shape, weight.shape[1])
