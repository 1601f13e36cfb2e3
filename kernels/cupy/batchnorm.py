"""CuPy launchers of batch normalization (``batchnorm.cu``): Welford statistics split across
blocks and merged in a fixed order, running statistics updated on the device, the activation
fused into the normalization, and a fused backward that recomputes the pre-activation from x.

x [N, C, *] is used as stored when NCHW-contiguous or channels_last (4-d), else made contiguous;
y and grad_x take that layout. Per-channel vectors run in fp32 (converted here when they are
not), running statistics of another dtype are updated through fp32 copies written back.
"""
from __future__ import annotations

import math

import torch

from .. import alloc
from ..activations import Activation, code_of, param_of
from ._runtime import blocks_for, f32, i32, i64, launch, require_cuda, suffix, THREADS

STATS_THREADS = 256
ELEMENTS_PER_SPLIT = 16 * STATS_THREADS
MAX_SPLITS = 256


def _check(op: str, x: torch.Tensor, **per_channel: torch.Tensor | None) -> str:
    s = suffix(op, "x", x)
    if x.dim() < 2:
        raise ValueError(f"{op}: input must be [N, C, *], got shape {tuple(x.shape)}")
    for name, t in per_channel.items():
        if t is not None:
            suffix(op, name, t)
            if tuple(t.shape) != (x.shape[1],):
                raise ValueError(f"{op}: {name} has shape {tuple(t.shape)}, expected "
                                 f"({x.shape[1]},)")
    return s


