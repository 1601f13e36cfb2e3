"""NumPy reference of the optimizer updates (torch.optim's update rules, written out by hand).

Launcher signatures (the same in every backend; lists are updated in place, nothing is returned):

``sgd_step(params, grads, momentum_buffers, fresh_buffers, lr, weight_decay, momentum, dampening,
nesterov, maximize) -> None``
    params, grads: lists of tensors, ``grads[i]`` shaped like ``params[i]``.
    momentum_buffers: a list of tensors shaped like ``params`` (``None`` when ``momentum == 0``).
    fresh_buffers: list of bools (``None`` when ``momentum == 0``); True: ``momentum_buffers[i]``
    holds no history yet and is set to the step's gradient (torch's first step), False: it is
    updated ``buf = momentum * buf + (1 - dampening) * g``.
    Rule (torch.optim.SGD): ``g = ±grad + weight_decay * p``; with momentum ``g = g + momentum *
    buf`` (nesterov) or ``g = buf``; ``p -= lr * g``.

``adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps,
weight_decay, amsgrad, maximize, decoupled_weight_decay) -> None``
    exp_avgs, exp_avg_sqs: lists shaped like ``params``; max_exp_avg_sqs: the same when amsgrad,
    else ``None``. steps: list of numbers, the step count of each parameter *after* this step's
    increment (1 on the first step); the bias corrections are computed from it.
    Rule (torch.optim.Adam, and AdamW when ``decoupled_weight_decay``): ``g = ±grad``;
    decoupled: ``p *= 1 - lr * weight_decay``, else ``g += weight_decay * p``;
    ``m = lerp(m, g, 1 - beta1)``; ``v = beta2 * v + (1 - beta2) * g * g``;
    amsgrad: ``vmax = max(vmax, v)`` and ``v̂ = vmax``, else ``v̂ = v``;
    ``p -= lr / (1 - beta1**t) * m / (sqrt(v̂) / sqrt(1 - beta2**t) + eps)``.

Arithmetic runs in the arrays' dtype (float64 in the oracle tests; the backend adapter hands
fp16/bf16 tensors over as float32 copies, the "fp32 master math" of the kernels).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _check_lists(**lists: Sequence | None) -> int:
    """All given lists have one length; return it."""
    lengths = {k: len(v) for k, v in lists.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError("optimizer lists differ in length: "
                         + ", ".join(f"{k}={n}" for k, n in lengths.items()))
    return next(iter(lengths.values()), 0)


def sgd_step(params, grads, momentum_buffers, fresh_buffers, lr, weight_decay, momentum,
             dampening, nesterov, maximize) -> None:
    use_momentum = momentum != 0
    n = _check_lists(params=params, grads=grads,
                     momentum_buffers=momentum_buffers if use_momentum else None,
                     fresh_buffers=fresh_buffers if use_momentum else None)
    for i in range(n):
        p, grad = params[i], grads[i]
        dtype = p.dtype.type
        g = -grad if maximize else grad
        if weight_decay != 0:
            g = g + dtype(weight_decay) * p
        if use_momentum:
            buf = momentum_buffers[i]
            if fresh_buffers[i]:
                buf[...] = g
            else:
                buf *= dtype(momentum)
                buf += dtype(1 - dampening) * g
            g = g + dtype(momentum) * buf if nesterov else buf
        p -= dtype(lr) * g


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps,
              weight_decay, amsgrad, maximize, decoupled_weight_decay) -> None:
    n = _check_lists(params=params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs,
                     max_exp_avg_sqs=max_exp_avg_sqs if amsgrad else None, steps=steps)
    for i in range(n):
        p, m, v = params[i], exp_avgs[i], exp_avg_sqs[i]
        dtype = p.dtype.type
        g = -grads[i] if maximize else grads[i]
        if decoupled_weight_decay:
            p *= dtype(1 - lr * weight_decay)
        elif weight_decay != 0:
            g = g + dtype(weight_decay) * p
        m += dtype(1 - beta1) * (g - m)
        v *= dtype(beta2)
        v += dtype(1 - beta2) * g * g
        if amsgrad:
            np.maximum(max_exp_avg_sqs[i], v, out=max_exp_avg_sqs[i])
            v = max_exp_avg_sqs[i]
        step = float(steps[i])
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
        denom = np.sqrt(v) / dtype(bias_correction2_sqrt) + dtype(eps)
        p -= dtype(step_size) * m / denom
