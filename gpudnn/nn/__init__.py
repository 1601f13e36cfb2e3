"""``gpudnn.nn``: drop-in twins of torch.nn layers (same signatures and state_dict keys)."""
from .._lazy import lazy_exports

_TABLE = {
    "Linear": ".linear",
    "Conv2d": ".conv", "ConvTranspose2d": ".conv",
    "BatchNorm1d": ".batchnorm", "BatchNorm2d": ".batchnorm",
    "Dropout": ".dropout",
    "Softmax": ".softmax", "LogSoftmax": ".softmax",
    "ReLU": ".activation", "LeakyReLU": ".activation", "Sigmoid": ".activation",
    "Tanh": ".activation", "GELU": ".activation", "SiLU": ".activation",
    "MaxPool2d": ".pool", "AvgPool2d": ".pool",
    "LSTM": ".lstm", "LSTMCell": ".lstm",
    "CrossEntropyLoss": ".loss", "BCEWithLogitsLoss": ".loss", "MSELoss": ".loss",
    "convert": "._convert",  # not .convert: a submodule would shadow the function
}
__all__ = sorted(_TABLE)
__getattr__, __dir__ = lazy_exports("gpudnn.nn", _TABLE)
