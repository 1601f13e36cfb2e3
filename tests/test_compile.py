"""torch.compile and torch.export through every gpudnn op (the ``torch.ops.gpudnn`` custom ops).

- every op passes ``torch.library.opcheck`` (schema, fake rule, autograd registration, AOT
  dispatch with dynamic shapes) on every backend that runs here;
- every Triton op traces, as Inductor sees it on a GPU, into Triton kernel calls that write none
  of the op's inputs (tests/fake_cuda_trace.py, on fake tensors: no GPU needed);
- every gpudnn module and the three models compile with ``fullgraph=True`` and zero graph breaks,
  and give eager's outputs, gradients and training steps; compiled code follows the backend
  selection and keeps its errors; eval models export with ``torch.export``.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import gpudnn
import gpudnn.nn as gnn
from gpudnn import backend
from gpudnn.models import cnn, gan, lstm, to_gpudnn
from gpudnn.ops import OPS
from gpudnn.testing import assert_close
from helpers import DEVICE, _leaves
from op_samples import SAMPLES, differentiable, samples

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_BACKENDS = ["reference", "triton"] + (["cupy"] if DEVICE == "cuda" else [])


def assert_no_graph_breaks(fn, *args) -> None:
    """``fn(*args)`` is one graph for torch.compile (what ``fullgraph=True`` requires)."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*args)
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1


# --- opcheck ------------------------------------------------------------------------------------

def test_every_op_has_samples():
    assert set(OPS) == set(SAMPLES)


def _with_grad(args: tuple) -> tuple:
    return tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor)
                 and a.is_floating_point() and a.dim() > 0 else a for a in args)


@pytest.mark.parametrize("backend_name", KERNEL_BACKENDS)
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_opcheck(name, backend_name):
    if backend_name == "cupy" and OPS[name].opaque is not None and \
            backend.KERNELS.get(name.removesuffix("_backward")) is not None and \
            backend.KERNELS[name.removesuffix("_backward")].cupy is None:
        pytest.skip(f"the cupy backend has no {name}")
    for args in samples(name, backend_name, DEVICE):
        if differentiable(name, args):
            args = _with_grad(args)
        torch.library.opcheck(OPS[name].overload, args)


# --- the Triton ops as Inductor sees them on a GPU ----------------------------------------------

def test_triton_ops_trace_into_kernel_calls_for_inductor():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, os.path.join(HERE, "fake_cuda_trace.py")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert {r["op"] for r in results} == {n for n, op in OPS.items() if op.traceable}
    assert [r for r in results if r["problems"]] == []
    assert all(r["kernels"] > 0 for r in results)
    # the opaque ones, by design: device pointer tables and CUDA-graph replays
    assert {n for n, op in OPS.items() if not op.traceable} == {
        "lstm_cell", "lstm_cell_backward", "lstm_layer", "lstm_layer_backward", "sgd_step",
        "adam_step", "gru_cell", "gru_cell_backward", "gru_layer", "gru_layer_backward"}


# --- modules and models under torch.compile -----------------------------------------------------

def _image(*shape):
    return torch.randn(*shape, device=DEVICE)


