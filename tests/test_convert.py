"""gpudnn.nn.convert: torch.nn layers become gpudnn twins with the same parameters, activation runs
inside nn.Sequential are fused, and the converted model computes what the torch model does.

And, one test (or a few) per point of issue 15 item 2: convert works in place by default, so an
optimizer built before it keeps training the model the user holds (``inplace=False``: a deep
copy); the torch.fx pass fuses functional / method / module activations into the layer before them
and moves torch.nn.functional calls to gpudnn.functional, with torch's semantics (refused
arguments, in-place calls, train/eval graphs, None arguments, per-call fusion); untraceable
forwards are left alone and said why; ModuleList / ModuleDict / plain lists / subclasses of torch
layers; the report; bad arguments.
"""
import copy
import io

import pytest
import torch
from torch import nn

import gpudnn.functional as GF
import gpudnn.nn as gnn
from gpudnn.testing import assert_close
from helpers import compare_float32_on_device, compare_with_twin


def _mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 5), nn.BatchNorm1d(5),
                         nn.LeakyReLU(0.2), nn.Dropout(0.0), nn.Linear(5, 3), nn.Tanh()).double()


def _cnn():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(4, 3, 3, padding="same"), nn.SiLU(),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 5)).double()


def _compare(torch_model, converted, x):
    return compare_with_twin(converted, torch_model, x)


def test_mlp_layers_swapped_and_fused():
    model = _mlp()
    converted = gnn.convert(model, inplace=False)
    assert type(converted[0]) is gnn.Linear and converted[0].activation.name == "relu"
    assert isinstance(converted[1], nn.Identity)
    assert type(converted[3]) is gnn.BatchNorm1d
    assert converted[3].activation.name == "leaky_relu" and converted[3].activation.param == 0.2
    assert converted[2].activation is None  # the activation went into the BatchNorm
    assert isinstance(converted[4], nn.Identity)
    assert type(converted[5]) is gnn.Dropout
    assert converted[6].activation.name == "tanh" and isinstance(converted[7], nn.Identity)
    assert list(converted.state_dict()) == list(model.state_dict())
    # the original is untouched
    assert type(model[0]) is nn.Linear and type(model[1]) is nn.ReLU


def test_mlp_converted_matches_torch_in_training():
    model = _mlp().train()
    converted = gnn.convert(model, inplace=False)
    _compare(model, converted, torch.randn(6, 7, dtype=torch.float64))
    for key, value in model.state_dict().items():  # running statistics updated alike
        assert_close(converted.state_dict()[key], value, name=key)


def test_cnn_converted_matches_torch():
    model = _cnn().train()
    converted = gnn.convert(model, inplace=False)
    assert converted[1].activation.name == "relu" and isinstance(converted[2], nn.Identity)
    assert converted[4].activation.name == "silu" and isinstance(converted[5], nn.Identity)
    assert type(converted[3]) is gnn.MaxPool2d and type(converted[6]) is gnn.AvgPool2d
    _compare(model, converted, torch.randn(3, 2, 8, 8, dtype=torch.float64))


def test_cnn_converted_float32_on_device(device):
    # the whole converted model on the test device (CUDA: the GPU kernels; CPU: the reference)
    model = _cnn().train()
    converted = gnn.convert(model, inplace=False)
    compare_float32_on_device(converted, model, torch.randn(3, 2, 8, 8), device=device,
                              grad_scale=10.0)
    for key, value in model.state_dict().items():
        assert_close(converted.state_dict()[key], value, name=key)


def test_fold_batchnorm_in_eval():
    model = _cnn()
    model(torch.randn(4, 2, 8, 8, dtype=torch.float64))  # non-trivial running statistics
    model.eval()
    folded = gnn.convert(model, inplace=False, fold_batchnorm=True)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[2], nn.Identity)
    assert folded[0].activation.name == "relu"
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert_close(folded(x), model(x), name="folded output")


def test_inplace_returns_the_same_object_with_the_same_parameters():
    model = _mlp()
    weight = model[0].weight
    out = gnn.convert(model, inplace=True)
    assert out is model and out[0].weight is weight and type(out[0]) is gnn.Linear


