"""gpudnn.enable(): gpudnn's kernels as the ATen implementations of the ops it covers.

On the CPU (CI) the reference backend is enabled for the CPU dispatch key in float64 (and the
Triton interpreter in float32 for a few ops); under ``make test-gpu`` the same tests enable
Triton and CuPy for CUDA tensors in float32. Every check compares with torch's own result
outside the block (outputs, their memory format, the gradients) and reads the call counters to
prove that gpudnn, not ATen, ran each covered op.
"""
from __future__ import annotations

import contextlib
import copy
import threading

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import gpudnn
from gpudnn import aten
from gpudnn.backend import KERNELS
from gpudnn.ops._library import guarded
from gpudnn.testing import assert_close
from helpers import CHANNELS_LAST, DEVICE, ieee_float32

if DEVICE == "cpu":
    SETUPS = [pytest.param("reference", torch.float64, id="reference-f64")]
    INTERPRETED = [pytest.param("triton", torch.float32, id="triton-f32")]
else:
    SETUPS = [pytest.param("triton", torch.float32, id="triton-f32"),
              pytest.param("cupy", torch.float32, id="cupy-f32")]
    INTERPRETED = []
GRAD_SCALE = 10.0  # gradients are sums over the batch / the window / the reduction


@pytest.fixture(autouse=True)
def _nothing_enabled_after():
    yield
    gpudnn.disable()
    assert not aten.is_enabled(DEVICE)


def _enabled(backend: str, **kwargs):
    return gpudnn.enabled(devices=(DEVICE,), backend=backend, **kwargs)


def _fresh(inputs):
    return [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]


def _forward_backward(fn, inputs, module=None):
    """(outputs, gradients of the floating inputs and of the module's parameters) of fn with
    fixed random cotangents."""
    inputs = _fresh(inputs)
    out = fn(*inputs) if module is None else module(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    outs = [o for o in outs if isinstance(o, torch.Tensor)]
    pairs = [o for o in outs if o.requires_grad]
    gen = torch.Generator().manual_seed(7)
    cotangents = [torch.randn(o.shape, dtype=o.dtype, generator=gen).to(o.device) for o in pairs]
    if pairs:
        torch.autograd.backward(pairs, cotangents)
    grads = [t.grad for t in inputs if t.requires_grad]
    if module is not None:
        grads += [p.grad for p in module.parameters()]
    return outs, grads


def _check(fn, inputs, backend, dtype, module=None, ops=()):
    """fn (or module) inside ``enabled`` against torch outside: outputs, formats, gradients;
    every op of ``ops`` ran on gpudnn, none fell back. Returns the counters."""
    theirs = copy.deepcopy(module) if module is not None else None
    with ieee_float32():  # torch's CUDA convolutions default to TF32
        expected = _forward_backward(fn, inputs, theirs)
        gpudnn.reset_enabled_stats()
        with _enabled(backend):
            actual = _forward_backward(fn, inputs, module)
    stats = gpudnn.enabled_stats()
    for k, (a, e) in enumerate(zip(actual[0], expected[0], strict=True)):
        assert a.dtype == e.dtype and a.shape == e.shape, (k, a.dtype, e.dtype, a.shape, e.shape)
        if a.is_floating_point():
            assert_close(a, e, dtype, name=f"output {k}", scale=GRAD_SCALE)
        else:  # indices, masks
            assert torch.equal(a, e), f"output {k}"
        if a.dim() == 4:
            assert a.is_contiguous(memory_format=CHANNELS_LAST) == \
                e.is_contiguous(memory_format=CHANNELS_LAST), f"output {k} memory format"
    for k, (a, e) in enumerate(zip(actual[1], expected[1], strict=True)):
        assert (a is None) == (e is None), f"gradient {k} presence"
        if e is not None:
            assert_close(a, e, dtype, name=f"gradient {k}", scale=GRAD_SCALE)
    ran = set(stats)
    if DEVICE == "cuda":  # F.batch_norm calls cuDNN's operators there (gpudnn covers both)
        ran |= {op.replace("cudnn_", "native_") for op in ran}
    missing = {f"aten::{op}" for op in ops} - ran
    assert not missing, f"did not run on gpudnn: {sorted(missing)} (ran: {stats})"
    assert gpudnn.enabled_stats(fallbacks=True) == {}, gpudnn.enabled_stats(fallbacks=True)
    return stats


def _randn(dtype, *shapes, scale=1.0):
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(s, dtype=torch.float64, generator=gen) * scale).to(dtype).to(DEVICE)
            for s in shapes]


def _target(shape, classes, ignore=None):
    gen = torch.Generator().manual_seed(5)
    t = torch.randint(0, classes, shape, generator=gen)
    if ignore is not None:
        t.view(-1)[::3] = ignore
    return t.to(DEVICE)


def _probabilities(dtype, shape):
    gen = torch.Generator().manual_seed(9)
    return torch.rand(shape, dtype=torch.float64, generator=gen).to(dtype).to(DEVICE)


def _channels_last(t):
    return t.contiguous(memory_format=CHANNELS_LAST)


