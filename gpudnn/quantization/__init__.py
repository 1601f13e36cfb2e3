"""``gpudnn.quantize``: weight-only int8 / float8 inference for Linear and Conv2d layers.

``quantize(model, dtype="int8", mode="weight_only")`` returns a copy of ``model`` (in eval mode)
whose ``Linear`` and ``Conv2d`` layers (torch's or gpudnn's, with their fused activations; eval
BatchNorm2d layers after a Conv2d are folded into it first) are replaced by ``QuantizedLinear`` /
``QuantizedConv2d``: the weight is stored as int8 (symmetric, absmax, ``dtype="int8"``) or as
``torch.float8_e4m3fn`` (``dtype="fp8"``, Hopper's e4m3), with float32 scales per output channel
(``granularity="per_channel"``) or one per tensor (``"per_tensor"``). Activations stay float
(float32, bfloat16, float16): the Triton kernels convert each weight tile in registers inside
the GEMM's K loop and apply the scale in the fp32 epilogue (``kernels/triton/quant.py``); on the
CPU the NumPy reference computes the same (``gpudnn/reference/quant.py``).

Inference only: a quantized module in training mode refuses to run, and a backward through one
is a RuntimeError; fine-tune the float model, then quantize. ``state_dict`` holds ``weight``
(int8 / float8), ``weight_scale`` (float32) and ``bias``, and loads back into a model quantized
the same way. The modules live here, not in ``gpudnn.nn``: ``gpudnn.nn.convert`` maps torch
layers to gpudnn.nn's twins, and a quantized layer is no twin of ``torch.nn.Linear``.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
from torch import nn

from ..activations import Activation, parse_activation
from ..nn._fused import join_repr
from ..ops._common import pair
from ..ops.conv import _conv_padding
from ..ops.quant import QUANTIZED_DTYPES, quantized_conv2d, quantized_linear

__all__ = ["quantize", "quantize_weight", "dequantize_weight", "QuantizedLinear",
           "QuantizedConv2d", "DTYPES", "MODES", "GRANULARITIES"]

DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
MODES = ("weight_only",)
GRANULARITIES = ("per_channel", "per_tensor")
# the largest magnitude each format stores: absmax maps onto it
QMAX = {"int8": 127.0, "fp8": 448.0}


def _check_choice(name: str, value: Any, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def quantize_weight(weight: torch.Tensor, dtype: str = "int8",
                    granularity: str = "per_channel") -> tuple[torch.Tensor, torch.Tensor]:
    """weight [out, ...] float -> (q, scale): q int8 (``clip(round(w / s), -127, 127)``, s =
    absmax / 127) or float8_e4m3fn (``e4m3(w / s)``, s = absmax / 448, round to nearest even),
    scale float32 [out] (per output channel) or [1]. A zero row gets scale 1. Computed in
    float32, bit for bit as ``gpudnn.reference.quant.quantize_weight``."""
    _check_choice("dtype", dtype, DTYPES)
    _check_choice("granularity", granularity, GRANULARITIES)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point() or \
            weight.dtype in QUANTIZED_DTYPES or weight.dim() < 2:
        raise TypeError(f"quantize_weight: weight must be a floating-point tensor [out, in, ...] "
                        f"(>= 2 dimensions), got {getattr(weight, 'dtype', type(weight).__name__)}")
    w = weight.detach().float()
    if not bool(torch.isfinite(w).all()):
        raise ValueError("quantize_weight: the weight holds NaN or inf; it cannot be quantized")
    rows = w.flatten(1) if granularity == "per_channel" else w.reshape(1, -1)
    if rows.shape[1]:
        absmax = rows.abs().amax(dim=1)
    else:
        absmax = rows.new_zeros(rows.shape[0])
    scale = torch.where(absmax == 0, torch.ones_like(absmax), absmax / QMAX[dtype])
    v = w / scale.view(-1, *([1] * (w.dim() - 1)))
    if dtype == "int8":
        q = v.round().clamp(-127, 127).to(torch.int8)
    else:
        q = v.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale, computed in ``dtype`` (what the quantized layers compute with, up to the
    rounding order)."""
    return q.to(dtype) * scale.to(dtype).view(-1, *([1] * (q.dim() - 1)))


