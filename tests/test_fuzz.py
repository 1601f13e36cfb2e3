"""Randomized differential tests (issue 16): hypothesis draws shapes (empty dims where torch
accepts them), memory layouts (non-contiguous slices, transposes, channels_last, expanded
zero-stride views), options and activations for every op; gpudnn must give torch's outputs and
input gradients. The reference runs in float64 against torch's float64, Triton (the interpreter
here, the GPU under `make test-gpu`) in float32 against torch's float32 with TF32 off. Dropout's
masks are random: the kept values, one draw per element or per (sample, channel), and the
gradient through the same mask are checked instead. The quantized ops (inference only) are
compared, forward only, with torch's linear / conv2d on the dequantized weight.

CI runs a few examples per op with a fixed seed (``derandomize``); ``make fuzz`` runs many with a
random one (GPUDNN_FUZZ_EXAMPLES, GPUDNN_FUZZ_RANDOM=1).
"""
from __future__ import annotations

import math
import os
import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gpudnn
import gpudnn.functional as F
from gpudnn.activations import activation_module, parse_activation
from gpudnn.kernels.activations import NAMES
from gpudnn.ops._shapes import pool_output_size
from gpudnn.quantization import dequantize_weight, quantize_weight
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
                 shift: float = 0.0, uniform: bool = False):
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
        draw = torch.rand if uniform else torch.randn
        self.data = draw(base, generator=gen, dtype=torch.float64) * scale + shift

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


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """t's values in a drawn memory layout, for the tensors that are no leaves (class targets,
    ids, constant weights); "expanded" repeats t's first row (a zero-stride view)."""
    if layout == "expanded" and t.dim() > 0 and t.shape[0] > 1:
        return t[:1].expand(t.shape)
    if layout == "transposed" and t.dim() >= 2:
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced" and t.dim() >= 1:
        base = torch.zeros((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype, device=t.device)
        base[..., ::2] = t
        return base[..., ::2]
    if layout == "channels_last" and t.dim() == 4:
        return t.contiguous(memory_format=torch.channels_last)
    return t


def on_backend(backend: str) -> tuple[torch.dtype, str]:
    """(dtype, device) a backend is fuzzed in: the reference in float64 on the CPU, Triton in
    float32 on DEVICE."""
    if backend == "reference":
        return torch.float64, "cpu"
    return torch.float32, DEVICE


def differential(backend: str, ours, theirs, leaves: list[Leaf], extra: tuple = (),
                 scale: float = 1.0, grad_scale: float = 1.0, backward: bool = True,
                 oracle_float64: bool = False) -> None:
    """ours(*views, *extra) on ``backend`` against theirs(*views, *extra) (torch): every output
    and (unless not ``backward``) the gradient of every leaf, for the same random cotangents.
    ``oracle_float64``: torch runs in float64 (where its float32 kernels lose more than the
    tolerance, e.g. the variance of a group of nearly equal values)."""
    dtype, device = on_backend(backend)
    oracle_dtype = torch.float64 if oracle_float64 else dtype

    def leaves_on(as_dtype=dtype):
        return [leaf.data.to(device, as_dtype).requires_grad_(backward) for leaf in leaves]

    def call(fn, tensors, contiguous: bool = False):
        views = [leaf.view(t) for leaf, t in zip(leaves, tensors)]
        if contiguous:
            views = [v.contiguous() for v in views]
        out = fn(*views, *extra)
        return [out] if isinstance(out, torch.Tensor) else [o for o in out if
                                                           isinstance(o, torch.Tensor)]

    a_in, b_in = leaves_on(), leaves_on(oracle_dtype)
    with gpudnn.use_backend(backend), ieee_float32():
        try:
            b_out = call(theirs, b_in)
        except (ValueError, RuntimeError, TypeError, IndexError) as refused:
            # where torch refuses the drawn input, gpudnn must refuse it with the same error
            with pytest.raises(type(refused)):
                call(ours, a_in)
            return
        a_out = call(ours, a_in)
        assert len(a_out) == len(b_out)
        for k, (a, b) in enumerate(zip(a_out, b_out)):
            assert a.shape == b.shape and (a.dtype == b.dtype or (
                b.dtype == oracle_dtype and a.dtype == dtype)), (k, a.shape, b.shape, a.dtype)
            assert_close(a, b, dtype if b.is_floating_point() else b.dtype,
                         name=f"output {k}", scale=scale)
        pairs = [(a, b) for a, b in zip(a_out, b_out) if b.requires_grad and b.numel()]
        if not pairs:
            return
        gen = torch.Generator().manual_seed(0)
        cot = [torch.randn(b.shape, generator=gen, dtype=torch.float64).to(device, dtype)
               for _, b in pairs]
        torch.autograd.backward([a for a, _ in pairs], cot)
        cot = [c.to(b.dtype) for c, (_, b) in zip(cot, pairs)]
        try:
            torch.autograd.backward([b for _, b in pairs], cot)
        except RuntimeError:
            # torch's CPU backward refuses some layouts its forward takes (nll_loss2d's "grad_input
            # must be contiguous"): then the oracle is torch on contiguous copies of the views
            b_in = leaves_on(oracle_dtype)
            b_out = call(theirs, b_in, contiguous=True)
            torch.autograd.backward([b for b in b_out if b.requires_grad and b.numel()], cot)
    for k, (a, b) in enumerate(zip(a_in, b_in)):
        assert (a.grad is None) == (b.grad is None), f"leaf {k}: gradient presence"
        if b.grad is not None:
            assert_close(a.grad, b.grad, dtype, name=f"leaf {k} grad", scale=grad_scale)


def torch_safe_input(x: torch.Tensor, groups: int) -> torch.Tensor:
    """x for torch's CPU convolutions: a grouped one on a channels_last input segfaults in
    torch 2.13 for some geometries (x [1, 4, 5, 1] channels_last, weight [2, 2, 1, 1], stride
    (1, 2), padding (0, 1), dilation (2, 2), groups 2), so torch gets those in NCHW (the values
    are the same; the gradient flows back through the copy)."""
    if groups > 1 and x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous() \
            and x.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous()
    return x


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
        leaves.append(Leaf((n,), data.draw(layouts(1)), gen))
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
              Leaf((cout,), data.draw(layouts(1)), gen)]
    module = torch_activation(act)
    args = (stride, padding, dilation, groups)
    differential(backend, lambda x, wt, b: F.conv2d(x, wt, b, *args, activation=act),
                 lambda x, wt, b: module(TF.conv2d(torch_safe_input(x, groups), wt, b, *args)),
                 leaves, grad_scale=4.0)


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
              Leaf((cin, cout // groups, *kernel), data.draw(layouts(4, expandable=False)),
                   gen),
              Leaf((cout,), data.draw(layouts(1)), gen)]
    module = torch_activation(act)
    args = (stride, padding, output_padding, groups, dilation)
    differential(backend, lambda x, wt, b: F.conv_transpose2d(x, wt, b, *args, activation=act),
                 lambda x, wt, b: module(TF.conv_transpose2d(torch_safe_input(x, groups), wt, b,
                                                             *args)),
                 leaves, grad_scale=4.0)


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
              Leaf((channels,), data.draw(layouts(1)), gen, shift=1.0),
              Leaf((channels,), data.draw(layouts(1)), gen)]
    stats = torch.rand(2, channels, generator=gen, dtype=torch.float64) + 0.5
    # running statistics are updated in place: any layout but a zero-stride one
    stats_layout = data.draw(layouts(1, expandable=False), label="running statistics layout")
    module = torch_activation(act)
    runs = {}

    def call(fn, name):
        def run(x, wt, b):
            # torch gets contiguous per-channel vectors (their gradients still reach the strided
            # leaves): its CPU eval-mode backward reads a strided weight or strided running
            # statistics wrongly (input gradients off by 25%, or 1e-12 / 358 for w * invstd)
            mean, var = (laid_out(s.to(x.device, x.dtype, copy=True),
                                  stats_layout if name == "ours" else "contiguous")
                         for s in stats)
            if name == "torch":
                wt, b = wt.contiguous(), b.contiguous()
            runs[name] = (mean, var)
            return fn(x, mean, var, wt, b)
        return run

    differential(
        backend,
        call(lambda x, m, v, wt, b: F.batch_norm(x, m, v, wt, b, training, momentum,
                                                 activation=act), "ours"),
        call(lambda x, m, v, wt, b: module(TF.batch_norm(x, m, v, wt, b, training, momentum)),
             "torch"), leaves, oracle_float64=True,
        scale=(scale := constant_group_scale(leaves[0].view(leaves[0].data).transpose(0, 1),
                                             math.prod(shape) // channels, 1e-5)
               if training else 1.0),
        grad_scale=4.0 * scale)
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


def class_input_shape(data) -> list[int]:
    """An input of the class-indexed losses: [C] (unbatched), [N, C] or [N, C, d1, ...]."""
    c = data.draw(st.integers(1, 5), label="C")
    kind = data.draw(st.sampled_from(["unbatched", "rows", "spatial"]), label="input kind")
    if kind == "unbatched":
        return [c]
    n = data.draw(st.integers(0, 5), label="N")
    if kind == "rows":
        return [n, c]
    return [n, c, *data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=2),
                             label="spatial dims")]


