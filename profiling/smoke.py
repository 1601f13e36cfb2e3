"""``python -m profiling.smoke``: every kernel family once, forward and backward, per backend.

The small driver that ``profiling.gpu_check`` runs plainly (which also compiles every family's
kernels once, so Triton's and CuPy's caches are warm for the tests) and under compute-sanitizer's
memcheck and racecheck. It calls the public API only (``gpudnn.functional``, ``gpudnn.nn``,
``gpudnn.optim`` under ``gpudnn.use_backend``), so it does not change when the op wiring does.

Each item runs on small random inputs (drawn on the CPU from fixed seeds, the same for every
backend and device) and its output and gradients are compared with the same call on the
``reference`` backend (relative error ||a - b|| / ||b||, at most ``TOLERANCE``). An item that
fails is recorded and the driver goes on; after a sticky CUDA error (an illegal address, say)
the remaining items are recorded as not run. The JSON is rewritten before and after every
item, so a run that is killed (a hang under the sanitizer) keeps what it did and names the item
it was in (``running``).

    python -m profiling.smoke [--backend triton cupy] [--device cuda] [--item NAME ...]
                              [--no-compare] [--out FILE.json] [--list]

Exit code 0 when every item is ok, 1 otherwise.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Callable

import torch

TOLERANCE = 1e-2   # fp32; tf32 convolutions (cudnn.allow_tf32) land near 1e-3, bugs near 1


# --- the items ---------------------------------------------------------------------------------
# Each builder returns (call, leaves): ``call()`` runs the op through the public API and returns
# one tensor; ``leaves`` are the tensors whose gradients backward computes (None: no backward,
# the optimizers, whose step is the update). Inputs are drawn on the CPU after a fixed seed.

def _leaf(device, *shape, scale: float = 1.0, grad: bool = True) -> torch.Tensor:
    return (torch.randn(shape) * scale).to(device).requires_grad_(grad)


def _module(device, factory: Callable, *shape, scale: float = 1.0):
    module = factory().to(device)
    x = _leaf(device, *shape, scale=scale)
    return (lambda: module(x)), [x, *module.parameters()]


def _functional(device, name: str, *shape, scale: float = 1.0, target=None, **kwargs):
    import gpudnn.functional as GF
    x = _leaf(device, *shape, scale=scale)
    extra = [] if target is None else [target(shape).to(device)]
    return (lambda: getattr(GF, name)(x, *extra, **kwargs)), [x]


def _nn(name: str, *args, **kwargs) -> Callable:
    def factory():
        import gpudnn.nn as gnn
        return getattr(gnn, name)(*args, **kwargs)
    return factory


def _rnn_layer(name: str) -> Callable:
    """The builder of a recurrent layer's item: ``name`` is "LSTM" or "GRU"."""
    def build(device):
        module = _nn(name, 5, 7)().to(device)
        x = _leaf(device, 4, 3, 5)

        def call():
            # on CUDA the first forward and backward of a shape run eagerly and the second
            # capture the step loops in CUDA graphs and replay them (kernels/graphs.py): run both
            warm = module(x)[0]
            torch.autograd.grad(warm, [x], torch.ones_like(warm))
            return module(x)[0]
        return call, [x, *module.parameters()]
    return build


def _lstm_cell(device):
    module = _nn("LSTMCell", 5, 7)().to(device)
    x, h, c = _leaf(device, 3, 5), _leaf(device, 3, 7), _leaf(device, 3, 7)

    def call():
        h1, c1 = module(x, (h, c))
        return torch.cat([h1, c1], dim=1)
    return call, [x, h, c, *module.parameters()]


def _gru_cell(device):
    module = _nn("GRUCell", 5, 7)().to(device)
    x, h = _leaf(device, 3, 5), _leaf(device, 3, 7)
    return (lambda: module(x, h)), [x, h, *module.parameters()]


def _activations(device):
    import gpudnn.functional as GF
    x = _leaf(device, 5, 13, scale=2.0)

    def call():
        return (GF.relu(x) + GF.leaky_relu(x, 0.1) + GF.sigmoid(x) + GF.tanh(x) + GF.gelu(x)
                + GF.gelu(x, approximate="tanh") + GF.silu(x))
    return call, [x]


