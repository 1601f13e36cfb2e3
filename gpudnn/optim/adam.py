"""``gpudnn.optim.Adam`` and ``AdamW``: torch.optim's arguments, validation, param groups and
state_dict, with the step run by gpudnn's multi-tensor launcher ``adam_step`` (one kernel launch
per group, device and dtype on the GPU; the NumPy reference on CPU tensors)."""
from __future__ import annotations

import torch

from ..ops.optim import ADAM_STEP, adam_step
from ._common import check_group, per_device, reject_unsupported


@torch.no_grad()
def _adam_step(self, closure=None):
    """Perform a single optimization step (``closure`` re-evaluates the model, as torch's)."""
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    name = type(self).__name__
    for group in self.param_groups:
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        exp_avgs: list[torch.Tensor] = []
        exp_avg_sqs: list[torch.Tensor] = []
        max_exp_avg_sqs: list[torch.Tensor] = []
        state_steps: list[torch.Tensor] = []
        # torch's own state initialisation: same keys, dtypes and devices as torch.optim.Adam
        self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                         state_steps)
        if not params:
            continue
        check_group(name, group, params, grads)
        beta1, beta2 = group["betas"]
        if isinstance(beta1, torch.Tensor) or isinstance(beta2, torch.Tensor):
            raise TypeError(f"gpudnn.optim.{name}: Tensor betas are not supported; pass floats")
        # the steps are CPU scalars, as torch keeps them: the op reads them without a device
        # sync (a checkpoint of a fused/capturable torch optimizer may have put them on the
        # device: then one sync each)
        torch._foreach_add_(state_steps, 1)
        amsgrad = group["amsgrad"]

        def run(backend, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps,
                group=group):
            adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, group["lr"],
                      beta1, beta2, group["eps"], group["weight_decay"], amsgrad,
                      group["maximize"], group.get("decoupled_weight_decay", False), backend)

        per_device(ADAM_STEP, [params, grads, exp_avgs, exp_avg_sqs,
                               max_exp_avg_sqs if amsgrad else [], state_steps], run)
    return loss


class Adam(torch.optim.Adam):
    """torch.optim.Adam (betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay) on
    gpudnn kernels.

    Subclassing torch's optimizer keeps its constructor checks (same errors), ``param_groups`` and
    ``state_dict`` layout (``step`` a float32 CPU scalar tensor, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``), so checkpoints load both ways and lr_schedulers drive it. ``foreach`` is
    accepted and ignored; ``fused``, ``capturable``, ``differentiable`` and Tensor ``lr`` /
    ``betas`` are refused.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *,
                 foreach: bool | None = None, maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None,
                 decoupled_weight_decay: bool = False) -> None:
        reject_unsupported("Adam", lr=lr, betas=betas, capturable=capturable,
                           differentiable=differentiable, fused=fused, eps=eps,
                           weight_decay=weight_decay)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach,
                         maximize=maximize, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=decoupled_weight_decay)

    step = _adam_step


class AdamW(torch.optim.AdamW):
    """torch.optim.AdamW (decoupled weight decay, default 1e-2) on gpudnn kernels; see Adam."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, fused: bool | None = None) -> None:
        reject_unsupported("AdamW", lr=lr, betas=betas, capturable=capturable,
                           differentiable=differentiable, fused=fused, eps=eps,
                           weight_decay=weight_decay)
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         foreach=foreach, capturable=capturable, differentiable=differentiable,
                         fused=fused)

    step = _adam_step
