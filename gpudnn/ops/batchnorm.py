"""Batch normalization with a fused activation: the ops ``gpudnn::batch_norm`` (updates the running
statistics in place when training) / ``gpudnn::batch_norm_backward`` and ``batch_norm``.

The forward saves x, weight, bias and the per-channel mean and invstd; backward recomputes the
pre-activation from x (no activation-sized tensor is kept).
"""
import math
from typing import Any, Optional

import torch
from torch import Tensor
from torch._prims_common import suggest_memory_format

from ..activations import activation_args, activation_of, parse_activation
from ..backend import Kernels, reference_launcher, resolve
from ..kernels.cupy import batchnorm as cupy
from ..kernels.triton import batchnorm as triton
from ..reference import batchnorm as reference
from ._common import check_finite, check_tensor
from ._library import absent, define, like_layout

__all__ = ["batch_norm"]

BATCH_NORM = Kernels(
    "batch_norm",
    # mean, invstd and the per-channel parameter gradients stay (at least) float32
    reference=(reference_launcher(reference.batch_norm_forward, float32_outputs=(1, 2)),
               reference_launcher(reference.batch_norm_backward, float32_outputs=(1, 2))),
    triton=(triton.batch_norm_forward, triton.batch_norm_backward),
    cupy=(cupy.batch_norm_forward, cupy.batch_norm_backward))


@define("batch_norm")
def batch_norm_op(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                  running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
                  momentum: float, eps: float, act: str, act_param: float,
                  backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x [N, C, *] -> (act(xhat * weight + bias) in x's layout, mean [C], invstd [C], new
    running_mean, new running_var). Training: the batch's statistics, and the running ones
    updated with the unbiased variance, returned as new tensors (empty when not given; an op
    with an autograd formula cannot mutate its inputs: ``batch_norm`` copies them back). Eval:
    the running statistics (and two empty outputs). mean, invstd at least float32."""
    update = training and running_mean is not None
    if update:
        running_mean, running_var = running_mean.clone(), running_var.clone()
    y, mean, invstd = BATCH_NORM.forward(backend)(
        x, weight, bias, running_mean, running_var, training, momentum, eps,
        activation_of(act, act_param))
    if not update:
        running_mean, running_var = absent(x), absent(x)
    return like_layout(y, x), mean, invstd, running_mean, running_var


@batch_norm_op.register_fake
def _(x, weight, bias, running_mean, running_var, training, momentum, eps, act, act_param,
      backend):
    stats = x.new_empty(x.shape[1:2], dtype=torch.promote_types(x.dtype, torch.float32))
    update = training and running_mean is not None
    return (torch.empty_like(x), stats, torch.empty_like(stats),
            torch.empty_like(running_mean) if update else absent(x),
            torch.empty_like(running_var) if update else absent(x))


@define("batch_norm_backward")
def batch_norm_backward(grad_y: Tensor, x: Tensor, weight: Optional[Tensor],
                        bias: Optional[Tensor], mean: Tensor, invstd: Tensor, act: str,
                        act_param: float, training: bool, needs: list[bool],
                        backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (grad_x in x's layout, grad_weight, grad_bias in the parameters' dtypes), each empty
    unless ``needs`` it."""
    gx, gw, gb = BATCH_NORM.backward(backend)(grad_y, x, weight, bias, mean, invstd,
                                              activation_of(act, act_param), training,
                                              tuple(needs))
    return (like_layout(gx, x) if gx is not None else absent(x),
            gw.to(weight.dtype) if gw is not None else absent(x),
            gb.to(bias.dtype) if gb is not None else absent(x))


@batch_norm_backward.register_fake
def _(grad_y, x, weight, bias, mean, invstd, act, act_param, training, needs, backend):
    return (torch.empty_like(x) if needs[0] else absent(x),
            torch.empty_like(weight) if needs[1] and weight is not None else absent(x),
            torch.empty_like(bias) if needs[2] and bias is not None else absent(x))


def _setup(ctx, inputs, output):
    x, weight, bias, _, _, training, _, _, act, act_param, backend = inputs
    ctx.act, ctx.training, ctx.backend = (act, act_param), training, backend
    ctx.save_for_backward(x, weight, bias, output[1], output[2])


def _grad(ctx, grad_y, grad_mean, grad_invstd, grad_running_mean, grad_running_var):
    x, weight, bias, mean, invstd = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = batch_norm_backward(grad_y, x, weight, bias, mean, invstd, *ctx.act, ctx.training,
                                needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)),) + (None,) * 8


batch_norm_op.register_autograd(_grad, setup_context=_setup)