def class_targets(data, gen, shape: list[int], device) -> tuple[torch.Tensor, int]:
    """(class indices for an input of ``shape``, a drawn fraction of them ignore_index, in a
    drawn layout; ignore_index: torch's default, a class or out of range)."""
    c = shape[0] if len(shape) == 1 else shape[1]
    ignore_index = data.draw(st.sampled_from([-100, 0, c - 1, c + 2]), label="ignore_index")
    target_shape = [] if len(shape) == 1 else [shape[0], *shape[2:]]
    target = torch.randint(0, c, target_shape, generator=gen)
    fraction = data.draw(st.sampled_from([0.0, 0.3, 1.0]), label="ignored fraction")
    target[torch.rand(target_shape, generator=gen) < fraction] = ignore_index
    layout = data.draw(layouts(len(target_shape), expandable=False), label="target layout")
    return laid_out(target.to(device), layout), ignore_index


def class_weight(data, gen, classes: int, dtype, device) -> torch.Tensor | None:
    """None, positive class weights, or weights with some zeros (a zero total weight: NaN)."""
    kind = data.draw(st.sampled_from([None, "positive", "some zero"]), label="class weight")
    if kind is None:
        return None
    weight = torch.rand(classes, generator=gen, dtype=torch.float64) + 0.1
    if kind == "some zero":
        weight[torch.rand(classes, generator=gen) < 0.4] = 0.0
    return laid_out(weight.to(device, dtype), data.draw(layouts(1), label="class weight layout"))


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_cross_entropy(backend, data):
    """Class indices (ignore_index) or class probabilities (differentiable), class weights,
    label smoothing."""
    shape = class_input_shape(data)
    probabilities = data.draw(st.booleans(), label="probability targets")
    smoothing = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]), label="label_smoothing")
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    dtype, device = on_backend(backend)
    gen = _gen(data)
    kw = dict(weight=class_weight(data, gen, shape[min(1, len(shape) - 1)], dtype, device),
              reduction=reduction, label_smoothing=smoothing)
    leaves = [Leaf(shape, data.draw(layouts(len(shape))), gen, scale=3.0)]
    if probabilities:
        leaves.append(Leaf(shape, data.draw(layouts(len(shape))), gen, uniform=True))
        differential(backend, lambda x, t: F.cross_entropy(x, t, **kw),
                     lambda x, t: TF.cross_entropy(x, t, **kw), leaves)
        return
    target, kw["ignore_index"] = class_targets(data, gen, shape, device)
    differential(backend, lambda x: F.cross_entropy(x, target, **kw),
                 lambda x: TF.cross_entropy(x, target, **kw), leaves)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_nll_loss(backend, data):
    shape = class_input_shape(data)
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    dtype, device = on_backend(backend)
    gen = _gen(data)
    target, ignore_index = class_targets(data, gen, shape, device)
    kw = dict(weight=class_weight(data, gen, shape[min(1, len(shape) - 1)], dtype, device),
              ignore_index=ignore_index, reduction=reduction)
    leaves = [Leaf(shape, data.draw(layouts(len(shape))), gen, scale=2.0)]
    differential(backend, lambda x: F.nll_loss(x, target, **kw),
                 lambda x: TF.nll_loss(x, target, **kw), leaves)