# every gpudnn.nn twin: (module, example inputs); test_every_twin_is_compiled checks coverage
TWIN_EXAMPLES = {
    "Linear": lambda: (gnn.Linear(5, 4, activation="gelu"), (_image(3, 5),)),
    "Conv2d": lambda: (gnn.Conv2d(3, 4, 3, padding=1, activation="relu"), (_image(2, 3, 6, 5),)),
    "ConvTranspose2d": lambda: (gnn.ConvTranspose2d(3, 2, 4, 2, 1, activation="tanh"),
                                (_image(2, 3, 3, 4),)),
    "BatchNorm1d": lambda: (gnn.BatchNorm1d(4, activation="silu"), (_image(5, 4),)),
    "LayerNorm": lambda: (gnn.LayerNorm((3, 4), activation="gelu"), (_image(2, 5, 3, 4),)),
    "GroupNorm": lambda: (gnn.GroupNorm(2, 4, activation="silu"), (_image(2, 4, 3, 3),)),
    "BatchNorm2d": lambda: (gnn.BatchNorm2d(3, bias=False), (_image(2, 3, 4, 4),)),
    # one process: SyncBatchNorm is BatchNorm (tests/test_sync_batchnorm.py runs two)
    "SyncBatchNorm": lambda: (gnn.SyncBatchNorm(3, activation="relu"), (_image(2, 3, 4, 4),)),
    "Dropout": lambda: (gnn.Dropout(0.3), (_image(3, 4),)),
    "Dropout1d": lambda: (gnn.Dropout1d(0.3), (_image(3, 4, 5),)),
    "Dropout2d": lambda: (gnn.Dropout2d(0.4), (_image(2, 3, 4, 5),)),
    "Embedding": lambda: (gnn.Embedding(7, 4, padding_idx=0),
                          (torch.tensor([[1, 0, 6], [3, 3, 2]], device=DEVICE),)),
    "Softmax": lambda: (gnn.Softmax(dim=1), (_image(3, 5),)),
    "LogSoftmax": lambda: (gnn.LogSoftmax(dim=-1), (_image(3, 5),)),
    "ReLU": lambda: (gnn.ReLU(), (_image(3, 5),)),
    "LeakyReLU": lambda: (gnn.LeakyReLU(0.2), (_image(3, 5),)),
    "Sigmoid": lambda: (gnn.Sigmoid(), (_image(3, 5),)),
    "Tanh": lambda: (gnn.Tanh(), (_image(3, 5),)),
    "GELU": lambda: (gnn.GELU(approximate="tanh"), (_image(3, 5),)),
    "SiLU": lambda: (gnn.SiLU(), (_image(3, 5),)),
    "MaxPool2d": lambda: (gnn.MaxPool2d(3, 2, 1), (_image(2, 3, 7, 6),)),
    "AvgPool2d": lambda: (gnn.AvgPool2d(2), (_image(2, 3, 6, 6),)),
    "AdaptiveAvgPool2d": lambda: (gnn.AdaptiveAvgPool2d((3, None)), (_image(2, 3, 7, 5),)),
    "LSTM": lambda: (gnn.LSTM(3, 4, num_layers=2, batch_first=True, bidirectional=True),
                     (_image(2, 5, 3),)),
    "LSTMCell": lambda: (gnn.LSTMCell(3, 4), (_image(2, 3),)),
    "GRU": lambda: (gnn.GRU(3, 4, num_layers=2, bidirectional=True), (_image(5, 2, 3),)),
    "GRUCell": lambda: (gnn.GRUCell(3, 4), (_image(2, 3), _image(2, 4))),
    "CrossEntropyLoss": lambda: (gnn.CrossEntropyLoss(torch.rand(5), label_smoothing=0.1),
                                 (_image(4, 5), torch.tensor([0, 4, 2, 1], device=DEVICE))),
    "NLLLoss": lambda: (gnn.NLLLoss(torch.rand(5), ignore_index=2),
                        (_image(4, 5).log_softmax(1), torch.tensor([0, 4, 2, 1], device=DEVICE))),
    "BCEWithLogitsLoss": lambda: (gnn.BCEWithLogitsLoss(torch.rand(3), pos_weight=torch.rand(3)),
                                  (_image(4, 3), _image(4, 3).sigmoid())),
    "BCELoss": lambda: (gnn.BCELoss(torch.rand(4, 1)), (_image(4, 3).sigmoid(),
                                                        _image(4, 3).sigmoid())),
    "MSELoss": lambda: (gnn.MSELoss(reduction="sum"), (_image(4, 3), _image(4, 3))),
}


def test_every_twin_is_compiled():
    assert set(TWIN_EXAMPLES) == set(gnn.TWINS)


def _run(module, inputs):
    """Outputs and the gradients of the float inputs and parameters, for a fixed cotangent."""
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    module.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout seed in both runs
    outs = _leaves(module(*inputs))
    gen = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=gen).to(o.device)).sum() for o in outs
               if o.requires_grad)
    loss.backward()
    grads = [t.grad for t in inputs if t.requires_grad] + [p.grad for p in module.parameters()]
    return outs, grads


def _compare(name, eager, compiled) -> None:
    for kind, a_list, b_list in (("output", *[r[0] for r in (compiled, eager)]),
                                 ("grad", *[r[1] for r in (compiled, eager)])):
        assert len(a_list) == len(b_list)
        for k, (a, b) in enumerate(zip(a_list, b_list)):
            assert_close(a, b, torch.float32, name=f"{name} {kind} {k}")


@pytest.mark.parametrize("name", sorted(TWIN_EXAMPLES))
def test_compiled_module_matches_eager(name):
    torch.manual_seed(0)
    module, inputs = TWIN_EXAMPLES[name]()
    module = module.to(DEVICE)
    assert_no_graph_breaks(module, *inputs)
    eager = _run(module, inputs)
    compiled = _run(torch.compile(module, backend="aot_eager", fullgraph=True), inputs)
    _compare(name, eager, compiled)