def _class_weights(like, classes):
    """Fixed positive class weights of like's dtype and device (constants: ATen's losses are not
    differentiable in them)."""
    gen = torch.Generator().manual_seed(11)
    return (torch.rand(classes, dtype=torch.float64, generator=gen) + 0.5).to(like)


def _nll(x, target, **kwargs):
    return F.nll_loss(F.log_softmax(x, dim=1 if x.dim() > 1 else 0), target, **kwargs)


NLL_OPS = ("_log_softmax", "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward")
NLL2D_OPS = ("_log_softmax", "_log_softmax_backward_data", "nll_loss2d_forward",
             "nll_loss2d_backward")
BCE_OPS = ("binary_cross_entropy", "binary_cross_entropy_backward")


def _batch_norm(training: bool):
    def fn(x, w, b):
        # the same running statistics for both runs (the module test compares their updates)
        mean = torch.linspace(-0.5, 0.5, x.shape[1], dtype=x.dtype, device=x.device)
        var = torch.linspace(0.5, 1.5, x.shape[1], dtype=x.dtype, device=x.device)
        return F.batch_norm(x, mean, var, w, b, training=training, momentum=0.2, eps=1e-3)
    return fn


# name -> (fn, inputs(dtype), the ATen ops it must run on gpudnn)
CASES = {
    "linear": (F.linear, lambda d: _randn(d, (5, 8), (6, 8), (6,)), ("addmm", "mm")),
    "linear_3d": (F.linear, lambda d: _randn(d, (2, 3, 8), (6, 8), (6,)), ("addmm", "mm")),
    "linear_no_bias": (F.linear, lambda d: _randn(d, (5, 8), (6, 8)), ("mm",)),
    "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
               lambda d: _randn(d, (2, 3, 9, 9), (4, 3, 3, 3), (4,)),
               ("convolution", "convolution_backward")),
    "conv2d_groups_dilation": (lambda x, w: F.conv2d(x, w, None, padding=2, dilation=2, groups=2),
                               lambda d: _randn(d, (2, 4, 8, 8), (6, 2, 3, 3)),
                               ("convolution", "convolution_backward")),
    "conv2d_channels_last": (lambda x, w, b: F.conv2d(_channels_last(x), w, b, padding="same"),
                             lambda d: _randn(d, (2, 3, 6, 6), (4, 3, 2, 2), (4,)),
                             ("convolution", "convolution_backward")),
    "conv_transpose2d": (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1,
                                                            output_padding=1),
                         lambda d: _randn(d, (2, 4, 5, 5), (4, 3, 3, 3), (3,)),
                         ("convolution", "convolution_backward")),
    "batch_norm_train": (_batch_norm(True), lambda d: _randn(d, (4, 3, 5, 5), (3,), (3,)),
                         ("native_batch_norm", "native_batch_norm_backward")),
    "batch_norm_eval": (_batch_norm(False), lambda d: _randn(d, (4, 3, 5), (3,), (3,)),
                        ("native_batch_norm", "native_batch_norm_backward")),
    "batch_norm_no_affine": (lambda x: F.batch_norm(x, None, None, training=True),
                             lambda d: _randn(d, (6, 4)),
                             ("native_batch_norm", "native_batch_norm_backward")),
    "softmax": (lambda x: F.softmax(x, dim=-1), lambda d: _randn(d, (4, 7), scale=3.0),
                ("_softmax", "_softmax_backward_data")),
    "log_softmax": (lambda x: F.log_softmax(x, dim=0), lambda d: _randn(d, (5, 3, 2), scale=3.0),
                    ("_log_softmax", "_log_softmax_backward_data")),
    "cross_entropy": (lambda x: F.cross_entropy(x, _target((6,), 5)),
                      lambda d: _randn(d, (6, 5)), ("cross_entropy_loss",)),
    "cross_entropy_2d_ignore": (lambda x: F.cross_entropy(x, _target((2, 3, 3), 4, ignore=-100),
                                                          reduction="sum"),
                                lambda d: _randn(d, (2, 4, 3, 3)), ("cross_entropy_loss",)),
    "bce_with_logits": (lambda x: F.binary_cross_entropy_with_logits(
        x, _probabilities(x.dtype, x.shape), reduction="none"),
        lambda d: _randn(d, (4, 5), scale=4.0), ("binary_cross_entropy_with_logits",)),
    "cross_entropy_weight": (lambda x: F.cross_entropy(x, _target((6,), 5, ignore=-100),
                                                       weight=_class_weights(x, 5)),
                             lambda d: _randn(d, (6, 5)), ("cross_entropy_loss",)),
    "cross_entropy_label_smoothing": (
        lambda x: F.cross_entropy(x, _target((2, 3, 3), 4, ignore=1), weight=_class_weights(x, 4),
                                  ignore_index=1, label_smoothing=0.2, reduction="none"),
        lambda d: _randn(d, (2, 4, 3, 3)), ("cross_entropy_loss",)),
    # the target's gradient too (gpudnn's formula for class probabilities)
    "cross_entropy_probabilities": (
        lambda x, p: F.cross_entropy(x, p, weight=_class_weights(x, 5), label_smoothing=0.1),
        lambda d: _randn(d, (6, 5)) + [_probabilities(d, (6, 5))], ("cross_entropy_loss",)),
    "cross_entropy_probabilities_4d": (lambda x, p: F.cross_entropy(x, p, reduction="sum"),
                                       lambda d: _randn(d, (2, 4, 3, 2)) +
                                       [_probabilities(d, (2, 4, 3, 2))],
                                       ("cross_entropy_loss",)),
    "bce_with_logits_pos_weight": (
        lambda x, t: F.binary_cross_entropy_with_logits(
            x, t, weight=_class_weights(x, 5)[:, None], pos_weight=_class_weights(x, 5) * 2),
        lambda d: _randn(d, (5, 5), scale=4.0) + [_probabilities(d, (5, 5))],
        ("binary_cross_entropy_with_logits",)),
    "nll_loss": (lambda x: _nll(x, _target((6,), 5)), lambda d: _randn(d, (6, 5)), NLL_OPS),
    "nll_loss_weight_sum": (lambda x: _nll(x, _target((6,), 5, ignore=2), ignore_index=2,
                                           weight=_class_weights(x, 5), reduction="sum"),
                            lambda d: _randn(d, (6, 5)), NLL_OPS),
    "nll_loss_weight_none": (lambda x: _nll(x, _target((6,), 5, ignore=-100),
                                            weight=_class_weights(x, 5), reduction="none"),
                             lambda d: _randn(d, (6, 5)), NLL_OPS),
    "nll_loss_unbatched": (lambda x: _nll(x, _target((), 5), weight=_class_weights(x, 5)),
                           lambda d: _randn(d, (5,)), NLL_OPS),
    "nll_loss_4d": (lambda x: _nll(x, _target((2, 3, 3), 4, ignore=-100),
                                   weight=_class_weights(x, 4)),
                    lambda d: _randn(d, (2, 4, 3, 3)), NLL2D_OPS),
    "nll_loss_4d_none_channels_last": (lambda x: _nll(_channels_last(x), _target((2, 3, 2), 4),
                                                      reduction="none"),
                                       lambda d: _randn(d, (2, 4, 3, 2)), NLL2D_OPS),
    "nll_loss_3d_ignore": (lambda x: _nll(x, _target((2, 5), 3, ignore=0), ignore_index=0,
                                          reduction="sum"),
                           lambda d: _randn(d, (2, 3, 5)), NLL2D_OPS),
    # the target's gradient is ATen's own composite formula
    "binary_cross_entropy": (F.binary_cross_entropy,
                             lambda d: [_probabilities(d, (4, 5)),
                                        _probabilities(d, (4, 5)).flip(0)], BCE_OPS),
    "binary_cross_entropy_weight": (
        lambda p: F.binary_cross_entropy(p, _probabilities(p.dtype, p.shape).flip(1),
                                         weight=_class_weights(p, 5), reduction="none"),
        lambda d: [_probabilities(d, (4, 5))], BCE_OPS),
    "binary_cross_entropy_weight_sum": (
        lambda p: F.binary_cross_entropy(_channels_last(p), _probabilities(p.dtype, p.shape),
                                         weight=_class_weights(p, 3)[:, None, None],
                                         reduction="sum"),
        lambda d: [_probabilities(d, (2, 3, 2, 4)).flip(0)], BCE_OPS),
    "mse_loss": (F.mse_loss, lambda d: _randn(d, (4, 5), (4, 5)),
                 ("mse_loss", "mse_loss_backward")),
    "max_pool2d": (lambda x: F.max_pool2d(x, 3, 2, 1), lambda d: _randn(d, (2, 3, 9, 9)),
                   ("max_pool2d_with_indices", "max_pool2d_with_indices_backward")),
    "max_pool2d_ceil_dilation": (lambda x: F.max_pool2d(x, 2, 2, 1, dilation=2, ceil_mode=True),
                                 lambda d: _randn(d, (1, 2, 8, 7)),
                                 ("max_pool2d_with_indices", "max_pool2d_with_indices_backward")),
    "max_pool2d_unbatched": (lambda x: F.max_pool2d(x, 2, 1), lambda d: _randn(d, (3, 5, 5)),
                             ("max_pool2d_with_indices", "max_pool2d_with_indices_backward")),
    "max_pool2d_indices_channels_last": (lambda x: F.max_pool2d(_channels_last(x), 3, 2, 1,
                                                                return_indices=True),
                                         lambda d: _randn(d, (2, 3, 7, 7)),
                                         ("max_pool2d_with_indices",
                                          "max_pool2d_with_indices_backward")),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                   lambda d: _randn(d, (2, 3, 8, 8)), ("avg_pool2d", "avg_pool2d_backward")),
    "avg_pool2d_divisor": (lambda x: F.avg_pool2d(x, 2, divisor_override=3),
                           lambda d: _randn(d, (3, 6, 6)), ("avg_pool2d", "avg_pool2d_backward")),
    "relu": (F.relu, lambda d: _randn(d, (4, 6)), ("relu", "threshold_backward")),
    "relu_inplace": (lambda x: F.relu(x * 1.0, inplace=True), lambda d: _randn(d, (4, 6)),
                     ("relu_", "threshold_backward")),
    "gelu": (F.gelu, lambda d: _randn(d, (4, 6)), ("gelu", "gelu_backward")),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda d: _randn(d, (4, 6)),
                  ("gelu", "gelu_backward")),
    "silu": (F.silu, lambda d: _randn(d, (4, 6)), ("silu", "silu_backward")),
    "sigmoid": (torch.sigmoid, lambda d: _randn(d, (4, 6)), ("sigmoid", "sigmoid_backward")),
    "tanh": (torch.tanh, lambda d: _randn(d, (4, 6)), ("tanh", "tanh_backward")),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda d: _randn(d, (4, 6)),
                   ("leaky_relu", "leaky_relu_backward")),
}
# the ops of families this checkout may not have yet
OPTIONAL_CASES = {
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (3, 4), w, b, eps=1e-3),
                   lambda d: _randn(d, (2, 5, 3, 4), (3, 4), (3, 4)),
                   ("native_layer_norm", "native_layer_norm_backward")),
    "group_norm": (lambda x, w, b: F.group_norm(_channels_last(x), 2, w, b),
                   lambda d: _randn(d, (3, 4, 3, 5), (4,), (4,)),
                   ("native_group_norm", "native_group_norm_backward")),
    "embedding": (lambda w: F.embedding(_target((3, 4), 7), w, padding_idx=2,
                                        scale_grad_by_freq=True),
                  lambda d: _randn(d, (7, 5)), ("embedding", "embedding_dense_backward")),
    "adaptive_avg_pool2d": (lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
                            lambda d: _randn(d, (2, 3, 7, 5)),
                            ("_adaptive_avg_pool2d", "_adaptive_avg_pool2d_backward")),
}
CASES.update({name: case for name, case in OPTIONAL_CASES.items()
              if f"aten::{case[2][0]}" in aten.ATEN_OPS})