def _layout(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(x as the kernels read it, channels_last flag)."""
    if x.is_contiguous():
        return x, 0
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x, 1
    return x.contiguous(), 0


def _like(t: torch.Tensor, channels_last: int) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last if channels_last else
                        torch.contiguous_format)


def _fp32(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float().contiguous()


def _splits(per_channel: int) -> int:
    return max(1, min(MAX_SPLITS, math.ceil(per_channel / ELEMENTS_PER_SPLIT)))


def batch_norm_forward(x, weight, bias, running_mean, running_var, training: bool,
                       momentum: float, eps: float, act: Activation | None):
    op = "batch_norm_forward"
    s = _check(op, x, weight=weight, bias=bias, running_mean=running_mean,
               running_var=running_var)
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{op}: eval mode needs running_mean and running_var")
    device = require_cuda(op, x=x, weight=weight, bias=bias, running_mean=running_mean,
                          running_var=running_var)
    x, channels_last = _layout(x)
    batch, channels = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    per_channel = batch * spatial
    y = alloc.empty_like(x, memory_format=torch.preserve_format)
    mean = alloc.empty((channels,), dtype=torch.float32, device=device)
    invstd = alloc.empty((channels,), dtype=torch.float32, device=device)
    if channels == 0:
        return y, mean, invstd
    stats = [(t, _fp32(t)) for t in (running_mean, running_var)]
    splits = _splits(per_channel)
    partial = None
    if training:
        partial = alloc.empty((channels, splits, 3), dtype=torch.float32, device=device)
        launch("batchnorm", f"batch_norm_stats_{s}", device, (channels, splits),
               (STATS_THREADS,), (x, partial, i64(batch), i32(channels), i64(spatial),
                                  i32(channels_last)))
    launch("batchnorm", "batch_norm_finalize", device, (blocks_for(channels),), (THREADS,),
           (partial, i32(splits), i32(channels), i32(bool(training)), f32(momentum), f32(eps),
            stats[0][1], stats[1][1], mean, invstd))
    for original, fp32 in stats:
        if training and original is not None and fp32 is not original:  # converted copies
            original.copy_(fp32)
    if x.numel():
        launch("batchnorm", f"batch_norm_apply_{s}", device, (blocks_for(x.numel()),),
               (THREADS,), (x, y, i64(x.numel()), i32(channels), i64(spatial),
                            i32(channels_last), mean, invstd, _fp32(weight), _fp32(bias),
                            i32(code_of(act)), f32(param_of(act))))
    return y, mean, invstd


def batch_norm_backward(grad_y, x, weight, bias, mean, invstd, act: Activation | None,
                        training: bool, needs):
    op = "batch_norm_backward"
    s = _check(op, x, weight=weight, bias=bias)
    if grad_y.shape != x.shape or grad_y.dtype != x.dtype:
        raise ValueError(f"{op}: grad_y {tuple(grad_y.shape)} {grad_y.dtype} and x "
                         f"{tuple(x.shape)} {x.dtype} differ")
    for name, t in (("mean", mean), ("invstd", invstd)):
        if t.dtype != torch.float32 or tuple(t.shape) != (x.shape[1],):
            raise ValueError(f"{op}: {name} must be float32 [{x.shape[1]}]")
    need_x, need_w, need_b = (tuple(needs) + (False, False, False))[:3]
    need_w = need_w and weight is not None
    need_b = need_b and bias is not None
    device = require_cuda(op, grad_y=grad_y, x=x, weight=weight, bias=bias, mean=mean,
                          invstd=invstd)
    mean, invstd = _fp32(mean), _fp32(invstd)  # read by channel: a strided view copied
    x, channels_last = _layout(x)
    grad_y = _like(grad_y, channels_last)
    batch, channels = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    per_channel = batch * spatial
    grad_x = alloc.empty_like(x, memory_format=torch.preserve_format) if need_x else None
    grad_weight = grad_bias = None
    if channels == 0:
        return (grad_x, alloc.empty((0,), dtype=x.dtype, device=device) if need_w else None,
                alloc.empty((0,), dtype=x.dtype, device=device) if need_b else None)
    w32, b32 = _fp32(weight), _fp32(bias)
    code, param = i32(code_of(act)), f32(param_of(act))
    from_output = i32(bool(act is not None and act.from_output))
    sums = None
    if need_w or need_b or (training and need_x):
        sums = _reduce_sums(op, s, grad_y, x, channels_last, mean, invstd, w32, b32, act, device)
        # contiguous copies: two views of ``sums`` would alias each other (a custom op's outputs
        # must not) and have stride 2 (the registered fake has 1)
        if need_w:
            grad_weight = sums[:, 1].to(weight.dtype).contiguous()
        if need_b:
            grad_bias = sums[:, 0].to(bias.dtype).contiguous()
    if need_x and x.numel():
        launch("batchnorm", f"batch_norm_backward_input_{s}", device, (blocks_for(x.numel()),),
               (THREADS,), (grad_y, x, grad_x, i64(x.numel()), i64(per_channel), i32(channels),
                            i64(spatial), i32(channels_last), mean, invstd, w32, b32, sums,
                            i32(bool(training)), code, param, from_output))
    return grad_x, grad_weight, grad_bias


# --- the stages SyncBatchNorm composes around its all-reduces -------------------------------------

def batch_norm_stats(x, eps: float):
    """x [N, C, *] -> (mean, invstd) [C] fp32 of this batch (biased variance); no output, no
    running statistics."""
    op = "batch_norm_stats"
    s = _check(op, x)
    device = require_cuda(op, x=x)
    x, channels_last = _layout(x)
    batch, channels = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    mean = alloc.empty((channels,), dtype=torch.float32, device=device)
    invstd = alloc.empty((channels,), dtype=torch.float32, device=device)
    if channels == 0:
        return mean, invstd
    splits = _splits(batch * spatial)
    partial = alloc.empty((channels, splits, 3), dtype=torch.float32, device=device)
    launch("batchnorm", f"batch_norm_stats_{s}", device, (channels, splits), (STATS_THREADS,),
           (x, partial, i64(batch), i32(channels), i64(spatial), i32(channels_last)))
    launch("batchnorm", "batch_norm_finalize", device, (blocks_for(channels),), (THREADS,),
           (partial, i32(splits), i32(channels), i32(1), f32(0.0), f32(eps), None, None, mean,
            invstd))
    return mean, invstd


def _reduce_sums(op, s, grad_y, x, channels_last, mean, invstd, w32, b32, act, device):
    """[C, 2] fp32 (sum dz, sum dz * xhat) of this batch for the given statistics."""
    batch, channels = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    splits = _splits(batch * spatial)
    partial = alloc.empty((channels, splits, 2), dtype=torch.float32, device=device)
    sums = alloc.empty((channels, 2), dtype=torch.float32, device=device)
    launch("batchnorm", f"batch_norm_backward_reduce_{s}", device, (channels, splits),
           (STATS_THREADS,), (grad_y, x, partial, i64(batch), i32(channels), i64(spatial),
                              i32(channels_last), mean, invstd, w32, b32, i32(code_of(act)),
                              f32(param_of(act)), i32(bool(act is not None and act.from_output))))
    launch("batchnorm", "batch_norm_backward_finalize", device, (blocks_for(channels),),
           (THREADS,), (partial, i32(splits), i32(channels), sums))
    return sums


def batch_norm_backward_reduce(grad_y, x, weight, bias, mean, invstd, act: Activation | None):
    """-> (sum_dz, sum_dz_xhat) [C] fp32 over this batch for the given (global) statistics."""
    op = "batch_norm_backward_reduce"
    s = _check(op, x, weight=weight, bias=bias)
    device = require_cuda(op, grad_y=grad_y, x=x, weight=weight, bias=bias, mean=mean,
                          invstd=invstd)
    mean, invstd = _fp32(mean), _fp32(invstd)  # read by channel: a strided view copied
    x, channels_last = _layout(x)
    if x.shape[1] == 0 or x.numel() == 0:
        zeros = alloc.empty((x.shape[1],), dtype=torch.float32, device=device).zero_()
        return zeros, zeros.clone()
    sums = _reduce_sums(op, s, _like(grad_y, channels_last), x, channels_last, mean, invstd,
                        _fp32(weight), _fp32(bias), act, device)
    return sums[:, 0].clone(), sums[:, 1].clone()


def batch_norm_backward_elemt(grad_y, x, weight, bias, mean, invstd, act: Activation | None,
                              sum_dz, sum_dz_xhat, count: int):
    """grad_x = w invstd (dz - (sum_dz + xhat sum_dz_xhat) / count)."""
    op = "batch_norm_backward_elemt"
    s = _check(op, x, weight=weight, bias=bias)
    device = require_cuda(op, grad_y=grad_y, x=x, weight=weight, bias=bias, mean=mean,
                          invstd=invstd)
    mean, invstd = _fp32(mean), _fp32(invstd)  # read by channel: a strided view copied
    x, channels_last = _layout(x)
    grad_y = _like(grad_y, channels_last)
    grad_x = alloc.empty_like(x, memory_format=torch.preserve_format)
    if x.numel() == 0:
        return grad_x
    channels = x.shape[1]
    spatial = math.prod(x.shape[2:])
    sums = torch.stack([sum_dz.float(), sum_dz_xhat.float()], dim=1).contiguous()
    launch("batchnorm", f"batch_norm_backward_input_{s}", device, (blocks_for(x.numel()),),
           (THREADS,), (grad_y, x, grad_x, i64(x.numel()), i64(count), i32(channels),
                        i64(spatial), i32(channels_last), mean, invstd, _fp32(weight),
                        _fp32(bias), sums, i32(1), i32(code_of(act)), f32(param_of(act)),
                        i32(bool(act is not None and act.from_output))))
    return grad_x