def batch_norm(input: torch.Tensor, running_mean: torch.Tensor | None,
               running_var: torch.Tensor | None, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5, activation: Any = None) -> torch.Tensor:
    """torch.nn.functional.batch_norm plus a fused ``activation``.

    ``momentum`` is the running-average factor (a float; the modules turn momentum=None into
    torch's cumulative-average factor).
    """
    act = parse_activation(activation)
    check_tensor("input", input)
    if input.dim() == 1 and input.numel() == 0:  # torch: an empty input gives an empty output
        for name, t in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
            if t is not None and t.numel() > 0:
                raise RuntimeError(f"{name} should contain 0 elements not {t.numel()}")
        return input.clone()
    if input.dim() < 2:
        raise ValueError(f"batch_norm: input must be [N, C, *] (at least 2 dimensions), got "
                         f"shape {tuple(input.shape)}")
    channels = input.shape[1]
    params = {"weight": weight, "bias": bias, "running_mean": running_mean,
              "running_var": running_var}
    for name, t in params.items():
        check_tensor(name, t, optional=True)
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"batch_norm: {name} shape {tuple(t.shape)} does not match the "
                             f"{channels} channels of input shape {tuple(input.shape)}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must both be given or both "
                         "be None")
    if not training and running_mean is None:
        raise ValueError("batch_norm: running_mean and running_var must be given in evaluation "
                         "mode (training=False)")
    if training and math.prod(input.shape) // max(channels, 1) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                         f"{tuple(input.shape)}")
    if momentum is None or not isinstance(momentum, (int, float)):
        raise TypeError(f"batch_norm: momentum must be a float, got {momentum!r}")
    check_finite("batch_norm", momentum=momentum, eps=eps)
    if eps < 0:
        raise ValueError(f"batch_norm: eps must be >= 0, got {eps!r}")
    # like torch (autocast included: batch_norm is on none of its cast lists), a 16-bit input
    # may come with float32 parameters and statistics: it then computes in float32 and returns
    # the input's dtype
    present = {"input": input, **{k: t for k, t in params.items() if t is not None}}
    if len({t.device for t in present.values()}) > 1:
        raise RuntimeError("batch_norm: tensors on different devices: "
                           + ", ".join(f"{k} on {t.device}" for k, t in present.items()))
    allowed = {input.dtype, torch.float32} if input.dtype in (torch.float16, torch.bfloat16) \
        else {input.dtype}
    if any(t.dtype not in allowed for t in present.values()):
        raise TypeError("batch_norm: dtypes differ: "
                        + ", ".join(f"{k} is {t.dtype}" for k, t in present.items())
                        + " (only a float16/bfloat16 input may have float32 parameters)")
    y, _, _, new_mean, new_var = batch_norm_op(
        input, weight, bias, running_mean, running_var, bool(training), float(momentum),
        float(eps), *activation_args(act),
        resolve(BATCH_NORM, input, weight, bias, running_mean, running_var))
    if training and running_mean is not None:
        with torch.no_grad():
            running_mean.copy_(new_mean)
            running_var.copy_(new_var)
    return y


# --- SyncBatchNorm: batch statistics over every process of a group --------------------------------

# (batch_norm_stats, batch_norm_backward_reduce, batch_norm_backward_elemt) of every backend: the
# stages SyncBatchNormFunction runs around its all-gather and all-reduce
SYNC_BATCH_NORM = Kernels(
    "sync_batch_norm",
    reference=(reference_launcher(reference.batch_norm_stats, float32_outputs=(0, 1)),
               reference_launcher(reference.batch_norm_backward_reduce, float32_outputs=(0, 1)),
               reference_launcher(reference.batch_norm_backward_elemt)),
    triton=(triton.batch_norm_stats, triton.batch_norm_backward_reduce,
            triton.batch_norm_backward_elemt),
    cupy=(cupy.batch_norm_stats, cupy.batch_norm_backward_reduce,
          cupy.batch_norm_backward_elemt))
_STATS, _REDUCE, _ELEMT = range(3)


@define("batch_norm_stats")
def batch_norm_stats(x: Tensor, eps: float, backend: str) -> tuple[Tensor, Tensor]:
    """x [N, C, *] -> (mean, invstd) [C] of this batch (biased variance), at least float32."""
    mean, invstd = SYNC_BATCH_NORM.of(backend)[_STATS](x, eps)
    return mean, invstd


@batch_norm_stats.register_fake
def _(x, eps, backend):
    stats = x.new_empty(x.shape[1:2], dtype=torch.promote_types(x.dtype, torch.float32))
    return stats, torch.empty_like(stats)


@define("batch_norm_backward_reduce")
def batch_norm_backward_reduce(grad_y: Tensor, x: Tensor, weight: Optional[Tensor],
                               bias: Optional[Tensor], mean: Tensor, invstd: Tensor, act: str,
                               act_param: float, backend: str) -> tuple[Tensor, Tensor]:
    """-> (sum dz, sum dz * xhat) [C] over this batch (dz: the gradient at the pre-activation,
    xhat = (x - mean) * invstd for the given statistics), at least float32."""
    sum_dz, sum_dz_xhat = SYNC_BATCH_NORM.of(backend)[_REDUCE](
        grad_y, x, weight, bias, mean, invstd, activation_of(act, act_param))
    return sum_dz, sum_dz_xhat


@batch_norm_backward_reduce.register_fake
def _(grad_y, x, weight, bias, mean, invstd, act, act_param, backend):
    sums = x.new_empty(x.shape[1:2], dtype=torch.promote_types(x.dtype, torch.float32))
    return sums, torch.empty_like(sums)


