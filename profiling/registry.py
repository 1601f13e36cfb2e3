"""Every op the profile times: its shapes, how to build its inputs, the gpudnn call and its torch
twin, and its cost (``profiling.costs``).

A ``Case`` is one op at one shape. ``Case.build(device, dtype)`` returns an ``Instance``:
``make_args()`` draws a fresh random input set (rotated by the timer), and ``impls`` maps
"gpudnn" / "torch" (and "fused" for the optimizers) to a factory returning the callable, so a
backend that cannot even be constructed fails alone and is recorded with its error. The gpudnn
callable runs under ``gpudnn.use_backend(...)`` chosen by the harness; the torch one is what
eager and ``torch.compile`` run. Both take the same arguments, so their outputs and gradients
are comparable (``tests/test_profiling.py`` checks that on tiny CPU shapes, ``Case.tiny``).

Shapes come from the three models in ``profiling.models`` (sources "cnn", "lstm", "gan") and
from large problems (source "large"): dense 4096^3, softmax / cross-entropy / dropout at 2^26
elements, ResNet batch-norm, convolution and pooling shapes (channels_last), MobileNet-style
depthwise convolutions, LSTM hidden 256/512/1024 x batch 1/32/128 x 100 steps (GRU: batch
32/128), and optimizer
steps over a ResNet-50-sized parameter list; weight-only int8 / fp8 dense and conv layers and
2:4-sparse dense layers against the bf16 GEMMs they replace (inference: forward only).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F

from . import costs
from . import models as M

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "fp64": torch.float64}


def dtype_name(dtype: torch.dtype) -> str:
    return next(k for k, v in DTYPES.items() if v == dtype)


@dataclass
class Instance:
    make_args: Callable[[], list]
    impls: dict                         # name -> () -> callable(*args)
    leaves: dict = field(default_factory=dict)   # name -> extra grad leaves (module parameters)
    comparable: bool = True             # outputs of gpudnn and torch are equal (not dropout)


@dataclass
class Case:
    op: str
    family: str           # the launcher family (gpudnn/launchers.py) this op exercises
    source: str           # "cnn" | "lstm" | "gan" | "large"
    params: dict
    tiny: dict            # params for the CPU dry run (tests)
    builder: Callable[[dict, torch.device, torch.dtype], Instance]
    coster: Callable[[dict, int], costs.Cost]
    matmul: str | None = None   # None: memory-bound; "matmul"/"cudnn": which tf32 switch applies
    modes: tuple = ("fwd", "fwd+bwd")
    graph: bool | None = None   # time with CUDA-graph replay; default: model shapes only

    @property
    def shape(self) -> str:
        return " ".join(f"{k}={_fmt(v)}" for k, v in self.params.items()
                        if not k.startswith("_") and v is not None)

    @property
    def key(self) -> str:
        return f"{self.op} [{self.shape}]"

    @property
    def use_graph(self) -> bool:
        return self.source != "large" if self.graph is None else self.graph

    def cost(self, es: int) -> costs.Cost:
        return self.coster(self.params, es)

    def build(self, device, dtype: torch.dtype) -> Instance:
        return self.builder(self.params, torch.device(device), dtype)

    def shrunk(self) -> "Case":
        """The same op at its tiny shape (for the CPU dry run)."""
        return replace(self, params={**self.params, **self.tiny}, source="tiny")


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "y" if v else "n"
    if isinstance(v, (tuple, list)):
        return "x".join(map(str, v))
    return str(v)


# --- inputs ------------------------------------------------------------------------------------

def _randn(shape, device, dtype, *, grad=True, scale=1.0, channels_last=False) -> torch.Tensor:
    t = (torch.randn(shape, device=device, dtype=torch.float32) * scale).to(dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_(grad)


def _gpudnn_functional():
    import gpudnn.functional
    return gpudnn.functional


# activation key -> (gpudnn activation= argument factory, torch function)
ACTIVATIONS: dict = {
    None: (lambda: None, lambda y: y),
    "relu": (lambda: "relu", F.relu),
    "leaky_relu": (lambda: torch.nn.LeakyReLU(0.2), lambda y: F.leaky_relu(y, 0.2)),
    "tanh": (lambda: "tanh", torch.tanh),
    "sigmoid": (lambda: "sigmoid", torch.sigmoid),
    "gelu": (lambda: "gelu", F.gelu),
    "silu": (lambda: "silu", F.silu),
}


def _op_name(base: str, act: str | None) -> str:
    return base if act is None else f"{base}+{act}"


def _pair_impls(gpudnn_call: Callable, torch_call: Callable) -> dict:
    """impls for ops whose gpudnn and torch callables are plain functions of the args."""
    return {"gpudnn": lambda: gpudnn_call, "torch": lambda: torch_call}


# --- dense -------------------------------------------------------------------------------------

def _dense_build(p, device, dtype):
    act_arg, act_fn = ACTIVATIONS[p["act"]]
    k = p["K"]

    def make_args():
        return [_randn((p["M"], k), device, dtype),
                _randn((p["N"], k), device, dtype, scale=1 / math.sqrt(k)),
                _randn((p["N"],), device, dtype, scale=0.1)]

    G = None

    def gpudnn_call(x, w, b):
        nonlocal G
        G = G or _gpudnn_functional()
        return G.linear(x, w, b, activation=act_arg())

    return Instance(make_args, _pair_impls(gpudnn_call,
                                           lambda x, w, b: act_fn(F.linear(x, w, b))))


def dense_case(source, m, n, k, act, tiny=None):
    return Case(_op_name("linear", act), "dense", source, dict(M=m, N=n, K=k, act=act),
                tiny or dict(M=7, N=5, K=9), _dense_build,
                lambda p, es: costs.dense(p["M"], p["N"], p["K"], es, True, p["act"] is not None),
                matmul="matmul")


# --- convolution -------------------------------------------------------------------------------

def _conv_build(p, device, dtype):
    act_arg, act_fn = ACTIVATIONS[p["act"]]
    transposed = p.get("transposed", False)
    cin, cout, k, g = p["Cin"], p["Cout"], p["k"], p.get("groups", 1)
    s, pad, d = p.get("stride", 1), p.get("pad", 0), p.get("dil", 1)
    op = p.get("out_pad", 0)
    cl = p.get("channels_last", False)
    bias = p.get("bias", True)
    w_shape = (cin, cout // g, k, k) if transposed else (cout, cin // g, k, k)
    fan_in = (cin // g) * k * k

    def make_args():
        args = [_randn((p["N"], cin, p["H"], p["W"]), device, dtype, channels_last=cl),
                _randn(w_shape, device, dtype, scale=1 / math.sqrt(fan_in), channels_last=cl)]
        if bias:
            args.append(_randn((cout,), device, dtype, scale=0.1))
        return args

    G = None

    def gpudnn_call(x, w, b=None):
        nonlocal G
        G = G or _gpudnn_functional()
        if transposed:
            return G.conv_transpose2d(x, w, b, s, pad, op, g, d, activation=act_arg())
        return G.conv2d(x, w, b, s, pad, d, g, activation=act_arg())

    def torch_call(x, w, b=None):
        if transposed:
            return act_fn(F.conv_transpose2d(x, w, b, s, pad, op, g, d))
        return act_fn(F.conv2d(x, w, b, s, pad, d, g))

    return Instance(make_args, _pair_impls(gpudnn_call, torch_call))


def _conv_cost(p, es):
    fn = costs.conv_transpose2d if p.get("transposed") else costs.conv2d
    extra = {"output_padding": p.get("out_pad", 0)} if p.get("transposed") else {}
    return fn(p["N"], p["Cin"], p["H"], p["W"], p["Cout"], p["k"], p["k"], es,
              stride=p.get("stride", 1), padding=p.get("pad", 0), dilation=p.get("dil", 1),
              groups=p.get("groups", 1), bias=p.get("bias", True), act=p["act"] is not None,
              **extra)


def conv_case(source, n, cin, h, w, cout, k, *, stride=1, pad=0, dil=1, groups=1, act=None,
              bias=True, transposed=False, out_pad=0, channels_last=False, tiny=None):
    params = dict(N=n, Cin=cin, H=h, W=w, Cout=cout, k=k, stride=stride, pad=pad)
    for key, value, default in (("dil", dil, 1), ("groups", groups, 1), ("out_pad", out_pad, 0),
                                ("bias", bias, True), ("channels_last", channels_last, False),
                                ("transposed", transposed, False)):
        if value != default:
            params[key] = value
    params["act"] = act
    base = "conv_transpose2d" if transposed else (
        "conv2d_depthwise" if groups > 1 and groups == cin else "conv2d")
    if tiny is None:
        tiny_c = 3 if groups > 1 else None
        tiny = dict(N=2, H=min(h, 7), W=min(w, 6),
                    Cin=tiny_c or min(cin, 3), Cout=tiny_c or min(cout, 4))
        if groups > 1:
            tiny["groups"] = 3
    return Case(_op_name(base, act), "conv", source, params, tiny, _conv_build, _conv_cost,
                matmul="cudnn")


# --- batch norm ------------------------------------------------------------------------------

def _bn_build(p, device, dtype):
    act_arg, act_fn = ACTIVATIONS[p["act"]]
    c, cl = p["C"], p.get("channels_last", False)
    shape = (p["N"], c, p["H"], p["W"]) if "H" in p else (p["N"], c)
    running_mean = torch.zeros(c, device=device, dtype=dtype)
    running_var = torch.ones(c, device=device, dtype=dtype)

    def make_args():
        weight = (1 + 0.1 * torch.randn(c, device=device)).to(dtype).requires_grad_()
        return [_randn(shape, device, dtype, channels_last=cl and len(shape) == 4), weight,
                _randn((c,), device, dtype, scale=0.1)]

    G = None

    def gpudnn_call(x, w, b):
        nonlocal G
        G = G or _gpudnn_functional()
        return G.batch_norm(x, running_mean, running_var, w, b, training=True, momentum=0.1,
                            eps=1e-5, activation=act_arg())

    def torch_call(x, w, b):
        return act_fn(F.batch_norm(x, running_mean, running_var, w, b, True, 0.1, 1e-5))

    return Instance(make_args, _pair_impls(gpudnn_call, torch_call))


def bn_case(source, n, c, h=None, w=None, act="relu", channels_last=False):
    params = dict(N=n, C=c)
    if h is not None:
        params.update(H=h, W=w)
    if channels_last:
        params["channels_last"] = True
    params["act"] = act
    tiny = dict(N=3, C=5) if h is None else dict(N=3, C=5, H=4, W=3)
    base = "batch_norm2d" if h is not None else "batch_norm1d"
    return Case(_op_name(base, act), "batchnorm", source, params, tiny, _bn_build,
                lambda p, es: costs.batch_norm(p["N"], p["C"], p.get("H", 1) * p.get("W", 1), es))


# --- layer norm / group norm ---------------------------------------------------------------------

def _norm_build(p, device, dtype):
    act_arg, act_fn = ACTIVATIONS[p["act"]]
    shape, groups = tuple(p["shape"]), p.get("groups")
    params = (shape[1],) if groups else shape[-1:]

    def make_args():
        weight = (1 + 0.1 * torch.randn(params, device=device)).to(dtype).requires_grad_()
        return [_randn(shape, device, dtype), weight, _randn(params, device, dtype, scale=0.1)]

    G = None

    def gpudnn_call(x, w, b):
        nonlocal G
        G = G or _gpudnn_functional()
        if groups:
            return G.group_norm(x, groups, w, b, activation=act_arg())
        return G.layer_norm(x, params, w, b, activation=act_arg())

    def torch_call(x, w, b):
        if groups:
            return act_fn(F.group_norm(x, groups, w, b))
        return act_fn(F.layer_norm(x, params, w, b))

    return Instance(make_args, _pair_impls(gpudnn_call, torch_call))


def _norm_cost(p, es) -> costs.Cost:
    """Read x and the parameters, write y and the per-row mean and rstd; backward reads dy, x,
    the parameters and the statistics, writes dx and the parameter gradients (the
    pre-activation is recomputed from x)."""
    shape, groups = p["shape"], p.get("groups")
    numel = math.prod(shape)
    params = 2 * es * (shape[1] if groups else shape[-1])
    stats = 2 * costs.STAT_BYTES * (shape[0] * groups if groups else numel // shape[-1])
    fwd = 2 * es * numel + params + stats
    bwd = 3 * es * numel + 2 * params + stats
    return costs.Cost(0, fwd, 0, fwd + bwd)


def norm_case(source, shape, groups=None, act=None):
    """LayerNorm over the last dim of ``shape``, or GroupNorm in ``groups`` groups."""
    params = dict(shape=tuple(shape))
    if groups:
        params["groups"] = groups
    params["act"] = act
    tiny = dict(shape=(2, 4, 3, 5), groups=2) if groups else dict(shape=(7, 9))
    return Case(_op_name("group_norm" if groups else "layer_norm", act), "norm", source,
                params, tiny, _norm_build, _norm_cost)


# --- pooling ------------------------------------------------------------------------------------

def _pool_build(p, device, dtype):
    cl, kind = p.get("channels_last", False), p["_kind"]
    # max / avg: (kernel, stride, padding); adaptive_avg: (output_size,)
    args = (p["out"],) if kind == "adaptive_avg" else (p["k"], p["stride"], p.get("pad", 0))

    def make_args():
        return [_randn((p["N"], p["C"], p["H"], p["W"]), device, dtype, channels_last=cl)]

    G = None

    def gpudnn_call(x):
        nonlocal G
        G = G or _gpudnn_functional()
        return getattr(G, f"{kind}_pool2d")(x, *args)

    def torch_call(x):
        return getattr(F, f"{kind}_pool2d")(x, *args)

    return Instance(make_args, _pair_impls(gpudnn_call, torch_call))


def pool_case(source, kind, n, c, h, w, k, stride, pad=0, channels_last=False):
    params = dict(N=n, C=c, H=h, W=w, k=k, stride=stride, pad=pad, _kind=kind)
    if channels_last:
        params["channels_last"] = True
    return Case(f"{kind}_pool2d", "pool", source, params, dict(N=2, C=3, H=7, W=6), _pool_build,
                lambda p, es: costs.pool2d(p["N"], p["C"], p["H"], p["W"], p["k"], p["stride"],
                                           p.get("pad", 0), es, p["_kind"] == "max"))


def adaptive_pool_case(source, n, c, h, w, out, channels_last=False):
    params = dict(N=n, C=c, H=h, W=w, out=out, _kind="adaptive_avg")
    if channels_last:
        params["channels_last"] = True
    return Case("adaptive_avg_pool2d", "pool", source, params, dict(N=2, C=3, H=7, W=6),
                _pool_build,
                lambda p, es: costs.adaptive_avg_pool2d(p["N"], p["C"], p["H"], p["W"], p["out"],
                                                        p["out"], es))


# --- embedding and channel dropout ----------------------------------------------------------------

def _embedding_build(p, device, dtype):
    vocab, dim, shape = p["V"], p["D"], (p["B"], p["T"])

    def make_args():
        return [_randn((vocab, dim), device, dtype),
                torch.randint(0, vocab, shape, device=device)]

    G = None

    def gpudnn_call(weight, ids):
        nonlocal G
        G = G or _gpudnn_functional()
        return G.embedding(ids, weight)

    return Instance(make_args, _pair_impls(gpudnn_call, lambda weight, ids: F.embedding(ids,
                                                                                        weight)))


def embedding_case(source, vocab, dim, batch, steps):
    return Case("embedding", "embedding", source, dict(V=vocab, D=dim, B=batch, T=steps),
                dict(V=11, D=5, B=3, T=4), _embedding_build,
                lambda p, es: costs.embedding(p["V"], p["D"], p["B"] * p["T"], es))


def _feature_dropout_build(p, device, dtype):
    def make_args():
        return [_randn((p["N"], p["C"], p["H"], p["W"]), device, dtype,
                       channels_last=p.get("channels_last", False))]

    G = None

    def gpudnn_call(x):
        nonlocal G
        G = G or _gpudnn_functional()
        return G.dropout2d(x, 0.5, True)

    return Instance(make_args, _pair_impls(gpudnn_call, lambda x: F.dropout2d(x, 0.5, True)),
                    comparable=False)


def dropout2d_case(source, n, c, h, w, channels_last=False):
    params = dict(N=n, C=c, H=h, W=w)
    if channels_last:
        params["channels_last"] = True
    return Case("dropout2d", "dropout", source, params, dict(N=2, C=3, H=4, W=5),
                _feature_dropout_build,
                lambda p, es: costs.dropout(p["N"] * p["C"] * p["H"] * p["W"], es))

# --- row ops: softmax, losses, dropout, activations -------------------------------------------

def _rows_build(p, device, dtype):
    op, rows, cols = p["_fn"], p["rows"], p["cols"]

    def make_args():
        x = _randn((rows, cols), device, dtype, scale=3.0)
        if op == "cross_entropy":
            return [x, torch.randint(0, cols, (rows,), device=device)]
        if op == "binary_cross_entropy_with_logits":
            return [x, torch.rand((rows, cols), device=device).to(dtype)]
        if op == "nll_loss":  # log-probabilities, as log_softmax gives them
            log_p = torch.log_softmax(x.detach().float(), -1).to(dtype).requires_grad_(True)
            return [log_p, torch.randint(0, cols, (rows,), device=device)]
        if op == "binary_cross_entropy":  # probabilities in (0, 1)
            p = (torch.rand((rows, cols), device=device) * 0.98 + 0.01).to(dtype)
            return [p.requires_grad_(True), torch.rand((rows, cols), device=device).to(dtype)]
        if op == "mse_loss":
            return [x, _randn((rows, cols), device, dtype, grad=False)]
        return [x]

    if op in ("softmax", "log_softmax"):
        extra = {"dim": -1}
    elif op == "dropout":
        extra = {"p": 0.5, "training": True}
    else:
        extra = {}
    G = None

    def gpudnn_call(*args):
        nonlocal G
        G = G or _gpudnn_functional()
        return getattr(G, op)(*args, **extra)

    def torch_call(*args):
        return getattr(F, op)(*args, **extra)

    return Instance(make_args, _pair_impls(gpudnn_call, torch_call), comparable=op != "dropout")


_ROW_FAMILY = {"softmax": "softmax", "log_softmax": "softmax", "cross_entropy": "losses",
               "binary_cross_entropy_with_logits": "losses", "mse_loss": "losses",
               "nll_loss": "losses", "binary_cross_entropy": "losses",
               "dropout": "dropout", "relu": "activations", "gelu": "activations",
               "silu": "activations", "tanh": "activations", "sigmoid": "activations"}
_ROW_COST = {"softmax": costs.softmax, "log_softmax": costs.softmax,
             "dropout": costs.dropout, "binary_cross_entropy_with_logits": costs.pointwise_loss,
             "mse_loss": costs.pointwise_loss, "binary_cross_entropy": costs.pointwise_loss}


def _rows_cost(p, es):
    if p["_fn"] == "cross_entropy":
        return costs.cross_entropy(p["rows"], p["cols"], es)
    if p["_fn"] == "nll_loss":
        return costs.nll_loss(p["rows"], p["cols"], es)
    return _ROW_COST.get(p["_fn"], costs.elementwise)(p["rows"] * p["cols"], es)


def rows_case(source, fn, rows, cols):
    name = {"binary_cross_entropy_with_logits": "bce_with_logits",
            "binary_cross_entropy": "bce"}.get(fn, fn)
    return Case(name, _ROW_FAMILY[fn], source, dict(rows=rows, cols=cols, _fn=fn),
                dict(rows=7, cols=9), _rows_build, _rows_cost)


# --- LSTM -------------------------------------------------------------------------------------

def _lstm_build(p, device, dtype):
    T, B, I, H, L = p["T"], p["B"], p["I"], p["H"], p.get("layers", 1)
    name = p.get("_module", "LSTM")  # or "GRU" (gru_case)
    twin = getattr(torch.nn, name)(I, H, num_layers=L).to(device=device, dtype=dtype)
    leaves = {"torch": list(twin.parameters())}

    def gpudnn_factory():
        import gpudnn.nn
        mine = getattr(gpudnn.nn, name)(I, H, num_layers=L).to(device=device, dtype=dtype)
        mine.load_state_dict(twin.state_dict())
        leaves["gpudnn"] = list(mine.parameters())
        return lambda x: mine(x)[0]

    def make_args():
        return [_randn((T, B, I), device, dtype)]

    # "triton-no-graphs": the same module, timed without CUDA-graph replay of its step loops
    return Instance(make_args, {"gpudnn": gpudnn_factory, "torch": lambda: lambda x: twin(x)[0],
                                "triton-no-graphs": gpudnn_factory}, leaves)


def lstm_case(source, steps, batch, input_size, hidden, layers=1):
    params = dict(T=steps, B=batch, I=input_size, H=hidden)
    if layers != 1:
        params["layers"] = layers
    return Case("lstm", "lstm", source, params, dict(T=4, B=3, I=5, H=6), _lstm_build,
                lambda p, es: _lstm_cost(p, es), matmul="cudnn", graph=False)


def gru_case(source, steps, batch, input_size, hidden):
    """One GRU layer (gpudnn.nn.GRU against torch.nn.GRU), built as the LSTM's cases are."""
    params = dict(T=steps, B=batch, I=input_size, H=hidden, _module="GRU")
    return Case("gru", "gru", source, params, dict(T=4, B=3, I=5, H=6), _lstm_build,
                lambda p, es: costs.gru(p["T"], p["B"], p["I"], p["H"], es), matmul="cudnn",
                graph=False)