# what the Triton interpreter runs on the CPU (small shapes, float32)
INTERPRETED_CASES = ["linear", "conv2d", "batch_norm_train", "log_softmax", "cross_entropy",
                     "max_pool2d", "avg_pool2d", "relu", "gelu", "nll_loss_weight_none",
                     "nll_loss_4d", "binary_cross_entropy_weight", "cross_entropy_probabilities",
                     "bce_with_logits_pos_weight"]


@pytest.mark.parametrize("backend,dtype", SETUPS)
@pytest.mark.parametrize("name", list(CASES))
def test_functional_call_runs_on_gpudnn(name, backend, dtype):
    fn, inputs, ops = CASES[name]
    kernels = KERNELS.get(name)
    if kernels is not None and getattr(kernels, backend) is None:
        pytest.skip(f"gpudnn has no {backend} kernels for {name} (the call goes to ATen)")
    _check(fn, inputs(dtype), backend, dtype, ops=ops)


@pytest.mark.parametrize("backend,dtype", INTERPRETED)
@pytest.mark.parametrize("name", INTERPRETED_CASES)
def test_triton_interpreter(name, backend, dtype):
    fn, inputs, ops = CASES[name]
    _check(fn, inputs(dtype), backend, dtype, ops=ops)


class SmallCNN(nn.Module):
    """An unconverted torch CNN: every covered layer type once."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(2)
        self.drop = nn.Dropout(0.0)
        self.fc1 = nn.Linear(6 * 2 * 2, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x, target):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.avg(F.relu(self.bn2(self.conv2(x)), inplace=True))
        x = self.drop(F.gelu(self.fc1(x.flatten(1))))
        return F.nll_loss(F.log_softmax(self.fc2(x), dim=1), target)


CNN_OPS = ("convolution", "convolution_backward", "native_batch_norm",
           "native_batch_norm_backward", "relu", "relu_", "threshold_backward",
           "max_pool2d_with_indices", "max_pool2d_with_indices_backward", "avg_pool2d",
           "avg_pool2d_backward", "addmm", "mm", "gelu", "gelu_backward", "_log_softmax",
           "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward")


@pytest.mark.parametrize("backend,dtype", SETUPS)
def test_unconverted_cnn_trains_like_torch(backend, dtype):
    torch.manual_seed(0)
    model = SmallCNN().to(DEVICE, dtype)
    x = _randn(dtype, (4, 1, 8, 8))[0]
    target = _target((4,), 5)
    _check(lambda *a: None, [x, target], backend, dtype, module=copy.deepcopy(model), ops=CNN_OPS)
    # two training steps each: the same running statistics and the same updated weights
    ours, theirs = copy.deepcopy(model), copy.deepcopy(model)
    for m, ctx in ((theirs, contextlib.nullcontext()), (ours, _enabled(backend))):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        with ctx:
            for _ in range(2):
                opt.zero_grad()
                m(x, target).backward()
                opt.step()
    for (name, a), (_, e) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert_close(a, e, dtype, name=name, scale=GRAD_SCALE)
    ours.eval(), theirs.eval()  # eval: batch norm on the running statistics
    with _enabled(backend):
        got = ours(x, target)
    assert_close(got, theirs(x, target), dtype, name="eval loss")


class CharLM(nn.Module):
    """An unconverted LSTM language model."""

    def __init__(self, cell=nn.LSTM):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.rnn = cell(6, 5, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(10, 11)

    def forward(self, tokens, target):
        y, _ = self.rnn(self.embed(tokens))
        return F.cross_entropy(self.head(y).transpose(1, 2), target)


@pytest.mark.parametrize("backend,dtype", SETUPS)
def test_unconverted_lstm_language_model(backend, dtype):
    torch.manual_seed(0)
    model = CharLM().to(DEVICE, dtype)
    tokens, target = _target((3, 7), 11), _target((3, 7), 11)
    _check(lambda *a: None, [tokens, target], backend, dtype, module=model,
           ops=("lstm.input", "mm", "cross_entropy_loss"))


@pytest.mark.skipif("aten::gru.input" not in aten.ATEN_OPS, reason="gpudnn has no GRU")
@pytest.mark.parametrize("backend,dtype", [p for p in SETUPS if p.id != "cupy-f32"])
def test_unconverted_gru_language_model(backend, dtype):
    torch.manual_seed(0)
    model = CharLM(nn.GRU).to(DEVICE, dtype)
    tokens, target = _target((3, 7), 11), _target((3, 7), 11)
    _check(lambda *a: None, [tokens, target], backend, dtype, module=model,
           ops=("gru.input", "cross_entropy_loss"))


@pytest.mark.parametrize("backend,dtype", SETUPS)
def test_below_autograd_and_no_grad(backend, dtype):
    """inference_mode skips the Autograd key: the LSTM's backend-key registration serves it."""
    lstm = nn.LSTM(4, 3).to(DEVICE, dtype)
    x = _randn(dtype, (5, 2, 4))[0]
    expected = lstm(x)[0]
    for mode in (torch.inference_mode, torch.no_grad):
        gpudnn.reset_enabled_stats()
        with _enabled(backend), mode():
            got = lstm(x)[0]
        assert gpudnn.enabled_stats() == {"aten::lstm.input": 1}
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("backend,dtype", SETUPS)
def test_native_dropout_mask_and_gradient(backend, dtype):
    """y = x * mask / (1 - p) with the bool mask ATen's backward multiplies by; the same seed
    gives the same mask; on CUDA F.dropout itself is native_dropout."""
    x = (_randn(dtype, (64, 33))[0] + 3.0).requires_grad_()
    with _enabled(backend):
        torch.manual_seed(1)
        y, mask = torch.native_dropout(x, 0.3, True)
        y.backward(torch.ones_like(y))
        torch.manual_seed(1)
        again = torch.native_dropout(x.detach(), 0.3, None)[1]
        if DEVICE == "cuda":
            gpudnn.reset_enabled_stats()
            F.dropout(x, 0.3)
            assert gpudnn.enabled_stats() == {"aten::native_dropout": 1}
    assert mask.dtype == torch.bool and torch.equal(mask, again)
    assert 0.6 < mask.float().mean().item() < 0.8
    assert_close(y, x.detach() * mask / 0.7, dtype)
    assert_close(x.grad, mask.to(dtype) / 0.7, dtype)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("backend,dtype", SETUPS)
