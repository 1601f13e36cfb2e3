"""The losses' options (issue 15): cross-entropy with class weights, label smoothing and
probability targets; NLL; BCE on probabilities; BCE-with-logits with weight and pos_weight.

- the NumPy reference (through gpudnn.functional) against torch in float64, forward and the
  gradients of every floating input, and torch.autograd.gradcheck;
- the Triton kernels (the interpreter on CPU) against the reference in float32, outputs poisoned
  with NaN, across block edges, the online (C > 4096) path, non-contiguous and channels_last
  inputs;
- the modules against their torch twins after load_state_dict (state_dict keys: weight /
  pos_weight buffers as torch's), and convert();
- log_softmax then nll_loss (the PyTorch MNIST example's pair);
- bad inputs: clear errors naming the argument; under torch.compile the data-dependent checks
  are skipped and the kernels give NaN instead.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import gpudnn
import gpudnn.functional as GF
import gpudnn.nn as gnn
from gpudnn.kernels import alloc
from helpers import DEVICE, compare_with_twin

F64, F32 = torch.float64, torch.float32
IGNORE = -100
REDUCTIONS = ["none", "mean", "sum"]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen, *shape, dtype=F64, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=dtype) * scale).to(DEVICE)


def _rand(gen, *shape, dtype=F64):
    return torch.rand(shape, generator=gen, dtype=dtype).to(DEVICE)


def _targets(gen, shape, classes, ignored=True):
    t = torch.randint(0, classes, shape, generator=gen)
    if ignored and t.numel() > 2:
        t.view(-1)[1] = IGNORE
    return t.to(DEVICE)


def _fn(name, **options):
    """(gpudnn's function, torch's) with ``options`` bound."""
    return (lambda *a: getattr(GF, name)(*a, **options),
            lambda *a: getattr(F, name)(*a, **options))


# the option sets of class-index cross-entropy (weight: a [C] tensor made per test)
CE_OPTIONS = [dict(), dict(weight=True), dict(label_smoothing=0.15),
              dict(weight=True, label_smoothing=0.3)]
CE_IDS = ["plain", "weight", "smooth", "weight+smooth"]


def _with_weight(options, classes, gen, dtype=F64):
    options = dict(options)
    if options.get("weight") is True:
        options["weight"] = _rand(gen, classes, dtype=dtype) + 0.1
    return options


# --- the reference against torch, float64 --------------------------------------------------------

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", CE_OPTIONS, ids=CE_IDS)
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2, 3), (6,)], ids=["2d", "spatial", "1d"])
def test_cross_entropy_indices_vs_torch(shape, options, reduction):
    gen = _gen(1)
    classes = shape[1] if len(shape) > 1 else shape[0]
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    x = _randn(gen, *shape, scale=3.0)
    t = _targets(gen, target_shape, classes)
    opts = _with_weight(options, classes, gen)
    with gpudnn.use_backend("reference"):
        compare_with_twin(*_fn("cross_entropy", reduction=reduction, ignore_index=IGNORE, **opts),
                          x, t, dtype=F64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", CE_OPTIONS, ids=CE_IDS)
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2, 3), (6,)], ids=["2d", "spatial", "1d"])
def test_cross_entropy_probabilities_vs_torch(shape, options, reduction):
    """Soft labels: the gradients of the logits and of the target probabilities."""
    gen = _gen(2)
    class_dim = 1 if len(shape) > 1 else 0
    x = _randn(gen, *shape, scale=3.0)
    p = _randn(gen, *shape).softmax(class_dim)
    opts = _with_weight(options, shape[class_dim], gen)
    with gpudnn.use_backend("reference"):
        compare_with_twin(*_fn("cross_entropy", reduction=reduction, **opts), x, p, dtype=F64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 2, 3), (6,), (0, 4)],
                         ids=["2d", "spatial", "1d", "empty"])
def test_nll_loss_vs_torch(shape, weighted, reduction):
    gen = _gen(3)
    classes = shape[1] if len(shape) > 1 else shape[0]
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    log_p = _randn(gen, *shape).log_softmax(1 if len(shape) > 1 else 0)
    t = _targets(gen, target_shape, classes)
    opts = _with_weight(dict(weight=weighted), classes, gen) if weighted else {}
    with gpudnn.use_backend("reference"):
        compare_with_twin(*_fn("nll_loss", reduction=reduction, ignore_index=IGNORE, **opts),
                          log_p, t, dtype=F64)
        # another ignore_index: a real class
        compare_with_twin(*_fn("nll_loss", reduction=reduction, ignore_index=1, **opts),
                          log_p, t.clamp(min=0), dtype=F64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weight_shape", [None, (5,), (4, 1), (4, 5)],
                         ids=["plain", "cols", "rows", "full"])
def test_binary_cross_entropy_vs_torch(weight_shape, reduction):
    gen = _gen(4)
    p = _rand(gen, 4, 5) * 0.98 + 0.01
    t = _rand(gen, 4, 5)
    t[0, :2] = torch.tensor([0.0, 1.0])
    opts = {} if weight_shape is None else dict(weight=_rand(gen, *weight_shape))
    with gpudnn.use_backend("reference"):
        compare_with_twin(*_fn("binary_cross_entropy", reduction=reduction, **opts), p, t,
                          dtype=F64)
        if weight_shape is None:  # transposed operands
            compare_with_twin(*_fn("binary_cross_entropy", reduction=reduction), p.t(), t.t(),
                              dtype=F64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [dict(weight=(5,)), dict(pos_weight=(5,)),
                                     dict(weight=(4, 1), pos_weight=(5,)),
                                     dict(pos_weight=(4, 5))],
                         ids=["weight", "pos_weight", "both", "pos_weight_full"])
def test_bce_with_logits_options_vs_torch(options, reduction):
    gen = _gen(5)
    x = _randn(gen, 4, 5, scale=4.0)
    x[0, 0], x[1, 1] = 40.0, -40.0
    t = _rand(gen, 4, 5)
    opts = {k: _rand(gen, *v) * 3 for k, v in options.items()}
    with gpudnn.use_backend("reference"):
        compare_with_twin(*_fn("binary_cross_entropy_with_logits", reduction=reduction, **opts),
                          x, t, dtype=F64)


def test_gradcheck():
    """torch.autograd.gradcheck through the reference of every new option (float64)."""
    gen = _gen(6)
    w = _rand(gen, 5) + 0.1
    x = _randn(gen, 4, 5).requires_grad_()
    t = torch.tensor([0, 3, IGNORE, 4], device=DEVICE)
    p = _randn(gen, 4, 5).softmax(1).requires_grad_()
    q = (_rand(gen, 4, 5) * 0.8 + 0.1).requires_grad_()
    y = _rand(gen, 4, 5).requires_grad_()
    checks = [
        (lambda a: GF.cross_entropy(a, t, weight=w, label_smoothing=0.2), (x,)),
        (lambda a: GF.cross_entropy(a, t, weight=w, reduction="none"), (x,)),
        (lambda a, b: GF.cross_entropy(a, b, weight=w, label_smoothing=0.1), (x, p)),
        (lambda a: GF.nll_loss(a, t, weight=w), (x,)),
        (lambda a, b: GF.binary_cross_entropy(a, b, weight=w), (q, y)),
        (lambda a, b: GF.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=w * 2,
                                                          reduction="sum"), (x, y)),
    ]
    with gpudnn.use_backend("reference"):
        for fn, args in checks:
            assert torch.autograd.gradcheck(fn, args)


# --- Triton (interpreter) against the reference, float32 ----------------------------------------

def _on(backend, fn):
    def run(*args):
        with gpudnn.use_backend(backend):
            return fn(*args)
    return run


def _triton_vs_reference(name, *inputs, grad_scale=1.0, **options):
    """gpudnn's ``name`` on the triton backend (outputs poisoned with NaN) against the same
    function on the reference backend, float32, forward and gradients."""
    fn = getattr(GF, name)
    call = lambda *a: fn(*a, **options)  # noqa: E731
    with alloc.poison_outputs():
        compare_with_twin(_on("triton", call), _on("reference", call), *inputs, dtype=F32,
                          grad_scale=grad_scale)


def _layout(t, layout):
    if layout == "transposed":
        return t.t().contiguous().t()
    if layout == "strided":
        return torch.cat([t, t], dim=-1)[..., ::2]
    return t


CE_SHAPES = [(5, 7, "contiguous"), (3, 40, "transposed"), (2, 4100, "contiguous"),
             (6, 17, "strided")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", CE_OPTIONS, ids=CE_IDS)
@pytest.mark.parametrize("n,c,layout", CE_SHAPES, ids=[f"{n}x{c}-{l}" for n, c, l in CE_SHAPES])
def test_triton_cross_entropy(n, c, layout, options, reduction):
    gen = _gen(n * 1000 + c)
    x = _layout(_randn(gen, n, c, dtype=F32, scale=3.0), layout)
    opts = _with_weight(options, c, gen, F32)
    _triton_vs_reference("cross_entropy", x, _targets(gen, (n,), c), reduction=reduction,
                         ignore_index=IGNORE, **opts)
    _triton_vs_reference("cross_entropy", x, _layout(_randn(gen, n, c, dtype=F32).softmax(1),
                                                     layout), reduction=reduction, **opts)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weight"])
@pytest.mark.parametrize("n,c,layout", CE_SHAPES + [(1100, 3, "contiguous")],
                         ids=[f"{n}x{c}-{l}" for n, c, l in CE_SHAPES] + ["1100x3"])
def test_triton_nll_loss(n, c, layout, weighted, reduction):
    gen = _gen(n + c)
    log_p = _layout(_randn(gen, n, c, dtype=F32).log_softmax(1), layout)
    opts = _with_weight(dict(weight=weighted), c, gen, F32) if weighted else {}
    _triton_vs_reference("nll_loss", log_p, _targets(gen, (n,), c), reduction=reduction,
                         ignore_index=IGNORE, **opts)


def test_triton_spatial_channels_last():
    """[N, C, H, W] channels_last logits with per-class weights; BCE on channels_last
    probabilities with a per-channel weight [C, 1, 1] (a broadcast, strided walk)."""
    gen = _gen(7)
    x = _randn(gen, 2, 5, 3, 4, dtype=F32).contiguous(memory_format=torch.channels_last)
    w = _rand(gen, 5, dtype=F32)
    t = _targets(gen, (2, 3, 4), 5)
    _triton_vs_reference("cross_entropy", x, t, weight=w, label_smoothing=0.1,
                         ignore_index=IGNORE)
    _triton_vs_reference("nll_loss", x.log_softmax(1), t, weight=w, ignore_index=IGNORE,
                         reduction="none")
    p = (_rand(gen, 2, 5, 3, 4, dtype=F32) * 0.9 + 0.05).contiguous(
        memory_format=torch.channels_last)
    y = _rand(gen, 2, 5, 3, 4, dtype=F32).contiguous(memory_format=torch.channels_last)
    for reduction in REDUCTIONS:
        _triton_vs_reference("binary_cross_entropy", p, y, weight=_rand(gen, 5, 1, 1, dtype=F32),
                             reduction=reduction)
        _triton_vs_reference("binary_cross_entropy_with_logits", p, y,
                             weight=_rand(gen, 5, 1, 1, dtype=F32),
                             pos_weight=_rand(gen, 4, dtype=F32) * 3, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,layout", [((1025,), "contiguous"), ((6, 7), "transposed"),
                                          ((0, 3), "contiguous")], ids=["1025", "6x7-t", "0x3"])
def test_triton_binary_cross_entropy(shape, layout, reduction):
    gen = _gen(8)
    p = _rand(gen, *shape, dtype=F32) * 0.999 + 0.0005
    if p.numel():
        p.view(-1)[:2] = torch.tensor([0.0, 1.0])  # exactly 0 and 1: the clamped logs
    p, y = _layout(p, layout), _layout(_rand(gen, *shape, dtype=F32), layout)
    scale = max(1.0, p.numel() ** 0.5)
    w = _rand(gen, shape[-1], dtype=F32)
    _triton_vs_reference("binary_cross_entropy", p, y, reduction=reduction, grad_scale=scale)
    _triton_vs_reference("binary_cross_entropy", p, y, weight=w, reduction=reduction,
                         grad_scale=scale)
    x = (p - 0.5) * 20
    _triton_vs_reference("binary_cross_entropy_with_logits", x, y, weight=w, pos_weight=w * 4,
                         reduction=reduction, grad_scale=scale)


# --- log_softmax then nll_loss (the PyTorch MNIST example) ---------------------------------------

@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_log_softmax_then_nll_loss(backend):
    gen = _gen(9)
    x = _randn(gen, 8, 10, dtype=F32, scale=3.0)
    t = _targets(gen, (8,), 10, ignored=False)
    with gpudnn.use_backend(backend):
        compare_with_twin(lambda a: GF.nll_loss(GF.log_softmax(a, dim=1), t),
                          lambda a: F.nll_loss(F.log_softmax(a, dim=1), t), x, dtype=F32)


# --- modules against their torch twins -----------------------------------------------------------

def _twins(gen):
    w5 = _rand(gen, 5, dtype=F32) + 0.1
    return [
        ("CrossEntropyLoss", dict(weight=w5, ignore_index=3, label_smoothing=0.2)),
        ("CrossEntropyLoss", dict(weight=w5, reduction="sum")),
        ("NLLLoss", dict(weight=w5, ignore_index=1, reduction="mean")),
        ("NLLLoss", dict(reduction="none")),
        ("BCELoss", dict(weight=_rand(gen, 4, 1, dtype=F32))),
        ("BCEWithLogitsLoss", dict(weight=_rand(gen, 5, dtype=F32),
                                   pos_weight=_rand(gen, 5, dtype=F32) * 3)),
        ("BCEWithLogitsLoss", dict(pos_weight=_rand(gen, 5, dtype=F32), reduction="none")),
    ]


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_modules_vs_torch_twins(backend):
    gen = _gen(10)
    x = _randn(gen, 4, 5, dtype=F32, scale=2.0)
    idx = torch.tensor([0, 3, 1, 4], device=DEVICE)
    probs = _rand(gen, 4, 5, dtype=F32) * 0.9 + 0.05
    inputs = {"CrossEntropyLoss": (x, idx), "NLLLoss": (x.log_softmax(1), idx),
              "BCELoss": (probs, _rand(gen, 4, 5, dtype=F32)),
              "BCEWithLogitsLoss": (x, _rand(gen, 4, 5, dtype=F32))}
    for name, kwargs in _twins(gen):
        theirs = getattr(torch.nn, name)(**kwargs)
        ours = getattr(gnn, name)(**{k: (torch.zeros_like(v) if isinstance(v, torch.Tensor)
                                         else v) for k, v in kwargs.items()})
        assert isinstance(ours, type(theirs))
        assert list(ours.state_dict()) == list(theirs.state_dict()), name
        ours.load_state_dict(theirs.state_dict())
        with gpudnn.use_backend(backend):
            compare_with_twin(ours, theirs, *inputs[name], dtype=F32)
        # probability targets through the module (torch refuses them with an ignore_index)
        if name == "CrossEntropyLoss" and "ignore_index" not in kwargs:
            with gpudnn.use_backend(backend):
                compare_with_twin(ours, theirs, x, probs.softmax(1), dtype=F32)


def test_convert_maps_the_loss_modules():
    w = torch.rand(5)
    model = torch.nn.ModuleList([torch.nn.NLLLoss(weight=w), torch.nn.BCELoss(weight=w),
                                 torch.nn.CrossEntropyLoss(weight=w, label_smoothing=0.1),
                                 torch.nn.BCEWithLogitsLoss(pos_weight=w)])
    converted = gnn.convert(model)
    assert [type(m) for m in converted] == [gnn.NLLLoss, gnn.BCELoss, gnn.CrossEntropyLoss,
                                            gnn.BCEWithLogitsLoss]
    for m in converted:
        assert all(torch.equal(v, w) for v in m.state_dict().values())
    assert converted[2].label_smoothing == 0.1


# --- bad inputs ----------------------------------------------------------------------------------

def _x(*shape, dtype=F32):
    return torch.randn(*shape, dtype=dtype, device=DEVICE)


def _idx(*values):
    return torch.tensor(values, device=DEVICE)


BAD = [
    ("ce weight length", lambda: GF.cross_entropy(_x(3, 4), _idx(0, 1, 2), weight=_x(3)),
     ValueError, r"weight .*\(4,\)"),
    ("ce weight dtype", lambda: GF.cross_entropy(_x(3, 4), _idx(0, 1, 2), weight=_x(4, dtype=F64)),
     TypeError, "weight"),
    ("ce weight integer", lambda: GF.cross_entropy(_x(3, 4), _idx(0, 1, 2),
                                                   weight=torch.ones(4, dtype=torch.long)),
     TypeError, "weight"),
    ("ce weight device", lambda: GF.cross_entropy(_x(3, 4), _idx(0, 1, 2),
                                                  weight=torch.ones(4, device="meta")),
     RuntimeError, "weight"),
    ("ce weight requires grad", lambda: GF.cross_entropy(
        _x(3, 4), _idx(0, 1, 2), weight=torch.ones(4, device=DEVICE, requires_grad=True)),
     RuntimeError, "weight"),
    ("ce target out of range", lambda: GF.cross_entropy(_x(3, 4), _idx(0, 4, 2), weight=_x(4)),
     IndexError, "target 4"),
    ("ce smoothing range", lambda: GF.cross_entropy(_x(3, 4), _idx(0, 1, 2), label_smoothing=1.5),
     ValueError, "label_smoothing"),
    ("ce probability target shape", lambda: GF.cross_entropy(_x(3, 4), _x(3, 5).softmax(1)),
     ValueError, "target"),
    ("ce probability target ignore_index", lambda: GF.cross_entropy(_x(3, 4), _x(3, 4),
                                                                    ignore_index=0),
     ValueError, "ignore_index"),
    ("ce probability weight length", lambda: GF.cross_entropy(_x(3, 4), _x(3, 4), weight=_x(5)),
     ValueError, "weight"),
    ("nll weight length", lambda: GF.nll_loss(_x(3, 4), _idx(0, 1, 2), weight=_x(5)),
     ValueError, "weight"),
    ("nll weight 2-d", lambda: GF.nll_loss(_x(3, 4), _idx(0, 1, 2), weight=_x(4, 1)),
     ValueError, "weight"),
    ("nll target out of range", lambda: GF.nll_loss(_x(3, 4), _idx(0, -3, 2)),
     IndexError, "target -3"),
    ("nll target float", lambda: GF.nll_loss(_x(3, 4), _x(3)), TypeError, "target"),
    ("nll target shape", lambda: GF.nll_loss(_x(3, 4), _idx(0, 1)), ValueError, "target"),
    ("bce input range", lambda: GF.binary_cross_entropy(_x(3, 4).abs() + 1.5, _x(3, 4).sigmoid()),
     RuntimeError, "input should be between 0 and 1"),
    ("bce input nan", lambda: GF.binary_cross_entropy(torch.full((2,), float("nan")),
                                                      torch.zeros(2)),
     RuntimeError, "input"),
    ("bce target range", lambda: GF.binary_cross_entropy(_x(3, 4).sigmoid(), _x(3, 4).abs() + 2),
     RuntimeError, "target should be between 0 and 1"),
    ("bce target shape", lambda: GF.binary_cross_entropy(_x(3, 4).sigmoid(), _x(4, 3).sigmoid()),
     ValueError, "target size"),
    ("bce weight shape", lambda: GF.binary_cross_entropy(_x(3, 4).sigmoid(), _x(3, 4).sigmoid(),
                                                         weight=_x(3)),
     ValueError, "weight"),
    ("bce weight larger", lambda: GF.binary_cross_entropy(_x(4).sigmoid(), _x(4).sigmoid(),
                                                          weight=_x(2, 4)),
     ValueError, "weight"),
    ("bcel pos_weight shape", lambda: GF.binary_cross_entropy_with_logits(
        _x(3, 4), _x(3, 4), pos_weight=_x(3)), ValueError, "pos_weight"),
    ("bcel pos_weight device", lambda: GF.binary_cross_entropy_with_logits(
        _x(3, 4), _x(3, 4), pos_weight=torch.ones(4, device="meta")), RuntimeError, "pos_weight"),
    ("bcel weight requires grad", lambda: GF.binary_cross_entropy_with_logits(
        _x(3, 4), _x(3, 4), weight=torch.ones(4, device=DEVICE, requires_grad=True)),
     RuntimeError, "weight"),
]


@pytest.mark.parametrize("make,exc,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


def test_modules_raise_for_bad_weights():
    with pytest.raises(ValueError, match="weight"):
        gnn.NLLLoss(weight=torch.ones(3))(_x(2, 4), _idx(0, 1))
    with pytest.raises(ValueError, match="pos_weight"):
        gnn.BCEWithLogitsLoss(pos_weight=torch.ones(3))(_x(2, 4), _x(2, 4))


def test_compiled_graphs_skip_data_checks_and_give_nan():
    """torch.compile cannot branch on data: BCE on probabilities outside [0, 1] and class indices
    out of range give NaN there instead of torch's eager errors (never a wrong finite value)."""
    def losses(p, y, x, t):
        return (GF.binary_cross_entropy(p, y, reduction="none"),
                GF.nll_loss(x, t, reduction="none"),
                GF.cross_entropy(x, t, weight=torch.ones(3, device=x.device), reduction="none"))

    compiled = torch.compile(losses, backend="aot_eager", fullgraph=True)
    p = torch.tensor([0.5, 1.5, -0.25, float("nan")], device=DEVICE)
    y = torch.tensor([1.0, 1.0, 0.0, 0.5], device=DEVICE)
    x = _x(3, 3)
    t = _idx(0, 5, IGNORE)
    with gpudnn.use_backend("reference"):
        bce, nll, ce = compiled(p, y, x, t)
    assert torch.isfinite(bce[0]) and bce[1:].isnan().all()
    assert torch.isfinite(nll[0]) and nll[1].isnan() and nll[2] == 0
    assert torch.isfinite(ce[0]) and ce[1].isnan() and ce[2] == 0
    torch._dynamo.reset()