def _lstm_cost(p, es):
    total = costs.lstm(p["T"], p["B"], p["I"], p["H"], es)
    for _ in range(p.get("layers", 1) - 1):
        layer = costs.lstm(p["T"], p["B"], p["H"], p["H"], es)
        total = costs.Cost(*(a + b for a, b in zip(
            (total.fwd_flops, total.fwd_bytes, total.fb_flops, total.fb_bytes),
            (layer.fwd_flops, layer.fwd_bytes, layer.fb_flops, layer.fb_bytes))))
    return total


# --- optimizers ------------------------------------------------------------------------------

def resnet50_param_shapes() -> list[tuple[int, ...]]:
    """The 161 parameter tensors of torchvision's ResNet-50 (25,557,032 elements)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    in_ch = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for b in range(blocks):
            shapes += [(width, in_ch, 1, 1), (width,), (width,),
                       (width, width, 3, 3), (width,), (width,),
                       (4 * width, width, 1, 1), (4 * width,), (4 * width,)]
            if b == 0:
                shapes += [(4 * width, in_ch, 1, 1), (4 * width,), (4 * width,)]
            in_ch = 4 * width
    shapes += [(1000, 2048), (1000,)]
    return shapes


def _optim_build(p, device, dtype):
    shapes = p["_shapes"]
    kind = p["_kind"]
    hyper = dict(lr=1e-3, weight_decay=1e-2) if kind != "sgd" else dict(
        lr=0.1, momentum=0.9, weight_decay=1e-4)
    torch_class = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[kind]

    def params():
        # the same seed for every implementation: identical starting points to compare
        gen = torch.Generator().manual_seed(0)
        out = []
        for s in shapes:
            t = (torch.randn(s, generator=gen) * 0.02).to(device=device, dtype=dtype)
            t.grad = (torch.randn(s, generator=gen) * 1e-3).to(device=device, dtype=dtype)
            out.append(t.requires_grad_())
        return out

    def stepper(optimizer_class, **kwargs):
        ps = params()
        opt = optimizer_class(ps, **hyper, **kwargs)

        def step():
            opt.step()
            return ps
        return step

    def gpudnn_factory():
        import gpudnn.optim
        return stepper(getattr(gpudnn.optim, torch_class))

    impls = {"gpudnn": gpudnn_factory,
             "torch": lambda: stepper(getattr(torch.optim, torch_class), foreach=True),
             "fused": lambda: stepper(getattr(torch.optim, torch_class), fused=True)}
    return Instance(lambda: [], impls)


def optim_case(kind, shapes, label):
    numel = sum(math.prod(s) for s in shapes)
    return Case(f"{kind}_step", "optim", "large",
                dict(params=label, tensors=len(shapes), numel=numel, _kind=kind, _shapes=shapes),
                dict(params="tiny", tensors=3, numel=42, _shapes=[(5, 3), (7,), (2, 3, 3, 3)]),
                _optim_build,
                lambda p, es: costs.optimizer_step(
                    sum(math.prod(s) for s in p["_shapes"]), es, p["_kind"]),
                modes=("step",), graph=False)


# --- weight-only quantized and 2:4-pruned dense / conv (inference) -----------------------------

def _quant_build(p, device, dtype):
    """gpudnn: the int8 / fp8 weight-only kernels; torch: the same layer with the dequantized
    weight in the activations' dtype (cuBLAS / cuDNN at the bf16 or fp16 rate), so outputs
    compare and the baseline is the dense GEMM the quantized one replaces."""
    from gpudnn.quantization import dequantize_weight, quantize_weight
    conv = "H" in p
    k = p["Cin"] * p["k"] ** 2 if conv else p["K"]
    w_shape = (p["Cout"], p["Cin"], p["k"], p["k"]) if conv else (p["N"], p["K"])
    w = torch.randn(w_shape) / math.sqrt(k)
    q, s = quantize_weight(w, p["qdtype"], "per_channel")
    q, s = q.to(device), s.to(device)
    w_deq = dequantize_weight(q, s, torch.float64).to(device=device, dtype=dtype)
    b = (torch.randn(w_shape[0]) * 0.1).to(device=device, dtype=dtype)
    pad = p.get("pad", 0)

    def make_args():
        shape = (p["N"], p["Cin"], p["H"], p["W"]) if conv else (p["M"], p["K"])
        return [_randn(shape, device, dtype, grad=False, channels_last=conv)]

    G = None

    def gpudnn_call(x):
        nonlocal G
        G = G or _gpudnn_functional()
        if conv:
            return G.quantized_conv2d(x, q, s, b, padding=pad, activation="relu")
        return G.quantized_linear(x, q, s, b, activation="relu")

    def torch_call(x):
        return F.relu(F.conv2d(x, w_deq, b, padding=pad) if conv else F.linear(x, w_deq, b))

    return Instance(make_args, _pair_impls(gpudnn_call, torch_call))


def _quant_cost(p, es) -> costs.Cost:
    """The GEMM's flops; bytes: activations in and out at es, the weight at 1 byte per element
    (int8 / fp8), float32 scales and the bias."""
    if "H" in p:
        ho = costs.conv_out(p["H"], p["k"], 1, p.get("pad", 0), 1)
        wo = costs.conv_out(p["W"], p["k"], 1, p.get("pad", 0), 1)
        rows, n, k = p["N"] * ho * wo, p["Cout"], p["Cin"] * p["k"] ** 2
        x_elems = p["N"] * p["Cin"] * p["H"] * p["W"]
    else:
        rows, n, k = p["M"], p["N"], p["K"]
        x_elems = rows * k
    nbytes = es * (x_elems + rows * n + n) + n * k + 4 * n
    return costs.Cost(2 * rows * n * k, nbytes, 2 * rows * n * k, nbytes)


def quant_case(qdtype, m=None, n=None, k=None, conv=None, tiny=None):
    """Weight-only ``qdtype`` ("int8" / "fp8") linear [M, K] x [N, K], or a 3x3 conv
    (conv = (N, Cin, H, W, Cout)); bias and ReLU fused; inference (forward only)."""
    if conv:
        nb, cin, h, w, cout = conv
        params = dict(N=nb, Cin=cin, H=h, W=w, Cout=cout, k=3, pad=1, qdtype=qdtype)
        tiny = tiny or dict(N=2, Cin=3, H=5, W=4, Cout=4)
        op = "quantized_conv2d"
    else:
        params = dict(M=m, N=n, K=k, qdtype=qdtype)
        tiny = tiny or dict(M=5, N=7, K=9)
        op = "quantized_linear"
    return Case(f"{op}+{qdtype}", "quant", "large", params, tiny, _quant_build, _quant_cost,
                matmul="cudnn" if conv else "matmul", modes=("fwd",))


def _sparse_build(p, device, dtype):
    """gpudnn: a 2:4-pruned Linear finalized and handed to torch's semi-structured sparse
    kernels (``gpudnn.prune.to_semi_structured``; on the CPU, for the dry run, the dense pruned
    layer); torch: the same masked weight through the dense GEMM."""
    import gpudnn
    layer = torch.nn.Linear(p["K"], p["N"])
    gpudnn.prune.remove(gpudnn.prune(layer, method="2:4"))
    layer = layer.to(device=device, dtype=dtype).requires_grad_(False)
    weight, bias = layer.weight, layer.bias

    def make_args():
        return [_randn((p["M"], p["K"]), device, dtype, grad=False)]

    def gpudnn_factory():
        if torch.device(device).type == "cpu":
            return lambda x: F.linear(x, weight, bias)
        sparse = gpudnn.prune.to_semi_structured(copy.deepcopy(layer))
        return lambda x: sparse(x)

    return Instance(make_args, {"gpudnn": gpudnn_factory,
                                "torch": lambda: lambda x: F.linear(x, weight, bias)})


def sparse_case(m, n, k):
    return Case("linear_2to4", "quant", "large", dict(M=m, N=n, K=k), dict(M=5, N=8, K=16),
                _sparse_build, lambda p, es: costs.dense(p["M"], p["N"], p["K"], es, True, False),
                matmul="matmul", modes=("fwd",))


def quant_cases() -> list[Case]:
    """int8 / fp8 weight-only against the bf16 GEMM it replaces, at token-by-token (M = 1, 16),
    batched (256) and full (4096) rows of a 4096 x 4096 layer and a 4096 -> 11008 MLP
    projection; a ResNet-stage 3x3 conv; 2:4 sparse tensor cores against dense at 4096^2."""
    out = []
    for qdtype in ("int8", "fp8"):
        for m in (1, 16, 256, 4096):
            out.append(quant_case(qdtype, m, 4096, 4096))
        out.append(quant_case(qdtype, 16, 11008, 4096))
        out.append(quant_case(qdtype, conv=(64, 256, 14, 14, 256)))
    for m in (16, 4096):
        out.append(sparse_case(m, 4096, 4096))
    return out


# --- the list ----------------------------------------------------------------------------------

def model_cases() -> list[Case]:
    """The layers of the three models at their training shapes (``profiling.models``)."""
    cnn: list[Case] = []
    b, size, ch = M.CNN_BATCH, M.CNN["image_size"], M.CNN["in_channels"]
    for width in M.CNN["widths"]:
        cnn += [conv_case("cnn", b, ch, size, size, width, 3, pad=1, bias=False),
                bn_case("cnn", b, width, size, size, act="relu"),
                pool_case("cnn", "max", b, width, size, size, 2, 2)]
        ch, size = width, size // 2
    flat, hidden = ch * size * size, M.CNN["hidden"]
    cnn += [rows_case("cnn", "dropout", b, flat),
            dense_case("cnn", b, hidden, flat, "relu"),
            dense_case("cnn", b, M.CNN["num_classes"], hidden, None),
            rows_case("cnn", "cross_entropy", b, M.CNN["num_classes"])]

    lm, rows = M.LSTM, M.LSTM_BATCH * M.LSTM_STEPS
    lstm = [embedding_case("lstm", lm["vocab_size"], lm["embed_dim"], M.LSTM_BATCH,
                           M.LSTM_STEPS),
            lstm_case("lstm", M.LSTM_STEPS, M.LSTM_BATCH, lm["embed_dim"], lm["hidden_size"],
                      lm["num_layers"]),
            dense_case("lstm", rows, lm["vocab_size"], lm["hidden_size"], None),
            rows_case("lstm", "cross_entropy", rows, lm["vocab_size"])]

    g, gb = M.GAN, M.GAN_BATCH
    doublings = {8: 0, 16: 1, 32: 2, 64: 3}[g["image_size"]]
    c, size = g["width"] * 2 ** doublings, 4
    gan = [conv_case("gan", gb, g["latent_dim"], 1, 1, c, 4, transposed=True, bias=False),
           bn_case("gan", gb, c, size, size, act="relu")]
    for _ in range(doublings):
        gan += [conv_case("gan", gb, c, size, size, c // 2, 4, stride=2, pad=1, transposed=True,
                          bias=False),
                bn_case("gan", gb, c // 2, 2 * size, 2 * size, act="relu")]
        c, size = c // 2, 2 * size
    gan.append(conv_case("gan", gb, c, size, size, g["channels"], 4, stride=2, pad=1,
                         transposed=True, act="tanh"))
    c, size = g["width"], g["image_size"] // 2
    gan.append(conv_case("gan", gb, g["channels"], 2 * size, 2 * size, c, 4, stride=2, pad=1,
                         act="leaky_relu"))
    for _ in range(doublings):
        gan += [conv_case("gan", gb, c, size, size, 2 * c, 4, stride=2, pad=1, bias=False),
                bn_case("gan", gb, 2 * c, size // 2, size // 2, act="leaky_relu")]
        c, size = 2 * c, size // 2
    gan += [conv_case("gan", gb, c, size, size, 1, 4),
            rows_case("gan", "binary_cross_entropy_with_logits", gb, 1)]
    return cnn + lstm + gan


def large_cases() -> list[Case]:
    n26 = 2 ** 26
    out = [
        dense_case("large", 4096, 4096, 4096, "relu"),
        dense_case("large", 4096, 4096, 4096, "gelu"),
        dense_case("large", 4096, 4096, 4096, None),
        rows_case("large", "softmax", n26 // 1024, 1024),
        rows_case("large", "softmax", n26 // 32768, 32768),
        rows_case("large", "log_softmax", n26 // 1024, 1024),
        rows_case("large", "cross_entropy", n26 // 1024, 1024),
        rows_case("large", "cross_entropy", n26 // 32768, 32768),
        rows_case("large", "dropout", n26 // 4096, 4096),
        rows_case("large", "relu", n26 // 4096, 4096),
        rows_case("large", "gelu", n26 // 4096, 4096),
        rows_case("large", "silu", n26 // 4096, 4096),
        rows_case("large", "binary_cross_entropy_with_logits", n26 // 4096, 4096),
        rows_case("large", "mse_loss", n26 // 4096, 4096),
        rows_case("large", "binary_cross_entropy", n26 // 4096, 4096),
        rows_case("large", "nll_loss", 4096, 32000),   # a 32k vocabulary, after log_softmax
    ]
    # ResNet-50 at batch 64, channels_last
    for c, hw in ((64, 112), (256, 56), (512, 28), (2048, 7)):
        out.append(bn_case("large", 64, c, hw, hw, act="relu", channels_last=True))
    out.append(bn_case("large", 4096, 4096, act="relu"))   # BatchNorm1d after a wide Linear
    # a transformer's LayerNorm (8192 tokens x 1024) and a UNet's GroupNorm (32 groups)
    out.append(norm_case("large", (8192, 1024)))
    out.append(norm_case("large", (8192, 1024), act="gelu"))
    out.append(norm_case("large", (16, 256, 32, 32), groups=32, act="silu"))
    resnet_convs = [  # (Cin, H, Cout, k, stride, pad)
        (3, 224, 64, 7, 2, 3),
        (64, 56, 64, 3, 1, 1),
        (256, 56, 64, 1, 1, 0),
        (128, 28, 128, 3, 1, 1),
        (256, 14, 256, 3, 1, 1),
        (512, 7, 512, 3, 1, 1),
        (256, 56, 512, 1, 2, 0),
    ]
    for cin, hw, cout, k, s, pad in resnet_convs:
        out.append(conv_case("large", 64, cin, hw, hw, cout, k, stride=s, pad=pad, bias=False,
                             channels_last=True))
    out.append(conv_case("large", 64, 64, 56, 56, 64, 3, pad=1, act="relu", channels_last=True))
    for c, hw in ((144, 56), (576, 14)):    # MobileNet-V2-style depthwise 3x3
        out.append(conv_case("large", 64, c, hw, hw, c, 3, pad=1, groups=c, bias=False,
                             channels_last=True))
    # DCGAN at batch 512: the generator's and discriminator's widest layers
    out.append(conv_case("large", 512, 128, 8, 8, 64, 4, stride=2, pad=1, transposed=True,
                         bias=False, channels_last=True))
    out.append(conv_case("large", 512, 64, 16, 16, 128, 4, stride=2, pad=1, bias=False,
                         channels_last=True))
    out.append(pool_case("large", "max", 64, 64, 112, 112, 3, 2, 1, channels_last=True))
    out.append(pool_case("large", "avg", 64, 256, 56, 56, 2, 2, 0, channels_last=True))
    # the ResNet-50 head at batch 256, both layouts; the LM embedding of a 32k vocabulary; a
    # U-Net-style channel dropout
    out.append(adaptive_pool_case("large", 256, 2048, 7, 7, 1))
    out.append(adaptive_pool_case("large", 256, 2048, 7, 7, 1, channels_last=True))
    out.append(embedding_case("large", 32000, 1024, 32, 512))
    out.append(dropout2d_case("large", 64, 256, 56, 56, channels_last=True))
    for hidden in (256, 512, 1024):
        for batch in (1, 32, 128):
            out.append(lstm_case("large", 100, batch, hidden, hidden))
        for batch in (32, 128):
            out.append(gru_case("large", 100, batch, hidden, hidden))
    shapes = resnet50_param_shapes()
    for kind in ("sgd", "adam", "adamw"):
        out.append(optim_case(kind, shapes, "resnet50"))
    return out + quant_cases()


def all_cases() -> list[Case]:
    return model_cases() + large_cases()


def select(cases: list[Case], ops: list[str] | None = None, quick: bool = False,
           family_first: bool = False) -> list[Case]:
    """Cases whose op, op base name (before "+") or family is in ``ops``; ``quick`` keeps the
    first shape of each (op, source) pair; ``family_first`` moves one case of every family
    (its first large one, else its first) to the front, so that a run cut short by a time
    budget has measured every family."""
    if ops:
        wanted = set(ops)
        cases = [c for c in cases if c.op in wanted or c.op.split("+")[0] in wanted
                 or c.family in wanted]
    if quick:
        seen, kept = set(), []
        for c in cases:
            if (c.op, c.source) not in seen:
                seen.add((c.op, c.source))
                kept.append(c)
        cases = kept
    if family_first:
        heads: dict = {}
        for c in cases:
            if c.family not in heads or (c.source == "large"
                                         and heads[c.family].source != "large"):
                heads[c.family] = c
        front = list(heads.values())
        cases = front + [c for c in cases if all(c is not h for h in front)]
    return cases
