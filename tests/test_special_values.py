"""Special values through every op, forward and backward, on every backend: never a silently
wrong answer (issue 16).

A generated matrix: every public ``gpudnn.functional`` op and the fused variants (linear, conv2d,
conv_transpose2d and batch_norm with each activation) x every backend that runs here
("reference", "triton": the interpreter on CPU; "cupy" on a CUDA GPU) x inputs holding NaN, +inf,
-inf, -0.0 and 1e4-scale values, ignored and all -inf rows, zero-size dims in every position and
0-d tensors where torch takes them.

The oracle is torch itself, in float32 on the same values: every output and the gradient of every
floating input must match it with NaN and inf (and their signs) in the same places, through
``helpers.compare_with_twin`` and the one tolerance table of ``gpudnn.testing``; the elementwise
ops must also give zeros torch's sign on the CPU (relu(-0.0) is -0.0 there; on CUDA torch's own
zero signs follow the device's min/max instructions). Where torch refuses the input, gpudnn must
refuse it too, with a ValueError / TypeError / RuntimeError / IndexError.

Where torch's own answer is not one, the oracle says so in one place:
- erf-GELU at +inf: torch's vectorized float32 CPU GELU returns NaN there (its scalar path, its
  float64 path and CUDA return +inf); the oracle is torch's float32 GELU with that value put back
  (and torch's own float32 gelu_backward);
- dropout with 0 < p < 1 draws its mask from gpudnn's Philox stream, not torch's: the oracle is
  torch's formula ``x * mask / (1 - p)`` (NaN and inf times a dropped 0 give NaN) on our mask,
  read from the dropout of a tensor of ones under the same seed;
- convolutions with an empty channel dim that torch's CPU kernels get wrong (conv2d with 0 input
  channels returns a [N, 0, H, W] tensor; conv_transpose2d with 0 output channels fails inside
  oneDNN): the oracle is the same convolution with one zero channel, i.e. the bias alone / an
  empty output.

Shapes are tiny (3x5 and the like) so that each case is one quick test under the interpreter.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

import gpudnn
import gpudnn.functional as GF
from gpudnn.testing import assert_close
from helpers import DEVICE, _map, compare_with_twin, cupy_gpu, ieee_float32

NAN, INF = float("nan"), float("inf")
F32 = torch.float32
HUGE = 1e4
# one of each kind of value an activation can meet, as a 3x5 tensor
SPECIALS = [NAN, INF, -INF, -0.0, 0.0, HUGE, -HUGE, 88.0, -88.0, 20.0, -20.0, 1.0, -1.0, 0.5, -0.5]
# errors gpudnn may raise where torch refuses an input (never a crash of another kind)
CLEAN_ERRORS = (ValueError, TypeError, RuntimeError, IndexError)

BACKENDS = [pytest.param("reference", id="reference"), pytest.param("triton", id="triton"),
            pytest.param("cupy", id="cupy", marks=cupy_gpu)]


@dataclasses.dataclass(frozen=True)
class Case:
    """One cell of the matrix. ``make(gen)`` -> (inputs, aux): ``inputs`` are differentiated
    (floating ones require grad), ``aux`` are tensors an op updates in place (batch norm's
    running statistics), compared after the run. ``ours(aux, *inputs)`` calls gpudnn,
    ``theirs(aux, *inputs)`` torch."""

    id: str
    make: Callable[[torch.Generator], tuple[tuple, tuple]]
    ours: Callable
    theirs: Callable
    scale: float = 1.0            # atol scale of outputs and gradients (1e4-scale inputs)
    signed_zeros: bool = False    # exact elementwise results: 0.0 and -0.0 must not swap


CASES: list[Case] = []


def case(id: str, make, ours, theirs, **kw) -> None:
    CASES.append(Case(id, make, ours, theirs, **kw))


def randn(gen: torch.Generator, *shape, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=F32) * scale


def poison(t: torch.Tensor, kind: str, where: tuple) -> torch.Tensor:
    """``t`` with a special value at ``where`` ("nan", "inf", "-inf"), or all of it as signed
    zeros ("-0": -0.0 where t < 0, else 0.0), or scaled to 1e4 ("huge"); "plain" leaves it."""
    t = t.clone()
    if kind in ("nan", "inf", "-inf"):
        t[where] = {"nan": NAN, "inf": INF, "-inf": -INF}[kind]
    elif kind == "-0":
        t = torch.where(t < 0, torch.tensor(-0.0), torch.tensor(0.0))
    elif kind == "huge":
        t = t * HUGE
    else:
        assert kind == "plain", kind
    return t


def specials(shape=(3, 5), shift: int = 0) -> torch.Tensor:
    values = SPECIALS[shift:] + SPECIALS[:shift]
    n = 1
    for s in shape:
        n *= s
    return torch.tensor((values * (n // len(values) + 1))[:n], dtype=F32).reshape(shape)


KIND_SCALE = {"huge": HUGE}


# --- activations: torch's own functions as the oracle --------------------------------------------

class _TorchGelu(torch.autograd.Function):
    """torch's float32 erf-GELU and its gelu_backward, with +inf mapped to +inf: the vectorized
    float32 CPU kernel returns NaN there (its scalar path, float64 and CUDA give +inf)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x == INF, x, F.gelu(x))

    @staticmethod
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        return torch.ops.aten.gelu_backward(grad, x)


# name -> (gpudnn standalone function, the `activation=` argument, torch function); gpudnn's
# functions are looked up when called (collecting the tests imports no op)
ACTS: dict[str, tuple[Callable, Any, Callable]] = {
    "relu": (lambda x: GF.relu(x), "relu", torch.relu),
    "leaky_relu": (lambda x: GF.leaky_relu(x), "leaky_relu", F.leaky_relu),
    # a negative slope: the derivative comes from the pre-activation, not the output
    "leaky_relu-0.5": (lambda x: GF.leaky_relu(x, -0.5), torch.nn.LeakyReLU(-0.5),
                       lambda x: F.leaky_relu(x, -0.5)),
    "sigmoid": (lambda x: GF.sigmoid(x), "sigmoid", torch.sigmoid),
    "tanh": (lambda x: GF.tanh(x), "tanh", torch.tanh),
    "gelu": (lambda x: GF.gelu(x), "gelu", _TorchGelu.apply),
    "gelu_tanh": (lambda x: GF.gelu(x, approximate="tanh"), "gelu_tanh",
                  lambda x: F.gelu(x, approximate="tanh")),
    "silu": (lambda x: GF.silu(x), "silu", F.silu),
}
FUSED = {None: (None, lambda z: z), **{k: (v[1], v[2]) for k, v in ACTS.items()}}


def _activation_cases():
    for name, (ours_fn, _, torch_fn) in ACTS.items():
        def ours(aux, x, fn=ours_fn):
            return fn(x)

        def theirs(aux, x, fn=torch_fn):
            return fn(x)

        def ours_g(aux, x, g, fn=ours_fn):  # g: a cotangent that carries the special values
            return fn(x) * g

        def theirs_g(aux, x, g, fn=torch_fn):
            return fn(x) * g

        case(f"{name}-specials", lambda gen: ((specials(),), ()), ours, theirs,
             signed_zeros=True)
        # backward with NaN / inf / -0.0 in grad_y, met by every kind of x
        for shift in (3, 7):
            case(f"{name}-grad_specials{shift}",
                 lambda gen, s=shift: ((specials(), specials(shift=s)), ()), ours_g, theirs_g,
                 signed_zeros=True)
        for value in (NAN, -INF, -0.0):
            case(f"{name}-0d{value}", lambda gen, v=value: ((torch.tensor(v),), ()), ours, theirs,
                 signed_zeros=True)
        for shape in ((0,), (0, 5), (3, 0), (2, 0, 3)):
            case(f"{name}-empty{shape}", lambda gen, s=shape: ((torch.empty(s),), ()), ours,
                 theirs)


