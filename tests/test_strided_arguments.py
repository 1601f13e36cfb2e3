"""Per-channel vectors and small parameters given as strided views, on every backend, against
torch: a bias, a normalization's weight and bias, running statistics, class weights, pos_weight,
recurrent biases and quantization scales passed as a slice (stride 2) or as an expanded
zero-stride view (``b[:1].expand(n)``, a shared scalar bias).

The kernels index these vectors by channel; a launcher that hands a view's pointer to them
without its strides reads the wrong elements and returns a silently wrong answer (found by the
fuzz: the Triton conv, conv_transpose, batch norm, layer / group norm and quantized epilogues all
did). Each case runs forward and backward, the gradients flowing back through the views to their
bases; the running statistics, updated in place through a view, must land in the viewed elements.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch

import gpudnn
import gpudnn.functional as GF
from gpudnn.backend import KERNELS
from gpudnn.quantization import dequantize_weight, quantize_weight
from helpers import DEVICE, compare_with_twin, cupy_gpu, ieee_float32

TF = torch.nn.functional
BACKENDS = [pytest.param("reference", id="reference"), pytest.param("triton", id="triton"),
            pytest.param("cupy", id="cupy", marks=cupy_gpu)]
VIEWS = ("sliced", "expanded")


def base_of(n: int, view: str, gen: torch.Generator, positive: bool = False) -> torch.Tensor:
    """The storage a view of n elements is taken from: 2n elements (sliced) or 1 (expanded)."""
    t = torch.rand(2 * n if view == "sliced" else 1, generator=gen, dtype=torch.float64)
    return t + 0.5 if positive else 2 * t - 1


def viewed(t: torch.Tensor, n: int, view: str) -> torch.Tensor:
    return t[::2] if view == "sliced" else t.expand(n)


def constant(n: int, view: str, seed: int, like: torch.Tensor) -> torch.Tensor:
    """A positive non-differentiable vector (class weights, scales) as a view, the same values
    on every call."""
    gen = torch.Generator().manual_seed(seed)
    return viewed(base_of(n, view, gen, positive=True).to(like.device, like.dtype), n, view)


class Case:
    """ours / theirs (view) -> a function of (*tensors, *vector bases); ``tensors`` are the
    shapes of the ordinary inputs, ``vectors`` the lengths of the viewed differentiable ones."""

    def __init__(self, ours: Callable, theirs: Callable, tensors: list, vectors: list,
                 positive: tuple = (), inference: bool = False):
        self.ours, self.theirs = ours, theirs
        self.tensors, self.vectors, self.positive = tensors, vectors, positive
        self.inference = inference  # forward only (the quantized ops refuse autograd)


def _norm_case(name: str, tensors, n, *extra):
    def fn(module):
        return lambda view: lambda x, w, b: getattr(module, name)(
            x, *extra, viewed(w, n, view), viewed(b, n, view))
    return Case(fn(GF), fn(TF), tensors, [n, n], positive=(0,))


def _cell(ours, theirs, gates: int, states: int):
    def fn(cell):
        def make(view):
            def run(x, h, w_ih, w_hh, b_ih, b_hh):
                hx = (h, h.flip(0)) if states == 2 else h
                return cell(x, hx, w_ih, w_hh, viewed(b_ih, gates * 5, view),
                            viewed(b_hh, gates * 5, view))
            return run
        return make
    return Case(fn(ours), fn(theirs), [(3, 4), (3, 5), (gates * 5, 4), (gates * 5, 5)],
                [gates * 5, gates * 5])


def _sequence(ours, theirs, gates: int, states: int):
    def fn(layer, torch_order: bool):
        def make(view):
            def run(x, w_ih, w_hh, b_ih, b_hh):
                h0 = x.new_zeros(1, 2, 6)
                hx = (h0, h0) if states == 2 else h0
                weights = [w_ih, w_hh, viewed(b_ih, gates * 6, view),
                           viewed(b_hh, gates * 6, view)]
                if torch_order:  # torch.lstm / torch.gru: has_biases, layers, dropout, ...
                    return layer(x, hx, weights, True, 1, 0.0, True, False, False)
                return layer(x, hx, weights, 1, True, False, 0.0, True, False)
            return run
        return make
    return Case(fn(ours, False), fn(theirs, True), [(5, 2, 4), (gates * 6, 4), (gates * 6, 6)],
                [gates * 6, gates * 6])


def _quantized(kind: str):
    shape = (5, 4) if kind == "linear" else (4, 3, 3, 3)

    def fn(ours: bool):
        def make(view):
            def run(x, b):
                q, scale = quantize_weight(torch.randn(shape, generator=torch.Generator()
                                                       .manual_seed(3)), "int8", "per_channel")
                q = q.to(x.device)
                scale = viewed(torch.stack([scale, scale], 1).reshape(-1), shape[0], "sliced") \
                    if view == "sliced" else scale[:1].expand(shape[0])
                scale = scale.to(x.device)
                bias = viewed(b, shape[0], view)
                if ours:
                    op = GF.quantized_linear if kind == "linear" else GF.quantized_conv2d
                    return op(x, q, scale, bias)
                w = dequantize_weight(q, scale, torch.float64).to(x.dtype)
                return (TF.linear if kind == "linear" else TF.conv2d)(x, w, bias)
            return run
        return make
    return Case(fn(True), fn(False), [(3, 4) if kind == "linear" else (2, 3, 5, 5)], [shape[0]],
                inference=True)


def _loss(name: str, tensors, classes: int, **options):
    """A loss with its constant per-class (or broadcast) weights as views."""
    def fn(module):
        def make(view):
            def run(x, *rest):
                kw = {k: constant(classes, view, seed, x) for seed, k in enumerate(options["vec"])}
                target = options["target"](x)
                if name == "binary_cross_entropy":
                    x = torch.sigmoid(x)  # probabilities strictly inside (0, 1)
                return getattr(module, name)(x, target, **kw, **options.get("kw", {}))
            return run
        return make
    return Case(fn(GF), fn(TF), tensors, [])


def _index_target(shape, classes):
    return lambda x: torch.arange(shape[0], device=x.device).reshape(shape) % classes


CASES = {
    "linear": Case(*(lambda view, m=m: lambda x, w, b: m.linear(x, w, viewed(b, 5, view))
                     for m in (GF, TF)), [(3, 4), (5, 4)], [5]),
    "conv2d": Case(*(lambda view, m=m: lambda x, w, b: m.conv2d(x, w, viewed(b, 4, view), padding=1)
                     for m in (GF, TF)), [(2, 3, 5, 5), (4, 3, 3, 3)], [4]),
    "conv2d_depthwise": Case(*(lambda view, m=m: lambda x, w, b: m.conv2d(
        x, w, viewed(b, 6, view), padding=1, groups=3) for m in (GF, TF)),
        [(2, 3, 5, 5), (6, 1, 3, 3)], [6]),
    "conv_transpose2d": Case(*(lambda view, m=m: lambda x, w, b: m.conv_transpose2d(
        x, w, viewed(b, 4, view), stride=2) for m in (GF, TF)), [(2, 3, 4, 4), (3, 4, 3, 3)], [4]),
    "layer_norm": _norm_case("layer_norm", [(3, 5)], 5, (5,)),
    "group_norm": _norm_case("group_norm", [(2, 4, 3)], 4, 2),
    "lstm_cell": _cell(GF.lstm_cell, torch.lstm_cell, 4, 2),
    "gru_cell": _cell(GF.gru_cell, torch.gru_cell, 3, 1),
    "lstm": _sequence(GF.lstm, torch.lstm, 4, 2),
    "gru": _sequence(GF.gru, torch.gru, 3, 1),
    "quantized_linear": _quantized("linear"),
    "quantized_conv2d": _quantized("conv2d"),
    "cross_entropy": _loss("cross_entropy", [(6, 5)], 5, vec=("weight",),
                           target=_index_target((6,), 5), kw={"label_smoothing": 0.1}),
    "cross_entropy_none": _loss("cross_entropy", [(6, 5)], 5, vec=("weight",),
                                target=_index_target((6,), 5), kw={"reduction": "none"}),
    "cross_entropy_probabilities": _loss(
        "cross_entropy", [(6, 5)], 5, vec=("weight",),
        target=lambda x: torch.softmax(torch.arange(30.0, device=x.device).reshape(6, 5)
                                       .to(x.dtype).cos(), 1)),
    "nll_loss": _loss("nll_loss", [(6, 5)], 5, vec=("weight",), target=_index_target((6,), 5)),
    "binary_cross_entropy": _loss("binary_cross_entropy", [(4, 5)], 5, vec=("weight",),
                                  target=lambda x: torch.linspace(0, 1, 20, device=x.device,
                                                                  dtype=x.dtype).reshape(4, 5)),
    "bce_with_logits": _loss("binary_cross_entropy_with_logits", [(4, 5)], 5,
                             vec=("weight", "pos_weight"),
                             target=lambda x: torch.linspace(0, 1, 20, device=x.device,
                                                             dtype=x.dtype).reshape(4, 5)),
}


def on_backend(backend: str) -> tuple[torch.dtype, str]:
    return (torch.float64, "cpu") if backend == "reference" else (torch.float32, DEVICE)


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_vector_arguments(backend, name, view):
    op = {"gru": "gru_layer", "lstm": "lstm_layer", "quantized_linear": "quant_dense",
          "quantized_conv2d": "quant_conv2d", "conv2d_depthwise": "conv2d",
          "cross_entropy_none": "cross_entropy", "cross_entropy_probabilities":
          "cross_entropy_probs", "bce_with_logits": "bce_with_logits",
          "binary_cross_entropy": "bce", "linear": "dense"}.get(name, name)
    kernels = KERNELS.get(op)
    if kernels is not None and getattr(kernels, backend) is None:
        pytest.skip(f"the {backend} backend has no {op} kernels")
    case = CASES[name]
    dtype, device = on_backend(backend)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randn(shape, generator=gen, dtype=torch.float64) * 0.5
              for shape in case.tensors]
    inputs += [base_of(n, view, gen, positive=k in case.positive)
               for k, n in enumerate(case.vectors)]
    inputs = [t.to(device, dtype) for t in inputs]
    ours, theirs = case.ours(view), case.theirs(view)
    with gpudnn.use_backend(backend), ieee_float32(), torch.set_grad_enabled(not case.inference):
        compare_with_twin(ours, theirs, *inputs, dtype=dtype, grad_scale=4.0)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_norm_strided_vectors(backend, view, training):
    """weight and bias as views (differentiated through them) and the running statistics as
    views of a larger buffer (sliced: updated in place there; an expanded view cannot be written,
    so training updates sliced ones)."""
    dtype, device = on_backend(backend)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64).to(device, dtype)
    w, b = (base_of(3, view, gen, positive=p).to(device, dtype) for p in (True, False))
    stats_view = "sliced" if training else view
    stats = [base_of(3, stats_view, gen, positive=p).to(device, dtype) for p in (False, True)]
    buffers = {}

    def run(module, key):
        def fn(x, w, b):
            buffers[key] = [s.clone() for s in stats]
            mean, var = (viewed(s, 3, stats_view) for s in buffers[key])
            return module.batch_norm(x, mean, var, viewed(w, 3, view), viewed(b, 3, view),
                                     training, 0.3)
        return fn

    with gpudnn.use_backend(backend), ieee_float32():
        compare_with_twin(run(GF, "ours"), run(TF, "torch"), x, w, b, dtype=dtype, grad_scale=4.0)
    for k, (a, e) in enumerate(zip(buffers["ours"], buffers["torch"])):
        # every element of the buffer: the viewed ones updated, the others untouched
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6, msg=f"running statistic {k}")
