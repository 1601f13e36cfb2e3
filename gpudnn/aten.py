"""``gpudnn.enable()``: gpudnn's kernels as the implementations of the ATen operators they cover,
so that ``torch.nn.functional`` calls and unconverted ``torch.nn`` models run on gpudnn too (the
approach of FlagGems).

How. ``enable(devices=("cuda",))`` creates one ``torch.library.Library("aten", "IMPL")`` per
device type and registers, for every covered ATen operator, a Python kernel on that device's
dispatch key (``CUDA``, or ``CPU`` for tests with the reference backend); ``disable()`` destroys
the libraries, and the dispatcher then serves ATen's own kernels again, exactly as before. The
kernel each registration replaces is kept (``torch.library.get_kernel``, taken before
registering) and called for every case gpudnn does not cover: a dtype its backend does not run
(float64 on a GPU backend, integers), an option it has no kernel for (``addmm``'s beta/alpha, a
non-2-D convolution, ``half_to_float``, ...), empty tensors, invalid arguments (ATen then raises
its own error). Never a different answer: a case is covered only where gpudnn computes what the
ATen operator computes, down to the outputs autograd saves (``max_pool2d_with_indices``'s int64
indices, ``native_batch_norm``'s save_mean / save_invstd, ``native_dropout``'s bool mask).

Two levels.

- Backend key (``CPU`` / ``CUDA``), below autograd: autograd keeps ATen's own derivative formulas,
  which call the backward operators, also registered: ``addmm``, ``mm`` (``F.linear`` is
  ``addmm`` / ``mm``, and so are its gradients), ``convolution`` / ``convolution_backward``
  (conv2d and conv_transpose2d), ``native_batch_norm`` / ``native_batch_norm_backward`` and
  cuDNN's ``cudnn_batch_norm`` / ``cudnn_batch_norm_backward`` (what ``F.batch_norm`` calls on
  CUDA), ``_softmax`` / ``_log_softmax`` and their ``*_backward_data``, ``native_dropout``
  (forward: y and the keep mask come from gpudnn's Philox stream; ``native_dropout_backward`` is
  ATen's mask multiply), ``max_pool2d_with_indices`` / ``avg_pool2d`` and their backwards,
  ``relu`` / ``relu_`` / ``threshold_backward`` (threshold 0), ``gelu``, ``silu``, ``sigmoid``,
  ``tanh``, ``leaky_relu`` and their backwards, ``mse_loss`` / ``mse_loss_backward``, and where
  this checkout has the kernels ``native_layer_norm``, ``native_group_norm``, ``embedding`` /
  ``embedding_dense_backward`` (in-range ids: one host sync checks them, as gpudnn's own
  embedding does) and ``_adaptive_avg_pool2d`` (``F.adaptive_avg_pool2d`` to 1x1 is ATen's
  ``mean``) with their backwards.
- Autograd key (``AutogradCPU`` / ``AutogradCUDA``, and the backend key for calls below
  autograd such as ``torch.inference_mode``): operators that are composite in ATen (no kernel
  of their own, no backward operator) or whose backward is not an operator; the whole call is
  gpudnn's public function, with gpudnn's own autograd formula: ``lstm.input`` (torch.nn.LSTM;
  otherwise cuDNN's ``_cudnn_rnn`` on CUDA), ``gru.input`` (torch.nn.GRU), ``cross_entropy_loss``
  (one fused log-softmax + NLL kernel) and ``binary_cross_entropy_with_logits``. Tensor
  subclasses (FakeTensor, FunctionalTensor: what ``torch.compile`` traces with) get ATen's
  composite, so compiled graphs hold ATen's operators.

Not covered, plainly: ``nll_loss`` / ``nll_loss2d`` on log-probabilities and
``binary_cross_entropy`` on probabilities (gpudnn has no such kernels: ``F.nll_loss`` runs
ATen's, ``F.cross_entropy`` with class indices runs gpudnn's fused kernel),
``native_dropout_backward`` (a mask multiply), ``lstm.data`` / ``gru.data`` (packed sequences)
and ``proj_size``. Fusion is invisible here: one ATen operator at a time, so ``F.linear``
followed by ``F.relu`` is two gpudnn kernels (``addmm`` then ``relu``); the fused layers are
``gpudnn.nn`` (``gnn.convert``). Dropout draws its mask from gpudnn's Philox stream (seeded by
``torch.manual_seed``), not from torch's generator: the same distribution, other draws.

Backend: ``backend=None`` follows ``gpudnn``'s selection at call time (``use_backend``,
``set_backend``, ``GPUDNN_BACKEND``; ``"auto"``: Triton, then CuPy on CUDA tensors, the NumPy
reference on CPU tensors); a name fixes it. On a GPU backend float64 falls back to ATen (never
to the NumPy reference, unless ``backend="reference"`` is asked for).

Scope. The dispatcher is process-wide: while enabled, every thread's calls on that device run
through gpudnn, and ``with enabled():`` changes the process, not the thread (state changes are
serialized by a lock; nested blocks restore the state they found). What is thread-local is the
recursion guard (``gpudnn.ops._library.inside_gpudnn``): while a thread runs gpudnn's own code (a
custom op's launchers, or these kernels), every ATen call it makes goes to ATen's kernels, so a
launcher's own ``torch.matmul`` never comes back here. ``enabled_stats()`` counts, per ATen
operator, the calls gpudnn ran (``fallbacks=True``: the calls handed to ATen).

``torch.compile``: Dynamo and AOTAutograd trace with fake tensors, which never reach the
backend-key kernels (the autograd-level ones hand them to ATen's composite), so the graph holds
ATen operators and Inductor generates its own code for most of them; only the operators a
compiled graph calls as ATen kernels at run time (Inductor's extern kernels, e.g.
``aten.convolution``; most of them under ``backend="aot_eager"``) and the eager code around a
graph break still reach gpudnn. The kernels are ``torch.compiler.disable``d, so
dynamo never compiles their frames when such eager code calls them.
"""
from __future__ import annotations

import collections
import contextlib
import inspect
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch._prims_common import suggest_memory_format

from .activations import Activation
from .backend import Kernels, _check_name, _why_not, get_backend, use_backend
from .ops import FAMILIES
from .ops._library import guarded, inside_gpudnn, like_layout
from .ops._shapes import conv_output_size, conv_transpose2d_output_size, pool_output_size
from .ops.activations import ACTIVATION
from .ops.batchnorm import BATCH_NORM
from .ops.conv import CONV2D, CONV_TRANSPOSE2D, launcher_layout, output_format
from .ops.dense import DENSE
from .ops.dropout import DROPOUT, draw_seed
from .ops.losses import (BCE, BCE_WITH_LOGITS, CROSS_ENTROPY, CROSS_ENTROPY_PROBS, MSE_LOSS,
                         NLL_LOSS)
from .ops.losses import binary_cross_entropy_with_logits as _bce_with_logits
from .ops.losses import cross_entropy as _cross_entropy
from .ops.lstm import LSTM_LAYER
from .ops.lstm import lstm as _lstm_function
from .ops.pool import AVG_POOL2D, MAX_POOL2D
from .ops.softmax import SOFTMAX

__all__ = ["enable", "disable", "enabled", "enabled_stats", "reset_enabled_stats",
           "is_enabled", "ATEN_OPS"]

DEVICES = ("cpu", "cuda")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class _Uncovered(Exception):
    """Raised by an implementation for a case gpudnn does not cover: the call goes to ATen."""


# --- choosing the backend of one call ----------------------------------------------------------

_why_cache: dict[tuple[str, str], str | None] = {}


def _runs(backend: str, device: str) -> bool:
    key = (backend, device)
    if key not in _why_cache:
        _why_cache[key] = _why_not(backend, device)
    return _why_cache[key] is None