_activation_cases()


# --- linear with each fused activation ----------------------------------------------------------

def _linear_case(id, act, x_shape, n_out, kind="plain", where=(1, 2), bias=True, poison_arg=0):
    act_arg, torch_act = FUSED[act]

    def make(gen):
        k = x_shape[-1]
        args = [randn(gen, *x_shape), randn(gen, n_out, k, scale=0.5)]
        if bias:
            args.append(randn(gen, n_out, scale=0.1))
        args[poison_arg] = poison(args[poison_arg], kind, where)
        return tuple(args), ()

    def ours(aux, x, w, b=None):
        return GF.linear(x, w, b, activation=act_arg)

    def theirs(aux, x, w, b=None):
        return torch_act(F.linear(x, w, b))

    case(id, make, ours, theirs, scale=KIND_SCALE.get(kind, 1.0))


for _act in FUSED:
    for _kind in ("nan", "inf", "-inf", "-0", "huge"):
        _linear_case(f"linear-{_act}-{_kind}", _act, (3, 5), 4, _kind)
_linear_case("linear-relu-nan_bias", "relu", (3, 5), 4, "nan", where=(2,), poison_arg=2)
_linear_case("linear-relu-inf_weight", "relu", (3, 5), 4, "inf", where=(1, 3), poison_arg=1)
_linear_case("linear-gelu-nan-nobias", "gelu", (3, 5), 4, "nan", bias=False)
_linear_case("linear-relu-nan-3d", "relu", (2, 3, 5), 4, "nan", where=(1, 2, 0))
_linear_case("linear-relu-nan-1d", "relu", (5,), 4, "nan", where=(2,))
for _shape, _n in (((0, 5), 4), ((3, 0), 4), ((3, 5), 0), ((2, 0, 5), 4)):
    _linear_case(f"linear-relu-empty{_shape}x{_n}", "relu", _shape, _n)


# --- conv2d / conv_transpose2d with each fused activation ---------------------------------------

def _conv_case(id, transposed, act, kind="plain", where=(0, 1, 1, 2), poison_arg=0,
               x_shape=(2, 3, 4, 4), c_out=4, bias=True):
    act_arg, torch_act = FUSED[act]
    # transposed: stride 2 with output_padding 1 crosses the stride phases of the gather
    opts = dict(stride=2, padding=1, output_padding=1) if transposed else dict(padding=1)

    def make(gen):
        c_in = x_shape[1]
        w_shape = (c_in, c_out, 3, 3) if transposed else (c_out, c_in, 3, 3)
        args = [randn(gen, *x_shape), randn(gen, *w_shape, scale=0.3)]
        if bias:
            args.append(randn(gen, c_out, scale=0.1))
        args[poison_arg] = poison(args[poison_arg], kind, where)
        return tuple(args), ()

    torch_conv = F.conv_transpose2d if transposed else F.conv2d
    one_channel = (x_shape[1], 1, 3, 3) if transposed else (c_out, 1, 3, 3)

    def ours(aux, x, w, b=None):
        conv = GF.conv_transpose2d if transposed else GF.conv2d
        return conv(x, w, b, activation=act_arg, **opts)

    def theirs(aux, x, w, b=None):
        if x.shape[-3] == 0 and not transposed and x.numel() == 0 and c_out:
            # torch's CPU conv2d returns [N, 0, H, W] here: the conv of one zero channel
            zeros = x.new_zeros(x.shape[:-3] + (1,) + x.shape[-2:])
            out = torch_conv(zeros, w.new_zeros(one_channel), b, **opts)
            return torch_act(out) + 0.0 * (x.sum() + w.sum())
        if transposed and c_out == 0 and x.shape[-3] > 0:
            # torch's CPU conv_transpose2d fails in oneDNN here: an empty slice of one channel
            out = torch_conv(x, w.new_zeros(one_channel), None, **opts)[..., :0, :, :]
            return out + 0.0 * (w.sum() + (b.sum() if b is not None else 0.0))
        return torch_act(torch_conv(x, w, b, **opts))

    case(id, make, ours, theirs, scale=KIND_SCALE.get(kind, 1.0))


for _t, _name in ((False, "conv2d"), (True, "conv_transpose2d")):
    for _act in FUSED:
        for _kind in ("nan", "inf"):
            _conv_case(f"{_name}-{_act}-{_kind}", _t, _act, _kind)
    for _kind in ("-inf", "-0", "huge"):
        _conv_case(f"{_name}-None-{_kind}", _t, None, _kind)
        _conv_case(f"{_name}-relu-{_kind}", _t, "relu", _kind)
    _conv_case(f"{_name}-relu-nan_bias", _t, "relu", "nan", where=(1,), poison_arg=2)
    _conv_case(f"{_name}-sigmoid-inf_weight", _t, "sigmoid", "inf", where=(0, 1, 1, 1),
               poison_arg=1)
    _conv_case(f"{_name}-relu-nan-unbatched", _t, "relu", "nan", where=(1, 2, 2),
               x_shape=(3, 4, 4))
    for _shape, _c_out in (((0, 3, 4, 4), 4), ((2, 0, 4, 4), 4), ((2, 3, 4, 4), 0),
                           ((2, 3, 0, 4), 4), ((2, 3, 4, 0), 4)):
        # torch refuses a weight of 0 rows (conv2d's output channels, conv_transpose2d's
        # input): so must gpudnn
        _conv_case(f"{_name}-relu-empty{_shape}x{_c_out}", _t, "relu", x_shape=_shape,
                   c_out=_c_out)


# --- weight-only quantized linear / conv2d (inference only: no gradients) -----------------------

def _quantized_case(id, conv, act, kind="plain", x_shape=None, n_out=4, fp8=False):
    """The oracle: torch's linear / conv2d on the dequantized weight. The inputs are detached
    (the quantized ops have no backward), so only the outputs are compared."""
    from gpudnn.quantization import dequantize_weight, quantize_weight
    act_arg, torch_act = FUSED[act]
    x_shape = x_shape or ((2, 3, 4, 4) if conv else (3, 5))
    k = x_shape[1] if conv else x_shape[-1]
    gen = torch.Generator().manual_seed(zlib.crc32(id.encode()))
    q, s = quantize_weight(randn(gen, n_out, k, *((3, 3) if conv else ())),
                           "fp8" if fp8 else "int8")
    b = randn(gen, n_out, scale=0.1)
    opts = dict(padding=1) if conv else {}

    def make(gen):
        return (poison(randn(gen, *x_shape), kind, (0, 1, 1, 2) if conv else (1, 2)),), ()

    def ours(aux, x):
        if gpudnn.get_backend() == "cupy":
            pytest.skip("the quantized layers have Triton and reference kernels only")
        fn = GF.quantized_conv2d if conv else GF.quantized_linear
        return fn(x.detach(), q.to(x.device), s.to(x.device), b.to(x.device),
                  activation=act_arg, **opts)

    def theirs(aux, x):
        w = dequantize_weight(q, s).to(x.device)
        return torch_act((F.conv2d if conv else F.linear)(x.detach(), w, b.to(x.device), **opts))

    case(id, make, ours, theirs, scale=KIND_SCALE.get(kind, 1.0))


