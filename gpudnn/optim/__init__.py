"""``gpudnn.optim``: torch.optim's SGD, Adam and AdamW with fused multi-tensor update kernels.

Drop-in: same constructor arguments, errors, ``param_groups`` and ``state_dict`` as torch.optim
(they subclass torch's classes), so lr_schedulers and checkpoints work unchanged. The update runs
through the ``sgd_step`` / ``adam_step`` launchers of the selected gpudnn backend.
"""
from .adam import Adam, AdamW
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW"]
