"""CuPy launchers of the elementwise activations (``activations.cu``); contract in
``gpudnn/launchers.py``. Any shape and strides: tensors sharing one dense layout are walked in
storage order, others are made contiguous first."""
from __future__ import annotations

import torch

from .. import alloc
from ..activations import Activation, code_of, param_of
from ._runtime import blocks_for, common_layout, f32, i32, i64, launch, require_cuda, suffix, \
    THREADS


def activation_forward(x: torch.Tensor, act: Activation | None) -> torch.Tensor:
    s = suffix("activation_forward", "x", x)
    device = require_cuda("activation_forward", x=x)
    (x,) = common_layout(x)
    y = alloc.empty_like(x, memory_format=torch.preserve_format)
    if x.numel():
        launch("activations", f"activation_forward_{s}", device, (blocks_for(x.numel()),),
               (THREADS,), (x, y, i64(x.numel()), i32(code_of(act)), f32(param_of(act))))
    return y


def activation_backward(grad_y: torch.Tensor, saved: torch.Tensor,
                        act: Activation | None) -> torch.Tensor:
    s = suffix("activation_backward", "grad_y", grad_y)
    suffix("activation_backward", "saved", saved)
    if grad_y.shape != saved.shape:
        raise ValueError(f"activation_backward: grad_y {tuple(grad_y.shape)} and saved "
                         f"{tuple(saved.shape)} differ in shape")
    if grad_y.dtype != saved.dtype:
        raise TypeError(f"activation_backward: grad_y is {grad_y.dtype}, saved is {saved.dtype}")
    device = require_cuda("activation_backward", grad_y=grad_y, saved=saved)
    grad_y, saved = common_layout(grad_y, saved)
    grad_x = alloc.empty_like(grad_y, memory_format=torch.preserve_format)
    if grad_y.numel():
        launch("activations", f"activation_backward_{s}", device, (blocks_for(grad_y.numel()),),
               (THREADS,), (grad_y, saved, grad_x, i64(grad_y.numel()), i32(code_of(act)),
                            f32(param_of(act))))
    return grad_x
