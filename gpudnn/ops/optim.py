"""The optimizers' multi-tensor updates as ops: ``gpudnn::sgd_step`` and ``gpudnn::adam_step``
(in place on lists of tensors; no autograd). Opaque to ``torch.compile`` on every backend
(``traceable=False``): the Triton launchers read the tensors through a device pointer table.
Update rules and launcher signatures: ``gpudnn/reference/optim.py``."""
from torch import Tensor

from ..backend import Kernels, reference_launcher
from ..kernels.triton import optim as triton
from ..reference import optim as reference
from ._library import define

SGD_STEP = Kernels("sgd_step", reference=(reference_launcher(reference.sgd_step),),
                   triton=(triton.sgd_step,))
ADAM_STEP = Kernels("adam_step", reference=(reference_launcher(reference.adam_step),),
                    triton=(triton.adam_step,))


@define("sgd_step", mutates_args=("params", "momentum_buffers"), traceable=False)
def sgd_step(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor],
             fresh_buffers: list[bool], lr: float, weight_decay: float, momentum: float,
             dampening: float, nesterov: bool, maximize: bool, backend: str) -> None:
    """torch.optim.SGD's update of ``params`` (and of ``momentum_buffers`` when momentum != 0;
    a ``fresh_buffers`` entry marks a buffer to fill with its first step's gradient)."""
    has_momentum = momentum != 0
    SGD_STEP.forward(backend)(params, grads, momentum_buffers if has_momentum else None,
                              fresh_buffers if has_momentum else None, lr, weight_decay,
                              momentum, dampening, nesterov, maximize)


@sgd_step.register_fake
def _(params, grads, momentum_buffers, fresh_buffers, lr, weight_decay, momentum, dampening,
      nesterov, maximize, backend):
    return None


@define("adam_step", mutates_args=("params", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"),
        traceable=False)
def adam_step(params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor],
              exp_avg_sqs: list[Tensor], max_exp_avg_sqs: list[Tensor], steps: list[Tensor],
              lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
              amsgrad: bool, maximize: bool, decoupled_weight_decay: bool, backend: str) -> None:
    """torch.optim.Adam / AdamW's update, in place; ``steps``: each parameter's step count
    (already incremented; torch keeps them as CPU scalar tensors, read here without a sync)."""
    counts = [float(s) for s in steps]
    ADAM_STEP.forward(backend)(params, grads, exp_avgs, exp_avg_sqs,
                               max_exp_avg_sqs if amsgrad else None, counts, lr, beta1, beta2,
                               eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)


@adam_step.register_fake
def _(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps,
      weight_decay, amsgrad, maximize, decoupled_weight_decay, backend):
    return None