def _optimizer(name: str, **hyper):
    def build(device):
        import gpudnn.optim
        params = [_leaf(device, *shape, scale=0.1) for shape in ((6, 5), (7,), (2, 3, 3, 3))]
        for p in params:
            p.grad = torch.randn(p.shape).to(device) * 1e-2
        optimizer = getattr(gpudnn.optim, name)(params, **hyper)

        def call():
            for _ in range(2):
                optimizer.step()
            return torch.cat([p.detach().flatten() for p in params])
        return call, None
    return build


def _targets(kind: str) -> Callable:
    if kind == "class":
        return lambda shape: torch.randint(0, shape[-1], shape[:-1])
    if kind == "prob":
        return lambda shape: torch.rand(shape)
    return lambda shape: torch.randn(shape)


def _bce(device):
    """binary_cross_entropy on probabilities in (0, 1), with a per-row weight."""
    import gpudnn.functional as GF
    p = (torch.rand(6, 11) * 0.98 + 0.01).to(device).requires_grad_(True)
    y, w = torch.rand(6, 11).to(device), torch.rand(6, 1).to(device)
    return (lambda: GF.binary_cross_entropy(p, y, weight=w)), [p]


# name -> (family, builder(device))
ITEMS: dict = {
    "linear+relu": ("dense", lambda d: _module(d, _nn("Linear", 24, 16, activation="relu"),
                                               8, 24)),
    "conv2d+relu": ("conv", lambda d: _module(d, _nn("Conv2d", 3, 8, 3, padding=1,
                                                     activation="relu"), 2, 3, 9, 9)),
    "conv_transpose2d": ("conv", lambda d: _module(d, _nn("ConvTranspose2d", 4, 3, 4, stride=2,
                                                          padding=1), 2, 4, 5, 5)),
    "batch_norm2d+relu": ("batchnorm", lambda d: _module(d, _nn("BatchNorm2d", 5,
                                                                activation="relu"), 3, 5, 4, 4)),
    "dropout": ("dropout", lambda d: _functional(d, "dropout", 6, 33, p=0.3, training=True)),
    "softmax": ("softmax", lambda d: _functional(d, "softmax", 6, 37, scale=3.0, dim=-1)),
    "log_softmax": ("softmax", lambda d: _functional(d, "log_softmax", 6, 37, scale=3.0,
                                                     dim=-1)),
    "cross_entropy": ("losses", lambda d: _functional(d, "cross_entropy", 6, 11, scale=2.0,
                                                      target=_targets("class"))),
    "bce_with_logits": ("losses", lambda d: _functional(
        d, "binary_cross_entropy_with_logits", 6, 11, scale=2.0, target=_targets("prob"))),
    "mse_loss": ("losses", lambda d: _functional(d, "mse_loss", 6, 11, target=_targets("x"))),
    "cross_entropy+options": ("losses", lambda d: _functional(
        d, "cross_entropy", 6, 11, scale=2.0, target=_targets("class"),
        weight=torch.rand(11).to(d), label_smoothing=0.1)),
    "cross_entropy_probs": ("losses", lambda d: _functional(
        d, "cross_entropy", 6, 11, scale=2.0, target=_targets("prob"),
        weight=torch.rand(11).to(d), label_smoothing=0.1)),
    "nll_loss": ("losses", lambda d: _functional(d, "nll_loss", 6, 11, target=_targets("class"),
                                                 weight=torch.rand(11).to(d))),
    "bce": ("losses", lambda d: _bce(d)),
    "bce_with_logits+weights": ("losses", lambda d: _functional(
        d, "binary_cross_entropy_with_logits", 6, 11, scale=2.0, target=_targets("prob"),
        weight=torch.rand(6, 1).to(d), pos_weight=torch.rand(11).to(d) * 3)),
    "max_pool2d": ("pool", lambda d: _module(d, _nn("MaxPool2d", 3, 2, 1), 2, 3, 9, 9)),
    "avg_pool2d": ("pool", lambda d: _module(d, _nn("AvgPool2d", 2), 2, 3, 9, 9)),
    "lstm": ("lstm", _rnn_layer("LSTM")),
    "lstm_cell": ("lstm", _lstm_cell),
    "gru": ("gru", _rnn_layer("GRU")),
    "gru_cell": ("gru", _gru_cell),
    "sgd_step": ("optim", _optimizer("SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)),
    "adam_step": ("optim", _optimizer("Adam", lr=1e-3, weight_decay=1e-2)),
    "activations": ("activations", _activations),
}


# --- running them ------------------------------------------------------------------------------

def run_item(name: str, backend: str, device: str) -> list[torch.Tensor]:
    """The output and gradients of item ``name`` on ``backend``, detached, on the CPU."""
    import gpudnn
    torch.manual_seed(0)
    call, leaves = ITEMS[name][1](device)
    with gpudnn.use_backend(backend):
        torch.manual_seed(1)                # the dropout seed: the same mask on every backend
        out = call()
        results = [out]
        if leaves is not None:
            grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
            grads = torch.autograd.grad(out, leaves, grad_out.to(device=device, dtype=out.dtype),
                                        allow_unused=True)
            results += [g for g in grads if g is not None]
    if device == "cuda":
        torch.cuda.synchronize()
    return [t.detach().to("cpu", torch.float64) for t in results]


def relative_error(mine: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """The largest ||a - b|| / ||b|| over the tensors (NaN counts as infinitely far)."""
    if len(mine) != len(reference):
        return float("inf")
    worst = 0.0
    for a, b in zip(mine, reference):
        if a.shape != b.shape:
            return float("inf")
        diff = torch.linalg.vector_norm(torch.nan_to_num(a - b, nan=float("inf"))).item()
        norm = torch.linalg.vector_norm(b).item()
        worst = max(worst, diff / norm if norm else diff)
    return worst


def run(backends: list[str], device: str, names: list[str], compare: bool = True,
        out: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Every item on every backend; the record (also written to ``out`` as it grows)."""
    from .harness import classify, cuda_broken, describe
    from .report import write_json
    record: dict = {"device": device, "backends": backends, "torch": torch.__version__,
                    "tolerance": TOLERANCE, "running": None, "items": []}

    def save():
        if out:
            write_json(out, record)

    broken = None
    for backend in backends:
        for name in names:
            item = {"backend": backend, "item": name, "family": ITEMS[name][0]}
            if broken:
                item.update(status="not run", error=f"the CUDA context is broken ({broken})")
                record["items"].append(item)
                continue
            record["running"] = f"{backend} {name}"
            save()
            started = time.perf_counter()
            try:
                mine = run_item(name, backend, device)
                item["status"] = "ok"
            except Exception as exc:
                item.update(status=classify(exc), error=describe(exc))
                broken = cuda_broken(device)
            if item["status"] == "ok" and compare and backend != "reference":
                try:
                    item["rel_err"] = relative_error(mine, run_item(name, "reference", device))
                    if not item["rel_err"] <= TOLERANCE:
                        item["status"] = "mismatch"
                except Exception as exc:   # the item ran; only the comparison is missing
                    item["reference_error"] = describe(exc)
            item["seconds"] = round(time.perf_counter() - started, 3)
            record["items"].append(item)
            record["running"] = None
            save()
            err = f" rel_err {item['rel_err']:.1e}" if "rel_err" in item else ""
            log(f"{backend:<9} {name:<18} {item['status']:<8} {item['seconds']:7.2f} s{err}"
                + (f"  {item['error'][:200]}" if "error" in item else ""))
    record["done"] = True
    save()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiling.smoke", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", nargs="+", default=["triton", "cupy"],
                        choices=["triton", "cupy", "reference"])
    parser.add_argument("--device", default=None, help="cuda (default where there is one), cpu")
    parser.add_argument("--item", nargs="+", metavar="NAME",
                        help="items (or families) to run; default: all")
    parser.add_argument("--no-compare", action="store_true",
                        help="do not compare with the reference backend")
    parser.add_argument("--out", metavar="FILE.json")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    names = [n for n, (family, _) in ITEMS.items()
             if not args.item or n in args.item or family in args.item]
    if args.list:
        for n in names:
            print(f"{ITEMS[n][0]:<12} {n}")
        return 0
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    record = run(args.backend, device, names, not args.no_compare, args.out)
    bad = [f"{i['backend']} {i['item']}" for i in record["items"] if i["status"] != "ok"]
    print(f"smoke: {len(record['items']) - len(bad)}/{len(record['items'])} ok"
          + (f"; not ok: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
