"""gpudnn.nn.convert: torch.nn layers become gpudnn twins with the same parameters, activation runs
inside nn.Sequential are fused, and the converted model computes what the torch model does."""
import copy

import pytest
import torch
from torch import nn

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
    converted = gnn.convert(model)
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
    converted = gnn.convert(model)
    _compare(model, converted, torch.randn(6, 7, dtype=torch.float64))
    for key, value in model.state_dict().items():  # running statistics updated alike
        assert_close(converted.state_dict()[key], value, name=key)


def test_cnn_converted_matches_torch():
    model = _cnn().train()
    converted = gnn.convert(model)
    assert converted[1].activation.name == "relu" and isinstance(converted[2], nn.Identity)
    assert converted[4].activation.name == "silu" and isinstance(converted[5], nn.Identity)
    assert type(converted[3]) is gnn.MaxPool2d and type(converted[6]) is gnn.AvgPool2d
    _compare(model, converted, torch.randn(3, 2, 8, 8, dtype=torch.float64))


def test_cnn_converted_float32_on_device(device):
    # the whole converted model on the test device (CUDA: the GPU kernels; CPU: the reference)
    model = _cnn().train()
    converted = gnn.convert(model)
    compare_float32_on_device(converted, model, torch.randn(3, 2, 8, 8), device=device,
                              grad_scale=10.0)
    for key, value in model.state_dict().items():
        assert_close(converted.state_dict()[key], value, name=key)


def test_fold_batchnorm_in_eval():
    model = _cnn()
    model(torch.randn(4, 2, 8, 8, dtype=torch.float64))  # non-trivial running statistics
    model.eval()
    folded = gnn.convert(model, fold_batchnorm=True)
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
    converted = gnn.convert(net)
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