@define("batch_norm_backward_elemt")
def batch_norm_backward_elemt(grad_y: Tensor, x: Tensor, weight: Optional[Tensor],
                              bias: Optional[Tensor], mean: Tensor, invstd: Tensor, act: str,
                              act_param: float, sum_dz: Tensor, sum_dz_xhat: Tensor, count: int,
                              backend: str) -> Tensor:
    """grad_x = w invstd (dz - (sum_dz + xhat sum_dz_xhat) / count), in x's layout: the
    training-mode input gradient for sums and a count over every process's batch."""
    grad_x = SYNC_BATCH_NORM.of(backend)[_ELEMT](grad_y, x, weight, bias, mean, invstd,
                                                 activation_of(act, act_param), sum_dz,
                                                 sum_dz_xhat, count)
    return like_layout(grad_x, x)


@batch_norm_backward_elemt.register_fake
def _(grad_y, x, weight, bias, mean, invstd, act, act_param, sum_dz, sum_dz_xhat, count,
      backend):
    return torch.empty_like(x)


def _combine(gathered: Tensor, channels: int, eps: float) -> tuple[Tensor, Tensor, float]:
    """Every process's [mean, invstd, count] rows ([world, 2C + 1], float64) -> the statistics of
    the whole batch: (mean, biased var, count), as torch's batch_norm_gather_stats_with_counts."""
    means, invstds = gathered[:, :channels], gathered[:, channels:2 * channels]
    counts = gathered[:, 2 * channels:]
    total = counts.sum()
    mean = (means * counts).sum(0) / total
    var = ((1.0 / invstds.square() - eps + (means - mean).square()) * counts).sum(0) / total
    return mean, var, total


class SyncBatchNormFunction(torch.autograd.Function):
    """Batch norm (with a fused activation) whose statistics cover every process of
    ``process_group``: the local statistics are all-gathered and combined, the output is the
    eval-mode op with the combined ones, and backward all-reduces the two per-channel sums the
    input gradient needs (the parameter gradients stay local, as torch's SyncBatchNorm: DDP
    averages them)."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps: float, momentum: float,
                act: tuple, process_group, world_size: int, backend: str):
        import torch.distributed as dist
        channels = x.shape[1]
        mean, invstd = batch_norm_stats(x, eps, backend)
        count = x.numel() // channels if channels else 0
        local = torch.cat([mean.double(), invstd.double(),
                           torch.full((1,), float(count), dtype=torch.float64,
                                      device=x.device)])
        rows = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(rows, local, group=process_group)
        g_mean, g_var, total = _combine(torch.stack(rows), channels, eps)
        total = int(total.item())
        if total <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"{total} over the process group")
        if running_mean is not None:
            with torch.no_grad():
                running_mean.mul_(1.0 - momentum).add_(g_mean.to(running_mean.dtype),
                                                       alpha=momentum)
                running_var.mul_(1.0 - momentum).add_(
                    (g_var * (total / (total - 1))).to(running_var.dtype), alpha=momentum)
        stats_dtype = torch.promote_types(x.dtype, torch.float32)
        y, mean, invstd, _, _ = batch_norm_op(
            x, weight, bias, g_mean.to(stats_dtype), g_var.to(stats_dtype), False, 0.0, eps,
            *act, backend)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        ctx.act, ctx.total, ctx.backend = act, total, backend
        ctx.process_group = process_group
        return y

    @staticmethod
    def backward(ctx, grad_y):
        import torch.distributed as dist
        x, weight, bias, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_y = grad_y.contiguous(memory_format=suggest_memory_format(x))
        sum_dz, sum_dz_xhat = batch_norm_backward_reduce(grad_y, x, weight, bias, mean, invstd,
                                                         *ctx.act, ctx.backend)
        grad_w = sum_dz_xhat.to(weight.dtype) if need_w and weight is not None else None
        grad_b = sum_dz.to(bias.dtype) if need_b and bias is not None else None
        grad_x = None
        if need_x:
            sums = torch.cat([sum_dz, sum_dz_xhat])
            dist.all_reduce(sums, group=ctx.process_group)
            channels = x.shape[1]
            grad_x = batch_norm_backward_elemt(grad_y, x, weight, bias, mean, invstd, *ctx.act,
                                               sums[:channels], sums[channels:], ctx.total,
                                               ctx.backend)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None, None, None


def sync_batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                    weight: Optional[Tensor], bias: Optional[Tensor], eps: float, momentum: float,
                    process_group, world_size: int, activation: Any = None) -> Tensor:
    """Training-mode batch norm over the batches of every process of ``process_group`` (a
    torch.distributed group of ``world_size`` processes, each calling this collectively)."""
    act = parse_activation(activation)
    check_tensor("input", input)
    if input.dim() < 2:
        raise ValueError(f"sync_batch_norm: input must be [N, C, *] (at least 2 dimensions), "
                         f"got shape {tuple(input.shape)}")
    backend = resolve(SYNC_BATCH_NORM, input, weight, bias, running_mean, running_var)
    return SyncBatchNormFunction.apply(input, weight, bias, running_mean, running_var,
                                       float(eps), float(momentum), activation_args(act),
                                       process_group, int(world_size), backend)
