"""``gpudnn.optim.SGD``: torch.optim.SGD's arguments, validation, param groups and state_dict, with
the step run by gpudnn's multi-tensor launcher ``sgd_step`` (one kernel launch per group, device
and dtype on the GPU; the NumPy reference on CPU tensors)."""
from __future__ import annotations

import torch

from ..ops.optim import SGD_STEP, sgd_step
from ._common import check_group, per_device, reject_unsupported


class SGD(torch.optim.SGD):
    """torch.optim.SGD (momentum, dampening, weight_decay, nesterov, maximize) on gpudnn kernels.

    Subclassing torch's optimizer keeps its constructor checks (same errors), ``param_groups``
    and ``state_dict`` layout (``state[p]["momentum_buffer"]`` when momentum != 0), so
    checkpoints load both ways and ``torch.optim.lr_scheduler`` drives it. ``foreach`` is accepted
    and ignored; ``fused=True``, ``differentiable=True`` and a Tensor ``lr`` are refused.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        reject_unsupported("SGD", lr=lr, differentiable=differentiable, fused=fused,
                           momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        super().__init__(params, lr, momentum, dampening, weight_decay, nesterov,
                         maximize=maximize, foreach=foreach, differentiable=differentiable,
                         fused=fused)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step (``closure`` re-evaluates the model, as torch's)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[torch.Tensor] = []
            grads: list[torch.Tensor] = []
            buffers: list[torch.Tensor | None] = []
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            check_group("SGD", group, params, grads)
            has_momentum = group["momentum"] != 0
            fresh = None
            if has_momentum:
                # a missing buffer is created here and filled by the kernel with the first step's
                # gradient, as torch does (torch.clone(grad))
                fresh = [b is None for b in buffers]
                buffers = [torch.empty_like(p, memory_format=torch.preserve_format)
                           if b is None else b for p, b in zip(params, buffers)]

            def run(backend, params, grads, buffers, fresh, group=group):
                sgd_step(params, grads, buffers, fresh, group["lr"], group["weight_decay"],
                         group["momentum"], group["dampening"], group["nesterov"],
                         group["maximize"], backend)

            per_device(SGD_STEP, [params, grads, buffers if has_momentum else [],
                                  fresh if has_momentum else []], run)
            if has_momentum:
                for p, buf in zip(params, buffers):
                    self.state[p]["momentum_buffer"] = buf
        return loss
