"""The bad-input table (SPEC section 4, issue 16): one row per op and argument. Every row must raise
a ValueError, TypeError or RuntimeError (torch's IndexError cases raise gpudnn's
``IndexValueError``, both an IndexError and a ValueError) whose message names the argument; none
may crash the process or return a value. ``python tests/test_bad_inputs.py`` prints the summary
the README quotes (rows tried, rows passing), on every backend that runs here.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from typing import Callable

import pytest
import torch

import gpudnn
import gpudnn.functional as F
import gpudnn.nn as gnn

EXPECTED = (ValueError, TypeError, RuntimeError)


@dataclass(frozen=True)
class Row:
    op: str          # the public function, module or optimizer
    argument: str    # the argument at fault
    case: str        # what is wrong with it
    call: Callable   # makes the call (on the selected backend)
    names: str       # a regex the message must match: it names the argument

    @property
    def id(self) -> str:
        return f"{self.op}-{self.argument}-{self.case}".replace(" ", "_")


ROWS: list[Row] = []


def row(op, argument, case, call, names=None):
    ROWS.append(Row(op, argument, case, call, names or re.escape(argument)))


def t(*shape, dtype=torch.float32, device="cpu"):
    return torch.ones(shape, dtype=dtype, device=device)


NAN, INF = float("nan"), float("inf")
META = "meta"  # the "other device" on a machine without a GPU

# --- linear ---------------------------------------------------------------------------------------
row("linear", "input", "integer dtype", lambda: F.linear(t(2, 3, dtype=torch.int64), t(4, 3)))
row("linear", "input", "0-d", lambda: F.linear(torch.tensor(1.0), t(4, 3)))
row("linear", "weight", "3-d", lambda: F.linear(t(2, 3), t(4, 3, 1)))
row("linear", "weight", "in_features mismatch", lambda: F.linear(t(2, 3), t(4, 5)),
    "in_features")
row("linear", "bias", "wrong length", lambda: F.linear(t(2, 3), t(4, 3), t(5)))
row("linear", "weight", "dtype mismatch",
    lambda: F.linear(t(2, 3), t(4, 3, dtype=torch.float64)), "weight is torch.float64")
row("linear", "weight", "other device", lambda: F.linear(t(2, 3), t(4, 3, device=META)),
    "device")
row("linear", "activation", "unknown name", lambda: F.linear(t(2, 3), t(4, 3), activation="x"))
row("Linear", "activation", "unsupported module",
    lambda: gnn.Linear(3, 4, activation=torch.nn.Softplus()))

# --- conv2d / conv_transpose2d -------------------------------------------------------------------
X4, W4 = (1, 2, 5, 5), (3, 2, 3, 3)
row("conv2d", "input", "5-d", lambda: F.conv2d(t(1, *X4), t(*W4)))
row("conv2d", "input", "integer dtype", lambda: F.conv2d(t(*X4, dtype=torch.int32), t(*W4)))
row("conv2d", "weight", "channel mismatch", lambda: F.conv2d(t(1, 4, 5, 5), t(*W4)),
    "channels")
row("conv2d", "stride", "zero", lambda: F.conv2d(t(*X4), t(*W4), stride=0))
row("conv2d", "stride", "negative", lambda: F.conv2d(t(*X4), t(*W4), stride=(1, -2)))
row("conv2d", "padding", "negative", lambda: F.conv2d(t(*X4), t(*W4), padding=-1))
row("conv2d", "padding", "'same' with stride 2",
    lambda: F.conv2d(t(*X4), t(*W4), stride=2, padding="same"))
row("conv2d", "padding", "unknown string", lambda: F.conv2d(t(*X4), t(*W4), padding="full"))
row("conv2d", "dilation", "zero", lambda: F.conv2d(t(*X4), t(*W4), dilation=0))
row("conv2d", "groups", "zero", lambda: F.conv2d(t(*X4), t(*W4), groups=0))
row("conv2d", "groups", "not dividing", lambda: F.conv2d(t(1, 2, 5, 5), t(3, 1, 3, 3), groups=2),
    "groups")
row("conv2d", "weight", "kernel larger than input",
    lambda: F.conv2d(t(1, 2, 2, 2), t(3, 2, 3, 3)), "[Kk]ernel size")
row("conv2d", "bias", "wrong length", lambda: F.conv2d(t(*X4), t(*W4), t(4)))
row("conv2d", "weight", "other device", lambda: F.conv2d(t(*X4), t(*W4, device=META)), "device")
row("conv2d", "stride", "not an int", lambda: F.conv2d(t(*X4), t(*W4), stride=1.5))
row("conv_transpose2d", "output_padding", "not below stride",
    lambda: F.conv_transpose2d(t(*X4), t(2, 3, 3, 3), stride=2, output_padding=2),
    "output padding")
row("conv_transpose2d", "padding", "a string",
    lambda: F.conv_transpose2d(t(*X4), t(2, 3, 3, 3), padding="same"))
row("conv_transpose2d", "weight", "channel mismatch",
    lambda: F.conv_transpose2d(t(*X4), t(3, 3, 3, 3)), "channels")
row("conv_transpose2d", "padding", "output too small",
    lambda: F.conv_transpose2d(t(1, 2, 1, 1), t(2, 3, 1, 1), padding=2), "[Oo]utput size")
row("ConvTranspose2d", "padding_mode", "reflect",
    lambda: gnn.ConvTranspose2d(2, 3, 3, padding_mode="reflect")(t(*X4)), "padding mode")

# --- batch norm ----------------------------------------------------------------------------------
C3 = (4, 3, 5)
row("batch_norm", "input", "1-d", lambda: F.batch_norm(t(3), t(3), t(3)))
row("batch_norm", "running_mean", "wrong length", lambda: F.batch_norm(t(*C3), t(4), t(3)))
row("batch_norm", "weight", "wrong length",
    lambda: F.batch_norm(t(*C3), t(3), t(3), weight=t(2)))
row("batch_norm", "running_var", "missing in eval",
    lambda: F.batch_norm(t(*C3), None, None), "running_mean and running_var")
row("batch_norm", "input", "one value per channel in training",
    lambda: F.batch_norm(t(1, 3), None, None, training=True), "more than 1 value")
row("batch_norm", "momentum", "NaN",
    lambda: F.batch_norm(t(*C3), t(3), t(3), training=True, momentum=NAN))
row("batch_norm", "eps", "infinite", lambda: F.batch_norm(t(*C3), t(3), t(3), eps=INF))
row("batch_norm", "eps", "negative", lambda: F.batch_norm(t(*C3), t(3), t(3), eps=-1.0))
row("batch_norm", "weight", "dtype mismatch",
    lambda: F.batch_norm(t(*C3), t(3), t(3), weight=t(3, dtype=torch.float64)), "dtypes differ")
row("batch_norm", "running_mean", "other device",
    lambda: F.batch_norm(t(*C3), t(3, device=META), t(3, device=META)), "device")
row("BatchNorm2d", "input", "3-d", lambda: gnn.BatchNorm2d(3)(t(*C3)), "4D input")

# --- layer norm / group norm ---------------------------------------------------------------------
row("layer_norm", "normalized_shape", "not the trailing dims",
    lambda: F.layer_norm(t(2, 3, 4), (3,)), "normalized_shape")
row("layer_norm", "weight", "wrong shape", lambda: F.layer_norm(t(2, 4), (4,), t(3)), "weight")
row("layer_norm", "eps", "NaN", lambda: F.layer_norm(t(2, 4), (4,), eps=NAN), "eps")
row("layer_norm", "input", "integer dtype",
    lambda: F.layer_norm(t(2, 4, dtype=torch.int64), (4,)))
row("group_norm", "num_groups", "not dividing the channels",
    lambda: F.group_norm(t(2, 6, 3), 4), "num_groups|groups")
row("group_norm", "num_groups", "zero", lambda: F.group_norm(t(2, 6, 3), 0), "num_groups|groups")
row("group_norm", "weight", "wrong length", lambda: F.group_norm(t(2, 6, 3), 3, t(5)), "weight")
row("group_norm", "input", "1-d", lambda: F.group_norm(t(6), 3))
row("GroupNorm", "num_channels", "not divisible", lambda: gnn.GroupNorm(4, 6),
    "num_channels|groups")

# --- dropout -------------------------------------------------------------------------------------
row("dropout", "p", "NaN", lambda: F.dropout(t(3), NAN), "probability")
row("dropout", "p", "above 1", lambda: F.dropout(t(3), 1.5), "probability")
row("dropout", "p", "negative", lambda: F.dropout(t(3), -0.1), "probability")
row("dropout", "input", "integer dtype", lambda: F.dropout(t(3, dtype=torch.int64), 0.5))
row("Dropout", "p", "above 1", lambda: gnn.Dropout(2.0), "probability")
row("dropout1d", "p", "NaN", lambda: F.dropout1d(t(2, 3, 4), NAN), "probability")
row("dropout1d", "input", "4-d", lambda: F.dropout1d(t(1, 2, 3, 4), 0.5))
row("dropout2d", "p", "above 1", lambda: F.dropout2d(t(1, 2, 3, 4), 1.5), "probability")
row("dropout2d", "input", "0-d", lambda: F.dropout2d(torch.tensor(1.0), 0.5))
row("dropout2d", "input", "integer dtype", lambda: F.dropout2d(t(1, 2, 3, 4, dtype=torch.int64)))

# --- softmax / log_softmax -----------------------------------------------------------------------
row("softmax", "dim", "out of range", lambda: F.softmax(t(2, 3), 2))
row("softmax", "dim", "missing", lambda: F.softmax(t(2, 3)))
row("softmax", "dim", "not an int", lambda: F.softmax(t(2, 3), 1.0))
row("log_softmax", "input", "integer dtype", lambda: F.log_softmax(t(2, dtype=torch.int32), 0))

# --- losses --------------------------------------------------------------------------------------
TGT = torch.tensor([0, 2])
row("cross_entropy", "target", "class out of range",
    lambda: F.cross_entropy(t(2, 3), torch.tensor([0, 3])))
row("cross_entropy", "target", "negative class",
    lambda: F.cross_entropy(t(2, 3), torch.tensor([-2, 0])))
row("cross_entropy", "target", "shape mismatch", lambda: F.cross_entropy(t(2, 3), t(3).long()))
row("cross_entropy", "target", "bool dtype",
    lambda: F.cross_entropy(t(2, 3), torch.tensor([True, False])))
row("cross_entropy", "reduction", "unknown", lambda: F.cross_entropy(t(2, 3), TGT, reduction="x"))
row("cross_entropy", "input", "0-d", lambda: F.cross_entropy(torch.tensor(1.0), TGT))
row("cross_entropy", "input", "no classes", lambda: F.cross_entropy(t(2, 0), TGT), "classes")
row("cross_entropy", "target", "other device",
    lambda: F.cross_entropy(t(2, 3), TGT.to(META)), "meta")
row("binary_cross_entropy_with_logits", "target", "shape mismatch",
    lambda: F.binary_cross_entropy_with_logits(t(2, 3), t(3, 2)), "target size")
row("binary_cross_entropy_with_logits", "reduction", "unknown",
    lambda: F.binary_cross_entropy_with_logits(t(2), t(2), reduction="avg"))
row("binary_cross_entropy_with_logits", "pos_weight", "not broadcastable",
    lambda: F.binary_cross_entropy_with_logits(t(2, 3), t(2, 3), pos_weight=t(2)))
row("binary_cross_entropy_with_logits", "weight", "requires grad",
    lambda: F.binary_cross_entropy_with_logits(t(2, 3), t(2, 3),
                                               weight=t(3).requires_grad_()))
row("cross_entropy", "weight", "wrong length", lambda: F.cross_entropy(t(2, 3), TGT, weight=t(4)))
row("cross_entropy", "weight", "other dtype",
    lambda: F.cross_entropy(t(2, 3), TGT, weight=t(3, dtype=torch.float64)))
row("cross_entropy", "weight", "other device",
    lambda: F.cross_entropy(t(2, 3), TGT, weight=t(3, device=META)))
row("cross_entropy", "label_smoothing", "above 1",
    lambda: F.cross_entropy(t(2, 3), TGT, label_smoothing=1.5))
row("cross_entropy", "target", "probabilities of another shape",
    lambda: F.cross_entropy(t(2, 3), t(2, 4)))
row("cross_entropy", "ignore_index", "with probabilities",
    lambda: F.cross_entropy(t(2, 3), t(2, 3), ignore_index=1))
row("nll_loss", "target", "class out of range", lambda: F.nll_loss(t(2, 3), torch.tensor([0, 3])))
row("nll_loss", "target", "float dtype", lambda: F.nll_loss(t(2, 3), t(2)))
row("nll_loss", "input", "0-d", lambda: F.nll_loss(torch.tensor(1.0), TGT))
row("nll_loss", "weight", "wrong length", lambda: F.nll_loss(t(2, 3), TGT, weight=t(2)))
row("nll_loss", "weight", "integer dtype",
    lambda: F.nll_loss(t(2, 3), TGT, weight=t(3, dtype=torch.int64)))
row("binary_cross_entropy", "input", "above 1", lambda: F.binary_cross_entropy(t(2) * 2, t(2) / 2))
row("binary_cross_entropy", "input", "NaN",
    lambda: F.binary_cross_entropy(torch.tensor([NAN, 0.5]), t(2) / 2))
row("binary_cross_entropy", "target", "negative",
    lambda: F.binary_cross_entropy(t(2) / 2, -t(2)))
row("binary_cross_entropy", "target", "shape mismatch",
    lambda: F.binary_cross_entropy(t(2, 3) / 2, t(3, 2) / 2), "target size")
row("binary_cross_entropy", "weight", "not broadcastable",
    lambda: F.binary_cross_entropy(t(2, 3) / 2, t(2, 3) / 2, weight=t(2)))
row("mse_loss", "target", "not broadcastable",
    lambda: F.mse_loss(t(2, 3), t(4, 5)), "target shape")
row("mse_loss", "input", "integer dtype",
    lambda: F.mse_loss(t(2, dtype=torch.int64), t(2)))

# --- pooling -------------------------------------------------------------------------------------
P4 = (1, 2, 6, 6)
row("max_pool2d", "kernel_size", "zero", lambda: F.max_pool2d(t(*P4), 0), "kernel size")
row("max_pool2d", "kernel_size", "three values", lambda: F.max_pool2d(t(*P4), (2, 2, 2)))
row("max_pool2d", "stride", "zero", lambda: F.max_pool2d(t(*P4), 2, 0))
row("max_pool2d", "padding", "over half the kernel", lambda: F.max_pool2d(t(*P4), 2, 2, 2),
    "pad")
row("max_pool2d", "dilation", "zero", lambda: F.max_pool2d(t(*P4), 2, 2, 0, 0))
row("max_pool2d", "input", "2-d", lambda: F.max_pool2d(t(6, 6), 2))
row("max_pool2d", "input", "output too small", lambda: F.max_pool2d(t(1, 2, 2, 2), 3),
    "[Oo]utput size")
row("avg_pool2d", "divisor_override", "zero",
    lambda: F.avg_pool2d(t(*P4), 2, divisor_override=0), "divisor")
row("avg_pool2d", "divisor_override", "a float",
    lambda: F.avg_pool2d(t(*P4), 2, divisor_override=1.5))
row("adaptive_avg_pool2d", "output_size", "negative", lambda: F.adaptive_avg_pool2d(t(*P4), -1))
row("adaptive_avg_pool2d", "output_size", "three values",
    lambda: F.adaptive_avg_pool2d(t(*P4), (2, 2, 2)))
row("adaptive_avg_pool2d", "input", "2-d", lambda: F.adaptive_avg_pool2d(t(6, 6), 2))
row("adaptive_avg_pool2d", "input", "2-d with a pair output_size",
    lambda: F.adaptive_avg_pool2d(t(6, 6), (1, 1)))
row("adaptive_avg_pool2d", "input", "empty height", lambda: F.adaptive_avg_pool2d(t(1, 2, 0, 6), 2))
row("adaptive_avg_pool2d", "input", "integer dtype",
    lambda: F.adaptive_avg_pool2d(t(*P4, dtype=torch.int64), 2))

# --- embedding -----------------------------------------------------------------------------------
IDS = torch.tensor([[0, 2], [4, 1]])
row("embedding", "input", "index out of range", lambda: F.embedding(torch.tensor([5]), t(5, 3)))
row("embedding", "input", "negative index", lambda: F.embedding(torch.tensor([-1]), t(5, 3)))
row("embedding", "input", "float dtype", lambda: F.embedding(t(2), t(5, 3)))
row("embedding", "input", "other device", lambda: F.embedding(IDS.to(META), t(5, 3)), "meta")
row("embedding", "weight", "1-d", lambda: F.embedding(IDS, t(5)))
row("embedding", "weight", "integer dtype", lambda: F.embedding(IDS, t(5, 3, dtype=torch.int64)))
row("embedding", "padding_idx", "out of range", lambda: F.embedding(IDS, t(5, 3), padding_idx=5))
row("embedding", "max_norm", "unsupported", lambda: F.embedding(IDS, t(5, 3), max_norm=1.0))
row("Embedding", "sparse", "unsupported", lambda: gnn.Embedding(5, 3, sparse=True))
row("avg_pool2d", "kernel_size", "negative", lambda: F.avg_pool2d(t(*P4), -1), "kernel size")

# --- activations ---------------------------------------------------------------------------------
for _name in ("relu", "sigmoid", "tanh", "silu", "gelu", "leaky_relu"):
    row(_name, "input", "integer dtype",
        lambda n=_name: getattr(F, n)(t(3, dtype=torch.int64)))
row("gelu", "approximate", "unknown", lambda: F.gelu(t(3), approximate="erf"))

# --- LSTM ----------------------------------------------------------------------------------------


def _lstm(**kw):
    args = dict(input_size=3, hidden_size=4)
    args.update(kw)
    return gnn.LSTM(**args)


row("LSTM", "hx", "wrong shape", lambda: _lstm()(t(5, 2, 3), (t(1, 3, 4), t(1, 3, 4))))
row("LSTM", "hx", "not a pair", lambda: _lstm()(t(5, 2, 3), t(1, 2, 4)))
row("LSTM", "input", "4-d", lambda: _lstm()(t(5, 2, 3, 1)))
row("LSTM", "input", "wrong feature size", lambda: _lstm()(t(5, 2, 4)), "input_size|input.size")
row("LSTM", "input", "no time steps", lambda: _lstm()(t(0, 2, 3)), "sequence length")
row("LSTM", "proj_size", "nonzero", lambda: _lstm(proj_size=2))
row("LSTM", "dropout", "NaN", lambda: F.lstm(t(5, 2, 3), None, list(_lstm().parameters()), 1,
                                             True, False, NAN, True, False))
row("lstm", "num_layers", "zero", lambda: F.lstm(t(5, 2, 3), None, list(_lstm().parameters()),
                                                 0, True, False, 0.0, True, False))
row("lstm", "flat_weights", "wrong count",
    lambda: F.lstm(t(5, 2, 3), None, list(_lstm().parameters())[:3], 1, True, False, 0.0, True,
                   False), "weight tensors")
row("LSTMCell", "hx", "wrong shape",
    lambda: gnn.LSTMCell(3, 4)(t(2, 3), (t(2, 5), t(2, 5))), r"hx\[0\]")
row("LSTMCell", "input", "3-d", lambda: gnn.LSTMCell(3, 4)(t(1, 2, 3)))
row("lstm_cell", "w_ih", "wrong shape",
    lambda: F.lstm_cell(t(2, 3), None, t(16, 5), t(16, 4)), "w_ih")
row("lstm_cell", "b_hh", "wrong length",
    lambda: F.lstm_cell(t(2, 3), None, t(16, 3), t(16, 4), t(16), t(8)), "b_hh")

# --- GRU -----------------------------------------------------------------------------------------

row("GRU", "hx", "wrong shape", lambda: gnn.GRU(3, 4)(t(5, 2, 3), t(1, 3, 4)), "hx")
row("GRU", "hx", "a pair", lambda: gnn.GRU(3, 4)(t(5, 2, 3), (t(1, 2, 4), t(1, 2, 4))), "hx")
row("GRU", "input", "wrong feature size", lambda: gnn.GRU(3, 4)(t(5, 2, 4)),
    "input_size|input.size")
row("GRU", "proj_size", "nonzero", lambda: gnn.GRU(3, 4, proj_size=2))
row("gru", "dropout", "NaN", lambda: F.gru(t(5, 2, 3), None, list(gnn.GRU(3, 4).parameters()),
                                           1, True, False, NAN, True, False))
row("gru", "flat_weights", "wrong count",
    lambda: F.gru(t(5, 2, 3), None, list(gnn.GRU(3, 4).parameters())[:3], 1, True, False, 0.0,
                  True, False), "weight tensors")
row("GRUCell", "hx", "wrong shape", lambda: gnn.GRUCell(3, 4)(t(2, 3), t(2, 5)), "hx")
row("gru_cell", "w_hh", "LSTM-shaped", lambda: F.gru_cell(t(2, 3), None, t(12, 3), t(16, 4)),
    "w_hh")

# --- weight-only quantization and pruning -------------------------------------------------------

def _q(*shape, dtype=torch.int8):
    return torch.ones(shape, dtype=dtype)


def _s(n):
    return torch.ones(n)


row("quantized_linear", "input", "integer dtype",
    lambda: F.quantized_linear(t(2, 3, dtype=torch.int64), _q(4, 3), _s(4)))
row("quantized_linear", "weight", "a float weight",
    lambda: F.quantized_linear(t(2, 3), t(4, 3), _s(4)))
row("quantized_linear", "weight", "in_features mismatch",
    lambda: F.quantized_linear(t(2, 3), _q(4, 5), _s(4)), "in_features")
row("quantized_linear", "weight_scale", "float64",
    lambda: F.quantized_linear(t(2, 3), _q(4, 3), _s(4).double()))
row("quantized_linear", "weight_scale", "wrong length",
    lambda: F.quantized_linear(t(2, 3), _q(4, 3), _s(3)))
row("quantized_linear", "bias", "wrong length",
    lambda: F.quantized_linear(t(2, 3), _q(4, 3), _s(4), t(5)))
row("quantized_linear", "weight", "other device",
    lambda: F.quantized_linear(t(2, 3), _q(4, 3).to(META), _s(4)), "device")
row("quantized_conv2d", "input", "2-d",
    lambda: F.quantized_conv2d(t(3, 5), _q(4, 3, 3, 3), _s(4)))
row("quantized_conv2d", "weight", "float8 e5m2",
    lambda: F.quantized_conv2d(t(1, 3, 5, 5), _q(4, 3, 3, 3, dtype=torch.float8_e5m2), _s(4)))
row("quantized_conv2d", "input", "channel mismatch",
    lambda: F.quantized_conv2d(t(1, 2, 5, 5), _q(4, 3, 3, 3), _s(4)))
row("quantized_conv2d", "groups", "zero",
    lambda: F.quantized_conv2d(t(1, 3, 5, 5), _q(4, 3, 3, 3), _s(4), groups=0))
row("quantized_conv2d", "stride", "zero",
    lambda: F.quantized_conv2d(t(1, 3, 5, 5), _q(4, 3, 3, 3), _s(4), stride=0))
row("quantized_conv2d", "padding", "unknown string",
    lambda: F.quantized_conv2d(t(1, 3, 5, 5), _q(4, 3, 3, 3), _s(4), padding="full"))
row("quantize", "model", "an unsupported layer",
    lambda: gpudnn.quantize(torch.nn.ConvTranspose2d(3, 4, 3)), "ConvTranspose2d")
row("quantize", "dtype", "int4", lambda: gpudnn.quantize(torch.nn.Linear(3, 4), dtype="int4"))
row("quantize", "mode", "dynamic", lambda: gpudnn.quantize(torch.nn.Linear(3, 4), mode="dynamic"))
row("prune", "amount", "1.0", lambda: gpudnn.prune(torch.nn.Linear(3, 4), 1.0))
row("prune", "amount", "negative", lambda: gpudnn.prune(torch.nn.Linear(3, 4), -0.5))
row("prune", "method", "unknown", lambda: gpudnn.prune(torch.nn.Linear(3, 4), method="random"))
row("prune", "model", "not 2:4-able", lambda: gpudnn.prune(torch.nn.Linear(3, 4), method="2:4"),
    "multiple of 4")

# --- optimizers ----------------------------------------------------------------------------------


def _params():
    return [torch.nn.Parameter(t(3))]


for _cls in ("SGD", "Adam", "AdamW"):
    _opt = getattr(gpudnn.optim, _cls)
    row(_cls, "lr", "NaN", lambda o=_opt: o(_params(), lr=NAN), "learning rate|lr")
    row(_cls, "lr", "negative", lambda o=_opt: o(_params(), lr=-1.0), "learning rate|lr")
    row(_cls, "lr", "a Tensor", lambda o=_opt: o(_params(), lr=torch.tensor(0.1)), "lr")
    row(_cls, "weight_decay", "infinite", lambda o=_opt: o(_params(), lr=0.1, weight_decay=INF),
        "weight_decay")
    row(_cls, "fused", "True", lambda o=_opt: o(_params(), lr=0.1, fused=True), "fused")
row("SGD", "momentum", "NaN", lambda: gpudnn.optim.SGD(_params(), lr=0.1, momentum=NAN),
    "momentum")
row("SGD", "momentum", "negative", lambda: gpudnn.optim.SGD(_params(), lr=0.1, momentum=-0.5),
    "momentum")
row("SGD", "nesterov", "without momentum",
    lambda: gpudnn.optim.SGD(_params(), lr=0.1, nesterov=True), "[Nn]esterov")
row("Adam", "betas", "NaN", lambda: gpudnn.optim.Adam(_params(), betas=(NAN, 0.9)), "beta")
row("Adam", "betas", "above 1", lambda: gpudnn.optim.Adam(_params(), betas=(0.9, 1.5)), "beta")
row("Adam", "eps", "NaN", lambda: gpudnn.optim.Adam(_params(), eps=NAN), "epsilon|eps")
row("Adam", "capturable", "True", lambda: gpudnn.optim.Adam(_params(), capturable=True),
    "capturable")


# --- the test ------------------------------------------------------------------------------------

BACKENDS = ["reference", "triton"]


def check(r: Row, backend: str) -> str | None:
    """None when the row raises as it must, else what went wrong."""
    try:
        with gpudnn.use_backend(backend):
            result = r.call()
    except EXPECTED as exc:
        message = str(exc)
        if not re.search(r.names, message):
            return f"{type(exc).__name__} does not name {r.names!r}: {message[:300]}"
        return None
    except Exception as exc:  # any other type is a defect too
        return f"raised {type(exc).__name__} (not ValueError/TypeError/RuntimeError): {exc}"
    return f"returned {type(result).__name__} instead of raising"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(r, backend):
    problem = check(r, backend)
    assert problem is None, problem


def test_the_table_covers_every_public_function():
    covered = {r.op for r in ROWS}
    missing = sorted(set(F.__all__) - covered)
    assert not missing, f"gpudnn.functional functions without a bad-input row: {missing}"


def summary() -> str:
    lines, passing = [], 0
    for backend in BACKENDS:
        ok = sum(check(r, backend) is None for r in ROWS)
        passing += ok
        lines.append(f"{backend}: {ok} of {len(ROWS)} rows raise a clear error")
    ops = len({r.op for r in ROWS})
    return (f"bad-input table: {len(ROWS)} rows over {ops} functions, modules and optimizers; "
            + "; ".join(lines))


if __name__ == "__main__":
    import os
    os.environ.setdefault("TRITON_INTERPRET", "1")
    print(summary())
    sys.exit(0)
