"""gpudnn.prune: magnitude masks equal torch's l1_unstructured, the 2:4 pattern, masks kept through
training by gpudnn's and torch's optimizers (pruned weights stay exactly zero), remove(), and
bad inputs. torch's semi-structured sparse kernels need a GPU: on the CPU the pattern is checked
and the dense result of the pruned layer is the masked layer's."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune

import gpudnn
import gpudnn.nn as gnn
from gpudnn import pruning
from gpudnn.models import cnn, to_gpudnn
from gpudnn.testing import assert_close
from helpers import DEVICE


def _layers(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(gnn.Conv2d(4, 8, 3, padding=1, activation="relu"),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 12),
                               torch.nn.ReLU(), gnn.Linear(12, 4))


@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_masks_are_torchs_l1_unstructured(amount):
    model = _layers()
    theirs = copy.deepcopy(model)
    gpudnn.prune(model, amount)
    for name in ("0", "2", "4"):
        torch_prune.l1_unstructured(dict(theirs.named_modules())[name], "weight", amount)
        mine = dict(model.named_modules())[name]
        assert torch.equal(mine.weight_mask, dict(theirs.named_modules())[name].weight_mask)
        assert torch.equal(mine.weight, dict(theirs.named_modules())[name].weight)
        zeros = int((mine.weight == 0).sum())
        assert zeros == round(amount * mine.weight.numel())
        assert float(mine.bias.detach().abs().min()) > 0  # biases are never pruned


def test_2to4_keeps_the_two_largest_of_every_group_of_four():
    layer = torch.nn.Linear(8, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1., -4., 3., 2., 0.5, 0.1, -0.2, 0.3],
                                         [2., 2., 2., 2., -1., 1., -1., 1.],
                                         [0., 0., 0., 5., 9., -9., 8., 0.]]))
    gpudnn.prune(layer, method="2:4")
    assert torch.equal(layer.weight_mask, torch.tensor([[0., 1., 1., 0., 1., 0., 0., 1.],
                                                        [1., 1., 0., 0., 1., 1., 0., 0.],
                                                        [1., 0., 0., 1., 1., 1., 0., 0.]]))
    assert pruning.is_2to4(layer.weight)


@pytest.mark.parametrize("shape", [(5, 16), (6, 4, 2, 2), (3, 2, 3, 2)])
def test_2to4_pattern_along_the_input_dimension(shape):
    torch.manual_seed(1)
    w = torch.randn(shape)
    mask = pruning.mask_2to4(w)
    groups = mask.reshape(shape[0], -1, 4)
    assert bool((groups.sum(-1) == 2).all())
    kept = (w.abs() * mask).reshape(shape[0], -1, 4)
    dropped = (w.abs() * (1 - mask)).reshape(shape[0], -1, 4)
    assert bool((kept.max(-1).values >= dropped.max(-1).values).all())
    assert bool((kept.masked_fill(kept == 0, float("inf")).min(-1).values
                 >= dropped.max(-1).values).all())


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_2to4_dense_result_is_the_masked_layers(backend):
    """The pruned layer (gpudnn's dense kernels on the masked weight) computes exactly what the
    layer with the masked weight computes: the result a sparse kernel must reproduce."""
    torch.manual_seed(2)
    layer = gnn.Linear(16, 6, activation="gelu")
    x = torch.randn(5, 16)
    gpudnn.prune(layer, method="2:4")
    masked = layer.weight_orig.detach() * layer.weight_mask
    layer, x = layer.to(DEVICE), x.to(DEVICE)
    with gpudnn.use_backend(backend):
        got = layer(x)
    assert_close(got, F.gelu(F.linear(x, masked.to(DEVICE), layer.bias)), torch.float32,
                 name="2:4 layer")


OPTIMIZERS = {
    "gpudnn.SGD": lambda p: gpudnn.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "gpudnn.Adam": lambda p: gpudnn.optim.Adam(p, lr=0.05, weight_decay=0.1),
    "gpudnn.AdamW": lambda p: gpudnn.optim.AdamW(p, lr=0.05),
    "torch.SGD": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    "torch.Adam": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("method", ["magnitude", "2:4"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_masks_survive_training(opt, method):
    """Steps with momentum and weight decay started before pruning (stale optimizer state): the
    pruned weights, stored and effective, stay exactly zero, and remove() keeps them so."""
    model = _layers()
    optimizer = OPTIMIZERS[opt](model.parameters())
    params_before = [id(p) for p in model.parameters()]

    def step():
        loss = model(torch.randn(6, 4, 4, 4)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # optimizer state for every weight, before any mask
    gpudnn.prune(model, 0.5, method)
    masks = {n: m.weight_mask.clone() for n, m in model.named_modules() if hasattr(m,
                                                                                    "weight_mask")}
    assert set(masks) == {"0", "2", "4"}
    for _ in range(3):
        step()
        for name, mask in masks.items():
            module = dict(model.named_modules())[name]
            assert bool((module.weight_orig[mask == 0] == 0).all()), f"{name}: stored weight"
            assert bool((module.weight[mask == 0] == 0).all()), f"{name}: effective weight"
            assert bool((module.weight_orig.grad[mask == 0] == 0).all()), f"{name}: gradient"
    gpudnn.prune.remove(model)
    assert not gpudnn.prune.is_pruned(model)
    assert sorted(id(p) for p in model.parameters()) == sorted(params_before)
    for name, mask in masks.items():
        weight = dict(model.named_modules())[name].weight
        assert isinstance(weight, torch.nn.Parameter)
        assert bool((weight[mask == 0] == 0).all()) and bool((weight[mask == 1] != 0).all())
    step()  # finalized: an ordinary model again (its optimizer keeps working)


def test_remove_gives_the_unpruned_state_dict_keys_and_loads_into_torch():
    torch.manual_seed(0)
    plain = cnn.build_torch(widths=(4, 8), hidden=16, dropout=0.0)
    model = to_gpudnn(plain)
    gpudnn.prune(model, 0.5)
    assert "classifier.fc1.weight_orig" in model.state_dict()
    gpudnn.prune.remove(model)
    assert list(model.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(model.state_dict())
    model.eval(), plain.eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert_close(model(x), plain(x), torch.float32, name="pruned model vs its torch twin")


def test_pruning_again_masks_the_masked_weight():
    layer = torch.nn.Linear(10, 10)
    gpudnn.prune(layer, 0.5)
    first = layer.weight_mask.clone()
    gpudnn.prune(layer, 0.7)
    assert bool((layer.weight_mask <= first).all())
    assert int((layer.weight == 0).sum()) == 70


def test_2to4_leaves_layers_it_cannot_take_dense_with_a_warning():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.Flatten(),
                                torch.nn.Linear(8, 4))
    ok, skipped = pruning.prunable_layers(model, "2:4")
    assert ok == ["2"] and list(skipped) == ["0"] and "9 inputs per output channel" in skipped["0"]
    with pytest.warns(UserWarning, match="left dense.*0: Conv2d weight \\(8, 1, 3, 3\\)"):
        gpudnn.prune(model, method="2:4")
    assert not hasattr(model[0], "weight_mask") and pruning.is_2to4(model[2].weight)


def test_bad_inputs_are_clear_errors():
    for amount in (-0.1, 1.0, 1.5, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="amount must be a fraction in \\[0, 1\\)"):
            gpudnn.prune(torch.nn.Linear(4, 4), amount)
    with pytest.raises(ValueError, match="amount must be 0.5"):
        gpudnn.prune(torch.nn.Linear(4, 4), 0.3, method="2:4")
    with pytest.raises(ValueError, match="method must be one of"):
        gpudnn.prune(torch.nn.Linear(4, 4), method="random")
    with pytest.raises(ValueError, match="3 inputs per output channel, not a multiple of 4"):
        gpudnn.prune(torch.nn.Linear(3, 4), method="2:4")
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match="cannot take 2:4"):
        gpudnn.prune(model, method="2:4", layers=["0"])
    with pytest.raises(ValueError, match="layer '1' is a BatchNorm1d"):
        gpudnn.prune(model, layers=["1"])
    with pytest.raises(ValueError, match="no layer named 'fc'"):
        gpudnn.prune(model, layers=["fc"])
    with pytest.raises(ValueError, match="has no Linear or Conv2d layer"):
        gpudnn.prune(torch.nn.Sequential(torch.nn.ReLU()))
    with pytest.raises(ValueError, match="has no Linear or Conv2d layer"):
        gpudnn.prune(torch.nn.ConvTranspose2d(4, 4, 3))
    with pytest.raises(ValueError, match="prune.remove\\(model\\) first"):
        gpudnn.quantize(gpudnn.prune(torch.nn.Sequential(torch.nn.Linear(4, 4))))
    quantized = gpudnn.quantize(torch.nn.Sequential(torch.nn.Linear(4, 4)))
    with pytest.raises(ValueError, match="is quantized; prune the float model"):
        gpudnn.prune(quantized, layers=["0"])
    with pytest.raises(ValueError, match="nothing in Linear is pruned"):
        gpudnn.prune.remove(torch.nn.Linear(4, 4))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        gpudnn.prune(torch.randn(4, 4))


def test_semi_structured_needs_a_capable_gpu():
    # (torch's sparse kernels want at least 32 x 64 weights on the GPU)
    layer = gpudnn.prune.remove(gpudnn.prune(torch.nn.Linear(128, 64), method="2:4"))
    if DEVICE != "cuda" or pruning.semi_structured_problem(DEVICE, torch.float16):
        with pytest.raises(RuntimeError, match="to_semi_structured: "):
            gpudnn.prune.to_semi_structured(layer)
        return
    layer = layer.to(DEVICE, torch.float16)
    x = torch.randn(64, 128, device=DEVICE, dtype=torch.float16)
    expected = F.linear(x, layer.weight, layer.bias)
    sparse = gpudnn.prune.to_semi_structured(layer)
    assert_close(sparse(x), expected, torch.float16, name="semi-structured linear")


def test_semi_structured_refuses_layers_without_the_pattern():
    with pytest.raises(ValueError, match="no finalized 2:4 Linear"):
        gpudnn.prune.to_semi_structured(torch.nn.Linear(16, 8))
    with pytest.raises(ValueError, match="no finalized 2:4 Linear"):
        gpudnn.prune.to_semi_structured(gpudnn.prune(torch.nn.Linear(16, 8), method="2:4"))