class _Quantized(nn.Module):
    """What QuantizedLinear and QuantizedConv2d share: the buffers, the dtype-keeping ``_apply``,
    the inference-only check and the state_dict dtype check."""

    activation: Activation | None = None

    def _init_quantized(self, weight_shape: tuple, out: int, bias: bool, dtype: str,
                        granularity: str, activation: Any, device, act_dtype) -> None:
        self.qdtype = _check_choice("dtype", dtype, DTYPES)
        self.granularity = _check_choice("granularity", granularity, GRANULARITIES)
        self.activation = parse_activation(activation)
        self.register_buffer("weight", torch.zeros(weight_shape, dtype=DTYPES[dtype],
                                                   device=device))
        self.register_buffer("weight_scale", torch.ones(
            out if granularity == "per_channel" else 1, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out, dtype=act_dtype, device=device)
                             if bias else None)

    def _set_from(self, module: nn.Module) -> "_Quantized":
        """Quantize ``module``'s weight into this module; returns it in eval mode."""
        q, scale = quantize_weight(module.weight, self.qdtype, self.granularity)
        self.weight = q.to(module.weight.device)
        self.weight_scale = scale.to(module.weight.device)
        if module.bias is not None:
            self.bias = module.bias.detach().clone()
        return self.eval()

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) / .half() convert every floating buffer: the float8 weight and the
        # float32 scales keep their dtypes (a device move still applies)
        kept = {k: self._buffers[k] for k in ("weight", "weight_scale")}
        super()._apply(fn, recurse)
        for key, old in kept.items():
            new = self._buffers[key]
            if new is not None and old is not None and new.dtype != old.dtype:
                self._buffers[key] = old.to(new.device)
        return self

    def _check_inference(self) -> None:
        if self.training:
            raise RuntimeError(f"{type(self).__name__} is for inference only: call .eval() "
                               "first (gpudnn.quantize returns the model in eval mode). Training "
                               "through a quantized layer is not supported: fine-tune the float "
                               "model, then quantize it")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for key in ("weight", "weight_scale"):
            given = state_dict.get(prefix + key)
            mine = self._buffers[key]
            if isinstance(given, torch.Tensor) and given.dtype != mine.dtype:
                error_msgs.append(f"{prefix}{key}: {given.dtype} in the state_dict, {mine.dtype} "
                                  f"in {type(self).__name__}(dtype={self.qdtype!r}); quantize "
                                  "the model with the dtype the state_dict was saved with")
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _quant_repr(self) -> str:
        return f"dtype={self.qdtype}, granularity={self.granularity}"