def test_cudnn_batch_norm(backend, dtype, training):
    """What F.batch_norm calls on CUDA: y, the running statistics, the saved statistics autograd
    hands to cudnn_batch_norm_backward (training) or native_batch_norm_backward (eval); called
    directly here so that the CPU checks it too."""
    x, w, b = _randn(dtype, (4, 3, 5, 5), (3,), (3,))
    w = w.abs() + 0.5
    mean, var = _randn(dtype, (3,))[0], torch.rand(3, dtype=dtype, device=DEVICE) + 0.5
    rm, rv = mean.clone(), var.clone()
    expected = _forward_backward(lambda *a: F.batch_norm(a[0], rm, rv, a[1], a[2], training,
                                                         0.1, 1e-5), [x, w, b])
    rm2, rv2 = mean.clone(), var.clone()
    gpudnn.reset_enabled_stats()
    with _enabled(backend):
        actual = _forward_backward(lambda *a: torch.ops.aten.cudnn_batch_norm(
            a[0], a[1], a[2], rm2, rv2, training, 0.1, 1e-5)[0], [x, w, b])
    backward = "cudnn_batch_norm_backward" if training else "native_batch_norm_backward"
    assert gpudnn.enabled_stats() == {"aten::cudnn_batch_norm": 1, f"aten::{backward}": 1}
    for a, e in zip(actual[0] + actual[1] + [rm2, rv2], expected[0] + expected[1] + [rm, rv]):
        assert_close(a, e, dtype, scale=GRAD_SCALE)