for _conv, _name in ((False, "quantized_linear"), (True, "quantized_conv2d")):
    for _act in (None, "relu", "gelu"):
        for _kind in ("nan", "inf", "-inf", "-0", "huge"):
            _quantized_case(f"{_name}-{_act}-{_kind}", _conv, _act, _kind)
    _quantized_case(f"{_name}-relu-nan-fp8", _conv, "relu", "nan", fp8=True)
for _shape in ((0, 5), (3, 0), (2, 0, 5)):
    _quantized_case(f"quantized_linear-relu-empty{_shape}", False, "relu", x_shape=_shape)
_quantized_case("quantized_linear-relu-empty-out", False, "relu", n_out=0)
for _shape in ((0, 3, 4, 4), (2, 3, 4, 0)):
    _quantized_case(f"quantized_conv2d-relu-empty{_shape}", True, "relu", x_shape=_shape)


# --- batch norm, training and eval, with each fused activation ----------------------------------

def _batch_norm_case(id, training, act, x_shape=(4, 3), kind="plain", where=(1, 1),
                     poison_arg=0, affine=True):
    act_arg, torch_act = FUSED[act]
    channels = x_shape[1] if len(x_shape) > 1 else 0

    def make(gen):
        args = [randn(gen, *x_shape)]
        if affine:
            args += [1.0 + randn(gen, channels, scale=0.2), randn(gen, channels, scale=0.1)]
        args[poison_arg] = poison(args[poison_arg], kind, where)
        running = (randn(gen, channels, scale=0.1), 1.0 + torch.rand(channels, generator=gen))
        return tuple(args), running

    def ours(aux, x, w=None, b=None):
        return GF.batch_norm(x, aux[0], aux[1], w, b, training=training, activation=act_arg)

    def theirs(aux, x, w=None, b=None):
        return torch_act(F.batch_norm(x, aux[0], aux[1], w, b, training=training))

    case(id, make, ours, theirs, scale=KIND_SCALE.get(kind, 1.0))


for _training in (True, False):
    _mode = "train" if _training else "eval"
    for _act in FUSED:
        for _kind in ("nan", "inf"):
            _batch_norm_case(f"batch_norm-{_mode}-{_act}-{_kind}", _training, _act, kind=_kind)
    for _kind in ("-inf", "-0", "huge"):
        _batch_norm_case(f"batch_norm-{_mode}-relu-{_kind}", _training, "relu", kind=_kind)
    _batch_norm_case(f"batch_norm-{_mode}-relu-nan-2d", _training, "relu", (2, 3, 2, 2),
                     "nan", where=(1, 2, 0, 1))
    _batch_norm_case(f"batch_norm-{_mode}-sigmoid-inf-2d", _training, "sigmoid", (2, 3, 2, 2),
                     "inf", where=(0, 0, 1, 1))
    # the first element of a channel: the shift of the training statistics
    _batch_norm_case(f"batch_norm-{_mode}-relu-inf_first", _training, "relu", kind="inf",
                     where=(0, 2))
    _batch_norm_case(f"batch_norm-{_mode}-relu-nan_weight", _training, "relu", kind="nan",
                     where=(2,), poison_arg=1)
    _batch_norm_case(f"batch_norm-{_mode}-None-nan-noaffine", _training, None, kind="nan",
                     affine=False)
    for _shape in ((0, 3), (2, 0), (2, 3, 0), (0, 3, 2, 2), (2, 3, 0, 2)):
        # torch's affine path fails (IndexError in select()) on 0 channels: no weight there
        _batch_norm_case(f"batch_norm-{_mode}-relu-empty{_shape}", _training, "relu", _shape,
                         affine=_shape[1] > 0)
    _batch_norm_case(f"batch_norm-{_mode}-relu-empty(0,)", _training, "relu", (0,), affine=False)


# --- layer norm / group norm with each fused activation ------------------------------------------
#
# x [3, 5] (layer norm over the last dim) and [2, 4, 3] in 2 groups: "nan" / "inf" / "-inf" at one
# element poison its row (torch: that row NaN everywhere, the other rows untouched); "const" rows
# (zero variance, rstd = 1/sqrt(eps)); "long" rows past one block (8192) with NaN
# in the last block of one row and +inf in another (the online path). Group norm over a spatial
# size of 0 is left out: torch returns a NaN grad_weight there (0 * its rstd of NaN), gpudnn the
# sum over no elements, 0 (tests/test_norm.py).

def _norm_input(gen, kind, x_shape, where):
    x = randn(gen, *x_shape)
    if kind == "const":  # powers of two: torch's own group norm grad_weight, sum(dy * x) -
        x[1] = 0.5       # mean * sum(dy), then cancels exactly as ours (exact zeros) does
        if x.shape[0] > 2:
            x[2] = -4.0
        return x
    if kind == "long":
        x[0, ..., -2] = NAN
        x[1, ..., -1] = INF
        return x
    return poison(x, kind, where)


def _norm_case(id, group, act, kind="plain", x_shape=None, where=None, poison_arg=0,
               affine=True, groups=2, normalized=1):
    act_arg, torch_act = FUSED[act]
    x_shape = x_shape or ((2, 4, 3) if group else (3, 5))
    where = where or ((1, 2, 1) if group else (1, 2))
    params = tuple(x_shape[1:2]) if group else tuple(x_shape[len(x_shape) - normalized:])

    def make(gen):
        args = [_norm_input(gen, kind if poison_arg == 0 else "plain", x_shape, where)]
        if affine:
            args += [1.0 + randn(gen, *params, scale=0.2), randn(gen, *params, scale=0.1)]
        if poison_arg:
            args[poison_arg] = poison(args[poison_arg], kind, where)
        return tuple(args), ()

    if group:
        def ours(aux, x, w=None, b=None):
            return GF.group_norm(x, groups, w, b, activation=act_arg)

        def theirs(aux, x, w=None, b=None):
            return torch_act(F.group_norm(x, groups, w, b))
    else:
        def ours(aux, x, w=None, b=None):
            return GF.layer_norm(x, params, w, b, activation=act_arg)

        def theirs(aux, x, w=None, b=None):
            return torch_act(F.layer_norm(x, params, w, b))

    case(id, make, ours, theirs, scale=KIND_SCALE.get(kind, 1.0))


for _group, _name in ((False, "layer_norm"), (True, "group_norm")):
    for _act in FUSED:
        for _kind in ("nan", "inf"):
            _norm_case(f"{_name}-{_act}-{_kind}", _group, _act, _kind)
    for _kind in ("-inf", "-0", "huge", "const"):
        _norm_case(f"{_name}-relu-{_kind}", _group, "relu", _kind)
    _norm_case(f"{_name}-None-const", _group, None, "const")
    _norm_case(f"{_name}-gelu-long", _group, "gelu", "long",
               x_shape=(2, 2, 4100) if _group else (2, 8200), groups=1)
    _norm_case(f"{_name}-sigmoid-nan_weight", _group, "sigmoid", "nan", where=(2,),
               poison_arg=1)
    _norm_case(f"{_name}-relu-inf_bias", _group, "relu", "inf", where=(1,), poison_arg=2)
    _norm_case(f"{_name}-None-nan-noaffine", _group, None, "nan", affine=False)