def test_nested_modules_and_user_subclasses():
    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 4), nn.GELU())
            self.head = MyLinear(4, 2)
            self.lstm = nn.LSTM(4, 3, batch_first=True)

        def forward(self, x):
            h = self.head(self.body(x))
            return h, self.lstm(x)[0]

    net = Net().double()
    converted = gnn.convert(net, inplace=False)
    assert type(converted.body[0]) is gnn.Linear and converted.body[0].activation.name == "gelu"
    assert type(converted.head) is MyLinear  # may override forward: left alone
    assert type(converted.lstm) is gnn.LSTM
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    for a, b in zip(net(x), converted(x)):
        assert_close(b, a)


def test_already_fused_layers_are_not_fused_twice():
    model = nn.Sequential(gnn.Linear(3, 3, activation="sigmoid"), nn.ReLU())
    converted = gnn.convert(model)
    assert converted[0].activation.name == "sigmoid" and type(converted[1]) is gnn.ReLU


def test_convert_rejects_non_modules():
    with pytest.raises(TypeError):
        gnn.convert(copy.deepcopy)


# --- issue 15 item 2: in place by default; the torch.fx pass; containers; the report --------------

def _fit(model, optimizer, x, y, steps=3):
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def test_optimizer_built_before_convert_keeps_training():
    """The examples' order: optimizer first, then convert. The same parameter objects train."""
    model = _mlp()
    twin = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert gnn.convert(model) is model and type(model[0]) is gnn.Linear
    x, y = torch.randn(8, 7, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    losses = _fit(model, optimizer, x, y)
    want = _fit(twin, torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9), x, y)
    assert_close(losses, want, name="losses")
    assert losses[-1] < losses[0]
    for (name, p), q, p0 in zip(model.named_parameters(), twin.parameters(), before):
        assert_close(p, q, name=name)
        assert not torch.equal(p, p0), f"{name} did not train"


def test_inplace_false_converts_a_deep_copy():
    model = _mlp()
    converted = gnn.convert(model, inplace=False)
    assert converted is not model and type(model[0]) is nn.Linear
    assert all(p is not q for p, q in zip(model.parameters(), converted.parameters()))
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.1)  # built after convert
    before = [p.detach().clone() for p in model.parameters()]
    _fit(converted, optimizer, torch.randn(8, 7, dtype=torch.float64),
         torch.randn(8, 3, dtype=torch.float64), steps=1)
    assert all(torch.equal(p, p0) for p, p0 in zip(model.parameters(), before))