def broadcast_shape(data, shape: list[int], label: str) -> list[int]:
    """A shape that broadcasts to ``shape``: some of its trailing dims, some of them 1."""
    keep = data.draw(st.integers(0, len(shape)), label=f"{label} rank")
    return [data.draw(st.sampled_from([d, 1]), label=f"{label} dim {k}")
            for k, d in enumerate(shape[len(shape) - keep:])]


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_pointwise_losses(backend, data):
    """binary_cross_entropy_with_logits (weight, pos_weight), binary_cross_entropy on
    probabilities (weight) and mse_loss; gradients for input and target."""
    rank = data.draw(st.integers(1, 3), label="rank")
    shape = [data.draw(st.integers(0, 4), label=f"dim {d}") for d in range(rank)]
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    kind = data.draw(st.sampled_from(["bce_with_logits", "bce", "mse"]), label="loss")
    assume(math.prod(shape) > 0 or reduction != "mean")  # torch: NaN for an empty mean
    dtype, device = on_backend(backend)
    gen = _gen(data)
    kw = {"reduction": reduction}
    for name in {"bce_with_logits": ("weight", "pos_weight"), "bce": ("weight",)}.get(kind, ()):
        if data.draw(st.booleans(), label=name):
            w_shape = broadcast_shape(data, shape, name)
            w = 2 * torch.rand(w_shape, generator=gen, dtype=torch.float64)
            kw[name] = laid_out(w.to(device, dtype),
                                data.draw(layouts(len(w_shape), expandable=False)))
    if kind == "bce":  # probabilities inside (0, 1), as torch requires
        leaves = [Leaf(shape, data.draw(layouts(rank)), gen, scale=0.96, shift=0.02,
                       uniform=True),
                  Leaf(shape, data.draw(layouts(rank)), gen, uniform=True)]
    else:
        leaves = [Leaf(shape, data.draw(layouts(rank)), gen, scale=3.0),
                  Leaf(shape, data.draw(layouts(rank)), gen)]
    ours, theirs = {"bce_with_logits": (F.binary_cross_entropy_with_logits,
                                        TF.binary_cross_entropy_with_logits),
                    "bce": (F.binary_cross_entropy, TF.binary_cross_entropy),
                    "mse": (F.mse_loss, TF.mse_loss)}[kind]
    differential(backend, lambda x, t: ours(x, t, **kw), lambda x, t: theirs(x, t, **kw), leaves)


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
    # a max window that a dilation makes step over the whole input: torch's CPU backward writes
    # past the image (heap corruption); tests/test_pool_dropout_twins.py checks those windows
    assume(not is_max or all(
        any(0 <= o * s - p + t * d < size for t in range(k))
        for size, p, d, k, s in zip((h, w), padding, dilation, kernel, stride)
        for o in range(pool_output_size(size, k, s, p, d, ceil_mode))))
    lead = data.draw(st.sampled_from([(2, 3), (3,), (0, 2)]), label="N, C")
    gen = _gen(data)
    leaves = [Leaf((*lead, h, w), data.draw(layouts(len(lead) + 2)), gen)]
    if is_max:
        return_indices = data.draw(st.booleans(), label="return_indices")
        args = (kernel, stride, padding, dilation, ceil_mode, return_indices)
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
def test_adaptive_avg_pool2d(backend, data):
    """[N, C, H, W] or [C, H, W] to any output size (larger than the input, 0, None: the input
    size); an output of 1 x 1: torch's mean over the last two dims of any input of >= 2 dims,
    empty ones included (NaN)."""
    if data.draw(st.booleans(), label="1 x 1 output"):
        rank = data.draw(st.integers(2, 5), label="rank")
        shape = [data.draw(st.integers(0, 4), label=f"dim {d}") for d in range(rank)]
        output_size = data.draw(st.sampled_from([1, (1, 1)]), label="output_size")
    else:
        lead = data.draw(st.sampled_from([(2, 3), (3,), (0, 2), (2, 0)]), label="N, C")
        h, w = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")
        shape = [*lead, h, w]
        sizes = [data.draw(st.one_of(st.none(), st.integers(0, n + 2)), label=f"output {a}")
                 for a, n in enumerate((h, w))]
        output_size = sizes[0] if data.draw(st.booleans(), label="int output_size") and \
            sizes[0] is not None else tuple(sizes)
    gen = _gen(data)
    leaves = [Leaf(shape, data.draw(layouts(len(shape))), gen)]
    differential(backend, lambda x: F.adaptive_avg_pool2d(x, output_size),
                 lambda x: TF.adaptive_avg_pool2d(x, output_size), leaves)


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
    check_dropout(backend, F.dropout, TF.dropout, Leaf(shape, data.draw(layouts(rank)), gen), p,
                  gen, rank)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_feature_dropout(backend, data):
    """dropout1d ([N, C, L] or [C, L]) and dropout2d ([N, C, H, W], or [N, C, L] with torch's
    warning): as test_dropout, with one draw per (sample, channel)."""
    name = data.draw(st.sampled_from(["dropout1d", "dropout2d"]), label="op")
    rank = data.draw(st.sampled_from([2, 3] if name == "dropout1d" else [3, 4]), label="rank")
    shape = [data.draw(st.integers(0, 4), label=f"dim {d}") for d in range(rank)]
    p = data.draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), label="p")
    gen = _gen(data)
    # the dims of one draw: (C,) of a [C, L] input, else (N, C)
    features = rank - 1 if name == "dropout1d" else 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout2d of a 3-D input warns (torch's and ours)
        check_dropout(backend, getattr(F, name), getattr(TF, name),
                      Leaf(shape, data.draw(layouts(rank)), gen), p, gen, features)


def check_dropout(backend: str, ours, theirs, leaf: Leaf, p: float, gen: torch.Generator,
                  features: int) -> None:
    """ours(x, p) against torch: exactly torch's for p = 0 and 1; else every element of x kept
    and scaled by 1 / (1 - p) or zeroed, all or none of those sharing their first ``features``
    indices, and the gradient through the same mask."""
    if p in (0.0, 1.0):
        differential(backend, lambda x: ours(x, p), lambda x: theirs(x, p), [leaf])
        return
    dtype, device = on_backend(backend)
    x = leaf.data.to(device, dtype).requires_grad_(True)
    with gpudnn.use_backend(backend):
        y = ours(leaf.view(x), p)
        grad = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(device, dtype)
        y.backward(grad)
    # randn data has no zeros: y == 0 exactly where an element was dropped
    dropped = (y.detach() == 0).unsqueeze(-1).flatten(features)
    assert bool((dropped.all(-1) | ~dropped.any(-1)).all()), "one draw per feature"
    mask = (~dropped).reshape(y.shape).to(dtype) * torch.tensor(1.0 / (1.0 - p),
                                                                 dtype=torch.float32)
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


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_gru(backend, data):
    """torch.gru with every weight a leaf in a drawn layout: layers, directions, batch_first,
    biases, an unbatched input, a given or absent hx; both outputs."""
    steps, batch = data.draw(st.integers(1, 4), label="T"), data.draw(st.integers(0, 3), label="B")
    inp, hidden = data.draw(st.integers(1, 4), label="I"), data.draw(st.integers(1, 4), label="H")
    layers = data.draw(st.integers(1, 2), label="layers")
    directions = 2 if data.draw(st.booleans(), label="bidirectional") else 1
    batch_first = data.draw(st.booleans(), label="batch_first")
    bias = data.draw(st.booleans(), label="bias")
    unbatched = data.draw(st.booleans(), label="unbatched")
    given_hx = data.draw(st.booleans(), label="hx given")
    gen = _gen(data)
    batch_dim = 0 if batch_first else 1
    x_shape = [steps, inp]
    h_shape = [layers * directions, hidden]
    if not unbatched:
        x_shape.insert(batch_dim, batch)
        h_shape.insert(1, batch)
    leaves = [Leaf(x_shape, data.draw(layouts(len(x_shape))), gen)]
    if given_hx:
        leaves.append(Leaf(h_shape, data.draw(layouts(len(h_shape))), gen))
    for layer in range(layers):
        width = inp if layer == 0 else hidden * directions
        for _ in range(directions):
            leaves += recurrent_weights(data, gen, 3, width, hidden, bias)
    flags = (layers, bias, batch_first, 0.0, True, directions == 2)

    def ours(x, *rest):
        hx, weights = (rest[0], rest[1:]) if given_hx else (None, rest)
        return F.gru(x, hx, list(weights), *flags)

    def theirs(x, *rest):
        hx, weights = (rest[0], rest[1:]) if given_hx else (x.new_zeros(h_shape), rest)
        if unbatched:
            x, hx = x.unsqueeze(batch_dim), hx.unsqueeze(1)
        y, h_n = torch.gru(x, hx, list(weights), bias, layers, 0.0, True, directions == 2,
                           batch_first)
        return (y.squeeze(batch_dim), h_n.squeeze(1)) if unbatched else (y, h_n)

    differential(backend, ours, theirs, leaves, grad_scale=4.0)


def recurrent_weights(data, gen, gates: int, width: int, hidden: int, bias: bool) -> list[Leaf]:
    """w_ih [gates * H, width], w_hh [gates * H, H] in drawn layouts (then b_ih, b_hh)."""
    leaves = [Leaf((gates * hidden, n), data.draw(layouts(2, expandable=False)), gen, scale=0.5)
              for n in (width, hidden)]
    if bias:
        leaves += [Leaf((gates * hidden,), data.draw(layouts(1)), gen, scale=0.5)
                   for _ in range(2)]
    return leaves


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_gru_cell(backend, data):
    batch, inp = data.draw(st.integers(0, 3), label="B"), data.draw(st.integers(1, 4), label="I")
    hidden = data.draw(st.integers(1, 4), label="H")
    bias = data.draw(st.booleans(), label="bias")
    unbatched = data.draw(st.booleans(), label="unbatched")
    given_hx = data.draw(st.booleans(), label="hx given")
    gen = _gen(data)
    lead = [] if unbatched else [batch]
    leaves = [Leaf((*lead, inp), data.draw(layouts(len(lead) + 1)), gen)]
    if given_hx:
        leaves.append(Leaf((*lead, hidden), data.draw(layouts(len(lead) + 1)), gen))
    leaves += recurrent_weights(data, gen, 3, inp, hidden, bias)

    def ours(x, *rest):
        hx, weights = (rest[0], rest[1:]) if given_hx else (None, rest)
        return F.gru_cell(x, hx, *weights)

    def theirs(x, *rest):
        hx, weights = (rest[0], rest[1:]) if given_hx else (x.new_zeros(*lead, hidden), rest)
        if unbatched:
            return torch.gru_cell(x.unsqueeze(0), hx.unsqueeze(0), *weights).squeeze(0)
        return torch.gru_cell(x, hx, *weights)

    differential(backend, ours, theirs, leaves, grad_scale=2.0)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_embedding(backend, data):
    """ids of any rank (empty included, int64 or int32, in drawn layouts), padding_idx (also
    negative), scale_grad_by_freq; the weight's gradient."""
    v, d = data.draw(st.integers(1, 6), label="V"), data.draw(st.integers(0, 4), label="D")
    rank = data.draw(st.integers(0, 3), label="ids rank")
    ids_shape = [data.draw(st.integers(0, 4), label=f"ids dim {k}") for k in range(rank)]
    padding_idx = data.draw(st.one_of(st.none(), st.integers(-v, v - 1)), label="padding_idx")
    freq = data.draw(st.booleans(), label="scale_grad_by_freq")
    id_dtype = data.draw(st.sampled_from([torch.int64, torch.int32]), label="ids dtype")
    _, device = on_backend(backend)
    gen = _gen(data)
    ids = laid_out(torch.randint(0, v, ids_shape, generator=gen).to(device, id_dtype),
                   data.draw(layouts(rank), label="ids layout"))
    leaves = [Leaf((v, d), data.draw(layouts(2)), gen)]
    kw = dict(padding_idx=padding_idx, scale_grad_by_freq=freq)
    differential(backend, lambda w: F.embedding(ids, w, **kw),
                 lambda w: TF.embedding(ids, w, **kw), leaves,
                 grad_scale=math.sqrt(max(1, ids.numel())))


def affine_leaves(data, gen, shape) -> tuple[list[Leaf], bool, bool]:
    """A normalization's optional weight (around 1) and bias of ``shape``: (leaves, has weight,
    has bias)."""
    has = [data.draw(st.booleans(), label=name) for name in ("weight", "bias")]
    leaves = [Leaf(shape, data.draw(layouts(len(shape))), gen, shift=shift)
              for present, shift in zip(has, (1.0, 0.0)) if present]
    return leaves, has[0], has[1]


def affine_split(params: tuple, has_weight: bool, has_bias: bool) -> tuple:
    """(weight, bias) from the views of ``affine_leaves``'s leaves, None where absent."""
    rest = list(params)
    return (rest.pop(0) if has_weight else None), (rest.pop(0) if has_bias else None)


def constant_group_scale(x: torch.Tensor, count: int, eps: float) -> float:
    """Tolerance scale of a normalization of x over groups of ``count`` consecutive values (in
    x's logical order): a group of equal values (one value, or an expanded view's copies) has
    variance 0, and the float32 kernels' rounding of x - mean and of the gradient sums is
    multiplied by 1 / sqrt(eps)."""
    if x.numel() == 0:
        return 1.0
    groups = x.reshape(-1, count)
    if bool((groups.amax(1) == groups.amin(1)).any()):
        return 0.2 / math.sqrt(eps)
    return 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_layer_norm(backend, data):
    rank = data.draw(st.integers(1, 4), label="rank")
    shape = [data.draw(st.integers(0, 4), label=f"dim {d}") for d in range(rank)]
    normalized = shape[rank - data.draw(st.integers(1, rank), label="normalized dims"):]
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.5]), label="eps")
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    gen = _gen(data)
    affine, has_w, has_b = affine_leaves(data, gen, normalized)
    leaves = [Leaf(shape, data.draw(layouts(rank)), gen, scale=2.0, shift=0.5), *affine]
    module = torch_activation(act)
    differential(
        backend,
        lambda x, *p: F.layer_norm(x, normalized, *affine_split(p, has_w, has_b), eps,
                                   activation=act),
        lambda x, *p: module(TF.layer_norm(x, normalized, *affine_split(p, has_w, has_b), eps)),
        leaves, oracle_float64=True, scale=(scale := constant_group_scale(
            leaves[0].view(leaves[0].data), math.prod(normalized), eps)),
        grad_scale=4.0 * scale)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_group_norm(backend, data):
    groups = data.draw(st.integers(1, 3), label="groups")
    channels = groups * data.draw(st.integers(1, 2), label="C/groups")
    spatial = data.draw(st.lists(st.integers(0, 4), max_size=2), label="spatial dims")
    shape = [data.draw(st.integers(0, 3), label="N"), channels, *spatial]
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.5]), label="eps")
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    gen = _gen(data)
    affine, has_w, has_b = affine_leaves(data, gen, [channels])
    leaves = [Leaf(shape, data.draw(layouts(len(shape))), gen, scale=2.0, shift=0.5), *affine]
    module = torch_activation(act)

    def theirs(x, *p):
        weight, bias = affine_split(p, has_w, has_b)
        if weight is None and bias is not None:
            # torch 2.13's CPU backward of a bias without a weight raises "tensor does not have
            # a device": the same arithmetic with a constant weight of ones
            weight = x.new_ones(channels)
        return module(TF.group_norm(x, groups, weight, bias, eps))

    differential(
        backend,
        lambda x, *p: F.group_norm(x, groups, *affine_split(p, has_w, has_b), eps,
                                   activation=act),
        theirs, leaves, oracle_float64=True, scale=(scale := constant_group_scale(
            leaves[0].view(leaves[0].data), channels // groups * math.prod(spatial), eps)),
        grad_scale=4.0 * scale)


def quantized_weight(data, gen, shape, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) of a random weight: int8 or float8 e4m3, per channel or per tensor, q in a
    drawn layout."""
    qdtype = data.draw(st.sampled_from(["int8", "fp8"]), label="quantized dtype")
    granularity = data.draw(st.sampled_from(["per_channel", "per_tensor"]), label="granularity")
    q, scale = quantize_weight(torch.randn(shape, generator=gen), qdtype, granularity)
    layout = data.draw(layouts(len(shape), expandable=False), label="weight layout")
    return laid_out(q.to(device), layout), scale.to(device)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_quantized_linear(backend, data):
    """Forward only (inference): torch's linear on the dequantized weight."""
    m, k, n = (data.draw(st.integers(lo, 6), label=name)
               for lo, name in ((0, "M"), (0, "K"), (1, "N")))
    lead = data.draw(st.sampled_from([(), (2,)]), label="leading dims")
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    bias = data.draw(st.booleans(), label="bias")
    _, device = on_backend(backend)
    gen = _gen(data)
    q, scale = quantized_weight(data, gen, (n, k), device)
    leaves = [Leaf((*lead, m, k), data.draw(layouts(len(lead) + 2)), gen)]
    if bias:
        leaves.append(Leaf((n,), data.draw(layouts(1)), gen))
    module = torch_activation(act)

    def theirs(x, *b):
        return module(TF.linear(x, dequantize_weight(q, scale, torch.float64).to(x.dtype), *b))

    differential(backend, lambda x, *b: F.quantized_linear(x, q, scale, *b, activation=act),
                 theirs, leaves, scale=math.sqrt(max(k, 1)), backward=False)


@pytest.mark.parametrize("backend", BACKENDS)
@FUZZ
@given(data=st.data())
def test_quantized_conv2d(backend, data):
    """Forward only (inference): torch's conv2d on the dequantized weight; padding pairs,
    "same" or "valid", an unbatched input."""
    groups = data.draw(st.sampled_from([1, 2]), label="groups")
    cin = groups * data.draw(st.integers(1, 2), label="Cin/groups")
    cout = groups * data.draw(st.integers(1, 2), label="Cout/groups")
    kernel = (data.draw(st.integers(1, 3), label="kh"), data.draw(st.integers(1, 3), label="kw"))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = data.draw(st.sampled_from(["pairs", "same", "valid"]), label="padding")
    stride = (1, 1) if padding == "same" else (data.draw(st.integers(1, 2)),
                                               data.draw(st.integers(1, 2)))
    if padding == "pairs":
        padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    h, w = data.draw(st.integers(1, 7), label="H"), data.draw(st.integers(1, 7), label="W")
    pads = padding if isinstance(padding, tuple) else (0, 0)
    assume(padding == "same" or all(
        (size + 2 * p - d * (k - 1) - 1) // s + 1 >= 1 for size, p, d, k, s in
        zip((h, w), pads, dilation, kernel, stride)))
    lead = data.draw(st.sampled_from([(2, cin), (cin,), (0, cin)]), label="N, C")
    act = data.draw(st.sampled_from(ACTIVATIONS), label="activation")
    bias = data.draw(st.booleans(), label="bias")
    _, device = on_backend(backend)
    gen = _gen(data)
    q, scale = quantized_weight(data, gen, (cout, cin // groups, *kernel), device)
    leaves = [Leaf((*lead, h, w), data.draw(layouts(len(lead) + 2)), gen)]
    if bias:
        leaves.append(Leaf((cout,), data.draw(layouts(1)), gen))
    module = torch_activation(act)
    args = (stride, padding, dilation, groups)

    def theirs(x, *b):
        weight = dequantize_weight(q, scale, torch.float64).to(x.dtype)
        return module(TF.conv2d(x, weight, b[0] if b else None, *args))

    differential(backend,
                 lambda x, *b: F.quantized_conv2d(x, q, scale, b[0] if b else None, *args,
                                                  activation=act),
                 theirs, leaves, scale=3.0, backward=False)