def _tensors(args: Iterable[Any]) -> list[torch.Tensor]:
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(a)
        elif isinstance(a, (list, tuple)):
            out.extend(_tensors(a))
    return out


def _backend(choice: str, kernels: Kernels, *tensors: Any) -> str:
    """The backend that runs ``kernels`` on ``tensors`` for the enabled ``choice`` (_Uncovered
    when none does: float64 only on the reference, one device only)."""
    present = _tensors(tensors)
    devices = {t.device.type for t in present}
    if len(devices) != 1:
        raise _Uncovered
    device = devices.pop()
    float64 = any(t.dtype == torch.float64 for t in present)
    if choice == "auto":
        if device != "cuda":
            return "reference"
        candidates = ("triton", "cupy")
    else:
        candidates = (choice,)
    for name in candidates:
        if getattr(kernels, name) is not None and _runs(name, device) \
                and (name == "reference" or not float64):
            return name
    raise _Uncovered


def _floating(*tensors: torch.Tensor | None) -> bool:
    """Every given tensor a floating dtype gpudnn runs, all one dtype, none empty."""
    present = [t for t in tensors if t is not None]
    return bool(present) and all(t.dtype in _FLOATS and t.numel() > 0 for t in present) \
        and len({t.dtype for t in present}) == 1


def _plain(*tensors: Any) -> bool:
    """No tensor subclass (FakeTensor, FunctionalTensor, ...): what the autograd-level
    implementations, which call gpudnn's own ops, take; subclasses get ATen's composite."""
    return all(type(t) in (torch.Tensor, torch.nn.Parameter) for t in _tensors(tensors))


def _reduction(value: int) -> str | None:
    """ATen's reduction enum (0 none, 1 mean, 2 sum) as gpudnn's name."""
    return ("none", "mean", "sum")[value] if value in (0, 1, 2) else None


# --- dense: addmm / mm --------------------------------------------------------------------------

def _addmm(choice, self, mat1, mat2, *, beta=1, alpha=1):
    """bias + mat1 @ mat2 (F.linear with a bias) as gpudnn's dense kernel; weight = mat2.T."""
    if beta != 1 or alpha != 1 or mat1.dim() != 2 or mat2.dim() != 2 or self.dim() != 1 \
            or self.shape[0] != mat2.shape[1] or mat1.shape[1] != mat2.shape[0] \
            or not _floating(self, mat1, mat2):
        raise _Uncovered
    backend = _backend(choice, DENSE, self, mat1, mat2)
    return DENSE.forward(backend)(mat1, mat2.t(), self, None)[0]


def _mm(choice, self, mat2):
    if self.dim() != 2 or mat2.dim() != 2 or self.shape[1] != mat2.shape[0] \
            or not _floating(self, mat2):
        raise _Uncovered
    backend = _backend(choice, DENSE, self, mat2)
    return DENSE.forward(backend)(self, mat2.t(), None, None)[0]


# --- convolution ------------------------------------------------------------------------------

def _conv(choice, input, weight, bias, stride, padding, dilation, transposed, output_padding,
          groups, grad_output=None):
    """(kernels, launcher parameters, backend) of a 2-D convolution ATen would compute, on
    input, weight, bias and (backward) grad_output; _Uncovered for other ranks and invalid
    arguments (ATen's own kernel, and its error)."""
    if input.dim() != 4 or weight.dim() != 4 or (bias is not None and bias.dim() != 1) \
            or not all(len(v) == 2 for v in (stride, padding, dilation, output_padding)) \
            or min(stride) <= 0 or min(dilation) <= 0 or min(padding) < 0 \
            or min(output_padding) < 0 or groups <= 0 or weight.shape[0] % groups \
            or not _floating(input, weight, bias, grad_output):
        raise _Uncovered
    stride, padding, dilation, output_padding = (tuple(int(v) for v in p) for p in
                                                 (stride, padding, dilation, output_padding))
    kernel = weight.shape[2:]
    if transposed:
        cout = weight.shape[1] * groups
        out = [conv_transpose2d_output_size(input.shape[2 + a], kernel[a], stride[a], padding[a],
                                            output_padding[a], dilation[a]) for a in range(2)]
        if input.shape[1] != weight.shape[0] \
                or any(output_padding[a] >= max(stride[a], dilation[a]) for a in range(2)):
            raise _Uncovered
        params = (stride, padding, output_padding, groups, dilation)
    else:
        cout = weight.shape[0]
        out = [conv_output_size(input.shape[2 + a], kernel[a], stride[a], padding[a], padding[a],
                                dilation[a]) for a in range(2)]
        if input.shape[1] != weight.shape[1] * groups:
            raise _Uncovered
        params = (stride, (padding[0], padding[0], padding[1], padding[1]), dilation, groups)
    if min(out) <= 0 or (bias is not None and bias.shape[0] != cout):
        raise _Uncovered
    kernels = CONV_TRANSPOSE2D if transposed else CONV2D
    return kernels, params, _backend(choice, kernels, input, weight, bias, grad_output)


def _convolution(choice, input, weight, bias, stride, padding, dilation, transposed,
                 output_padding, groups):
    kernels, params, backend = _conv(choice, input, weight, bias, stride, padding, dilation,
                                     transposed, output_padding, groups)
    y, _ = kernels.forward(backend)(launcher_layout(input), launcher_layout(weight), bias,
                                    *params, None)
    return y.contiguous(memory_format=output_format(input, weight))


def _convolution_backward(choice, grad_output, input, weight, bias_sizes, stride, padding,
                          dilation, transposed, output_padding, groups, output_mask):
    kernels, params, backend = _conv(choice, input, weight, None, stride, padding, dilation,
                                     transposed, output_padding, groups, grad_output)
    needs = (bool(output_mask[0]), bool(output_mask[1]),
             bool(output_mask[2]) and bias_sizes is not None)
    grad_y = grad_output.contiguous(memory_format=output_format(input, weight))
    grads = kernels.backward(backend)(grad_y, launcher_layout(input), launcher_layout(weight),
                                      None, *params, None, needs)
    return tuple(like_layout(g, like) if need and g is not None else None
                 for g, need, like in zip(grads, needs, (input, weight, grad_y.new_empty(0))))


# --- batch normalization ------------------------------------------------------------------------

def _bn_covered(input, weight, bias, running_mean, running_var) -> bool:
    """A [N, C, *] input with per-channel parameters as gpudnn's batch norm takes them: one
    dtype, or float32 parameters with a 16-bit input on a GPU (ATen's CPU kernels keep other
    statistics dtypes for 16-bit inputs: those stay ATen's)."""
    if input.dim() < 2 or input.numel() == 0 or input.dtype not in _FLOATS:
        return False
    channels = input.shape[1]
    params = [t for t in (weight, bias, running_mean, running_var) if t is not None]
    if any(t.dim() != 1 or t.shape[0] != channels for t in params):
        return False
    if input.dtype in (torch.float16, torch.bfloat16):
        allowed = {input.dtype, torch.float32}
        if input.device.type == "cpu":
            return False
    else:
        allowed = {input.dtype}
    return all(t.dtype in allowed for t in params)


def _stats_dtype(input: torch.Tensor) -> torch.dtype:
    return torch.promote_types(input.dtype, torch.float32)


def _bn_layout(t: torch.Tensor) -> torch.Tensor:
    return launcher_layout(t) if t.dim() == 4 else t.contiguous()


