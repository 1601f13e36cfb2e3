"""Sample arguments of every gpudnn custom op (``torch.ops.gpudnn.*``), for ``opcheck`` on the
CPU (tests/test_compile.py) and for tracing the Triton ops on fake CUDA tensors
(tests/fake_cuda_trace.py).

``samples(name, backend, device)`` returns a list of argument tuples: small odd shapes, each op
once with non-contiguous or channels_last operands where its launchers accept them. Backward ops
get the saved tensors of a real forward call on the same backend (on fake tensors, of a fake
forward). ``SAMPLES`` must name every op: tests/test_compile.py fails for an op without one.
"""
from __future__ import annotations

from typing import Callable

import torch

CL = torch.channels_last


def _to(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``; under a FakeTensorMode without CUDA (tests/fake_cuda_trace.py) an
    uninitialized fake of the same shape there (the values are never read)."""
    if (torch.device(device).type == "cuda" and not torch.cuda.is_available()) or \
            torch.device(device).type == "meta":
        return torch.empty(t.shape, dtype=t.dtype, device=device)
    return t.to(device)


def _cl(t: torch.Tensor) -> torch.Tensor:
    """``t`` [N, C, H, W] as channels_last (a permuted NHWC buffer: also for fake CUDA)."""
    n, c, h, w = t.shape
    out = torch.empty((n, h, w, c), dtype=t.dtype, device=t.device).permute(0, 3, 1, 2)
    fake = (t.device.type == "cuda" and not torch.cuda.is_available()) or t.device.type == "meta"
    return out if fake else out.copy_(t)


def _g(device, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return _to(torch.randn(shape, generator=gen) * scale, device)

    return randn


def _op(name):
    return getattr(torch.ops.gpudnn, name).default


def _activation(backend, device):
    r = _g(device)
    x = r(4, 6)
    return [(x, "gelu", 0.0, backend), (x.t(), "relu", 0.0, backend),
            (_cl(r(2, 3, 4, 5)), "leaky_relu", 0.2, backend)]


def _activation_backward(backend, device):
    r = _g(device, 1)
    x = r(4, 6)
    return [(r(4, 6), x, "gelu", 0.0, backend), (r(4, 6).t(), x.t(), "tanh", 0.0, backend)]


def _dense(backend, device):
    r = _g(device, 2)
    return [(r(5, 3), r(4, 3), r(4), "gelu", 0.0, backend),
            (r(3, 5).t(), r(4, 3), None, "relu", 0.0, backend),
            (r(5, 3), r(3, 4).t(), r(4), "", 0.0, backend)]


def _dense_backward(backend, device):
    r = _g(device, 3)
    out = []
    for act in ("gelu", "relu", ""):
        x, w, b = r(5, 3), r(4, 3), r(4)
        y, z = _op("dense")(x, w, b, act, 0.0, backend)
        saved = None if not act else (y if act == "relu" else z)
        out.append((r(5, 4), x, w, saved, act, 0.0, [True, True, act != "gelu"], backend))
    return out


def _softmax(backend, device):
    r = _g(device, 4)
    return [(r(3, 5, 2), 1, False, backend), (r(4, 6).t(), 1, True, backend)]


def _softmax_backward(backend, device):
    r = _g(device, 5)
    x = r(3, 5, 2)
    return [(r(3, 5, 2), _op("softmax")(x, 1, log, backend), 1, log, backend)
            for log in (False, True)]


def _targets(device, n, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    t = torch.randint(0, classes, (n,), generator=gen)
    t[1] = -100
    return _to(t, device)


def _cross_entropy(backend, device):
    r = _g(device, 6)
    return [(r(5, 4), _targets(device, 5, 4, 0), None, -100, "mean", 0.0, backend),
            (r(5, 4), _targets(device, 5, 4, 0), r(4).abs(), -100, "none", 0.1, backend),
            (r(4, 5).t(), _targets(device, 5, 4, 2), r(4).abs(), -100, "mean", 0.0, backend)]


def _cross_entropy_backward(backend, device):
    r = _g(device, 7)
    out = []
    for reduction, grad, weight, smoothing in (("mean", r(), None, 0.0),
                                               ("none", r(5), r(4).abs(), 0.2),
                                               ("mean", r(), r(4).abs(), 0.1)):
        logits, target = r(5, 4), _targets(device, 5, 4, 1)
        _, lse = _op("cross_entropy")(logits, target, weight, -100, reduction, smoothing, backend)
        out.append((grad.reshape(()) if reduction == "mean" else grad, logits, target, lse, weight,
                    -100, reduction, smoothing, backend))
    return out


def _cross_entropy_probs(backend, device):
    r = _g(device, 30)
    return [(r(5, 4), r(5, 4).softmax(1), None, "mean", 0.0, backend),
            (r(4, 5).t(), r(5, 4).softmax(1), r(4).abs(), "none", 0.2, backend)]


def _cross_entropy_probs_backward(backend, device):
    r = _g(device, 31)
    out = []
    for reduction, grad, weight, smoothing, needs in (
            ("mean", r(), None, 0.0, [True, True]), ("none", r(5), r(4).abs(), 0.1, [True, False]),
            ("sum", r(), r(4).abs(), 0.0, [False, True])):
        logits, target = r(5, 4), r(5, 4).softmax(1)
        _, row_max, log_sum = _op("cross_entropy_probs")(logits, target, weight, reduction,
                                                        smoothing, backend)
        out.append((grad.reshape(()) if reduction != "none" else grad, logits, target, row_max,
                    log_sum, weight, reduction, smoothing, needs, backend))
    return out


def _nll_loss(backend, device):
    r = _g(device, 32)
    return [(r(5, 4).log_softmax(1), _targets(device, 5, 4, 3), None, -100, "mean", backend),
            (r(4, 5).t(), _targets(device, 5, 4, 4), r(4).abs(), -100, "none", backend),
            (r(5, 4), _targets(device, 5, 4, 5), r(4).abs(), -100, "sum", backend)]


def _nll_loss_backward(backend, device):
    r = _g(device, 33)
    return [(r().reshape(()), r(5, 4), _targets(device, 5, 4, 6), r(4).abs(), -100, "mean",
             backend),
            (r(5), r(5, 4), _targets(device, 5, 4, 7), None, -100, "none", backend)]


def _pointwise_loss(backend, device):
    r = _g(device, 8)
    return [(r(3, 4), r(3, 4).sigmoid(), None, None, "mean", backend),
            (r(3, 4), r(4, 3).t(), None, None, "none", backend)]


def _pointwise_loss_backward(backend, device):
    r = _g(device, 9)
    return [(r().reshape(()), r(3, 4), r(3, 4).sigmoid(), None, None, "sum", [True, True],
             backend),
            (r(3, 4), r(3, 4), r(3, 4), None, None, "none", [True, False], backend)]


def _bce_with_logits(backend, device):
    r = _g(device, 34)
    return _pointwise_loss(backend, device) + [
        (r(3, 4), r(3, 4).sigmoid(), r(4).abs(), r(4).abs(), "mean", backend),
        (r(3, 4), r(4, 3).t().sigmoid(), r(3, 1).abs(), None, "none", backend)]


def _bce_with_logits_backward(backend, device):
    r = _g(device, 35)
    return _pointwise_loss_backward(backend, device) + [
        (r().reshape(()), r(3, 4), r(3, 4).sigmoid(), r(4).abs(), r(4).abs(), "mean",
         [True, True], backend),
        (r(3, 4), r(3, 4), r(3, 4).sigmoid(), None, r(3, 1).abs(), "none", [False, True],
         backend)]


def _bce(backend, device):
    r = _g(device, 36)
    return [(r(3, 4).sigmoid(), r(3, 4).sigmoid(), None, None, "mean", backend),
            (r(4, 3).t().sigmoid(), r(3, 4).sigmoid(), r(4).abs(), None, "none", backend)]


def _bce_backward(backend, device):
    r = _g(device, 37)
    return [(r().reshape(()), r(3, 4).sigmoid(), r(3, 4).sigmoid(), r(3, 1).abs(), None, "sum",
             [True, True], backend),
            (r(3, 4), r(3, 4).sigmoid(), r(3, 4).sigmoid(), None, None, "none", [True, False],
             backend)]


def _seed():
    return torch.tensor(1234, dtype=torch.int64)


def _dropout(backend, device):
    r = _g(device, 10)
    return [(r(4, 5), 0.3, _seed(), backend), (r(5, 4).t(), 0.5, _seed(), backend)]


def _dropout_backward(backend, device):
    r = _g(device, 11)
    return [(r(4, 5), 0.3, _seed(), backend)]


def _feature_dropout(backend, device):
    r = _g(device, 54)
    return [(r(3, 4, 5), 0.3, _seed(), backend), (_cl(r(2, 3, 4, 5)), 0.5, _seed(), backend)]


def _feature_dropout_backward(backend, device):
    r = _g(device, 55)
    return [(r(3, 4, 2, 2), 0.3, _seed(), backend)]


def _batch_norm(backend, device):
    r = _g(device, 12)
    return [(r(4, 3, 5), r(3), r(3), r(3), r(3).abs() + 0.5, True, 0.1, 1e-5, "relu", 0.0,
             backend),
            (_cl(r(2, 3, 4, 5)), None, None, r(3), r(3).abs() + 0.5,
             False, 0.1, 1e-5, "", 0.0, backend),
            (r(6, 3), r(3), None, None, None, True, 0.1, 1e-5, "gelu", 0.0, backend)]


def _batch_norm_backward(backend, device):
    r = _g(device, 13)
    out = []
    for training in (True, False):
        x, w, b = r(4, 3, 5), r(3), r(3)
        _, mean, invstd, _, _ = _op("batch_norm")(x, w, b, r(3), r(3).abs() + 0.5, training,
                                                  0.1, 1e-5, "silu", 0.0, backend)
        out.append((r(4, 3, 5), x, w, b, mean, invstd, "silu", 0.0, training, [True, True, True],
                    backend))
    return out


def _batch_norm_stats(backend, device):
    r = _g(device, 30)
    return [(r(4, 3, 5), 1e-5, backend), (_cl(r(2, 3, 4, 5)), 1e-3, backend)]


def _sync_sums(device, seed, backend):
    r = _g(device, seed)
    x, w, b = r(4, 3, 5), r(3), r(3)
    mean, invstd = _op("batch_norm_stats")(x, 1e-5, backend)
    return r, x, w, b, mean, invstd


def _batch_norm_backward_reduce(backend, device):
    r, x, w, b, mean, invstd = _sync_sums(device, 31, backend)
    return [(r(4, 3, 5), x, w, b, mean, invstd, "relu", 0.0, backend),
            (r(4, 3, 5), x, None, None, mean, invstd, "", 0.0, backend)]


def _batch_norm_backward_elemt(backend, device):
    r, x, w, b, mean, invstd = _sync_sums(device, 32, backend)
    grad = r(4, 3, 5)
    sum_dz, sum_dz_xhat = _op("batch_norm_backward_reduce")(grad, x, w, b, mean, invstd, "gelu",
                                                            0.0, backend)
    return [(grad, x, w, b, mean, invstd, "gelu", 0.0, sum_dz * 2, sum_dz_xhat * 2, 40,
             backend)]


_CONV = ([1, 1], [1, 1, 0, 0], [1, 1], 1)          # stride, padding4, dilation, groups
_CONV_STRIDED = ([2, 1], [0, 1, 1, 1], [1, 2], 2)
_CONVT = ([2, 2], [1, 0], [1, 0], 1, [1, 1])       # stride, padding, output_padding, groups, dil


def _conv2d(backend, device):
    r = _g(device, 14)
    return [(r(2, 4, 5, 6), r(3, 4, 3, 3), r(3), *_CONV, "gelu", 0.0, backend),
            (_cl(r(2, 4, 7, 6)), r(6, 2, 2, 3), None, *_CONV_STRIDED,
             "relu", 0.0, backend),
            (r(0, 4, 5, 6), r(3, 4, 3, 3), r(3), *_CONV, "", 0.0, backend)]


def _conv2d_backward(backend, device):
    r = _g(device, 15)
    out = []
    for x, w, params, act in ((r(2, 4, 5, 6), r(3, 4, 3, 3), _CONV, "gelu"),
                              (_cl(r(2, 4, 7, 6)), r(6, 2, 2, 3),
                               _CONV_STRIDED, "relu")):
        y, z = _op("conv2d")(x, w, r(w.shape[0]), *params, act, 0.0, backend)
        saved = y if act == "relu" else z
        out.append((torch.randn_like(y), x, w, saved, *params, act, 0.0, [True, True, True],
                    backend))
    return out


def _conv_transpose2d(backend, device):
    r = _g(device, 16)
    return [(r(2, 4, 3, 5), r(4, 3, 3, 2), r(3), *_CONVT, "tanh", 0.0, backend),
            (_cl(r(2, 4, 3, 5)), r(4, 3, 3, 2), None, *_CONVT, "silu",
             0.0, backend)]


def _conv_transpose2d_backward(backend, device):
    r = _g(device, 17)
    x, w = r(2, 4, 3, 5), r(4, 3, 3, 2)
    y, z = _op("conv_transpose2d")(x, w, r(3), *_CONVT, "silu", 0.0, backend)
    return [(torch.randn_like(y), x, w, z, *_CONVT, "silu", 0.0, [True, True, True], backend)]


_POOL = ([3, 2], [2, 2], [1, 0], [1, 1], True)     # kernel, stride, padding, dilation, ceil


def _max_pool2d(backend, device):
    r = _g(device, 18)
    return [(r(2, 3, 7, 6), *_POOL, False, backend),
            (_cl(r(2, 3, 7, 6)), [2, 2], [1, 2], [0, 0], [2, 1], False, True,
             backend)]


def _max_pool2d_backward(backend, device):
    r = _g(device, 19)
    x = r(2, 3, 7, 6)
    out = []
    for return_indices in (False, True):
        y, saved = _op("max_pool2d")(x, *_POOL, return_indices, backend)
        out.append((torch.randn_like(y), list(x.shape), saved, *_POOL, backend))
    return out


def _adaptive_avg_pool2d(backend, device):
    r = _g(device, 50)
    return [(r(2, 3, 7, 6), [3, 4], backend), (_cl(r(2, 3, 7, 7)), [1, 1], backend)]


def _adaptive_avg_pool2d_backward(backend, device):
    r = _g(device, 51)
    return [(r(2, 3, 3, 4), [2, 3, 7, 6], backend), (_cl(r(2, 3, 5, 2)), [2, 3, 4, 7], backend)]


def _embedding(backend, device):
    r = _g(device, 52)
    ids = _to(torch.tensor([3, 0, 4, 3, 1, 3]), device)
    return [(r(5, 4), ids, -1, False, backend),
            (r(4, 5).t(), _to(torch.tensor([2, 2, 0], dtype=torch.int32), device), 2, True,
             backend)]


def _embedding_backward(backend, device):
    r = _g(device, 53)
    ids = _to(torch.tensor([3, 0, 4, 3, 1, 3]), device)
    return [(r(6, 4), ids, 5, -1, False, backend), (r(6, 4), ids, 5, 3, True, backend)]


_AVG = ([3, 2], [2, 2], [1, 0], True, False, None)  # kernel, stride, padding, ceil, pad, div


def _avg_pool2d(backend, device):
    r = _g(device, 20)
    return [(r(2, 3, 7, 6), *_AVG, backend),
            (_cl(r(2, 3, 6, 6)), [2, 2], [2, 2], [0, 0], False, True, 3,
             backend)]


def _avg_pool2d_backward(backend, device):
    r = _g(device, 21)
    x = r(2, 3, 7, 6)
    y = _op("avg_pool2d")(x, *_AVG, backend)
    return [(torch.randn_like(y), list(x.shape), *_AVG, backend)]


def _layer_norm(backend, device):
    r = _g(device, 46)
    return [(r(4, 3, 5), [3, 5], r(3, 5), r(3, 5), 1e-5, "gelu", 0.0, backend),
            (r(5, 6).t(), [5], None, None, 1e-5, "", 0.0, backend),
            (r(3, 4), [4], r(4), None, 1e-5, "relu", 0.0, backend)]


def _layer_norm_backward(backend, device):
    r = _g(device, 47)
    out = []
    for act, shape in (("silu", [3, 5]), ("", [5])):
        x, w, b = r(4, 3, 5), r(*shape), r(*shape)
        _, mean, rstd = _op("layer_norm")(x, shape, w, b, 1e-5, act, 0.0, backend)
        out.append((r(4, 3, 5), x, shape, w, b, mean, rstd, act, 0.0, [True, True, True],
                    backend))
    return out


def _group_norm(backend, device):
    r = _g(device, 48)
    return [(r(2, 6, 3, 4), 3, r(6), r(6), 1e-5, "silu", 0.0, backend),
            (_cl(r(2, 6, 3, 4)), 2, None, None, 1e-5, "", 0.0, backend),
            (r(3, 4, 5), 2, r(4), None, 1e-5, "gelu", 0.0, backend)]


def _group_norm_backward(backend, device):
    r = _g(device, 49)
    out = []
    for x, act in ((r(2, 6, 3, 4), "tanh"), (_cl(r(2, 6, 3, 4)), "")):
        w, b = r(6), r(6)
        _, mean, rstd = _op("group_norm")(x, 3, w, b, 1e-5, act, 0.0, backend)
        out.append((r(2, 6, 3, 4), x, 3, w, b, mean, rstd, act, 0.0, [True, True, True],
                    backend))
    return out


def _lstm_args(device, seed, steps=None, batch=2, inp=3, hidden=4):
    r = _g(device, seed)
    x = r(steps, batch, inp) if steps else r(batch, inp)
    return (x, r(batch, hidden), r(batch, hidden), r(4 * hidden, inp, scale=0.4),
            r(4 * hidden, hidden, scale=0.3), r(4 * hidden, scale=0.3), r(4 * hidden, scale=0.3))


def _lstm_cell(backend, device):
    args = _lstm_args(device, 22)
    return [(*args, True, backend), (*args[:5], None, None, False, backend)]


def _lstm_cell_backward(backend, device):
    args = _lstm_args(device, 23)
    h_new, c_new, saved = _op("lstm_cell")(*args, True, backend)
    r = _g(device, 24)
    return [(r(*h_new.shape), r(*c_new.shape), *args[:5], c_new, saved, [True] * 7, backend)]


def _lstm_layer(backend, device):
    args = _lstm_args(device, 25, steps=3)
    return [(*args, False, True, backend), (*args[:5], None, None, True, False, backend)]


def _lstm_layer_backward(backend, device):
    args = _lstm_args(device, 26, steps=3)
    y, h_n, c_n, saved = _op("lstm_layer")(*args, True, True, backend)
    r = _g(device, 27)
    return [(r(*y.shape), r(*h_n.shape), r(*c_n.shape), *args[:5], y, saved, True, [True] * 7,
             backend)]


def _gru_args(device, seed, steps=None, batch=2, inp=3, hidden=4):
    r = _g(device, seed)
    x = r(steps, batch, inp) if steps else r(batch, inp)
    return (x, r(batch, hidden), r(3 * hidden, inp, scale=0.4), r(3 * hidden, hidden, scale=0.3),
            r(3 * hidden, scale=0.3), r(3 * hidden, scale=0.3))


def _gru_cell(backend, device):
    args = _gru_args(device, 40)
    return [(*args, True, backend), (*args[:4], None, None, False, backend)]


def _gru_cell_backward(backend, device):
    args = _gru_args(device, 41)
    h_new, saved = _op("gru_cell")(*args, True, backend)
    return [(_g(device, 42)(*h_new.shape), *args[:4], saved, [True] * 6, backend)]


def _gru_layer(backend, device):
    args = _gru_args(device, 43, steps=3)
    return [(*args, False, True, backend), (*args[:4], None, None, True, False, backend)]


def _gru_layer_backward(backend, device):
    args = _gru_args(device, 44, steps=3)
    y, h_n, saved = _op("gru_layer")(*args, True, True, backend)
    r = _g(device, 45)
    return [(r(*y.shape), r(*h_n.shape), *args[:4], y, saved, True, [True] * 6, backend)]


def _params(device, seed):
    r = _g(device, seed)
    return [r(3, 4), r(5)], [r(3, 4), r(5)]


def _sgd_step(backend, device):
    params, grads = _params(device, 28)
    buffers = [torch.zeros_like(p) for p in params]
    return [(params, grads, buffers, [True, False], 0.1, 0.01, 0.9, 0.0, True, False, backend),
            (params, grads, [], [], 0.1, 0.0, 0.0, 0.0, False, True, backend)]


def _adam_step(backend, device):
    params, grads = _params(device, 29)
    state = [[torch.zeros_like(p) for p in params] for _ in range(3)]
    steps = [torch.tensor(3.0), torch.tensor(3.0)]
    return [(params, grads, *state, steps, 1e-3, 0.9, 0.999, 1e-8, 0.01, True, False, True,
             backend),
            (params, grads, *state[:2], [], steps, 1e-3, 0.9, 0.999, 1e-8, 0.0, False, True,
             False, backend)]


def _quantized(shape, fp8: bool, per_tensor: bool, device, seed):
    """A quantized weight (int8 values, or float8 e4m3fn as the ops take it: its uint8 bits)
    and its float32 scales."""
    gen = torch.Generator().manual_seed(seed)
    if fp8:
        q = (torch.randn(shape, generator=gen) * 60).clamp(-448, 448).to(torch.float8_e4m3fn)
        q = q.view(torch.uint8)
    else:
        q = torch.randint(-127, 128, shape, generator=gen, dtype=torch.int8)
    scale = torch.rand(1 if per_tensor else shape[0], generator=gen) * 0.02 + 0.001
    return _to(q, device), _to(scale, device)


def _quant_dense(backend, device):
    r = _g(device, 30)
    return [(r(5, 3), *_quantized((4, 3), False, False, device, 30), r(4), "gelu", 0.0,
             backend),
            (r(3, 5).t(), *_quantized((4, 3), True, True, device, 31), None, "", 0.0, backend)]


def _quant_conv2d(backend, device):
    r = _g(device, 32)
    q, s = _quantized((3, 4, 3, 3), False, False, device, 32)
    return [(r(2, 4, 5, 6), q, s, r(3), *_CONV, "relu", 0.0, backend),
            (_cl(r(2, 4, 7, 6)), *_quantized((6, 2, 2, 3), True, False, device, 33), None,
             *_CONV_STRIDED, "silu", 0.0, backend),
            (r(0, 4, 5, 6), q, s, r(3), *_CONV, "", 0.0, backend)]


SAMPLES: dict[str, Callable] = {
    "activation": _activation, "activation_backward": _activation_backward,
    "dense": _dense, "dense_backward": _dense_backward,
    "softmax": _softmax, "softmax_backward": _softmax_backward,
    "cross_entropy": _cross_entropy, "cross_entropy_backward": _cross_entropy_backward,
    "cross_entropy_probs": _cross_entropy_probs,
    "cross_entropy_probs_backward": _cross_entropy_probs_backward,
    "nll_loss": _nll_loss, "nll_loss_backward": _nll_loss_backward,
    "bce": _bce, "bce_backward": _bce_backward,
    "bce_with_logits": _bce_with_logits, "bce_with_logits_backward": _bce_with_logits_backward,
    "mse_loss": _pointwise_loss, "mse_loss_backward": _pointwise_loss_backward,
    "dropout": _dropout, "dropout_backward": _dropout_backward,
    "feature_dropout": _feature_dropout, "feature_dropout_backward": _feature_dropout_backward,
    "batch_norm": _batch_norm, "batch_norm_backward": _batch_norm_backward,
    "batch_norm_stats": _batch_norm_stats,
    "batch_norm_backward_reduce": _batch_norm_backward_reduce,
    "batch_norm_backward_elemt": _batch_norm_backward_elemt,
    "conv2d": _conv2d, "conv2d_backward": _conv2d_backward,
    "conv_transpose2d": _conv_transpose2d,
    "conv_transpose2d_backward": _conv_transpose2d_backward,
    "max_pool2d": _max_pool2d, "max_pool2d_backward": _max_pool2d_backward,
    "avg_pool2d": _avg_pool2d, "avg_pool2d_backward": _avg_pool2d_backward,
    "adaptive_avg_pool2d": _adaptive_avg_pool2d,
    "adaptive_avg_pool2d_backward": _adaptive_avg_pool2d_backward,
    "embedding": _embedding, "embedding_backward": _embedding_backward,
    "layer_norm": _layer_norm, "layer_norm_backward": _layer_norm_backward,
    "group_norm": _group_norm, "group_norm_backward": _group_norm_backward,
    "lstm_cell": _lstm_cell, "lstm_cell_backward": _lstm_cell_backward,
    "lstm_layer": _lstm_layer, "lstm_layer_backward": _lstm_layer_backward,
    "gru_cell": _gru_cell, "gru_cell_backward": _gru_cell_backward,
    "gru_layer": _gru_layer, "gru_layer_backward": _gru_layer_backward,
    "sgd_step": _sgd_step, "adam_step": _adam_step,
    "quant_dense": _quant_dense, "quant_conv2d": _quant_conv2d,
}


def samples(name: str, backend: str, device: str) -> list[tuple]:
    return SAMPLES[name](backend, device)


def differentiable(name: str, args: tuple) -> bool:
    """Whether ``args`` of op ``name`` may go backward: an op with an autograd formula, except an
    LSTM forward told not to save anything for backward (its ``save`` argument)."""
    from gpudnn.ops import OPS
    if not OPS[name].has_autograd or name.startswith("quant_"):
        return False  # (the quantized ops are inference-only: their autograd formula raises)
    return not (name in ("lstm_cell", "lstm_layer", "gru_cell", "gru_layer")
                and args[-2] is False)