_norm_case("layer_norm-silu-nan-2d_shape", False, "silu", "nan", x_shape=(2, 3, 4),
           where=(1, 2, 0), normalized=2)
_norm_case("group_norm-silu-nan-channels_only", True, "silu", "nan", x_shape=(3, 4),
           where=(1, 3))
_norm_case("group_norm-relu-inf-2d", True, "relu", "inf", x_shape=(2, 4, 2, 3),
           where=(0, 3, 1, 2))
for _shape in ((0, 5), (3, 0), (2, 0, 3)):
    _norm_case(f"layer_norm-relu-empty{_shape}", False, "relu", x_shape=_shape)
for _shape in ((0, 4, 3), (0, 4), (2, 0, 3)):
    _norm_case(f"group_norm-relu-empty{_shape}", True, "relu", x_shape=_shape,
               groups=1 if _shape[1] == 0 else 2)
# refused by torch, so by gpudnn: a 1-d input, channels that do not split into the groups, a
# normalized_shape that is not the input's trailing dims
_norm_case("group_norm-relu-1d", True, "relu", x_shape=(4,), affine=False)
_norm_case("group_norm-relu-indivisible", True, "relu", x_shape=(2, 4, 3), groups=3)
case("layer_norm-mismatched_shape", lambda gen: ((randn(gen, 3, 5),), ()),
     lambda aux, x: GF.layer_norm(x, (4,)), lambda aux, x: F.layer_norm(x, (4,)))


# --- softmax / log_softmax ---------------------------------------------------------------------

LONG = 4100  # past the kernels' one-block rows (4096): the online max / sum paths


def _softmax_rows(kind: str) -> torch.Tensor:
    """3x5 rows: "specials" = a row with NaN, a row of -inf only, a row with +inf (and -inf);
    "partial" = -inf entries, -0.0 and huge values in finite rows; "huge" = 1e4-scale rows.
    "long": 3 x LONG rows, NaN / +inf in the last chunk, and a row of -inf only."""
    if kind == "long":
        x = torch.randn(3, LONG, generator=torch.Generator().manual_seed(5))
        x[0, LONG - 2] = NAN
        x[1] = -INF
        x[2, LONG - 1] = INF
        x[2, 7] = -INF
        return x
    if kind == "specials":
        return torch.tensor([[0.5, NAN, -1.0, 2.0, 0.0],
                             [-INF, -INF, -INF, -INF, -INF],
                             [1.0, INF, -INF, 3.0, -0.0]])
    if kind == "partial":
        return torch.tensor([[-INF, 1.0, -INF, 0.0, -0.0],
                             [HUGE, -HUGE, HUGE - 1.0, 0.0, -INF],
                             [-0.0, -0.0, -0.0, -INF, 3.0]])
    return torch.tensor([[HUGE, -HUGE, 0.5 * HUGE, 1.0, HUGE],
                         [-HUGE, -HUGE, -HUGE, -HUGE + 2.0, -HUGE],
                         [3 * HUGE, 2 * HUGE, HUGE, 0.0, -HUGE]])


for _log, _name in ((False, "softmax"), (True, "log_softmax")):
    _ours_fn = (lambda x, d: GF.log_softmax(x, d)) if _log else (lambda x, d: GF.softmax(x, d))
    _torch_fn = F.log_softmax if _log else F.softmax
    for _kind in ("specials", "partial", "huge", "long"):
        for _dim in ((-1,) if _kind == "long" else (-1, 0)):
            case(f"{_name}-{_kind}-dim{_dim}", lambda gen, k=_kind: ((_softmax_rows(k),), ()),
                 lambda aux, x, f=_ours_fn, d=_dim: f(x, d),
                 lambda aux, x, f=_torch_fn, d=_dim: f(x, d))
    for _value in (NAN, -INF, INF, -0.0):
        case(f"{_name}-0d{_value}", lambda gen, v=_value: ((torch.tensor(v),), ()),
             lambda aux, x, f=_ours_fn: f(x, 0), lambda aux, x, f=_torch_fn: f(x, 0))
    for _shape in ((0, 5), (3, 0), (2, 0, 3)):
        for _dim in (-1, 0, 1):
            if _dim >= len(_shape):
                continue
            case(f"{_name}-empty{_shape}-dim{_dim}", lambda gen, s=_shape: ((torch.empty(s),), ()),
                 lambda aux, x, f=_ours_fn, d=_dim: f(x, d),
                 lambda aux, x, f=_torch_fn, d=_dim: f(x, d))


# --- losses --------------------------------------------------------------------------------------

IGNORE = -100


def _ce_logits(kind: str) -> torch.Tensor:
    """4x5 logits: "specials" rows: NaN, -inf at the target, +inf off the target, +inf at the
    target; "neg" rows: all -inf but one, all -inf, -0.0 only, huge. "long": 4 x LONG rows: NaN
    and +inf in the last chunk, all -inf but the target, -inf at the target."""
    if kind == "long":
        x = torch.randn(4, LONG, generator=torch.Generator().manual_seed(6))
        x[0, LONG - 2] = NAN
        x[1, LONG - 1] = INF
        x[2] = -INF
        x[2, 0] = 1.0
        x[3, 2] = -INF
        return x
    if kind == "specials":
        return torch.tensor([[0.5, NAN, -1.0, 2.0, 0.0],
                             [-INF, 1.0, 0.0, -1.0, 2.0],
                             [1.0, INF, -2.0, 0.0, 0.5],
                             [0.0, 1.0, INF, -1.0, -INF]])
    if kind == "neg":
        return torch.tensor([[-INF, -INF, 3.0, -INF, -INF],
                             [-INF, -INF, -INF, -INF, -INF],
                             [-0.0, -0.0, -0.0, -0.0, -0.0],
                             [HUGE, -HUGE, 0.0, 2 * HUGE, -INF]])
    return torch.tensor([[HUGE, -HUGE, 0.5 * HUGE, 1.0, HUGE],
                         [-HUGE, -HUGE, -HUGE, -HUGE + 2.0, -HUGE],
                         [3 * HUGE, 2 * HUGE, HUGE, 0.0, -HUGE],
                         [0.0, 0.0, 0.0, 0.0, HUGE]])


def _ce_case(id, logits, target, reduction, **kw):
    case(id, lambda gen: ((logits(), target()), ()),
         lambda aux, x, t: GF.cross_entropy(x, t, reduction=reduction, ignore_index=IGNORE),
         lambda aux, x, t: F.cross_entropy(x, t, reduction=reduction, ignore_index=IGNORE), **kw)


