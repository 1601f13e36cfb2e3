"""What the gpudnn optimizers share: refusing torch options they do not implement, and running one
op call per device over a parameter group."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..backend import Kernels, resolve
from ..ops._common import check_finite


def reject_unsupported(optimizer: str, *, lr, betas=None, capturable: bool = False,
                       differentiable: bool = False, fused: bool | None = None,
                       **hyper_parameters: float) -> None:
    """Raise for the torch.optim options these optimizers do not implement and for non-finite
    hyper-parameters (torch lets a NaN lr or momentum through: every weight would become NaN),
    before torch's own validation, which then gives torch's errors for bad values."""
    if isinstance(lr, torch.Tensor):
        raise TypeError(f"gpudnn.optim.{optimizer}: a Tensor lr is not supported; pass a float "
                        "(lr_schedulers work with float learning rates)")
    if betas is not None and any(isinstance(b, torch.Tensor) for b in betas):
        raise TypeError(f"gpudnn.optim.{optimizer}: Tensor betas are not supported; pass floats")
    finite = dict(lr=lr, **hyper_parameters)
    if betas is not None:
        finite.update(beta1=betas[0], beta2=betas[1])
    check_finite(f"gpudnn.optim.{optimizer}", **finite)
    if fused:
        raise ValueError(f"gpudnn.optim.{optimizer} always runs gpudnn's own multi-tensor kernel; "
                         "fused=True selects torch's fused kernel, use torch.optim for that")
    if capturable:
        raise ValueError(f"gpudnn.optim.{optimizer} does not support capturable=True "
                         "(CUDA-graph capture of the step); use torch.optim for that")
    if differentiable:
        raise ValueError(f"gpudnn.optim.{optimizer} does not support differentiable=True")


def check_group(optimizer: str, group: dict, params: Sequence[torch.Tensor],
                grads: Sequence[torch.Tensor]) -> None:
    if isinstance(group["lr"], torch.Tensor):
        raise TypeError(f"gpudnn.optim.{optimizer}: a Tensor lr is not supported; pass a float")
    for p, g in zip(params, grads):
        if g.is_sparse:
            raise RuntimeError(f"gpudnn.optim.{optimizer} does not support sparse gradients")
        if p.is_complex():
            raise TypeError(f"gpudnn.optim.{optimizer} does not support complex parameters")


def per_device(kernels: Kernels, lists: Sequence[list], call: Callable) -> None:
    """Call ``call(backend, *sublists)`` once per device of ``lists[0]`` (the params), with every
    list cut down to that device's entries and the backend resolved for that device's tensors."""
    params = lists[0]
    devices: dict[torch.device, list[int]] = {}
    for i, p in enumerate(params):
        devices.setdefault(p.device, []).append(i)
    for indices in devices.values():
        if len(devices) == 1:
            sub = [list(lst) for lst in lists]
        else:
            sub = [[lst[i] for i in indices] if lst else [] for lst in lists]
        call(resolve(kernels, *sub[0], *sub[1]), *sub)
