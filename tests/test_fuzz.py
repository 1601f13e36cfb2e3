"""Randomized differential tests (issue 16): hypothesis draws shapes, memory layouts
(non-contiguous slices, transposes, channels_last, expanded zero-stride views), options and
activations for every op; gpudnn must give torch's outputs and input gradients. The reference runs
in float64 against torch's float64, Triton (the interpreter here, the GPU under `make test-gpu`)
in float32 against torch's float32 with TF32 off.

CI runs a few examples per op with a fixed seed (``derandomize``); ``make fuzz`` runs many with a
random one (GPUDNN_FUZZ_EXAMPLES, GPUDNN_FUZZ_RANDOM=1).
"""
from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpudnn
import gpudnn.functional as F
from gpudnn.activations import activation_module, parse_activation
from gpudnn.kernels.activations import NAMES
from gpudnn.testing import assert_close
from helpers import DEVICE, ieee_float32

EXAMPLES = int(os.environ.get("GPUDNN_FUZZ_EXAMPLES", "5"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("GPUDNN_FUZZ_RANDOM", "0") in ("", "0"),
                suppress_health_check=list(HealthCheck), print_blob=True)
BACKENDS = [pytest.param("reference", id="reference"), pytest.param("triton", id="triton")]
TF = torch.nn.functional
ACTIVATIONS = [None, *NAMES]
LAYOUTS = ("contiguous", "transposed", "sliced", "expanded", "channels_last")


# --- drawing inputs -------------------------------------------------------------------------------

class Leaf:
    """One differentiable input: its data, and how the op's argument is made from the leaf (a
    view with a drawn layout), so that ours and torch's see the same layout."""

    def __init__(self, shape, layout: str, gen: torch.Generator, scale: float = 1.0,
                 shift: float = 0.0):
        self.layout = layout
        if layout == "expanded" and len(shape) > 0 and shape[0] > 1:
            base = (1, *shape[1:])        # a zero-stride view along dim 0
        elif layout == "sliced" and len(shape) > 0:
            base = (*shape[:-1], 2 * shape[-1])  # every other element of the last dim
        elif layout == "transposed" and len(shape) >= 2:
            base = (*shape[:-2], shape[-1], shape[-2])
        else:
            base = tuple(shape)
        self.shape = tuple(shape)
        self.data = torch.randn(base, generator=gen, dtype=torch.float64) * scale + shift

    def view(self, leaf: torch.Tensor) -> torch.Tensor:
        if self.layout == "expanded" and leaf.shape != self.shape:
            return leaf.expand(self.shape)
        if self.layout == "sliced" and leaf.dim() > 0:
            return leaf[..., ::2]
        if self.layout == "transposed" and leaf.dim() >= 2:
            return leaf.transpose(-1, -2)
        if self.layout == "channels_last" and leaf.dim() == 4:
            return leaf.contiguous(memory_format=torch.channels_last)
        return leaf


def layouts(rank: int, expandable: bool = True):
    choices = ["contiguous", "transposed", "sliced"] if rank >= 1 else ["contiguous"]
    if expandable and rank >= 1:
        choices.append("expanded")
    if rank == 4:
        choices.append("channels_last")
    return st.sampled_from(choices)


def differential(backend: str, ours, theirs, leaves: list[Leaf], extra: tuple = (),
                 scale: float = 1.0, grad_scale: float = 1.0) -> None:
    """ours(*views, *extra) on ``backend`` against theirs(*views, *extra) (torch): every output
    and the gradient of every leaf, for the same random cotangents."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    device = DEVICE if backend != "reference" else "cpu"

    def leaves_on():
        return [leaf.data.to(device, dtype).requires_grad_(True) for leaf in leaves]

    def call(fn, tensors):
        views = [leaf.view(t) for leaf, t in zip(leaves, tensors)]
        out = fn(*views, *extra)
        return [out] if isinstance(out, torch.Tensor) else [o for o in out if
                                                           isinstance(o, torch.Tensor)]

    a_in, b_in = leaves_on(), leaves_on()
    with gpudnn.use_backend(backend), ieee_float32():
        a_out = call(ours, a_in)
        b_out = call(theirs, b_in)
        assert len(a_out) == len(b_out)
        for k, (a, b) in enumerate(zip(a_out, b_out)):
            assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype)
            assert_close(a, b, dtype, name=f"output {k}", scale=scale)
        pairs = [(a, b) for a, b in zip(a_out, b_out) if b.requires_grad and b.numel()]
        if not pairs:
            return
        gen = torch.Generator().manual_seed(0)
        cot = [torch.randn(b.shape, generator=gen, dtype=torch.float64).to(device, dtype)
               for _, b in pairs]
        torch.autograd.backward([a for a, _ in pairs], cot)
        torch.autograd.backward([b for _, b in pairs], cot)
    for k, (a, b) in enumerate(zip(a_in, b_in)):
        assert (a.grad is None) == (b.grad is None), f"leaf {k}: gradient presence"
        if b.grad is not None:
            assert_close(a.grad, b.grad, dtype, name=f"leaf {k} grad", scale=grad_scale)


def torch_activation(act):
    module = activation_module(parse_activation(act))
    return module


def _gen(data) -> torch.Generator:
    return torch.Generator().manual_seed(data.draw(st.integers(0, 2 ** 31 - 1), label="seed"))


# --- the ops ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_linear(backend, data):
    m, k, n = (data.draw(st.integers(lo, 6), label=name)
               for lo, name in ((0, "M"), (1, "K"), (1, "N")))
    lead = data.draw(st.sampled_from([(), (2,)]), label="leading dims")
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    bias = data.draw(st.booleans(), label="bias")
    gen = _gen(data)
    leaves = [Leaf((*lead, m, k), data.draw(layouts(len(lead) + 2)), gen),
              Leaf((n, k), data.draw(layouts(2, expandable=False)), gen)]
    if bias:
        leaves.append(Leaf((n,), "contiguous", gen))
    module = torch_activation(act)
    differential(backend, lambda x, w, *b: F.linear(x, w, *b, activation=act),
                 lambda x, w, *b: module(TF.linear(x, w, *b)), leaves,
                 grad_scale=math.sqrt(max(m, k, n, 1)))


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_conv2d(backend, data):
    groups = data.draw(st.sampled_from([1, 2]), label="groups")
    cin = groups * data.draw(st.integers(1, 2), label="Cin/groups")
    cout = groups * data.draw(st.integers(1, 2), label="Cout/groups")
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    stride = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    h, w = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")
    assume(all((size + 2 * p - d * (k - 1) - 1) // s + 1 >= 1 for size, p, d, k, s in
               ((h, padding[0], dilation[0], kh, stride[0]),
                (w, padding[1], dilation[1], kw, stride[1]))))
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    gen = _gen(data)
    batch = data.draw(st.integers(1, 2), label="N")
    leaves = [Leaf((batch, cin, h, w), data.draw(layouts(4)), gen),
              Leaf((cout, cin // groups, kh, kw), data.draw(layouts(4, expandable=False)), gen),
              Leaf((cout,), "contiguous", gen)]
    module = torch_activation(act)
    args = (stride, padding, dilation, groups)
    differential(backend, lambda x, wt, b: F.conv2d(x, wt, b, *args, activation=act),
                 lambda x, wt, b: module(TF.conv2d(x, wt, b, *args)), leaves, grad_scale=4.0)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_conv_transpose2d(backend, data):
    groups = data.draw(st.sampled_from([1, 2]), label="groups")
    cin = groups * data.draw(st.integers(1, 2))
    cout = groups * data.draw(st.integers(1, 2))
    kernel = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    stride = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = (data.draw(st.integers(0, 1)), data.draw(st.integers(0, 1)))
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1))
                           for s, d in zip(stride, dilation))
    h, w = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    assume(all((size - 1) * s - 2 * p + d * (k - 1) + op + 1 >= 1 for size, s, p, d, k, op in
               zip((h, w), stride, padding, dilation, kernel, output_padding)))
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    gen = _gen(data)
    leaves = [Leaf((2, cin, h, w), data.draw(layouts(4)), gen),
              Leaf((cin, cout // groups, *kernel), "contiguous", gen),
              Leaf((cout,), "contiguous", gen)]
    module = torch_activation(act)
    args = (stride, padding, output_padding, groups, dilation)
    differential(backend, lambda x, wt, b: F.conv_transpose2d(x, wt, b, *args, activation=act),
                 lambda x, wt, b: module(TF.conv_transpose2d(x, wt, b, *args)), leaves,
                 grad_scale=4.0)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_batch_norm(backend, data):
    rank = data.draw(st.sampled_from([2, 3, 4]), label="rank")
    shape = [data.draw(st.integers(1, 4), label=f"dim {d}") for d in range(rank)]
    training = data.draw(st.booleans(), label="training")
    assume(not training or math.prod(shape) // shape[1] > 1)
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    momentum = data.draw(st.sampled_from([0.1, 0.5, 1.0]), label="momentum")
    gen = _gen(data)
    channels = shape[1]
    leaves = [Leaf(shape, data.draw(layouts(rank)), gen, scale=2.0, shift=0.5),
              Leaf((channels,), "contiguous", gen, shift=1.0),
              Leaf((channels,), "contiguous", gen)]
    stats = torch.rand(2, channels, generator=gen, dtype=torch.float64) + 0.5
    module = torch_activation(act)
    runs = {}

    def call(fn, name):
        def run(x, wt, b):
            mean = stats[0].to(x.device, x.dtype).clone()
            var = stats[1].to(x.device, x.dtype).clone()
            runs[name] = (mean, var)
            return fn(x, mean, var, wt, b)
        return run

    differential(
        backend,
        call(lambda x, m, v, wt, b: F.batch_norm(x, m, v, wt, b, training, momentum,
                                                 activation=act), "ours"),
        call(lambda x, m, v, wt, b: module(TF.batch_norm(x, m, v, wt, b, training, momentum)),
             "torch"), leaves, grad_scale=4.0)
    dtype = torch.float64 if backend == "reference" else torch.float32
    for a, b in zip(runs["ours"], runs["torch"]):
        assert_close(a, b, dtype, name="running statistics")


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_softmax(backend, data):
    rank = data.draw(st.integers(1, 3), label="rank")
    shape = [data.draw(st.integers(0 if d else 1, 5), label=f"dim {d}") for d in range(rank)]
    dim = data.draw(st.integers(-rank, rank - 1), label="dim")
    log = data.draw(st.booleans(), label="log")
    gen = _gen(data)
    leaves = [Leaf(shape, data.draw(layouts(rank)), gen, scale=3.0)]
    ours, theirs = (F.log_softmax, TF.log_softmax) if log else (F.softmax, TF.softmax)
    differential(backend, lambda x: ours(x, dim), lambda x: theirs(x, dim), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_cross_entropy(backend, data):
    n, c = data.draw(st.integers(1, 6), label="N"), data.draw(st.integers(1, 5), label="C")
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    gen = _gen(data)
    target = torch.randint(0, c, (n,), generator=gen)
    ignored = data.draw(st.lists(st.integers(0, n - 1), max_size=2), label="ignored rows")
    target[ignored] = -100
    target = target.to(DEVICE if backend != "reference" else "cpu")
    leaves = [Leaf((n, c), data.draw(layouts(2)), gen, scale=3.0)]
    differential(backend, lambda x: F.cross_entropy(x, target, reduction=reduction),
                 lambda x: TF.cross_entropy(x, target, reduction=reduction), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_pointwise_losses(backend, data):
    rank = data.draw(st.integers(1, 3), label="rank")
    shape = [data.draw(st.integers(0, 4), label=f"dim {d}") for d in range(rank)]
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    bce = data.draw(st.booleans(), label="bce (else mse)")
    assume(math.prod(shape) > 0 or reduction != "mean")  # torch: NaN for an empty mean
    gen = _gen(data)
    leaves = [Leaf(shape, data.draw(layouts(rank)), gen, scale=3.0),
              Leaf(shape, data.draw(layouts(rank)), gen)]
    if bce:
        ours, theirs = F.binary_cross_entropy_with_logits, TF.binary_cross_entropy_with_logits
    else:
        ours, theirs = F.mse_loss, TF.mse_loss
    differential(backend, lambda x, t: ours(x, t, reduction=reduction),
                 lambda x, t: theirs(x, t, reduction=reduction), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_pooling(backend, data):
    kernel = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    stride = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    padding = tuple(data.draw(st.integers(0, k // 2)) for k in kernel)
    ceil_mode = data.draw(st.booleans(), label="ceil_mode")
    is_max = data.draw(st.booleans(), label="max (else avg)")
    h, w = data.draw(st.integers(1, 7)), data.draw(st.integers(1, 7))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))) if is_max else (1, 1)
    assume(all((size + 2 * p - d * (k - 1) - 1) // s + 1 >= 1 for size, p, d, k, s in
               zip((h, w), padding, dilation, kernel, stride)))
    gen = _gen(data)
    leaves = [Leaf((2, 3, h, w), data.draw(layouts(4)), gen)]
    if is_max:
        args = (kernel, stride, padding, dilation, ceil_mode)
        ours, theirs = F.max_pool2d, TF.max_pool2d
    else:
        count_include_pad = data.draw(st.booleans(), label="count_include_pad")
        divisor = data.draw(st.sampled_from([None, 3]), label="divisor_override")
        args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor)
        ours, theirs = F.avg_pool2d, TF.avg_pool2d
    differential(backend, lambda x: ours(x, *args), lambda x: theirs(x, *args), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_activations(backend, data):
    rank = data.draw(st.integers(0, 4), label="rank")
    shape = [data.draw(st.integers(0, 4), label=f"dim {d}") for d in range(rank)]
    act = data.draw(st.sampled_from(NAMES), label="activation")
    gen = _gen(data)
    leaves = [Leaf(shape, data.draw(layouts(rank)), gen, scale=3.0)]
    parsed = parse_activation(act)
    ours = {"relu": F.relu, "sigmoid": F.sigmoid, "tanh": F.tanh, "silu": F.silu,
            "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
            "leaky_relu": lambda x: F.leaky_relu(x, parsed.param)}[act]
    differential(backend, ours, torch_activation(act), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_dropout(backend, data):
    """p = 0 and 1 are torch's exactly; 0 < p < 1: y = x * mask / (1 - p) with a mask of 0/1,
    the gradient through the same mask (regenerated from the seed, never stored)."""
    rank = data.draw(st.integers(0, 3), label="rank")
    shape = [data.draw(st.integers(0, 5), label=f"dim {d}") for d in range(rank)]
    p = data.draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), label="p")
    gen = _gen(data)
    leaf = Leaf(shape, data.draw(layouts(rank)), gen)
    if p in (0.0, 1.0):
        differential(backend, lambda x: F.dropout(x, p), lambda x: TF.dropout(x, p), [leaf])
        return
    dtype = torch.float64 if backend == "reference" else torch.float32
    device = DEVICE if backend != "reference" else "cpu"
    x = leaf.data.to(device, dtype).requires_grad_(True)
    with gpudnn.use_backend(backend):
        y = F.dropout(leaf.view(x), p)
        grad = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device, dtype)
        y.backward(grad)
    # randn data has no zeros: y == 0 exactly where an element was dropped
    mask = (y.detach() != 0).to(dtype) * torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    assert_close(y, leaf.view(x.detach()) * mask, dtype, name="kept values")
    expected = x.detach().clone().requires_grad_(True)
    (leaf.view(expected) * mask).backward(grad)
    assert_close(x.grad, expected.grad, dtype, name="gradient through the same mask")


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_lstm(backend, data):
    steps, batch = data.draw(st.integers(1, 4), label="T"), data.draw(st.integers(1, 3))
    inp, hidden = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    layers = data.draw(st.integers(1, 2), label="layers")
    bidirectional = data.draw(st.booleans(), label="bidirectional")
    batch_first = data.draw(st.booleans(), label="batch_first")
    bias = data.draw(st.booleans(), label="bias")
    seed = data.draw(st.integers(0, 1000), label="seed")
    torch.manual_seed(seed)
    theirs = torch.nn.LSTM(inp, hidden, layers, bias, batch_first,
                           bidirectional=bidirectional).double()
    ours = gnn_lstm = gpudnn.nn.LSTM(inp, hidden, layers, bias, batch_first,
                                     bidirectional=bidirectional).double()
    gnn_lstm.load_state_dict(theirs.state_dict())
    dtype = torch.float64 if backend == "reference" else torch.float32
    device = DEVICE if backend != "reference" else "cpu"
    ours.to(device, dtype), theirs.to(device, dtype)
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, steps, inp) if batch_first else (steps, batch, inp)
    leaves = [Leaf(shape, data.draw(layouts(3)), gen)]
    differential(backend, lambda x: ours(x)[0], lambda x: theirs(x)[0], leaves, grad_scale=4.0)