for _reduction in ("none", "mean", "sum"):
    for _kind in ("specials", "neg", "huge", "long"):
        _ce_case(f"cross_entropy-{_kind}-{_reduction}", lambda k=_kind: _ce_logits(k),
                 lambda: torch.tensor([0, 0, 3, 2]), _reduction)
    # ignored rows: the NaN / -inf rows ignored, the others count
    _ce_case(f"cross_entropy-specials-ignored-{_reduction}", lambda: _ce_logits("specials"),
             lambda: torch.tensor([IGNORE, IGNORE, 3, 1]), _reduction)
    _ce_case(f"cross_entropy-neg-ignored-{_reduction}", lambda: _ce_logits("neg"),
             lambda: torch.tensor([2, IGNORE, 1, IGNORE]), _reduction)
    _ce_case(f"cross_entropy-all_ignored-{_reduction}", lambda: _ce_logits("specials"),
             lambda: torch.full((4,), IGNORE), _reduction)
    _ce_case(f"cross_entropy-empty(0,5)-{_reduction}", lambda: torch.empty(0, 5),
             lambda: torch.empty(0, dtype=torch.long), _reduction)
    _ce_case(f"cross_entropy-empty(2,0)-{_reduction}", lambda: torch.empty(2, 0),
             lambda: torch.zeros(2, dtype=torch.long), _reduction)
    _ce_case(f"cross_entropy-unbatched-nan-{_reduction}",
             lambda: torch.tensor([0.5, NAN, 1.0]), lambda: torch.tensor(2), _reduction)
    _ce_case(f"cross_entropy-unbatched-ignored-{_reduction}",
             lambda: torch.tensor([0.5, -INF, 1.0]), lambda: torch.tensor(IGNORE), _reduction)
    _ce_case(f"cross_entropy-spatial-specials-{_reduction}",
             lambda: _ce_logits("specials").reshape(2, 2, 5).transpose(1, 2),
             lambda: torch.tensor([[0, 1], [IGNORE, 4]]), _reduction)


def _bce_target(kind: str) -> torch.Tensor:
    if kind == "specials":  # NaN, inf and -0.0 as targets too
        return specials(shift=5)
    return torch.tensor([0.0, 1.0, 0.5, 0.25, 1.0] * 3).reshape(3, 5)


for _reduction in ("none", "mean", "sum"):
    for _x_kind, _t_kind in (("specials", "probabilities"), ("probabilities", "specials")):
        def _make(gen, xk=_x_kind, tk=_t_kind):
            x = specials() if xk == "specials" else randn(gen, 3, 5)
            return (x, _bce_target(tk)), ()

        case(f"bce_with_logits-x_{_x_kind}-t_{_t_kind}-{_reduction}", _make,
             lambda aux, x, t, r=_reduction: GF.binary_cross_entropy_with_logits(x, t,
                                                                                  reduction=r),
             lambda aux, x, t, r=_reduction: F.binary_cross_entropy_with_logits(x, t,
                                                                                 reduction=r))
        case(f"mse-x_{_x_kind}-t_{_t_kind}-{_reduction}",
             lambda gen, xk=_x_kind, tk=_t_kind: (
                 (specials() if xk == "specials" else randn(gen, 3, 5),
                  specials(shift=9) if tk == "specials" else randn(gen, 3, 5)), ()),
             lambda aux, x, t, r=_reduction: GF.mse_loss(x, t, reduction=r),
             lambda aux, x, t, r=_reduction: F.mse_loss(x, t, reduction=r))
    for _name, _ours_fn, _torch_fn in (
            ("bce_with_logits", lambda x, t, reduction: GF.binary_cross_entropy_with_logits(
                x, t, reduction=reduction), F.binary_cross_entropy_with_logits),
            ("mse", lambda x, t, reduction: GF.mse_loss(x, t, reduction=reduction), F.mse_loss)):
        for _shape in ((0,), (3, 0), ()):
            case(f"{_name}-{'0d' if not _shape else f'empty{_shape}'}-{_reduction}",
                 lambda gen, s=_shape: ((torch.full(s, -0.5) if not s else torch.empty(s),
                                         torch.full(s, 1.0) if not s else torch.empty(s)), ()),
                 lambda aux, x, t, f=_ours_fn, r=_reduction: f(x, t, reduction=r),
                 lambda aux, x, t, f=_torch_fn, r=_reduction: f(x, t, reduction=r))


# class weights, label smoothing, probability targets, NLL, BCE on probabilities: the weights are
# constants of the call (torch refuses weights that require grad), on the inputs' device
CLASS_WEIGHT = [0.5, 2.0, 0.0, 1.0, 3.0]  # class 2 weighs nothing
ZERO_WEIGHT_TARGETS = [2, 2, IGNORE, 2]    # every counted target of weight 0: NaN mean, as torch
# 4x5 class probabilities, 0 where the "specials" / "neg" logits hold -inf and elsewhere
PROBS = [[0.0, 0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0, 0.0],
         [0.2, 0.2, 0.2, 0.2, 0.2], [0.0, 0.0, 0.0, 1.0, 0.0]]


def _loss_options(x, weight=None, pos_weight=None, **kw):
    if weight is not None:
        kw["weight"] = torch.tensor(weight, dtype=x.dtype, device=x.device)
    if pos_weight is not None:
        kw["pos_weight"] = torch.tensor(pos_weight, dtype=x.dtype, device=x.device)
    return kw


def _loss_case(id, make, ours, theirs, scale=1.0, **options):
    case(id, make, lambda aux, x, t: ours(x, t, **_loss_options(x, **options)),
         lambda aux, x, t: theirs(x, t, **_loss_options(x, **options)), scale=scale)