@pytest.mark.parametrize("backend,dtype", SETUPS)
def test_special_values_like_torch(backend, dtype):
    x = torch.tensor([[float("nan"), -0.0, 0.0, float("inf"), -float("inf"), -2.0, 3.0]],
                     dtype=dtype, device=DEVICE)
    fns = [F.relu, lambda t: F.leaky_relu(t, 0.1), torch.sigmoid, torch.tanh,
           lambda t: F.softmax(t, dim=0), lambda t: F.log_softmax(t[:, 1:], dim=1),
           lambda t: F.max_pool2d(t.view(1, 1, 1, 7), (1, 2), ceil_mode=True)]
    for fn in fns:
        expected = fn(x)
        with _enabled(backend):
            got = fn(x)
        assert_close(got, expected, dtype, signed_zeros=True)
    # NLL of each special value (its row's target on it), and BCE at 0 and 1 (the clamped logs)
    rows, p = x.expand(7, 7), torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5], dtype=dtype, device=DEVICE)
    losses = [(lambda r: F.nll_loss(r, torch.arange(7, device=DEVICE), reduction="none"), rows),
              (lambda r: F.nll_loss(r, torch.arange(7, device=DEVICE) % 3), rows[:, 1:4]),
              (lambda q: F.binary_cross_entropy(q, torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5],
                                                                dtype=dtype, device=DEVICE),
                                                reduction="none"), p)]
    for fn, value in losses:
        expected = _forward_backward(fn, [value])
        gpudnn.reset_enabled_stats()
        with _enabled(backend):
            got = _forward_backward(fn, [value])
        assert gpudnn.enabled_stats(fallbacks=True) == {}
        for a, e in zip(got[0] + got[1], expected[0] + expected[1]):
            assert_close(a, e, dtype, signed_zeros=True)
    grad = torch.ones_like(x)
    with _enabled(backend):  # relu' at NaN is 1 and at -0.0 is 0, as threshold_backward's
        got = torch.ops.aten.threshold_backward(grad, x, 0)
    assert_close(got, torch.ops.aten.threshold_backward(grad, x, 0), dtype, signed_zeros=True)