def _batch_norm(choice, input, weight, bias, running_mean, running_var, training, momentum, eps,
                eval_stats: Callable):
    """(y, save_mean, save_invstd) of ATen's batch norm; running statistics updated in place in
    training (the launcher works on copies, written back once it has finished)."""
    if not _bn_covered(input, weight, bias, running_mean, running_var) \
            or (running_mean is None) != (running_var is None) \
            or (not training and running_mean is None) \
            or (training and input.numel() // input.shape[1] <= 1):
        raise _Uncovered
    backend = _backend(choice, BATCH_NORM, input, weight, bias, running_mean, running_var)
    update = training and running_mean is not None
    stats = (running_mean.clone(), running_var.clone()) if update else \
        (running_mean, running_var)
    y, mean, invstd = BATCH_NORM.forward(backend)(_bn_layout(input), weight, bias, *stats,
                                                  bool(training), float(momentum), float(eps),
                                                  None)
    if update:
        running_mean.copy_(stats[0])
        running_var.copy_(stats[1])
    if not training:
        mean, invstd = eval_stats(input)
    return like_layout(y, input), mean.to(_stats_dtype(input)), invstd.to(_stats_dtype(input))


def _native_eval_stats(input):
    # ATen's eval-mode save_mean / save_invstd: empty on the CPU, zeros [C] on CUDA
    size = 0 if input.device.type == "cpu" else input.shape[1]
    zeros = input.new_zeros(size, dtype=_stats_dtype(input))
    return zeros, zeros.clone()


def _cudnn_eval_stats(input):
    empty = input.new_empty(0, dtype=_stats_dtype(input))
    return empty, empty.clone()


def _native_batch_norm(choice, input, weight, bias, running_mean, running_var, training,
                       momentum, eps):
    return _batch_norm(choice, input, weight, bias, running_mean, running_var, training,
                       momentum, eps, _native_eval_stats)


def _cudnn_batch_norm(choice, input, weight, bias, running_mean, running_var, training,
                      exponential_average_factor, epsilon):
    out = _batch_norm(choice, input, weight, bias, running_mean, running_var, training,
                      exponential_average_factor, epsilon, _cudnn_eval_stats)
    # the reserve space cuDNN's backward reads: gpudnn's backward needs none
    return (*out, input.new_empty(0, dtype=torch.uint8))


def _bn_backward(choice, grad_out, input, weight, running_mean, running_var, save_mean,
                 save_invstd, train, eps, output_mask):
    if not _bn_covered(input, weight, None, running_mean, running_var) \
            or grad_out.shape != input.shape or grad_out.dtype != input.dtype \
            or (weight is None and (output_mask[1] or output_mask[2])):
        raise _Uncovered
    stats = _stats_dtype(input)
    if train:
        if save_mean is None or save_invstd is None \
                or save_mean.shape != (input.shape[1],) or save_invstd.shape != save_mean.shape:
            raise _Uncovered
        mean, invstd = save_mean.to(stats), save_invstd.to(stats)
    else:
        if running_mean is None or running_var is None:
            raise _Uncovered
        mean = running_mean.to(stats)
        invstd = torch.rsqrt(running_var.to(stats) + eps)
    backend = _backend(choice, BATCH_NORM, grad_out, input, weight, mean)
    needs = tuple(bool(m) for m in output_mask)
    # no activation: the bias only gives grad_bias its dtype (its value is never read)
    bias = torch.zeros_like(weight) if needs[2] else None
    x = _bn_layout(input)
    grad_y = grad_out.contiguous(memory_format=suggest_memory_format(x))
    gx, gw, gb = BATCH_NORM.backward(backend)(grad_y, x, weight, bias, mean, invstd, None,
                                              bool(train), needs)
    return (like_layout(gx, input) if needs[0] else None,
            gw.to(weight.dtype) if needs[1] else None,
            gb.to(weight.dtype) if needs[2] else None)


def _native_batch_norm_backward(choice, grad_out, input, weight, running_mean, running_var,
                                save_mean, save_invstd, train, eps, output_mask):
    return _bn_backward(choice, grad_out, input, weight, running_mean, running_var, save_mean,
                        save_invstd, train, eps, output_mask)


def _cudnn_batch_norm_backward(choice, input, grad_output, weight, running_mean, running_var,
                               save_mean, save_var, epsilon, reserveSpace):
    # cuDNN's backward is the training one; save_var holds the inverse standard deviation
    return _bn_backward(choice, grad_output, input, weight, running_mean, running_var,
                        save_mean, save_var, True, epsilon, (True, True, True))


# --- softmax / log_softmax ------------------------------------------------------------------------

def _softmax_pair(log: bool):
    def forward(choice, self, dim, half_to_float):
        if half_to_float or self.dim() == 0 or not _floating(self):
            raise _Uncovered
        backend = _backend(choice, SOFTMAX, self)
        return like_layout(SOFTMAX.forward(backend)(self, dim % self.dim(), log), self)

    def backward(choice, grad_output, output, dim, input_dtype):
        if input_dtype != output.dtype or output.dim() == 0 \
                or grad_output.shape != output.shape or not _floating(grad_output, output):
            raise _Uncovered
        backend = _backend(choice, SOFTMAX, grad_output, output)
        return like_layout(SOFTMAX.backward(backend)(grad_output, output, dim % output.dim(),
                                                     log), output)

    return forward, backward


_softmax, _softmax_backward_data = _softmax_pair(False)
_log_softmax, _log_softmax_backward_data = _softmax_pair(True)


# --- dropout ------------------------------------------------------------------------------------

def _native_dropout(choice, input, p, train):
    """(y, keep mask) from gpudnn's Philox stream: the mask is the kernel run on ones (the same
    seed draws the same mask), so ATen's backward (grad * mask * scale) matches y."""
    if train is False or not 0.0 < p < 1.0 or not _floating(input):
        raise _Uncovered
    backend = _backend(choice, DROPOUT, input)
    seed = draw_seed()
    y = DROPOUT.forward(backend)(input, float(p), seed, 0)
    keep = DROPOUT.forward(backend)(torch.ones_like(input), float(p), seed, 0) != 0
    return like_layout(y, input), like_layout(keep, input)


# --- activations --------------------------------------------------------------------------------

def _act(name: str, param: float = 0.0) -> Activation:
    return Activation(name, float(param))


def _act_forward(choice, x, act: Activation):
    if not _floating(x):
        raise _Uncovered
    backend = _backend(choice, ACTIVATION, x)
    return like_layout(ACTIVATION.forward(backend)(x, act), x)


def _act_backward(choice, grad, saved, act: Activation):
    if grad.shape != saved.shape or not _floating(grad, saved):
        raise _Uncovered
    backend = _backend(choice, ACTIVATION, grad, saved)
    return like_layout(ACTIVATION.backward(backend)(grad, saved, act), grad)


def _relu(choice, self):
    return _act_forward(choice, self, _act("relu"))


def _relu_(choice, self):
    return self.copy_(_act_forward(choice, self, _act("relu")))


def _threshold_backward(choice, grad_output, self, threshold):
    # relu's backward (threshold 0): 0 where self <= 0, else grad, as gpudnn's relu'
    if threshold != 0:
        raise _Uncovered
    return _act_backward(choice, grad_output, self, _act("relu"))


def _gelu_act(approximate: str) -> Activation:
    if approximate not in ("none", "tanh"):
        raise _Uncovered
    return _act("gelu_tanh" if approximate == "tanh" else "gelu")


def _gelu(choice, self, *, approximate="none"):
    return _act_forward(choice, self, _gelu_act(approximate))


def _gelu_backward(choice, grad_output, self, *, approximate="none"):
    return _act_backward(choice, grad_output, self, _gelu_act(approximate))


def _silu(choice, self):
    return _act_forward(choice, self, _act("silu"))


def _silu_backward(choice, grad_output, self):
    return _act_backward(choice, grad_output, self, _act("silu"))


def _sigmoid(choice, self):
    return _act_forward(choice, self, _act("sigmoid"))


def _sigmoid_backward(choice, grad_output, output):
    return _act_backward(choice, grad_output, output, _act("sigmoid"))


def _tanh(choice, self):
    return _act_forward(choice, self, _act("tanh"))


def _tanh_backward(choice, grad_output, output):
    return _act_backward(choice, grad_output, output, _act("tanh"))


def _leaky_relu(choice, self, negative_slope=0.01):
    return _act_forward(choice, self, _act("leaky_relu", negative_slope))


def _leaky_relu_backward(choice, grad_output, self, negative_slope, self_is_result):
    # gpudnn's derivative is 1 where saved > 0, else the slope: right for saved = x, and for
    # saved = y when the slope is >= 0 (ATen rejects a negative slope with self_is_result)
    if self_is_result and negative_slope < 0:
        raise _Uncovered
    return _act_backward(choice, grad_output, self, _act("leaky_relu", negative_slope))


# --- pooling ------------------------------------------------------------------------------------

def _pair(value: Sequence[int], default: Sequence[int] | None = None) -> tuple[int, int] | None:
    value = list(value)
    if not value and default is not None:
        value = list(default)
    if len(value) == 1:
        value = value * 2
    return (int(value[0]), int(value[1])) if len(value) == 2 else None


def _pool_params(self, kernel_size, stride, padding, dilation, ceil_mode):
    """(x as [N, C, H, W], unbatched, kernel, stride, padding, dilation) as torch's pool2d
    checks accept them, or None (ATen's kernel and its error)."""
    if self.dim() not in (3, 4) or min(self.shape[-3:]) == 0:
        return None
    kernel = _pair(kernel_size)
    if kernel is None:
        return None
    stride, padding, dilation = _pair(stride, kernel), _pair(padding), _pair(dilation)
    if None in (stride, padding, dilation) or min(kernel) <= 0 or min(stride) <= 0 \
            or min(padding) < 0 or min(dilation) <= 0 \
            or any(padding[a] > kernel[a] // 2 for a in range(2)):
        return None
    x = self if self.dim() == 4 else self.unsqueeze(0)
    if x.shape[0] == 0 or min(pool_output_size(x.shape[2 + a], kernel[a], stride[a], padding[a],
                                               dilation[a], bool(ceil_mode))
                              for a in range(2)) < 1:
        return None
    return x, self.dim() == 3, kernel, stride, padding, dilation


def _squeezed(t: torch.Tensor, unbatched: bool) -> torch.Tensor:
    return t.squeeze(0) if unbatched else t


def _max_pool2d_with_indices(choice, self, kernel_size, stride=(), padding=(0,), dilation=(1,),
                             ceil_mode=False):
    pool = _pool_params(self, kernel_size, stride, padding, dilation, ceil_mode)
    if pool is None or not _floating(self):
        raise _Uncovered
    x, unbatched, kernel, stride, padding, dilation = pool
    backend = _backend(choice, MAX_POOL2D, x)
    x = launcher_layout(x)
    # return_indices: every backend saves torch's int64 indices h * W + w, and reads them back
    y, indices = MAX_POOL2D.forward(backend)(x, kernel, stride, padding, dilation,
                                             bool(ceil_mode), True)
    fmt = suggest_memory_format(x)
    return (_squeezed(y.contiguous(memory_format=fmt), unbatched),
            _squeezed(indices.contiguous(memory_format=fmt), unbatched))


def _max_pool2d_with_indices_backward(choice, grad_output, self, kernel_size, stride, padding,
                                      dilation, ceil_mode, indices):
    pool = _pool_params(self, kernel_size, stride, padding, dilation, ceil_mode)
    if pool is None or not _floating(grad_output, self) or indices.dtype != torch.int64 \
            or indices.shape != grad_output.shape or grad_output.dim() != self.dim():
        raise _Uncovered
    x, unbatched, kernel, stride, padding, dilation = pool
    backend = _backend(choice, MAX_POOL2D, grad_output, self)
    grad_y = grad_output if not unbatched else grad_output.unsqueeze(0)
    saved = indices if not unbatched else indices.unsqueeze(0)
    if grad_y.shape[2:] != tuple(pool_output_size(x.shape[2 + a], kernel[a], stride[a],
                                                  padding[a], dilation[a], bool(ceil_mode))
                                 for a in range(2)):
        raise _Uncovered
    grad_y = launcher_layout(grad_y)
    saved = saved.contiguous(memory_format=suggest_memory_format(grad_y))
    grad_x = MAX_POOL2D.backward(backend)(grad_y, tuple(x.shape), saved, kernel, stride, padding,
                                          dilation, bool(ceil_mode))
    return _squeezed(grad_x.contiguous(memory_format=suggest_memory_format(x)), unbatched)


def _avg_pool2d(choice, self, kernel_size, stride=(), padding=(0,), ceil_mode=False,
                count_include_pad=True, divisor_override=None):
    pool = _pool_params(self, kernel_size, stride, padding, (1,), ceil_mode)
    if pool is None or divisor_override == 0 or not _floating(self):
        raise _Uncovered
    x, unbatched, kernel, stride, padding, _ = pool
    backend = _backend(choice, AVG_POOL2D, x)
    x = launcher_layout(x)
    y = AVG_POOL2D.forward(backend)(x, kernel, stride, padding, bool(ceil_mode),
                                    bool(count_include_pad), divisor_override)
    return _squeezed(y.contiguous(memory_format=suggest_memory_format(x)), unbatched)


def _avg_pool2d_backward(choice, grad_output, self, kernel_size, stride, padding, ceil_mode,
                         count_include_pad, divisor_override):
    pool = _pool_params(self, kernel_size, stride, padding, (1,), ceil_mode)
    if pool is None or divisor_override == 0 or not _floating(grad_output, self) \
            or grad_output.dim() != self.dim():
        raise _Uncovered
    x, unbatched, kernel, stride, padding, _ = pool
    backend = _backend(choice, AVG_POOL2D, grad_output, self)
    grad_y = grad_output if not unbatched else grad_output.unsqueeze(0)
    if grad_y.shape[2:] != tuple(pool_output_size(x.shape[2 + a], kernel[a], stride[a],
                                                  padding[a], 1, bool(ceil_mode))
                                 for a in range(2)):
        raise _Uncovered
    grad_x = AVG_POOL2D.backward(backend)(launcher_layout(grad_y), tuple(x.shape), kernel,
                                          stride, padding, bool(ceil_mode),
                                          bool(count_include_pad), divisor_override)
    return _squeezed(grad_x.contiguous(memory_format=suggest_memory_format(x)), unbatched)


# --- losses -------------------------------------------------------------------------------------

def _mse_loss(choice, self, target, reduction=1):
    red = _reduction(reduction)
    if red is None or self.shape != target.shape or not _floating(self, target):
        raise _Uncovered
    backend = _backend(choice, MSE_LOSS, self, target)
    return MSE_LOSS.forward(backend)(self.contiguous(), target.contiguous(), red)


def _mse_loss_backward(choice, grad_output, self, target, reduction):
    red = _reduction(reduction)
    if red is None or self.shape != target.shape or not _floating(grad_output, self, target) \
            or grad_output.shape != (self.shape if red == "none" else ()):
        raise _Uncovered
    backend = _backend(choice, MSE_LOSS, grad_output, self, target)
    grad, _ = MSE_LOSS.backward(backend)(grad_output.contiguous(), self.contiguous(),
                                         target.contiguous(), red, (True, False))
    return like_layout(grad, self)


_CLASS_INDICES = (torch.int64, torch.uint8)  # the target dtypes ATen's nll_loss takes


def _class_weight_ok(weight, self, classes: int) -> bool:
    """None, or [classes] of self's dtype (ATen's nll_loss raises for the others)."""
    return weight is None or (weight.dim() == 1 and weight.shape[0] == classes
                              and weight.dtype == self.dtype)


def _nll_rows(self, target, weight, ignore_index, image: bool):
    """(rows [M, C] with the class dim last, flat int64 targets [M], the non-ignored ones [M]) of
    nll_loss_forward / _backward (self [N, C] with target [N], or [C] with a 0-d target) or
    nll_loss2d_forward / _backward (self [N, C, H, W], target [N, H, W]); _Uncovered for other
    shapes and dtypes, and for a target outside [0, C) that is not ignore_index (ATen raises its
    IndexError; gpudnn's kernels would give NaN): one host sync, as gpudnn's own nll_loss."""
    if image:
        shaped = self.dim() == 4 and tuple(target.shape) == (self.shape[0], *self.shape[2:])
    else:
        shaped = (self.dim() == 2 and target.dim() == 1 and target.shape[0] == self.shape[0]) \
            or (self.dim() == 1 and target.dim() == 0)
    if not shaped or target.dtype not in _CLASS_INDICES or not _floating(self, weight):
        raise _Uncovered
    classes = self.shape[1 if self.dim() > 1 else 0]
    if not _class_weight_ok(weight, self, classes):
        raise _Uncovered
    flat = target.reshape(-1).long()
    valid = flat != ignore_index
    out_of_range = valid & ((flat < 0) | (flat >= classes))
    if bool(out_of_range.any()):
        _refuse(self, IndexError(f"Target {int(flat[out_of_range][0])} is out of bounds."))
    rows = self.movedim(1, -1).reshape(-1, classes) if image else self.reshape(-1, classes)
    return rows, flat, valid


def _total_weight(self, flat, valid, weight, reduction: str):
    """ATen's total_weight: the summed weights of the non-ignored targets (their count without
    weights); 0 for a per-row loss of a batch (ATen's kernels skip the sum there)."""
    if reduction == "none" and self.dim() > 1:
        return self.new_zeros(())
    if weight is None:
        return valid.sum().to(self.dtype)
    return torch.where(valid, weight[flat.masked_fill(~valid, 0)], 0).sum()


def _nll_forward(choice, self, target, weight, reduction, ignore_index, image):
    red = _reduction(reduction)
    if red is None:
        raise _Uncovered
    rows, flat, valid = _nll_rows(self, target, weight, ignore_index, image)
    backend = _backend(choice, NLL_LOSS, rows, flat, weight)
    loss = NLL_LOSS.forward(backend)(rows, flat, int(ignore_index), red, weight)
    if red == "none":
        loss = loss.reshape(target.shape)
    return loss, _total_weight(self, flat, valid, weight, red)


def _nll_backward(choice, grad_output, self, target, weight, reduction, ignore_index,
                  total_weight, image):
    """gpudnn's NLL gradient with ATen's total_weight (not recomputed): the mean's gradient is
    the sum's with grad_output / total_weight, as ATen's kernels round it."""
    red = _reduction(reduction)
    if red is None or total_weight.numel() != 1 \
            or not _floating(grad_output, self, total_weight) \
            or (grad_output.shape != target.shape if red == "none"
                else grad_output.numel() != 1 or grad_output.dim() > 1):
        raise _Uncovered
    rows, flat, _ = _nll_rows(self, target, weight, ignore_index, image)
    if red == "none":
        grad = grad_output.reshape(-1)
    else:
        grad = grad_output.reshape(())
        if red == "mean":
            grad = grad / total_weight.reshape(())
    backend = _backend(choice, NLL_LOSS, grad, rows, flat, weight)
    grad_rows = NLL_LOSS.backward(backend)(grad, rows, flat, int(ignore_index),
                                           "none" if red == "none" else "sum", weight)
    if image:
        n, c, h, w = self.shape
        grad_self = grad_rows.reshape(n, h, w, c).permute(0, 3, 1, 2)
    else:
        grad_self = grad_rows.reshape(self.shape)
    return like_layout(grad_self, self)


def _nll_loss_forward(choice, self, target, weight, reduction, ignore_index):
    return _nll_forward(choice, self, target, weight, reduction, ignore_index, False)


def _nll_loss_backward(choice, grad_output, self, target, weight, reduction, ignore_index,
                       total_weight):
    return _nll_backward(choice, grad_output, self, target, weight, reduction, ignore_index,
                         total_weight, False)


def _nll_loss2d_forward(choice, self, target, weight, reduction, ignore_index):
    return _nll_forward(choice, self, target, weight, reduction, ignore_index, True)


def _nll_loss2d_backward(choice, grad_output, self, target, weight, reduction, ignore_index,
                         total_weight):
    return _nll_backward(choice, grad_output, self, target, weight, reduction, ignore_index,
                         total_weight, True)


def _broadcasts_to(weight, x) -> bool:
    """None, or a tensor that broadcasts to x's shape without growing it (ATen would return a
    larger loss for one that grows it; gpudnn's kernels take x's shape)."""
    if weight is None:
        return True
    try:
        return torch.broadcast_shapes(weight.shape, x.shape) == x.shape
    except RuntimeError:
        return False


def _refuse(like: torch.Tensor, error: Exception):
    """An input ATen refuses: on the CPU its own kernel raises its own error (_Uncovered hands
    the call back); on a GPU its kernel would stop on a device-side assert, which breaks the
    process's CUDA context, so gpudnn raises ``error`` (ATen's CPU message) itself."""
    if like.device.type == "cpu":
        raise _Uncovered
    raise error


def _in_unit(*tensors: torch.Tensor) -> bool:
    """Every element in [0, 1] (NaN is not): one host sync."""
    return bool(torch.stack([((t >= 0) & (t <= 1)).all() for t in tensors]).all())


def _bce_covered(self, target, weight, reduction, grad_output=None) -> str:
    """gpudnn's reduction name of a binary_cross_entropy (backward) call gpudnn covers, or
    _Uncovered: one dtype, weight broadcast to self, input and target in [0, 1] (outside, ATen's
    forward raises and its backward gives finite values, gpudnn's kernels NaN)."""
    red = _reduction(reduction)
    if red is None or self.shape != target.shape or not _broadcasts_to(weight, self) \
            or not _floating(self, target, weight, grad_output) \
            or (grad_output is not None
                and (grad_output.shape != self.shape if red == "none"
                     else grad_output.numel() != 1 or grad_output.dim() > 1)):
        raise _Uncovered
    if not _in_unit(self, target):
        if grad_output is not None:  # ATen's backward takes them
            raise _Uncovered
        name = "input" if not _in_unit(self) else "target"
        _refuse(self, RuntimeError(f"all elements of {name} should be between 0 and 1"))
    return red


def _binary_cross_entropy(choice, self, target, weight=None, reduction=1):
    red = _bce_covered(self, target, weight, reduction)
    backend = _backend(choice, BCE, self, target, weight)
    loss = BCE.forward(backend)(self, target, red, weight, None)
    return like_layout(loss, self) if red == "none" else loss


def _binary_cross_entropy_backward(choice, grad_output, self, target, weight=None, reduction=1):
    red = _bce_covered(self, target, weight, reduction, grad_output)
    backend = _backend(choice, BCE, grad_output, self, target, weight)
    grad = grad_output if red == "none" else grad_output.reshape(())
    grad_self, _ = BCE.backward(backend)(grad, self, target, red, (True, False), weight, None)
    return like_layout(grad_self, self)


# --- autograd level: gpudnn's public functions, with gpudnn's own autograd formulas ---------------

def _constant(*weights) -> bool:
    """No weight that autograd would differentiate: ATen's cross-entropy on probabilities
    differentiates its class weight (gpudnn's raises, as ATen's other losses do)."""
    return not (torch.is_grad_enabled() and any(w is not None and w.requires_grad
                                                for w in weights))


def _cross_entropy_loss(choice, self, target, weight=None, reduction=1, ignore_index=-100,
                        label_smoothing=0.0):
    """Class indices (a target shaped as self without the class dim, int64 / uint8) or class
    probabilities (a target of self's shape and dtype: ATen tells them apart by shape), with
    class weights and label smoothing."""
    red = _reduction(reduction)
    if red is None or self.dim() == 0 or not 0.0 <= label_smoothing <= 1.0 \
            or not _plain(self, target, weight) or not _constant(weight):
        raise _Uncovered
    probabilities = target.shape == self.shape
    if probabilities:  # ATen's composite refuses ignore_index >= 0 here, and ignores the others
        covered = target.dtype == self.dtype and ignore_index < 0
        ignore_index, kernels = -100, CROSS_ENTROPY_PROBS
    else:
        covered = target.dtype in _CLASS_INDICES
        kernels = CROSS_ENTROPY
    classes = self.shape[1 if self.dim() > 1 else 0]
    if not covered or not _floating(self, weight) or not _class_weight_ok(weight, self, classes):
        raise _Uncovered
    backend = _backend(choice, kernels, self, target, weight)
    with use_backend(backend):
        return _cross_entropy(self, target, weight, ignore_index=int(ignore_index),
                              reduction=red, label_smoothing=float(label_smoothing))


def _binary_cross_entropy_with_logits(choice, self, target, weight=None, pos_weight=None,
                                      reduction=1):
    red = _reduction(reduction)
    if red is None or self.shape != target.shape \
            or not _floating(self, target, weight, pos_weight) \
            or not _broadcasts_to(weight, self) or not _broadcasts_to(pos_weight, self) \
            or not _plain(self, target, weight, pos_weight) or not _constant(weight, pos_weight):
        raise _Uncovered
    backend = _backend(choice, BCE_WITH_LOGITS, self, target, weight, pos_weight)
    with use_backend(backend):
        return _bce_with_logits(self, target, weight, reduction=red, pos_weight=pos_weight)


def _rnn_covered(input, hx, params, has_biases, num_layers, bidirectional, states: int) -> bool:
    """torch.nn.LSTM / GRU's call as gpudnn's rnn takes it: 3-D input, one dtype, no proj_size
    (its h has the hidden size of c, and no extra weight per layer)."""
    per_layer = (4 if has_biases else 2) * (2 if bidirectional else 1)
    return input.dim() == 3 and len(hx) == states and len(params) == per_layer * num_layers \
        and all(h.dim() == 3 for h in hx) and len({h.shape[-1] for h in hx}) == 1 \
        and params[1].shape[-1] == hx[0].shape[-1] and _floating(input, *hx, *params) \
        and _plain(input, *hx, *params)


def _lstm(choice, input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
          batch_first):
    if not _rnn_covered(input, hx, params, has_biases, num_layers, bidirectional, 2):
        raise _Uncovered
    backend = _backend(choice, LSTM_LAYER, input, *hx, *params)
    with use_backend(backend):
        output, (h_n, c_n) = _lstm_function(input, tuple(hx), list(params), num_layers, has_biases,
                                   batch_first, dropout, train, bidirectional)
    return output, h_n, c_n


def _family(name: str):
    """gpudnn.ops.<name> when this checkout has it (families added later register here once
    they exist), else None."""
    return next((f for f in FAMILIES if f.__name__ == f"{__package__}.ops.{name}"), None)


_gru_family = _family("gru")


def _gru(choice, input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
         batch_first):
    if not _rnn_covered(input, (hx,), params, has_biases, num_layers, bidirectional, 1):
        raise _Uncovered
    backend = _backend(choice, _gru_family.GRU_LAYER, input, hx, *params)
    with use_backend(backend):
        return _gru_family.gru(input, hx, list(params), num_layers, has_biases, batch_first,
                               dropout, train, bidirectional)


# --- layer / group normalization, embedding, adaptive average pooling ---------------------------

_norm, _embedding_family, _pool = _family("norm"), _family("embedding"), _family("pool")


def _norm_covered(input, *params) -> bool:
    """One dtype for the input and the parameters; 16-bit only on a GPU (ATen's CPU kernels keep
    other statistics dtypes for them)."""
    return _floating(input, *params) and not (
        input.device.type == "cpu" and input.dtype in (torch.float16, torch.bfloat16))


def _native_layer_norm(choice, input, normalized_shape, weight, bias, eps):
    shape = tuple(int(v) for v in normalized_shape)
    k = len(shape)
    if k == 0 or input.dim() < k or tuple(input.shape[input.dim() - k:]) != shape \
            or any(t is not None and tuple(t.shape) != shape for t in (weight, bias)) \
            or not _norm_covered(input, weight, bias):
        raise _Uncovered
    backend = _backend(choice, _norm.LAYER_NORM, input, weight, bias)
    y, mean, rstd = _norm.LAYER_NORM.forward(backend)(input, shape, weight, bias, float(eps),
                                                      None)
    stats = input.shape[:input.dim() - k] + (1,) * k  # ATen keeps the normalized dims as 1s
    dtype = _stats_dtype(input)
    return y.contiguous(), mean.to(dtype).reshape(stats), rstd.to(dtype).reshape(stats)


def _native_layer_norm_backward(choice, grad_out, input, normalized_shape, mean, rstd, weight,
                                bias, output_mask):
    shape = tuple(int(v) for v in normalized_shape)
    k = len(shape)
    needs = tuple(bool(m) for m in output_mask)
    rows = input.numel() // max(1, math.prod(shape))
    if k == 0 or grad_out.shape != input.shape or tuple(input.shape[input.dim() - k:]) != shape \
            or (needs[1] and weight is None) or (needs[2] and bias is None) \
            or mean.numel() != rows or rstd.numel() != rows \
            or not _norm_covered(grad_out, input, weight, bias):
        raise _Uncovered
    backend = _backend(choice, _norm.LAYER_NORM, grad_out, input, weight, bias)
    dtype = _stats_dtype(input)
    gx, gw, gb = _norm.LAYER_NORM.backward(backend)(
        grad_out.contiguous(), input.contiguous(), shape, weight, bias,
        mean.reshape(-1).to(dtype), rstd.reshape(-1).to(dtype), None, needs)
    return (like_layout(gx, input) if needs[0] else None,
            gw.to(weight.dtype) if needs[1] else None, gb.to(bias.dtype) if needs[2] else None)


def _group_norm_shapes_ok(input, weight, N, C, HxW, group) -> bool:
    return input.dim() >= 2 and input.shape[0] == N and input.shape[1] == C \
        and input.numel() == N * C * HxW and group > 0 and C % group == 0 \
        and (weight is None or tuple(weight.shape) == (C,))


def _native_group_norm(choice, input, weight, bias, N, C, HxW, group, eps):
    if not _group_norm_shapes_ok(input, weight, N, C, HxW, group) \
            or (bias is not None and tuple(bias.shape) != (C,)) \
            or not _norm_covered(input, weight, bias):
        raise _Uncovered
    backend = _backend(choice, _norm.GROUP_NORM, input, weight, bias)
    y, mean, rstd = _norm.GROUP_NORM.forward(backend)(input, int(group), weight, bias,
                                                      float(eps), None)
    dtype = _stats_dtype(input)
    return (y.contiguous(memory_format=suggest_memory_format(input)),
            mean.to(dtype).reshape(N, group), rstd.to(dtype).reshape(N, group))


def _native_group_norm_backward(choice, grad_out, input, mean, rstd, weight, N, C, HxW, group,
                                output_mask):
    needs = tuple(bool(m) for m in output_mask)
    if not _group_norm_shapes_ok(input, weight, N, C, HxW, group) \
            or grad_out.shape != input.shape or (weight is None and (needs[1] or needs[2])) \
            or mean.numel() != N * group or rstd.numel() != N * group \
            or not _norm_covered(grad_out, input, weight):
        raise _Uncovered
    backend = _backend(choice, _norm.GROUP_NORM, grad_out, input, weight)
    dtype = _stats_dtype(input)
    # no activation: the bias only gives grad_bias its dtype (its value is never read)
    bias = torch.zeros_like(weight) if needs[2] else None
    gx, gw, gb = _norm.GROUP_NORM.backward(backend)(
        grad_out.contiguous(memory_format=suggest_memory_format(input)), input, int(group),
        weight, bias, mean.reshape(N, group).to(dtype), rstd.reshape(N, group).to(dtype), None,
        needs)
    return (like_layout(gx, input) if needs[0] else None,
            gw.to(weight.dtype) if needs[1] else None, gb.to(weight.dtype) if needs[2] else None)


def _ids_covered(indices, num_weights: int) -> bool:
    """int32 / int64 ids, all in range: ATen raises its IndexError for the others (one host
    sync, as gpudnn's own embedding; the kernels would give NaN rows)."""
    if indices.dtype not in (torch.int32, torch.int64) or indices.numel() == 0:
        return False
    return not bool(((indices < 0) | (indices >= num_weights)).any())


def _embedding(choice, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    if weight.dim() != 2 or not _floating(weight) or not _ids_covered(indices, weight.shape[0]):
        raise _Uncovered
    kernels = _embedding_family.EMBEDDING
    backend = _backend(choice, kernels, weight, indices)
    y = kernels.forward(backend)(weight, indices.reshape(-1))
    return y.reshape(*indices.shape, weight.shape[1])


def _embedding_dense_backward(choice, grad_output, indices, num_weights, padding_idx,
                              scale_grad_by_freq):
    if grad_output.shape[:-1] != indices.shape or not _floating(grad_output) \
            or not _ids_covered(indices, num_weights) or not -1 <= padding_idx < num_weights:
        raise _Uncovered
    kernels = _embedding_family.EMBEDDING
    backend = _backend(choice, kernels, grad_output, indices)
    return kernels.backward(backend)(grad_output.reshape(-1, grad_output.shape[-1]).contiguous(),
                                     indices.reshape(-1), int(num_weights), int(padding_idx),
                                     bool(scale_grad_by_freq)).contiguous()


def _adaptive_input(self):
    if self.dim() not in (3, 4) or min(self.shape[-3:]) == 0 or not _floating(self):
        return None
    return self if self.dim() == 4 else self.unsqueeze(0)


def _adaptive_avg_pool2d(choice, self, output_size):
    x = _adaptive_input(self)
    size = _pair(output_size)
    if x is None or size is None or min(size) <= 0:
        raise _Uncovered
    kernels = _pool.ADAPTIVE_AVG_POOL2D
    backend = _backend(choice, kernels, x)
    x = launcher_layout(x)
    y = kernels.forward(backend)(x, size)
    return _squeezed(y.contiguous(memory_format=suggest_memory_format(x)), self.dim() == 3)


def _adaptive_avg_pool2d_backward(choice, grad_output, self):
    x = _adaptive_input(self)
    if x is None or grad_output.dim() != self.dim() or not _floating(grad_output, self):
        raise _Uncovered
    kernels = _pool.ADAPTIVE_AVG_POOL2D
    backend = _backend(choice, kernels, grad_output, self)
    grad_y = grad_output if self.dim() == 4 else grad_output.unsqueeze(0)
    grad_x = kernels.backward(backend)(launcher_layout(grad_y), tuple(x.shape))
    return _squeezed(grad_x.contiguous(memory_format=suggest_memory_format(x)), self.dim() == 3)


# --- the table ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Override:
    """One covered ATen overload: ``impl(choice, *schema arguments)`` -> outputs (raising
    _Uncovered hands the call to ATen); ``autograd``: registered on the Autograd key (and the
    backend key) instead of the backend key only."""

    name: str
    impl: Callable
    autograd: bool = False

    @property
    def qualified(self) -> str:
        return f"aten::{self.name}"

    def schema_mismatch(self) -> str | None:
        """Why this torch's schema of the overload differs from what ``impl`` takes, or None."""
        packet, _, overload = self.name.partition(".")
        try:
            op = getattr(getattr(torch.ops.aten, packet), overload or "default")
        except AttributeError:
            return f"{self.qualified} does not exist in torch {torch.__version__}"
        expected = [a.name for a in op._schema.arguments]
        takes = list(inspect.signature(self.impl).parameters)[1:]
        if takes != expected:
            return (f"{self.qualified}'s arguments in torch {torch.__version__} are {expected}, "
                    f"gpudnn's implementation takes {takes}")
        return None


_BACKEND_LEVEL = [
    ("addmm", _addmm), ("mm", _mm),
    ("convolution", _convolution), ("convolution_backward", _convolution_backward),
    ("native_batch_norm", _native_batch_norm),
    ("native_batch_norm_backward", _native_batch_norm_backward),
    ("cudnn_batch_norm", _cudnn_batch_norm),
    ("cudnn_batch_norm_backward", _cudnn_batch_norm_backward),
    ("_softmax", _softmax), ("_softmax_backward_data", _softmax_backward_data),
    ("_log_softmax", _log_softmax), ("_log_softmax_backward_data", _log_softmax_backward_data),
    ("native_dropout", _native_dropout),
    ("relu", _relu), ("relu_", _relu_), ("threshold_backward", _threshold_backward),
    ("gelu", _gelu), ("gelu_backward", _gelu_backward),
    ("silu", _silu), ("silu_backward", _silu_backward),
    ("sigmoid", _sigmoid), ("sigmoid_backward", _sigmoid_backward),
    ("tanh", _tanh), ("tanh_backward", _tanh_backward),
    ("leaky_relu", _leaky_relu), ("leaky_relu_backward", _leaky_relu_backward),
    ("max_pool2d_with_indices", _max_pool2d_with_indices),
    ("max_pool2d_with_indices_backward", _max_pool2d_with_indices_backward),
    ("avg_pool2d", _avg_pool2d), ("avg_pool2d_backward", _avg_pool2d_backward),
    ("mse_loss", _mse_loss), ("mse_loss_backward", _mse_loss_backward),
    ("nll_loss_forward", _nll_loss_forward), ("nll_loss_backward", _nll_loss_backward),
    ("nll_loss2d_forward", _nll_loss2d_forward), ("nll_loss2d_backward", _nll_loss2d_backward),
    ("binary_cross_entropy", _binary_cross_entropy),
    ("binary_cross_entropy_backward", _binary_cross_entropy_backward),
]
if _norm is not None:
    _BACKEND_LEVEL += [
        ("native_layer_norm", _native_layer_norm),
        ("native_layer_norm_backward", _native_layer_norm_backward),
        ("native_group_norm", _native_group_norm),
        ("native_group_norm_backward", _native_group_norm_backward)]
if _embedding_family is not None:
    _BACKEND_LEVEL += [("embedding", _embedding),
                       ("embedding_dense_backward", _embedding_dense_backward)]
if hasattr(_pool, "ADAPTIVE_AVG_POOL2D"):
    _BACKEND_LEVEL += [("_adaptive_avg_pool2d", _adaptive_avg_pool2d),
                       ("_adaptive_avg_pool2d_backward", _adaptive_avg_pool2d_backward)]
_AUTOGRAD_LEVEL = [
    ("cross_entropy_loss", _cross_entropy_loss),
    ("binary_cross_entropy_with_logits", _binary_cross_entropy_with_logits),
    ("lstm.input", _lstm),
] + ([("gru.input", _gru)] if _gru_family is not None else [])

OVERRIDES: dict[str, _Override] = {
    **{name: _Override(name, impl) for name, impl in _BACKEND_LEVEL},
    **{name: _Override(name, impl, autograd=True) for name, impl in _AUTOGRAD_LEVEL}}
# the covered ATen overloads ("aten::<name>[.<overload>]")
ATEN_OPS: tuple[str, ...] = tuple(o.qualified for o in OVERRIDES.values())


# --- call statistics ----------------------------------------------------------------------------

_stats_lock = threading.Lock()
_RAN: collections.Counter = collections.Counter()
_HANDED_BACK: collections.Counter = collections.Counter()


def _count(counter: collections.Counter, name: str) -> None:
    with _stats_lock:
        counter[name] += 1


def enabled_stats(fallbacks: bool = False) -> dict[str, int]:
    """Calls per ATen operator ("aten::convolution", ...) that gpudnn ran while enabled
    (``fallbacks=True``: the calls it handed back to ATen's kernels), since the process started
    or ``reset_enabled_stats()``."""
    with _stats_lock:
        return dict(_HANDED_BACK if fallbacks else _RAN)


def reset_enabled_stats() -> None:
    with _stats_lock:
        _RAN.clear()
        _HANDED_BACK.clear()


# --- registration -------------------------------------------------------------------------------

def _kernel(override: _Override, device: str, original) -> Callable:
    """The Python kernel registered for ``override`` on one dispatch key of ``device``."""
    impl = guarded(override.impl)
    name = override.qualified

    def hand_back(keyset, args, kwargs):
        if original is None:
            raise NotImplementedError(f"{name}: no ATen kernel for {device} tensors (gpudnn does "
                                      "not cover these arguments)")
        return original.call_boxed(keyset, *args, **kwargs)

    def kernel(keyset, *args, **kwargs):
        if inside_gpudnn():  # gpudnn's own torch calls (a launcher's): ATen's kernels
            return hand_back(keyset, args, kwargs)
        choice = _ENABLED[device].backend if device in _ENABLED else None
        try:
            # below autograd (ATen's derivative formula records the call): the launchers' own
            # torch calls must not record another graph (nor refuse out= on tensors needing grad)
            with contextlib.nullcontext() if override.autograd else torch.no_grad():
                out = impl(choice or get_backend(), *args, **kwargs)
        except _Uncovered:
            _count(_HANDED_BACK, name)
            return hand_back(keyset, args, kwargs)
        _count(_RAN, name)
        return out

    kernel.__name__ = f"gpudnn_{override.name.replace('.', '_')}"
    # a kernel runs in eager code only (fake tensors never reach it), but eager code inside a
    # torch.compile'd function (after a graph break) would have dynamo compile every Python frame
    # the dispatcher enters here: these frames, and all they call, are never compiled
    return torch.compiler.disable(kernel, recursive=True)


def _keys(override: _Override, device: str) -> tuple[str, ...]:
    backend_key = {"cpu": "CPU", "cuda": "CUDA"}[device]
    return (f"Autograd{backend_key}", backend_key) if override.autograd else (backend_key,)


@dataclass
class _Registration:
    backend: str | None
    ops: frozenset
    library: torch.library.Library


_lock = threading.RLock()
_ENABLED: dict[str, _Registration] = {}
SKIPPED: dict[str, str] = {}  # overloads this torch's schemas do not match: name -> why


def _register(device: str, backend: str | None, ops: frozenset) -> _Registration:
    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        # torch warns once that a kernel overrides an existing one: that is the point here
        warnings.filterwarnings("ignore", message=".*Overriding a previously registered kernel")
        warnings.filterwarnings("ignore", message=".*Warning only once for all operators")
        for name in sorted(ops):
            override = OVERRIDES[name]
            why = override.schema_mismatch()
            if why is not None:
                SKIPPED[name] = why
                continue
            for key in _keys(override, device):
                try:
                    original = torch.library.get_kernel(override.qualified, key)
                except RuntimeError:  # no ATen kernel on this key (cuDNN's ops on a CPU build)
                    original = None
                library.impl(override.name, _kernel(override, device, original), key,
                             with_keyset=True)
    return _Registration(backend, ops, library)


def _device_type(device: Any) -> str:
    kind = torch.device(device).type
    if kind not in DEVICES:
        raise ValueError(f"gpudnn.enable: device {device!r} is not one of {DEVICES}")
    return kind


def _op_names(ops: Iterable[str] | None) -> frozenset:
    if ops is None:
        return frozenset(OVERRIDES)
    if isinstance(ops, str):
        ops = (ops,)
    names = set()
    for op in ops:
        bare = op.removeprefix("aten::")
        matches = [n for n in OVERRIDES if n == bare or n.partition(".")[0] == bare]
        if not matches:
            raise ValueError(f"gpudnn.enable: {op!r} is not a covered ATen operator; covered: "
                             f"{', '.join(ATEN_OPS)}")
        names.update(matches)
    return frozenset(names)


def _set(device: str, backend: str | None, ops: frozenset) -> None:
    current = _ENABLED.get(device)
    if current is not None and current.backend == backend and current.ops == ops:
        return  # idempotent
    if current is not None:
        _ENABLED.pop(device).library._destroy()
    _ENABLED[device] = _register(device, backend, ops)


def enable(devices: Sequence[Any] | str = ("cuda",), backend: str | None = None, *,
           ops: Iterable[str] | None = None) -> None:
    """Run the covered ATen operators (``ATEN_OPS``, or the subset ``ops``, e.g.
    ``("convolution", "addmm")``) on gpudnn for tensors on ``devices`` ("cuda", "cpu"), with
    ``backend`` (None: gpudnn's selection at each call, ``gpudnn.use_backend`` included).
    Idempotent; a new backend or op set for an enabled device replaces the old one. Process-wide
    (see the module docstring)."""
    if isinstance(devices, (str, torch.device)):
        devices = (devices,)
    kinds = tuple(dict.fromkeys(_device_type(d) for d in devices))
    if backend is not None:
        backend = _check_name(backend)
        for kind in kinds:
            why = None if backend == "auto" else _why_not(backend, kind)
            if why is not None:
                raise RuntimeError(f"gpudnn.enable: backend {backend!r} cannot run {kind} "
                                   f"tensors: {why}")
    names = _op_names(ops)
    with _lock:
        for kind in kinds:
            _set(kind, backend, names)


def disable(devices: Sequence[Any] | str | None = None) -> None:
    """Give the ATen operators on ``devices`` (None: every enabled device) back to ATen's own
    kernels: the dispatch table is then exactly what it was before ``enable``."""
    if isinstance(devices, (str, torch.device)):
        devices = (devices,)
    with _lock:
        kinds = list(_ENABLED) if devices is None else [_device_type(d) for d in devices]
        for kind in kinds:
            registration = _ENABLED.pop(kind, None)
            if registration is not None:
                registration.library._destroy()


def is_enabled(device: Any = "cuda") -> bool:
    """Whether gpudnn serves the ATen operators of ``device`` now."""
    return _device_type(device) in _ENABLED


@contextlib.contextmanager
def enabled(devices: Sequence[Any] | str = ("cuda",), backend: str | None = None, *,
            ops: Iterable[str] | None = None) -> Iterator[None]:
    """``enable(...)`` inside a ``with`` block; on exit the state found on entry comes back
    (blocks nest; the state is process-wide, not per thread)."""
    with _lock:
        found = {kind: (r.backend, r.ops) for kind, r in _ENABLED.items()}
        enable(devices, backend, ops=ops)
    try:
        yield
    finally:
        with _lock:
            for kind in [k for k in _ENABLED if k not in found]:
                _ENABLED.pop(kind).library._destroy()
            for kind, (old_backend, old_ops) in found.items():
                _set(kind, old_backend, old_ops)