class Spellings(nn.Module):
    """Every way of writing an activation after a layer that the fx pass fuses."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3, self.l4, self.l5 = (nn.Linear(6, 6) for _ in range(5))
        self.act = nn.SiLU()
        self.ln = nn.LayerNorm(6)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.up = nn.ConvTranspose2d(3, 2, 2, stride=2)

    def forward(self, x, img):
        x = torch.relu(self.l1(x))
        x = self.l2(x).sigmoid()
        x = torch.nn.functional.leaky_relu(self.l3(x), 0.2)
        x = torch.nn.functional.gelu(self.l4(x), approximate="tanh")
        x = self.act(self.l5(x))
        x = torch.tanh(self.ln(x))
        y = torch.nn.functional.relu(self.bn(self.conv(img)), inplace=True)
        return x, torch.tanh(self.up(y))


def test_functional_method_and_module_activations_fuse_into_the_layer():
    torch.manual_seed(4)
    model = Spellings().double()
    converted, report = gnn.convert(model, inplace=False, report=True)
    assert sorted(report.fused) == sorted([
        "l1 + torch.relu", "l2 + .sigmoid()", "l3 + F.leaky_relu", "l4 + F.gelu",
        "l5 + act (SiLU)", "ln + torch.tanh", "bn + F.relu", "up + torch.tanh"])
    assert report.rewritten == ["Spellings"] and isinstance(converted, Spellings)
    assert type(converted) is not Spellings and type(converted).__name__ == "Spellings"
    assert "'leaky_relu', 0.2" in report.code["Spellings"]
    assert "'gelu_tanh'" in report.code["Spellings"]
    assert list(converted.state_dict()) == list(model.state_dict())
    assert all(getattr(m, "activation", None) is None for m in converted.modules())
    compare_with_twin(converted, model, torch.randn(4, 6, dtype=torch.float64),
                      torch.randn(2, 2, 5, 5, dtype=torch.float64))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.twice = nn.Linear(4, 4)
        self.hooked = nn.Linear(4, 4)

    def decode(self, x):
        return self.fc(x)

    def forward(self, x):
        a = torch.relu(self.fc(x))  # fused for this call only
        b = self.fc(x)  # the same layer, plain
        t = self.twice(x)
        c = torch.sigmoid(t) + t  # the layer's output has two users: not fused
        d = torch.relu(self.hooked(x))  # a hook on the layer: not fused
        return a + b + c + d


def test_fusion_is_per_call_and_only_where_the_activation_is_the_only_user():
    torch.manual_seed(5)
    model = Shared().double()
    seen = []
    model.hooked.register_forward_hook(lambda m, i, o: seen.append(o.detach().min()))
    converted, report = gnn.convert(model, inplace=False, report=True)
    assert report.fused == ["fc + torch.relu"]
    x = torch.randn(3, 4, dtype=torch.float64)
    compare_with_twin(converted, model, x)
    assert min(seen) < 0  # the hook saw the layer's own (pre-activation) output
    assert converted.fc.activation is None
    assert_close(converted.decode(x), model.decode(x), name="decode")  # other callers: plain


class Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(5, 3))

    def forward(self, x, idx):
        y = torch.nn.functional.max_pool2d(x, 2)
        y = torch.nn.functional.avg_pool2d(y, 2, ceil_mode=True) + 1
        p = torch.softmax(y.flatten(1), 1) + y.flatten(1).log_softmax(-1)
        p = torch.nn.functional.dropout(p, 0.0, training=self.training)
        q = torch.nn.functional.softmax(y.flatten(1))  # implicit dim: torch's rule, stays torch
        e = torch.nn.functional.embedding(idx, self.table, max_norm=1.0)  # refused by gpudnn
        r = torch.nn.functional.relu(p, inplace=True)  # p is used again below: stays in place
        s = torch.dropout(p, 0.0, True)  # torch.dropout's parameters are not F.dropout's
        return p + r + q + s, e


def test_functional_calls_move_to_gpudnn_and_refused_ones_stay_torch():
    torch.manual_seed(6)
    model = Functional().double()
    converted, report = gnn.convert(model, inplace=False, report=True)
    assert sorted(set(report.functional)) == [".log_softmax()", "F.avg_pool2d", "F.dropout",
                                              "F.max_pool2d", "torch.softmax"]
    left = dict(report.left)
    assert left["F.softmax"].startswith("dim not given")
    assert left["F.embedding"] == "max_norm=1.0 (gpudnn does not support it)"
    assert left["F.relu"].startswith("inplace=True on a tensor used again")
    assert left["torch.dropout"].startswith("arguments differ")
    x, idx = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([[0, 4], [2, 2]])
    with pytest.warns(UserWarning, match="Implicit dimension"):
        got, want = converted(x, idx), model(x, idx)
    for a, b in zip(got, want):
        assert_close(a, b)


def test_refused_arguments_table_is_what_gpudnn_refuses():
    """Each entry of REFUSED is still refused by gpudnn (else the entry keeps a call on torch for
    nothing)."""
    from gpudnn.nn._fx import REFUSED
    x, idx, table = torch.randn(3, 4), torch.tensor([0, 2]), torch.randn(3, 2)
    calls = {
        ("mse_loss", "weight"): lambda: GF.mse_loss(x, x, weight=x),
        ("embedding", "max_norm"): lambda: GF.embedding(idx, table, max_norm=1.0),
        ("embedding", "sparse"): lambda: GF.embedding(idx, table, sparse=True),
        ("softmax", "dim"): lambda: GF.softmax(x),
        ("log_softmax", "dim"): lambda: GF.log_softmax(x),
    }
    assert set(calls) == {(name, p) for name, params in REFUSED.items() for p in params}
    assert set(REFUSED) <= set(GF.__all__)
    for key, call in calls.items():
        with pytest.raises((NotImplementedError, TypeError)):
            call()


class ModeDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x, h=None):
        x = torch.nn.functional.dropout(torch.relu(self.fc(x)), 0.5, training=self.training)
        if h is None:  # tracing sees a tensor: the None case runs the original forward
            return x
        return x + h


def test_train_and_eval_graphs_and_none_or_keyword_arguments():
    torch.manual_seed(7)
    model = ModeDependent().double()
    converted, report = gnn.convert(model, inplace=False, report=True)
    assert set(report.code) == {"ModeDependent (train)", "ModeDependent (eval)"}
    assert report.fused == ["fc + torch.relu"] and report.functional == ["F.dropout"]
    x, h = torch.randn(16, 8, dtype=torch.float64), torch.randn(16, 8, dtype=torch.float64)
    assert (converted(x) == 0).any()  # training: dropout
    converted.eval(), model.eval()
    for args, kwargs in (((x,), {}), ((x, h), {}), ((x,), {"h": h}), ((), {"x": x, "h": h}),
                         ((x, None), {})):
        assert_close(converted(*args, **kwargs), model(*args, **kwargs))
    with pytest.raises(TypeError):
        converted(x, y=h)  # the original's own TypeError
    with pytest.raises(TypeError):
        converted()


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.child = nn.Sequential(nn.Linear(4, 4))
        self.inner = Inner()

    def forward(self, x):
        if x.sum() > 0:
            x = -x
        return self.inner(torch.relu(self.fc(x)))


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.nn.functional.silu(self.fc(x))


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return torch.relu(self.fc(x))


class Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x)) + torch.ones(4, dtype=torch.float64)


class VarArgs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, *xs):
        return torch.relu(self.fc(xs[0]))


@pytest.mark.parametrize("cls,reason", [
    (DataDependent, "not traced: TraceError: symbolically traced variables cannot be used as "
                    "inputs to control flow"),
    (Counting, "not traced: forward assigns Python attributes (tracing would run that once)"),
    (Constant, "not traced: forward creates a tensor from constants (tracing would freeze it)"),
    (VarArgs, "not traced: forward takes *args, **kwargs or keyword-only arguments"),
], ids=["control-flow", "assigns", "constant", "varargs"])
def test_untraceable_forwards_keep_their_code_and_say_why(cls, reason):
    torch.manual_seed(8)
    model = cls().double()
    converted, report = gnn.convert(model, inplace=False, report=True)
    assert (f"{cls.__name__}.forward", reason) in report.left
    assert type(converted) is cls and type(converted.fc) is gnn.Linear
    if cls is Counting:
        assert converted.calls == 0  # tracing's run of `self.calls += 1` was undone
    if cls is DataDependent:  # its children are tried: Inner is traceable
        assert report.rewritten == ["inner"] and report.fused == ["inner.fc + F.silu"]
    x = torch.randn(3, 4, dtype=torch.float64)
    assert_close(converted(x), model(x))


def test_a_forward_set_on_the_instance_is_left_alone():
    model = Counting()
    model.forward = lambda x: torch.relu(model.fc(x))
    _, report = gnn.convert(model, report=True)
    assert ("Counting.forward", "not traced: forward is set on the instance") in report.left


class InitLinear(nn.Linear):
    """A torch layer subclass that does not touch forward: becomes a twin subclass."""

    def reset_parameters(self):
        nn.init.constant_(self.weight, 0.1)
        nn.init.zeros_(self.bias)


class ScaledLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2


class PaddedConv(nn.Conv2d):
    def _conv_forward(self, input, weight, bias):
        return super()._conv_forward(input + 1, weight, bias)


class Residual(nn.Sequential):
    def forward(self, x):
        return x + super().forward(x)


class Containers(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4)})
        self.extra = [nn.Linear(4, 4)]  # not registered with torch
        self.init = InitLinear(4, 4)
        self.scaled = ScaledLinear(4, 4)
        self.conv = PaddedConv(1, 1, 1)
        self.res = Residual(nn.Linear(4, 4), nn.ReLU())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        for block in self.blocks:
            x = torch.relu(block(x))
        x = torch.tanh(self.heads["a"](x)) + self.heads["b"](x)
        x = self.init(x) + self.scaled(x) + self.res(x)
        x = self.relu(x + 1) + self.conv(x[:, None, :, None]).flatten(1)
        return x


def test_module_lists_dicts_plain_lists_and_subclasses():
    torch.manual_seed(9)
    model = Containers().double()
    model.extra[0].double()
    converted, report = gnn.convert(model, inplace=False, report=True)
    # Residual's own forward is traced: its Linear -> ReLU run is fused in the graph only
    assert sorted(report.fused) == ["blocks.0 + torch.relu", "blocks.1 + torch.relu",
                                    "heads.a + torch.tanh", "res.0 + res.1 (ReLU)"]
    init = converted.init
    assert isinstance(init, InitLinear) and isinstance(init, gnn.Linear)
    assert type(init).__name__ == "InitLinear" and "init (InitLinear)" in report.converted
    left = dict(report.left)
    assert type(converted.extra[0]) is nn.Linear and "not registered with torch" in left["extra"]
    assert type(converted.scaled) is ScaledLinear
    assert left["scaled (ScaledLinear)"] == "subclass of torch.nn.Linear overriding forward"
    assert type(converted.conv) is PaddedConv
    assert left["conv (PaddedConv)"] == "subclass of torch.nn.Conv2d overriding _conv_forward"
    assert type(converted.res[1]) is gnn.ReLU and converted.res[0].activation is None
    assert left["res (Residual)"].startswith("nn.Sequential subclass with its own forward")
    assert type(converted.relu) is nn.ReLU and left["relu (ReLU)"].startswith("inplace=True")
    x = torch.randn(3, 4, dtype=torch.float64)
    compare_with_twin(converted, model, x)
    # the twin subclass deep-copies and pickles as itself
    for clone in (copy.deepcopy(converted), _pickled(converted)):
        assert type(clone.init) is type(init) and clone.init.weight is not init.weight
        assert_close(clone(x), model(x))


def _pickled(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_report_is_returned_printed_and_readable(capsys):
    torch.manual_seed(10)
    model = Containers()
    assert isinstance(gnn.convert(copy.deepcopy(model)), Containers)  # report=False: the model
    _, report = gnn.convert(model, verbose=True, report=True)
    printed = capsys.readouterr().err
    assert printed.strip() == repr(report) == str(report)
    assert printed.startswith("gpudnn.nn.convert(Containers): ")
    for line in ("  converted: blocks.0 (Linear), ", "  fused: blocks.0 + torch.relu, ",
                 "  forward rewritten: Containers", "  left as torch:",
                 "    scaled (ScaledLinear): subclass of torch.nn.Linear overriding forward"):
        assert line in printed, line


def test_rewritten_forward_compiles_deep_copies_and_pickles():
    torch.manual_seed(11)
    model = Spellings().double()
    converted = gnn.convert(copy.deepcopy(model))
    x, img = torch.randn(4, 6, dtype=torch.float64), torch.randn(2, 2, 5, 5, dtype=torch.float64)
    want = model(x, img)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(converted)(x, img)
    assert explained.graph_break_count == 0
    compiled = torch.compile(converted, fullgraph=True, backend="eager")
    for a, b in zip(compiled(x, img), want):
        assert_close(a, b, name="compiled")
    clone = copy.deepcopy(converted)
    assert type(clone) is type(converted) and clone.l1.weight is not converted.l1.weight
    loaded = _pickled(converted)  # a whole-model pickle: twins kept, the original forward
    assert type(loaded.l1) is gnn.Linear and type(loaded) is Spellings
    _, report = gnn.convert(loaded, report=True)  # converting it again rewrites it again
    assert report.rewritten == ["Spellings"]
    for model_ in (clone, loaded):
        for a, b in zip(model_(x, img), want):
            assert_close(a, b)


def test_convert_bad_arguments():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        gnn.convert([nn.Linear(2, 2)])
    for flag in ("inplace", "fold_batchnorm", "trace", "verbose", "report"):
        with pytest.raises(TypeError, match=flag):
            gnn.convert(nn.Linear(2, 2), **{flag: "yes"})
    from gpudnn.nn._fx import fused_call
    with pytest.raises(ValueError, match="unknown activation"):
        fused_call(gnn.Linear(2, 2), "softplus", 0.0, torch.randn(1, 2))
    # a layer replaced by one that cannot fuse: the activation is applied after it
    plain = nn.Linear(2, 2)
    x = torch.randn(3, 2)
    assert_close(fused_call(plain, "relu", 0.0, x), torch.relu(plain(x)))


def test_trace_false_only_swaps_and_fuses_sequentials():
    model = Spellings()
    _, report = gnn.convert(model, trace=False, report=True)
    assert report.fused == [] and report.rewritten == [] and type(model) is Spellings
    assert type(model.l1) is gnn.Linear


def test_converting_gpudnn_layers_again_changes_and_reports_nothing():
    model = nn.Sequential(gnn.Linear(3, 3), InitLinear(3, 3), nn.Linear(3, 3))
    gnn.convert(model)
    _, report = gnn.convert(model, report=True)
    assert report.converted == [] and report.left == [] and report.fused == []


class Draws(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x)) + torch.randn(4, dtype=torch.float64)


def test_tracing_leaves_the_random_streams_alone():
    """A forward that draws at trace time is not traced, and convert draws nothing: the same
    seed gives the same numbers after convert."""
    model = Draws().double()
    torch.manual_seed(12)
    _, report = gnn.convert(model, report=True)
    assert report.left[-1][1].startswith("not traced: forward creates a tensor from constants")
    after = torch.rand(3)
    torch.manual_seed(12)
    assert torch.equal(after, torch.rand(3))