for _reduction in ("none", "mean", "sum"):
    _r = {"reduction": _reduction}
    _index = dict(_r, ignore_index=IGNORE)
    for _kind in ("specials", "neg", "huge"):
        for _tag, _opts in (("weight", dict(weight=CLASS_WEIGHT)),
                            ("smooth", dict(label_smoothing=0.1)),
                            ("weight_smooth", dict(weight=CLASS_WEIGHT, label_smoothing=0.3))):
            # 1e4-scale logits: the gradient's probabilities come from the float32 lse
            _loss_case(f"cross_entropy-{_tag}-{_kind}-{_reduction}",
                       lambda gen, k=_kind: ((_ce_logits(k), torch.tensor([0, 1, 3, 2])), ()),
                       GF.cross_entropy, F.cross_entropy, KIND_SCALE.get(_kind, 1.0), **_index,
                       **_opts)
            _loss_case(f"cross_entropy-probs-{_tag}-{_kind}-{_reduction}",
                       lambda gen, k=_kind: ((_ce_logits(k), torch.tensor(PROBS)), ()),
                       GF.cross_entropy, F.cross_entropy, **_r, **_opts)
        _loss_case(f"cross_entropy-probs-{_kind}-{_reduction}",
                   lambda gen, k=_kind: ((_ce_logits(k), torch.tensor(PROBS)), ()),
                   GF.cross_entropy, F.cross_entropy, **_r)
        for _tag, _opts in (("", {}), ("weight-", dict(weight=CLASS_WEIGHT))):
            # log-probabilities with NaN, -inf at the target (+inf loss; NaN at weight 0), +inf
            _loss_case(f"nll_loss-{_tag}{_kind}-{_reduction}",
                       lambda gen, k=_kind: ((_ce_logits(k), torch.tensor([0, 2, 1, 2])), ()),
                       GF.nll_loss, F.nll_loss, **_index, **_opts)
    for _tag, _opts in (("weight", dict(weight=CLASS_WEIGHT)),
                        ("weight_smooth", dict(weight=CLASS_WEIGHT, label_smoothing=0.2))):
        # ignored NaN / -inf rows with weights; every row ignored; zero-weight targets only
        _loss_case(f"cross_entropy-{_tag}-ignored-{_reduction}",
                   lambda gen: ((_ce_logits("specials"), torch.tensor([IGNORE, IGNORE, 3, 1])), ()),
                   GF.cross_entropy, F.cross_entropy, **_index, **_opts)
        _loss_case(f"cross_entropy-{_tag}-all_ignored-{_reduction}",
                   lambda gen: ((_ce_logits("specials"), torch.full((4,), IGNORE)), ()),
                   GF.cross_entropy, F.cross_entropy, **_index, **_opts)
        _loss_case(f"cross_entropy-{_tag}-zero_weight-{_reduction}",
                   lambda gen: ((randn(gen, 4, 5), torch.tensor(ZERO_WEIGHT_TARGETS)), ()),
                   GF.cross_entropy, F.cross_entropy, **_index, **_opts)
    _loss_case(f"cross_entropy-probs-specials_target-{_reduction}",
               lambda gen: ((randn(gen, 3, 5), specials(shift=2)), ()),
               GF.cross_entropy, F.cross_entropy, **_r, weight=CLASS_WEIGHT, label_smoothing=0.1)
    _loss_case(f"cross_entropy-probs-spatial-{_reduction}",
               lambda gen: ((randn(gen, 2, 5, 3), randn(gen, 2, 5, 3).softmax(1)), ()),
               GF.cross_entropy, F.cross_entropy, **_r, weight=CLASS_WEIGHT)
    _loss_case(f"cross_entropy-probs-empty(0,5)-{_reduction}",
               lambda gen: ((torch.empty(0, 5), torch.empty(0, 5)), ()),
               GF.cross_entropy, F.cross_entropy, **_r)
    _loss_case(f"nll_loss-weight-ignored-{_reduction}",
               lambda gen: ((_ce_logits("specials"), torch.tensor([IGNORE, IGNORE, 3, 1])), ()),
               GF.nll_loss, F.nll_loss, **_index, weight=CLASS_WEIGHT)
    _loss_case(f"nll_loss-weight-all_ignored-{_reduction}",
               lambda gen: ((_ce_logits("specials"), torch.full((4,), IGNORE)), ()),
               GF.nll_loss, F.nll_loss, **_index, weight=CLASS_WEIGHT)
    _loss_case(f"nll_loss-zero_weight-{_reduction}",
               lambda gen: ((randn(gen, 4, 5).log_softmax(1),
                             torch.tensor(ZERO_WEIGHT_TARGETS)), ()),
               GF.nll_loss, F.nll_loss, **_index, weight=CLASS_WEIGHT)
    _loss_case(f"nll_loss-zero_weight_at_-inf-{_reduction}",
               lambda gen: ((torch.tensor([[-INF, 0.0, -INF, -1.0, -2.0]]), torch.tensor([2])), ()),
               GF.nll_loss, F.nll_loss, **_index, weight=CLASS_WEIGHT)
    _loss_case(f"nll_loss-spatial-{_reduction}",
               lambda gen: ((randn(gen, 2, 5, 3).log_softmax(1),
                             torch.tensor([[0, IGNORE, 4], [2, 1, 3]])), ()),
               GF.nll_loss, F.nll_loss, **_index, weight=CLASS_WEIGHT)
    _loss_case(f"nll_loss-unbatched-{_reduction}",
               lambda gen: ((torch.tensor([-0.5, -INF, NAN]), torch.tensor(1)), ()),
               GF.nll_loss, F.nll_loss, **_index)
    _loss_case(f"nll_loss-empty(0,5)-{_reduction}",
               lambda gen: ((torch.empty(0, 5), torch.empty(0, dtype=torch.long)), ()),
               GF.nll_loss, F.nll_loss, **_index, weight=CLASS_WEIGHT)
    # probabilities exactly 0 and 1 (logs clamped to -100, gradients' denominator to 1e-12)
    for _tag, _opts in (("", {}), ("weight-", dict(weight=[0.5, 2.0, 0.0, 1.0, 3.0])),
                        ("weight_rows-", dict(weight=[[2.0], [0.0], [1.0]]))):
        _loss_case(f"binary_cross_entropy-{_tag}zero_one-{_reduction}",
                   lambda gen: ((torch.tensor([[0.0, 1.0, 0.0, 1.0, 0.5], [1e-30, 1.0 - 2 ** -24,
                                               0.5, 0.25, 1.0], [0.0, 1.0, 0.9, 0.1, 0.0]]),
                                 torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.5], [1.0, 0.0, 0.0, 1.0, 1.0],
                                               [0.5, 0.5, 1.0, 0.0, 0.0]])), ()),
                   GF.binary_cross_entropy, F.binary_cross_entropy, **_r, **_opts)
    # NaN, inf or values outside [0, 1]: torch refuses them, so must gpudnn
    _loss_case(f"binary_cross_entropy-x_specials-{_reduction}",
               lambda gen: ((specials(), torch.full((3, 5), 0.5)), ()),
               GF.binary_cross_entropy, F.binary_cross_entropy, **_r)
    _loss_case(f"binary_cross_entropy-t_specials-{_reduction}",
               lambda gen: ((torch.full((3, 5), 0.5), specials()), ()),
               GF.binary_cross_entropy, F.binary_cross_entropy, **_r)
    _loss_case(f"binary_cross_entropy-empty(3,0)-{_reduction}",
               lambda gen: ((torch.empty(3, 0), torch.empty(3, 0)), ()),
               GF.binary_cross_entropy, F.binary_cross_entropy, **_r)
    for _x_kind, _t_kind in (("specials", "probabilities"), ("probabilities", "specials")):
        for _tag, _opts in (("weight", dict(weight=[0.5, 2.0, 0.0, 1.0, 3.0])),
                            ("pos_weight", dict(pos_weight=[3.0, 0.0, 1.0, 0.5, 2.0])),
                            ("both", dict(weight=[[2.0], [0.0], [1.0]],
                                          pos_weight=[3.0, 0.0, 1.0, 0.5, 2.0]))):
            _loss_case(f"bce_with_logits-{_tag}-x_{_x_kind}-t_{_t_kind}-{_reduction}",
                       lambda gen, xk=_x_kind, tk=_t_kind: (
                           (specials() if xk == "specials" else randn(gen, 3, 5),
                            _bce_target(tk)), ()),
                       GF.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits,
                       **_r, **_opts)


# --- dropout -------------------------------------------------------------------------------------

SEED = 1234

def _dropout_ours(p):
    def ours(aux, x):
        torch.manual_seed(SEED)
        return GF.dropout(x, p)
    return ours


def _dropout_theirs(p):
    def theirs(aux, x):
        if p in (0.0, 1.0):
            return F.dropout(x, p)
        # torch's formula on our mask (the same seed; the mask of element i depends on i only)
        torch.manual_seed(SEED)
        keep = GF.dropout(torch.ones(x.numel(), dtype=x.dtype, device=x.device), p) != 0
        return x * (keep.reshape(x.shape).to(x.dtype) / (1.0 - p))
    return theirs


for _p in (0.0, 0.5, 1.0):
    for _shift in (0, 4):
        case(f"dropout-p{_p}-specials{_shift}", lambda gen, s=_shift: ((specials(shift=s),), ()),
             _dropout_ours(_p), _dropout_theirs(_p), signed_zeros=True)
    for _value in (NAN, -INF, 2.0):
        case(f"dropout-p{_p}-0d{_value}", lambda gen, v=_value: ((torch.tensor(v),), ()),
             _dropout_ours(_p), _dropout_theirs(_p), signed_zeros=True)
    case(f"dropout-p{_p}-empty(3,0)", lambda gen: ((torch.empty(3, 0),), ()), _dropout_ours(_p),
         _dropout_theirs(_p))