def test_uncovered_cases_fall_back_to_aten():
    """Cases gpudnn does not cover go to ATen's own kernel: same results, counted as
    fallbacks, never as gpudnn runs."""
    x, w, b = (torch.randn(s, dtype=torch.float64, device=DEVICE) for s in ((4, 5), (3, 5), (3,)))
    img = torch.randn(2, 3, 6, 6, dtype=torch.float64, device=DEVICE)
    p = x.sigmoid()
    trainable = torch.rand(5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    cases = [  # (call, the ATen operator that must go to ATen's kernel)
        (lambda: torch.addmm(b, x, w.t(), beta=0.5), "addmm"),         # beta != 1
        (lambda: torch.mm(x.to(torch.complex128), w.t().to(torch.complex128)).abs(), "mm"),
        (lambda: torch.mm(x[:0], w.t()), "mm"),                        # empty
        (lambda: F.conv1d(img[:, :, 0], img[:2, :, :3, 0]), "convolution"),  # 1-D
        # ATen differentiates a class weight of probability targets; gpudnn does not
        (lambda: F.cross_entropy(x, torch.softmax(x, 1), weight=trainable).detach(),
         "cross_entropy_loss"),
        # a float32 pos_weight on float64 logits (ATen promotes)
        (lambda: F.binary_cross_entropy_with_logits(
            x, p, pos_weight=x.new_full((5,), 2.0, dtype=torch.float32), reduction="none"),
         "binary_cross_entropy_with_logits"),
        # a float32 weight on float64 probabilities
        (lambda: F.binary_cross_entropy(p, p.flip(0), weight=x.new_ones(5, dtype=torch.float32)),
         "binary_cross_entropy"),
        # out of [0, 1]: ATen's backward has finite values there, gpudnn's kernel NaN
        (lambda: torch.ops.aten.binary_cross_entropy_backward(x.new_tensor(1.0), p * 2, p),
         "binary_cross_entropy_backward"),
        # an unbatched input with a [1] target
        (lambda: torch.ops.aten.nll_loss_forward(x[0], b.new_ones(1, dtype=torch.long), None, 1,
                                                 -100)[0], "nll_loss_forward"),
        (lambda: torch.ops.aten.threshold_backward(x, x, 0.5), "threshold_backward"),
        (lambda: F.max_pool2d(img, 3, 1, 1).sum(dim=(2, 3)), None),   # covered: a control
    ]
    for fn, op in cases:
        expected = fn()
        gpudnn.reset_enabled_stats()
        with gpudnn.enabled(devices=(DEVICE,), backend="reference"):
            got = fn()
        assert_close(got, expected, torch.float64)
        ran, handed_back = gpudnn.enabled_stats(), gpudnn.enabled_stats(fallbacks=True)
        if op is None:
            assert ran == {"aten::max_pool2d_with_indices": 1} and not handed_back
        else:
            assert f"aten::{op}" in handed_back and f"aten::{op}" not in ran, (op, ran)
    if DEVICE == "cuda":  # float64 on a GPU backend: ATen's kernel, not the NumPy reference
        gpudnn.reset_enabled_stats()
        with gpudnn.enabled(devices=("cuda",), backend="triton"):
            torch.relu(x)
        assert gpudnn.enabled_stats() == {}
        assert gpudnn.enabled_stats(fallbacks=True) == {"aten::relu": 1}
    gpudnn.reset_enabled_stats()
    with gpudnn.enabled(devices=(DEVICE,), backend="reference"):
        torch.addmm(b, x, w.t(), alpha=2.0)
        logits = x.detach().requires_grad_()
        F.cross_entropy(logits, torch.softmax(x, 1), weight=trainable).backward()
    fallbacks = gpudnn.enabled_stats(fallbacks=True)
    assert fallbacks["aten::addmm"] == 1 and fallbacks["aten::cross_entropy_loss"] == 1
    # ATen's composite of probability targets still runs its log_softmax on gpudnn
    assert "aten::addmm" not in gpudnn.enabled_stats()
    assert gpudnn.enabled_stats()["aten::_log_softmax"] == 1
    assert gpudnn.enabled_stats()["aten::_log_softmax_backward_data"] == 1
    reference = x.detach().requires_grad_()
    expected = torch.autograd.grad(F.cross_entropy(reference, torch.softmax(x, 1),
                                                   weight=trainable), (reference, trainable))
    assert_close(logits.grad, expected[0], torch.float64)
    assert_close(trainable.grad, expected[1], torch.float64)


def test_invalid_arguments_raise_torchs_errors():
    img = torch.randn(2, 3, 6, 6, device=DEVICE)
    bad = [
        (RuntimeError, lambda: F.conv2d(img, torch.randn(4, 2, 3, 3, device=DEVICE))),
        (RuntimeError, lambda: F.max_pool2d(img, 2, padding=2)),
        (RuntimeError, lambda: torch.mm(img[0, 0], torch.randn(5, 2, device=DEVICE))),
        (IndexError, lambda: F.cross_entropy(img[0, 0], torch.full((6,), 9, device=DEVICE))),
        # gpudnn's kernels give NaN here: ATen's checks (and errors) run instead
        (IndexError, lambda: F.nll_loss(img[0, 0], torch.full((6,), 9, device=DEVICE))),
        (IndexError, lambda: F.nll_loss(img, torch.full((2, 6, 6), -1, device=DEVICE))),
        (RuntimeError, lambda: F.nll_loss(img[0, 0], torch.zeros(6, dtype=torch.int32,
                                                                  device=DEVICE))),
        (RuntimeError, lambda: F.binary_cross_entropy(img.sigmoid() * 2, img.sigmoid())),
        (RuntimeError, lambda: F.binary_cross_entropy(img.sigmoid(), img.sigmoid() - 1)),
    ]
    with gpudnn.enabled(devices=(DEVICE,), backend="reference"):
        for error, fn in bad:
            with pytest.raises(error):
                fn()


def test_disable_restores_torch_exactly():
    def table():
        keys = {"cpu": ("CPU", "AutogradCPU"), "cuda": ("CUDA", "AutogradCUDA")}[DEVICE]
        out = {}
        for name in aten.ATEN_OPS:
            for key in keys:
                try:
                    out[name, key] = repr(torch.library.get_kernel(name, key))
                except RuntimeError as exc:  # no kernel on this key
                    out[name, key] = str(exc)
        return out

    before = table()
    gpudnn.enable(devices=(DEVICE,), backend="reference")
    gpudnn.enable(devices=(DEVICE,), backend="reference")  # idempotent
    assert aten.is_enabled(DEVICE)
    during = table()
    assert sum(during[k] != before[k] for k in before) >= len(aten.ATEN_OPS)
    gpudnn.disable()
    assert not aten.is_enabled(DEVICE)
    assert table() == before
    gpudnn.reset_enabled_stats()
    torch.relu(torch.randn(3, device=DEVICE))
    assert gpudnn.enabled_stats() == {} and gpudnn.enabled_stats(fallbacks=True) == {}


def test_counters_stay_still_outside_and_blocks_nest():
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, device=DEVICE)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, device=DEVICE)

    def run():
        F.conv2d(F.relu(x), w)

    gpudnn.reset_enabled_stats()
    run()
    assert gpudnn.enabled_stats() == {}
    with gpudnn.enabled(devices=(DEVICE,), backend="reference"):
        run()
        assert gpudnn.enabled_stats() == {"aten::relu": 1, "aten::convolution": 1}
        with gpudnn.enabled(devices=(DEVICE,), backend="reference", ops=["relu"]):
            run()  # the inner block covers relu only
            assert gpudnn.enabled_stats() == {"aten::relu": 2, "aten::convolution": 1}
        run()  # the outer block's set is back
        assert gpudnn.enabled_stats() == {"aten::relu": 3, "aten::convolution": 2}
        with pytest.raises(ZeroDivisionError):
            with gpudnn.enabled(devices=(DEVICE,), backend="reference", ops=["aten::relu"]):
                1 / 0
        run()
        assert gpudnn.enabled_stats()["aten::convolution"] == 3
    run()
    assert gpudnn.enabled_stats() == {"aten::relu": 4, "aten::convolution": 3}
    assert not aten.is_enabled(DEVICE)