def _models():
    torch.manual_seed(0)
    gan_model = to_gpudnn(gan.build_torch(latent_dim=8, image_size=16, width=8))
    return {
        "cnn": (to_gpudnn(cnn.build_torch(widths=(4, 8), hidden=16, dropout=0.0)),
                lambda m, n: torch.nn.functional.cross_entropy(
                    m(_image(n, 1, 8, 8)), torch.randint(0, 10, (n,), device=DEVICE))),
        "gan": (gan_model, lambda m, n: m.discriminator(m(_image(n, 8, 1, 1))).mean()),
        "lstm": (to_gpudnn(lstm.build_torch(12, embed_dim=6, hidden_size=8)),
                 lambda m, n: m(torch.randint(0, 12, (n, 5), device=DEVICE))[0].square().mean()),
    }


@pytest.mark.parametrize("model_name", ["cnn", "gan", "lstm"])
def test_compiled_model_trains_like_eager(model_name):
    """Two training steps (forward, loss, backward, gpudnn Adam) of a gpudnn model, compiled by
    Inductor with fullgraph=True, against the same steps in eager."""
    model, loss_of = _models()[model_name]
    model = model.to(DEVICE)
    twin = to_gpudnn(model)  # same parameters, its own tensors
    compiled = torch.compile(model, fullgraph=True)

    def steps(net, forward):
        optimizer = gpudnn.optim.Adam(net.parameters(), lr=1e-2)
        losses = []
        for step in range(2):
            torch.manual_seed(step)
            loss = loss_of(forward, 4)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        return losses

    torch._dynamo.reset()
    assert_no_graph_breaks(lambda n: loss_of(twin, n), 4)
    expected = steps(twin, twin)
    got = steps(model, compiled)
    for k, (a, b) in enumerate(zip(got, expected)):
        assert_close(a, b, torch.float32, name=f"{model_name} loss {k}")
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert_close(p, q, torch.float32, name=f"{model_name} {name}", scale=10.0)


@pytest.mark.skipif(DEVICE != "cpu", reason="the Triton interpreter runs on the CPU")
def test_compiled_model_runs_the_triton_interpreter_opaquely():
    model, loss_of = _models()["cnn"]
    with gpudnn.use_backend("triton"):
        torch.manual_seed(1)
        expected = loss_of(model, 2)
        torch._dynamo.reset()
        torch.manual_seed(1)
        got = loss_of(torch.compile(model, backend="aot_eager", fullgraph=True), 2)
    assert_close(got, expected, torch.float32, name="loss")


def test_compiled_code_follows_the_backend_selection_and_keeps_its_errors(monkeypatch):
    seen, real = [], backend.Kernels.of

    def spy(self, name):
        seen.append(name)
        return real(self, name)

    monkeypatch.setattr(backend.Kernels, "of", spy)
    layer = gnn.Linear(4, 3, activation="relu").to(DEVICE)
    compiled = torch.compile(layer, backend="aot_eager")
    x = _image(2, 4)
    torch._dynamo.reset()
    with gpudnn.use_backend("reference"):
        expected = compiled(x)
    assert set(seen) == {"reference"}
    seen.clear()
    with gpudnn.use_backend("triton"):  # a new selection: recompiled for triton
        assert_close(compiled(x), expected, torch.float32, name="triton")
    assert set(seen) == {"triton"}
    if DEVICE == "cpu":
        with gpudnn.use_backend("cupy"), pytest.raises(RuntimeError, match="cupy backend"):
            compiled(x)


def test_a_graph_break_is_caught():
    layer = gnn.Linear(4, 3)

    def breaks(x):
        y = layer(x)
        print(end="")  # a Python side effect dynamo cannot put in a graph
        return y * 2

    with pytest.raises(AssertionError):
        assert_no_graph_breaks(breaks, _image(2, 4))


# --- torch.export -------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", ["cnn", "gan", "lstm"])
def test_export_of_an_eval_model(model_name):
    model = _models()[model_name][0].to(DEVICE).eval()
    if model_name == "gan":
        model, example = model.generator, (_image(2, 8, 1, 1),)
    elif model_name == "cnn":
        example = (_image(2, 1, 8, 8),)
    else:
        example = (torch.randint(0, 12, (2, 5), device=DEVICE),)
    program = torch.export.export(model, example)
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any(t.startswith("gpudnn.") for t in targets), targets
    with torch.no_grad():
        for a, b in zip(_leaves(program.module()(*example)), _leaves(model(*example))):
            assert_close(a, b, torch.float32, name=f"{model_name} exported")