# --- pooling -------------------------------------------------------------------------------------

def _pool_input(kind: str, shape=(1, 2, 4, 4)) -> Callable:
    """"nan": NaN in a window (and in two windows of one channel); "neginf": a window of -inf
    only and -inf next to the padding; "inf": +inf, and +inf next to -inf; "-0": signed zeros."""
    def make(gen):
        x = randn(gen, *shape)
        if len(shape) == 3:  # unbatched
            x[1, 2, 1] = NAN
        elif kind == "nan":
            x[0, 0, 1, 1] = NAN
            x[0, 1, 0, 3] = NAN
            x[0, 1, 3, 0] = NAN
        elif kind == "neginf":
            x[0, 0, :2, :2] = -INF
            x[0, 1, 0, :] = -INF
            x[0, 1, :, 0] = -INF
        elif kind == "inf":
            x[0, 0, 1, 1] = INF
            x[0, 1, 2, 2] = INF
            x[0, 1, 2, 3] = -INF
        elif kind == "-0":
            x = poison(x, "-0", ())
        elif kind == "huge":
            x = x * HUGE
        return (x,), ()
    return make


POOLS = {
    "max_pool2d-k2": (lambda x: GF.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2)),
    "max_pool2d-k3s1p1": (lambda x: GF.max_pool2d(x, 3, 1, 1),
                          lambda x: F.max_pool2d(x, 3, 1, 1)),
    "avg_pool2d-k2": (lambda x: GF.avg_pool2d(x, 2), lambda x: F.avg_pool2d(x, 2)),
    "avg_pool2d-k3s1p1": (lambda x: GF.avg_pool2d(x, 3, 1, 1),
                          lambda x: F.avg_pool2d(x, 3, 1, 1)),
    "max_pool2d-k3s2p1-indices": (lambda x: GF.max_pool2d(x, 3, 2, 1, return_indices=True),
                                  lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)),
}
for _name, (_ours_fn, _torch_fn) in POOLS.items():
    for _kind in ("nan", "neginf", "inf", "-0", "huge"):
        case(f"{_name}-{_kind}", _pool_input(_kind), lambda aux, x, f=_ours_fn: f(x),
             lambda aux, x, f=_torch_fn: f(x), scale=KIND_SCALE.get(_kind, 1.0))
    for _shape in ((0, 2, 4, 4), (1, 0, 4, 4), (1, 2, 0, 4), (1, 2, 4, 0), (2, 4, 4)):
        case(f"{_name}-shape{_shape}", _pool_input("nan" if len(_shape) == 3 else "plain", _shape),
             lambda aux, x, f=_ours_fn: f(x), lambda aux, x, f=_torch_fn: f(x))


# adaptive average pooling: a global window and overlapping ones (4 -> 3); torch's own backward
# refuses zero channels for the latter (tests/test_pool_dropout_twins.py covers ours)
for _out in (1, 3):
    for _kind in ("nan", "neginf", "inf", "-0", "huge"):
        case(f"adaptive_avg_pool2d-o{_out}-{_kind}", _pool_input(_kind),
             lambda aux, x, o=_out: GF.adaptive_avg_pool2d(x, o),
             lambda aux, x, o=_out: F.adaptive_avg_pool2d(x, o), scale=KIND_SCALE.get(_kind, 1.0))
    for _shape in ((0, 2, 4, 4), (1, 2, 0, 4), (1, 2, 4, 0), (2, 4, 4)) + \
            (((1, 0, 4, 4),) if _out == 1 else ()):
        case(f"adaptive_avg_pool2d-o{_out}-shape{_shape}",
             _pool_input("nan" if len(_shape) == 3 else "plain", _shape),
             lambda aux, x, o=_out: GF.adaptive_avg_pool2d(x, o),
             lambda aux, x, o=_out: F.adaptive_avg_pool2d(x, o))


# --- embedding -----------------------------------------------------------------------------------

EMBEDDING_IDS = {"repeated": [[0, 4, 4], [2, 4, 1]], "0d": 3, "empty": [], "out-of-range": [1, 5],
                 "negative": [-1, 2]}
for _kind in ("specials", "plain"):
    for _ids_name, _ids in EMBEDDING_IDS.items():
        for _options in ({}, {"padding_idx": 4}, {"padding_idx": -1, "scale_grad_by_freq": True}):
            if _options and (_kind, _ids_name) != ("specials", "repeated"):
                continue
            case(f"embedding-{_kind}-{_ids_name}{''.join(f'-{k}{v}' for k, v in _options.items())}",
                 lambda gen, k=_kind, i=_ids: ((specials((5, 3)) if k == "specials"
                                                else randn(gen, 5, 3), torch.tensor(i)), ()),
                 lambda aux, w, i, o=_options: GF.embedding(i, w, **o),
                 lambda aux, w, i, o=_options: F.embedding(i, w, **o), signed_zeros=True)
case("embedding-int32-ids", lambda gen: ((specials((5, 3), 3),
                                          torch.tensor([4, 0, 4], dtype=torch.int32)), ()),
     lambda aux, w, i: GF.embedding(i, w), lambda aux, w, i: F.embedding(i, w), signed_zeros=True)


# --- channel-wise dropout: torch's formula on our mask, as for dropout -------------------------------

def _feature_dropout_ours(name, p):
    def ours(aux, x):
        torch.manual_seed(SEED)
        return getattr(GF, name)(x, p)
    return ours


def _feature_dropout_theirs(name, p):
    def theirs(aux, x):
        if p in (0.0, 1.0):
            return getattr(F, name)(x, p)
        torch.manual_seed(SEED)  # our mask: the same seed on ones (one draw per channel)
        keep = getattr(GF, name)(torch.ones_like(x), p) != 0
        return x * (keep.to(x.dtype) / (1.0 - p))
    return theirs


for _name, _shapes in (("dropout1d", ((3, 5), (1, 3, 5), (5, 3, 1), (0, 3, 2), (), (1, 3, 5, 1))),
                       ("dropout2d", ((1, 3, 5, 1), (3, 5, 1, 1), (0, 3, 2, 2), (3,)))):
    for _p in (0.0, 0.5, 1.0):
        for _shape in _shapes:
            case(f"{_name}-p{_p}-shape{_shape}",
                 lambda gen, s=_shape: ((specials(s) if s else torch.tensor(NAN),), ()),
                 _feature_dropout_ours(_name, _p), _feature_dropout_theirs(_name, _p),
                 signed_zeros=True)


# --- LSTM ----------------------------------------------------------------------------------------

def _lstm_make(kind, target, x_shape, hidden, where, layers=1, directions=1, gates=4,
               states=("h0", "c0")):
    """x (poisoned when target == "x"), h0, c0 (poisoned when "h0" / "c0") and the weights
    (``gates=3, states=("h0",)``: a GRU's x, h0 and weights)."""
    def make(gen):
        x = randn(gen, *x_shape)
        batch = x_shape[1] if len(x_shape) == 3 else x_shape[0]
        state = (layers * directions, batch, hidden) if len(x_shape) == 3 else (batch, hidden)
        args = {"x": x, **{name: randn(gen, *state) for name in states}}
        rows = gates * hidden
        weights = []
        for layer in range(layers):
            inp = x_shape[-1] if layer == 0 else hidden * directions
            for _ in range(directions):
                weights += [randn(gen, rows, inp, scale=0.4), randn(gen, rows, hidden, scale=0.3),
                            randn(gen, rows, scale=0.3), randn(gen, rows, scale=0.3)]
        args[target] = poison(args[target], kind, where)
        return (*args.values(), *weights), ()
    return make