def test_process_wide_and_thread_local_guard():
    """Registration is process-wide (another thread's calls run on gpudnn too); gpudnn's own
    code (guarded) gets ATen's kernels and is not counted."""
    x = torch.randn(4, 4, dtype=torch.float64, device=DEVICE)
    gpudnn.reset_enabled_stats()
    with gpudnn.enabled(devices=(DEVICE,), backend="reference"):
        worker = threading.Thread(target=lambda: torch.tanh(x))
        worker.start()
        worker.join()
        assert gpudnn.enabled_stats() == {"aten::tanh": 1}
        guarded(lambda: torch.tanh(torch.mm(x, x)))()  # what a launcher's torch calls see
        assert gpudnn.enabled_stats() == {"aten::tanh": 1}
        assert gpudnn.enabled_stats(fallbacks=True) == {}
        # gpudnn.nn modules run gpudnn's ops already: nothing of theirs reaches ATen's table
        layer = gpudnn.nn.Conv2d(3, 4, 3).to(DEVICE, torch.float64)
        layer(torch.randn(1, 3, 5, 5, dtype=torch.float64, device=DEVICE)).sum().backward()
        assert gpudnn.enabled_stats() == {"aten::tanh": 1}


def test_enable_arguments():
    with pytest.raises(ValueError, match="device"):
        gpudnn.enable(devices=("xla",))
    with pytest.raises(ValueError, match="not a covered ATen operator"):
        gpudnn.enable(devices=(DEVICE,), ops=["native_dropout_backward"])
    with pytest.raises(ValueError, match="unknown gpudnn backend"):
        gpudnn.enable(devices=(DEVICE,), backend="cudnn")
    if DEVICE == "cpu":
        with pytest.raises(RuntimeError, match="cupy"):
            gpudnn.enable(devices=("cpu",), backend="cupy")
    assert not aten.is_enabled(DEVICE)