class QuantizedLinear(_Quantized):
    """Linear with an int8 / float8 weight: ``activation(input @ (weight * scale).T + bias)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 dtype: str = "int8", granularity: str = "per_channel", activation: Any = None,
                 device=None, act_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_quantized((out_features, in_features), out_features, bias, dtype,
                             granularity, activation, device, act_dtype)

    @classmethod
    def from_float(cls, module: nn.Linear, dtype: str = "int8",
                   granularity: str = "per_channel") -> "QuantizedLinear":
        """The quantized copy of a torch / gpudnn Linear (its fused activation included)."""
        return cls(module.in_features, module.out_features, module.bias is not None, dtype,
                   granularity, getattr(module, "activation", None), module.weight.device,
                   module.weight.dtype)._set_from(module)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_inference()
        return quantized_linear(input, self.weight, self.weight_scale, self.bias,
                                activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(f"in_features={self.in_features}, out_features={self.out_features}, "
                         f"bias={self.bias is not None}, {self._quant_repr()}", self.activation)


class QuantizedConv2d(_Quantized):
    """Conv2d (zeros padding) with an int8 / float8 weight and a fused ``activation``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, dtype: str = "int8",
                 granularity: str = "per_channel", activation: Any = None, device=None,
                 act_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must be "
                             f"divisible by groups {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride, self.dilation = pair(stride, "stride"), pair(dilation, "dilation")
        self.padding = padding if isinstance(padding, str) else pair(padding, "padding")
        _conv_padding(self.padding, self.kernel_size, self.stride, self.dilation)  # validates
        self._init_quantized((out_channels, in_channels // groups, *self.kernel_size),
                             out_channels, bias, dtype, granularity, activation, device,
                             act_dtype)

    @classmethod
    def from_float(cls, module: nn.Conv2d, dtype: str = "int8",
                   granularity: str = "per_channel") -> "QuantizedConv2d":
        """The quantized copy of a torch / gpudnn Conv2d (its fused activation included)."""
        if module.padding_mode != "zeros":
            raise ValueError(f"quantize: Conv2d with padding_mode={module.padding_mode!r} is not "
                             "supported (only 'zeros')")
        return cls(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                   module.padding, module.dilation, module.groups, module.bias is not None, dtype,
                   granularity, getattr(module, "activation", None), module.weight.device,
                   module.weight.dtype)._set_from(module)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_inference()
        return quantized_conv2d(input, self.weight, self.weight_scale, self.bias, self.stride,
                                self.padding, self.dilation, self.groups,
                                activation=self.activation)

    def extra_repr(self) -> str:
        return join_repr(f"{self.in_channels}, {self.out_channels}, "
                         f"kernel_size={self.kernel_size}, stride={self.stride}, "
                         f"padding={self.padding}, dilation={self.dilation}, "
                         f"groups={self.groups}, bias={self.bias is not None}, "
                         f"{self._quant_repr()}", self.activation)


# what quantize swaps: exact classes (a user's subclass may override forward), torch's and gpudnn's
def _swappable() -> dict[type, type]:
    from .. import nn as gnn
    return {nn.Linear: QuantizedLinear, gnn.Linear: QuantizedLinear,
            nn.Conv2d: QuantizedConv2d, gnn.Conv2d: QuantizedConv2d}


def _describe_unsupported(name: str, module: nn.Module) -> str:
    label = f"layer {name!r}" if name else "the model"
    return (f"quantize: {label} is a {type(module).__name__}; gpudnn.quantize supports Linear and "
            "Conv2d layers (and their fused activations)")


def quantize(model: nn.Module, dtype: str = "int8", mode: str = "weight_only",
             granularity: str = "per_channel", layers: Iterable[str] | None = None,
             fold_batchnorm: bool = True, inplace: bool = False) -> nn.Module:
    """Quantize the Linear / Conv2d layers of ``model`` for inference; see the module docstring.

    ``layers``: the qualified names of the layers to quantize (default: every Linear and Conv2d;
    naming another kind of layer is a ValueError). ``fold_batchnorm``: fold BatchNorm2d layers
    that follow a Conv2d into it first (inference: running statistics). Returns the quantized
    model in eval mode (a copy unless ``inplace``); a model without a Linear or Conv2d layer is
    a ValueError.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize expects a torch.nn.Module, got {type(model).__name__}")
    _check_choice("dtype", dtype, DTYPES)
    if mode != "weight_only":
        raise ValueError(f"quantize: mode must be 'weight_only' (int8 / float8 weights, float "
                         f"activations), got {mode!r}")
    _check_choice("granularity", granularity, GRANULARITIES)
    from ..pruning import is_pruned
    if is_pruned(model):
        raise ValueError("quantize: the model carries pruning masks; make the pruning permanent "
                         "with gpudnn.prune.remove(model) first")
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    from ..nn import convert
    model = convert(model, inplace=True, fold_batchnorm=fold_batchnorm)
    swappable = _swappable()
    named = dict(model.named_modules())
    if layers is None:
        targets = [name for name, m in named.items() if type(m) in swappable]
        if not targets:
            leaf = next(iter(named.values()))
            raise ValueError(_describe_unsupported("", leaf) if not leaf._modules else
                             f"quantize: no Linear or Conv2d layer in {type(model).__name__}")
    else:
        targets = list(layers) if not isinstance(layers, str) else [layers]
        for name in targets:
            if name not in named:
                raise ValueError(f"quantize: the model has no layer named {name!r}")
            if type(named[name]) not in swappable:
                raise ValueError(_describe_unsupported(name, named[name]))
    for name in targets:
        module = named[name]
        quantized = swappable[type(module)].from_float(module, dtype, granularity)
        if name == "":
            return quantized
        parent_name, _, child = name.rpartition(".")
        setattr(named[parent_name], child, quantized)
    return model.eval()  # also the Identity modules convert put in place of fused layers