def _lstm_case(id, kind, target="x", x_shape=(2, 3, 5), hidden=4, where=(0, 1, 2), layers=1,
               directions=1):
    def ours(aux, x, h0, c0, *w):
        return GF.lstm(x, (h0, c0), list(w), layers, True, False, 0.0, False, directions == 2)

    def theirs(aux, x, h0, c0, *w):
        y, h, c = torch.lstm(x, (h0, c0), list(w), True, layers, 0.0, False, directions == 2,
                             False)
        return y, (h, c)

    case(id, _lstm_make(kind, target, x_shape, hidden, where, layers, directions), ours, theirs,
         scale=KIND_SCALE.get(kind, 1.0))


def _lstm_cell_case(id, kind, target="x", x_shape=(3, 5), hidden=4, where=(1, 2)):
    def ours(aux, x, h, c, w_ih, w_hh, b_ih, b_hh):
        return GF.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)

    def theirs(aux, x, h, c, w_ih, w_hh, b_ih, b_hh):
        return torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)

    case(id, _lstm_make(kind, target, x_shape, hidden, where), ours, theirs,
         scale=KIND_SCALE.get(kind, 1.0))


for _kind in ("nan", "inf", "-inf", "-0", "huge"):
    _lstm_case(f"lstm-x_{_kind}", _kind)
    _lstm_cell_case(f"lstm_cell-x_{_kind}", _kind)
for _target in ("h0", "c0"):
    for _kind in ("nan", "inf"):
        _lstm_case(f"lstm-{_target}_{_kind}", _kind, _target, where=(0, 2, 1))
        _lstm_cell_case(f"lstm_cell-{_target}_{_kind}", _kind, _target, where=(2, 1))
_lstm_case("lstm-2layer-bidirectional-x_nan", "nan", layers=2, directions=2)
for _shape in ((2, 0, 5), (0, 3, 5), (2, 3, 0)):
    _lstm_case(f"lstm-empty{_shape}", "plain", x_shape=_shape)
for _shape in ((0, 5), (3, 0)):
    _lstm_cell_case(f"lstm_cell-empty{_shape}", "plain", x_shape=_shape)
_lstm_cell_case("lstm_cell-empty-hidden0", "plain", hidden=0)


# --- GRU -----------------------------------------------------------------------------------------

def _gru_case(id, kind, target="x", x_shape=(2, 3, 5), hidden=4, where=(0, 1, 2), layers=1,
              directions=1):
    def ours(aux, x, h0, *w):
        return GF.gru(x, h0, list(w), layers, True, False, 0.0, False, directions == 2)

    def theirs(aux, x, h0, *w):
        return torch.gru(x, h0, list(w), True, layers, 0.0, False, directions == 2, False)

    case(id, _lstm_make(kind, target, x_shape, hidden, where, layers, directions, 3, ("h0",)),
         ours, theirs, scale=KIND_SCALE.get(kind, 1.0))


def _gru_cell_case(id, kind, target="x", x_shape=(3, 5), hidden=4, where=(1, 2)):
    def ours(aux, x, h, w_ih, w_hh, b_ih, b_hh):
        return GF.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    def theirs(aux, x, h, w_ih, w_hh, b_ih, b_hh):
        return torch.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)

    case(id, _lstm_make(kind, target, x_shape, hidden, where, gates=3, states=("h0",)), ours,
         theirs, scale=KIND_SCALE.get(kind, 1.0))


for _kind in ("nan", "inf", "-inf", "-0", "huge"):
    _gru_case(f"gru-x_{_kind}", _kind)
    _gru_cell_case(f"gru_cell-x_{_kind}", _kind)
for _kind in ("nan", "inf"):
    _gru_case(f"gru-h0_{_kind}", _kind, "h0", where=(0, 2, 1))
    _gru_cell_case(f"gru_cell-h0_{_kind}", _kind, "h0", where=(2, 1))
_gru_case("gru-2layer-bidirectional-x_nan", "nan", layers=2, directions=2)
for _shape in ((2, 0, 5), (0, 3, 5), (2, 3, 0)):
    _gru_case(f"gru-empty{_shape}", "plain", x_shape=_shape)
for _shape in ((0, 5), (3, 0)):
    _gru_cell_case(f"gru_cell-empty{_shape}", "plain", x_shape=_shape)
_gru_cell_case("gru_cell-empty-hidden0", "plain", hidden=0)


# --- the test ------------------------------------------------------------------------------------

def _to_device(t):
    return t.to(DEVICE) if isinstance(t, torch.Tensor) else t


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: torch's intra-op thread pool only adds waits (long ones on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", _params())
def test_special_values(case: Case, backend: str):
    from gpudnn.backend import KERNELS
    op_kernels = KERNELS.get(case.id.split("-")[0])
    if op_kernels is not None and getattr(op_kernels, backend) is None:
        pytest.skip(f"the {backend} backend has no {op_kernels.name} kernels")
    gen = torch.Generator().manual_seed(zlib.crc32(case.id.encode()))
    inputs, aux = case.make(gen)
    inputs, aux = _map(inputs, _to_device), _map(aux, _to_device)
    aux_ours, aux_theirs = _map(aux, torch.clone), _map(aux, torch.clone)
    try:  # does torch take this input at all? (asked on the CPU: where torch's CUDA kernels
        # refuse an input, e.g. BCE outside [0, 1], they do it with a device-side assert, which
        # breaks the process's CUDA context for every later test)
        with ieee_float32():
            case.theirs(_map(aux, lambda t: t.cpu().clone()),
                        *_map(inputs, lambda t: t.cpu().clone()))
    except (RuntimeError, ValueError, IndexError):
        with gpudnn.use_backend(backend), pytest.raises(CLEAN_ERRORS):
            case.ours(aux_ours, *inputs)
        return
    with gpudnn.use_backend(backend), ieee_float32():
        compare_with_twin(lambda *a: case.ours(aux_ours, *a),
                          lambda *a: case.theirs(aux_theirs, *a), *inputs, dtype=F32,
                          scale=case.scale, grad_scale=case.scale,
                          signed_zeros=case.signed_zeros and DEVICE == "cpu")
    for k, (a, b) in enumerate(zip(aux_ours, aux_theirs)):
        # running statistics: torch's own are inf on the CPU (a sum) but NaN on CUDA (Welford)
        # for a channel holding +inf; non-finite is the answer, in the same places
        a, b = (t.masked_fill(~t.isfinite(), NAN) for t in (a, b))
        assert_close(a, b, F32, name=f"in-place state {k}", scale=case.scale)


def test_matrix_covers_every_public_op():
    """Every function of gpudnn.functional has cases here (a new op needs its special values)."""
    covered = {c.id.split("-")[0] for c in CASES}
    aliases = {"binary_cross_entropy_with_logits": "bce_with_logits", "mse_loss": "mse",
               "max_pool2d": "max_pool2d", "avg_pool2d": "avg_pool2d"}
    missing = [name for name in GF.__all__ if aliases.get(name, name) not in covered]
    assert not missing, f"no special-value cases for {missing}"