def test_backend_none_follows_use_backend():
    x = torch.randn(3, 4, device=DEVICE)
    with gpudnn.enabled(devices=(DEVICE,)), gpudnn.use_backend("reference"):
        gpudnn.reset_enabled_stats()
        torch.sigmoid(x)
    assert gpudnn.enabled_stats() == {"aten::sigmoid": 1}


def test_schemas_match_this_torch():
    """Every implementation takes exactly its overload's arguments in this torch; backend-level
    registrations only replace real kernels (never a composite one, whose autograd would then
    be lost)."""
    for name, override in aten.OVERRIDES.items():
        assert override.schema_mismatch() is None, override.schema_mismatch()
        if not override.autograd:
            assert not torch._C._dispatch_has_kernel_for_dispatch_key(
                override.qualified, "CompositeImplicitAutograd") or name == "silu_backward", name
    gpudnn.enable(devices=(DEVICE,), backend="reference")
    assert aten.SKIPPED == {}


def test_torch_compile_under_enable():
    """Compiled graphs hold ATen's operators (traced with fake tensors, which never reach
    gpudnn's kernels); at run time the operators the graph calls as ATen kernels run on gpudnn:
    every one with aot_eager, the extern ones (convolution) with Inductor."""
    torch.manual_seed(0)
    dtype = torch.float64 if DEVICE == "cpu" else torch.float32
    backend = "reference" if DEVICE == "cpu" else "triton"
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4)).to(
        DEVICE, dtype)
    x = torch.randn(2, 2, 4, 4, dtype=dtype, device=DEVICE)
    expected = model(x)
    for compiler, ops in (("aot_eager", {"aten::convolution", "aten::relu", "aten::addmm"}),
                          ("inductor", {"aten::convolution"})):
        torch._dynamo.reset()
        with gpudnn.enabled(devices=(DEVICE,), backend=backend):
            compiled = torch.compile(model, backend=compiler, fullgraph=True)
            compiled(x)
            gpudnn.reset_enabled_stats()
            got = compiled(x)
        assert ops <= set(gpudnn.enabled_stats()), (compiler, gpudnn.enabled_stats())
        assert_close(got, expected, dtype, name=compiler)
    # a graph break (dynamo does not trace torch.nn.LSTM): the eager part runs on gpudnn, and
    # dynamo leaves gpudnn's kernels alone (no frame of theirs is compiled)
    torch._dynamo.reset()
    lm = CharLM().to(DEVICE, dtype)
    tokens, target = _target((3, 7), 11), _target((3, 7), 11)
    expected = lm(tokens, target)
    from torch._dynamo.utils import counters
    counters.clear()
    with gpudnn.enabled(devices=(DEVICE,), backend=backend):
        gpudnn.reset_enabled_stats()
        got = torch.compile(lm, backend="aot_eager")(tokens, target)
    assert "aten::lstm.input" in gpudnn.enabled_stats()
    assert_close(got, expected, dtype, name="language model")
    # (without torch.compiler.disable on the kernels: 17 frames, each kernel's compiled)
    assert counters["frames"]["total"] < 5, dict(counters["frames"])
    torch._dynamo.reset()
