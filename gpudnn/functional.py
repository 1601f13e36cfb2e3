"""``gpudnn.functional``: torch.nn.functional's signatures, gpudnn's kernels.

Each function is defined next to its autograd Function in ``gpudnn/ops/<family>.py``.
"""
from ._lazy import lazy_exports

_TABLE = {
    "linear": ".ops.dense",
    "conv2d": ".ops.conv", "conv_transpose2d": ".ops.conv",
    "batch_norm": ".ops.batchnorm",
    "dropout": ".ops.dropout",
    "softmax": ".ops.softmax", "log_softmax": ".ops.softmax",
    "cross_entropy": ".ops.losses", "binary_cross_entropy_with_logits": ".ops.losses",
    "mse_loss": ".ops.losses",
    "max_pool2d": ".ops.pool", "avg_pool2d": ".ops.pool",
    "relu": ".ops.activations", "leaky_relu": ".ops.activations", "sigmoid": ".ops.activations",
    "tanh": ".ops.activations", "gelu": ".ops.activations", "silu": ".ops.activations",
    "lstm_cell": ".ops.lstm", "lstm": ".ops.lstm",
}
__all__ = sorted(_TABLE)
__getattr__, __dir__ = lazy_exports("gpudnn", _TABLE)
