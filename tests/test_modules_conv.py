"""gpudnn.nn.Conv2d / ConvTranspose2d / MaxPool2d / AvgPool2d against their torch.nn twins after
load_state_dict (forward and every gradient), with channels_last and non-contiguous inputs,
padding modes, fused activations, zero-size batches, autocast and bad input."""
import pytest
import torch

import gpudnn.nn as gnn
from gpudnn.activations import parse_activation
from gpudnn.kernels.activations import NAMES
from gpudnn.nn._fused import activation_repr
from gpudnn.testing import assert_close
from helpers import TorchFused, compare_float32_on_device, compare_with_twin

F64 = torch.float64
CL = torch.channels_last


def twins(gpudnn_cls, torch_cls, *args, activation=None, **kwargs):
    """A torch layer and its gpudnn twin holding the torch layer's state_dict (float64)."""
    reference = torch_cls(*args, **kwargs).to(F64)
    ours = gpudnn_cls(*args, activation=activation, **kwargs) if activation is not None else \
        gpudnn_cls(*args, **kwargs)
    ours = ours.to(F64)
    ours.load_state_dict(reference.state_dict())
    assert list(ours.state_dict()) == list(reference.state_dict())
    return ours, reference


def compare(ours, reference, x, act=None, *extra):
    """Same output (and memory format) and the same gradients for the input and every
    parameter: compare_with_twin against ``reference`` followed by the torch ``act``."""
    return compare_with_twin(ours, TorchFused(reference, act), x, *extra)


def layout(x, kind):
    if kind == "channels_last":
        return x.contiguous(memory_format=CL)
    if kind == "strided":  # neither NCHW nor NHWC: every other column of a wider tensor
        return torch.cat([x, x], dim=3)[..., ::2]
    return x


CONV_LAYERS = [
    # (in, out, kernel, kwargs, input H, W, activation)
    (3, 4, 3, dict(padding=1), 7, 8, None),
    (4, 6, (3, 2), dict(stride=(2, 1), padding=(2, 0), dilation=(1, 2), groups=2), 9, 7, "relu"),
    (4, 4, 3, dict(groups=4, padding="same", bias=False), 6, 5, torch.nn.LeakyReLU(0.3)),
    (2, 3, 2, dict(padding="same", padding_mode="reflect"), 5, 6, "gelu"),
    (2, 3, 3, dict(padding=2, padding_mode="circular", stride=2), 6, 7, "tanh"),
    (3, 2, (1, 3), dict(padding=(0, 1), padding_mode="replicate"), 4, 6, "silu"),
    (2, 2, 1, dict(padding="valid"), 1, 7, torch.nn.GELU(approximate="tanh")),
]


@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("spec", CONV_LAYERS, ids=[f"conv{i}" for i in range(len(CONV_LAYERS))])
def test_conv2d_matches_torch(spec, kind):
    cin, cout, kernel, kwargs, h, w, act = spec
    ours, reference = twins(gnn.Conv2d, torch.nn.Conv2d, cin, cout, kernel, activation=act,
                            **kwargs)
    compare(ours, reference, layout(torch.randn(2, cin, h, w, dtype=F64), kind), act)


@pytest.mark.parametrize("name", NAMES)
def test_conv2d_fuses_every_activation(name):
    ours, reference = twins(gnn.Conv2d, torch.nn.Conv2d, 3, 5, 3, activation=name, stride=2)
    assert repr(ours) == repr(reference)[:-1] + f", {activation_repr(parse_activation(name))})"
    compare(ours, reference, torch.randn(3, 3, 7, 6, dtype=F64), name)


def test_conv2d_unbatched_and_zero_batch():
    ours, reference = twins(gnn.Conv2d, torch.nn.Conv2d, 3, 4, 3, activation="relu", padding=1)
    compare(ours, reference, torch.randn(3, 6, 5, dtype=F64), "relu")
    compare(ours, reference, torch.randn(0, 3, 6, 5, dtype=F64), "relu")


CONV_T_LAYERS = [
    # (in, out, kernel, kwargs, input H, W, activation, output_size)
    (3, 4, 3, dict(stride=2, padding=1, output_padding=1), 4, 5, None, None),
    (4, 6, (2, 3), dict(stride=(1, 2), groups=2, dilation=(2, 1)), 3, 4, "sigmoid", None),
    (2, 2, 3, dict(stride=2, padding=1, bias=False), 4, 3, "relu", (8, 6)),
    (2, 3, 3, dict(stride=3), 2, 2, "gelu", [7, 8]),
]


@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("spec", CONV_T_LAYERS,
                         ids=[f"convT{i}" for i in range(len(CONV_T_LAYERS))])
def test_conv_transpose2d_matches_torch(spec, kind):
    cin, cout, kernel, kwargs, h, w, act, output_size = spec
    ours, reference = twins(gnn.ConvTranspose2d, torch.nn.ConvTranspose2d, cin, cout, kernel,
                            activation=act, **kwargs)
    x = layout(torch.randn(2, cin, h, w, dtype=F64), kind)
    compare(ours, reference, x, act, output_size)


def test_conv_transpose2d_unbatched_and_zero_batch():
    ours, reference = twins(gnn.ConvTranspose2d, torch.nn.ConvTranspose2d, 3, 2, 3, stride=2)
    compare(ours, reference, torch.randn(3, 4, 5, dtype=F64))
    compare(ours, reference, torch.randn(0, 3, 4, 5, dtype=F64))


POOLS = [
    (gnn.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1)),
    (gnn.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=(2, 3), dilation=(2, 1),
                                              ceil_mode=True)),
    (gnn.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=3, stride=2, padding=1,
                                              count_include_pad=False, ceil_mode=True)),
    (gnn.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=(2, 3), divisor_override=4)),
]


@pytest.mark.parametrize("kind", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("spec", POOLS, ids=[f"pool{i}" for i in range(len(POOLS))])
def test_pools_match_torch(spec, kind):
    ours_cls, torch_cls, kwargs = spec
    ours, reference = ours_cls(**kwargs), torch_cls(**kwargs)
    assert repr(ours) == repr(reference)
    for shape in [(2, 3, 7, 9), (0, 3, 7, 9), (3, 5, 6)]:
        x = torch.randn(*shape, dtype=F64)
        compare(ours, reference, layout(x, kind) if x.dim() == 4 else x)


def test_float32_and_autocast():
    ours, reference = gnn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 3, padding=1)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 6, 7)
    assert_close(ours(x), reference(x), name="float32 output")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = ours(x), reference(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert_close(y, y_ref, name="bfloat16 output")
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    assert ours.weight.grad.dtype == torch.float32
    # bf16 products summed over N*H*W = 84 output positions
    assert_close(ours.weight.grad, reference.weight.grad, torch.bfloat16, name="grad weight",
                 scale=84 ** 0.5)
    assert_close(ours.bias.grad, reference.bias.grad, torch.bfloat16, name="grad bias",
                 scale=84 ** 0.5)


def test_converted_layer_has_no_activation():
    layer = torch.nn.Conv2d(2, 3, 3)
    reference = torch.nn.Conv2d(2, 3, 3)
    reference.load_state_dict(layer.state_dict())
    layer.__class__ = gnn.Conv2d  # what gpudnn.nn.convert does
    assert layer.activation is None and repr(layer) == repr(reference)
    x = torch.randn(1, 2, 5, 5)
    assert_close(layer(x), reference(x), name="output")


def test_bad_input_errors():
    conv = gnn.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="expected input.* to have 3 channels"):
        conv(torch.randn(1, 5, 6, 6))
    with pytest.raises(ValueError, match="input must have 3 or 4 dimensions"):
        conv(torch.randn(1, 1, 3, 6, 6))
    with pytest.raises(RuntimeError, match="Kernel size can't be greater"):
        conv(torch.randn(1, 3, 2, 6))
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        conv(torch.ones(1, 3, 6, 6, dtype=torch.int64))
    with pytest.raises(ValueError, match="Invalid padding string"):
        gnn.Conv2d(3, 4, 3, padding="full")
    with pytest.raises(ValueError, match="strided"):
        gnn.Conv2d(3, 4, 3, padding="same", stride=2)
    with pytest.raises(ValueError, match="unknown activation"):
        gnn.Conv2d(3, 4, 3, activation="swish")
    convt = gnn.ConvTranspose2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="to have 3 channels"):
        convt(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="3 or 4 dimensions"):
        convt(torch.randn(5, 5))
    y, indices = gnn.MaxPool2d(2, return_indices=True)(torch.randn(1, 1, 4, 4))  # supported
    assert indices.dtype == torch.int64 and indices.shape == y.shape
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        gnn.MaxPool2d(3, padding=2)(torch.randn(1, 1, 9, 9))
    with pytest.raises(RuntimeError, match="Output size is too small"):
        gnn.AvgPool2d(3)(torch.randn(1, 1, 2, 2))
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        gnn.AvgPool2d(2, divisor_override=0)(torch.randn(1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="Expected 3D or 4D"):
        gnn.MaxPool2d(2)(torch.randn(3, 0, 4))


# --- float32 on the test device (CUDA under `make test-gpu`; the Triton interpreter on CPU) ----

FLOAT32_LAYERS = {
    "conv2d_relu": (gnn.Conv2d, torch.nn.Conv2d, (3, 4, 3), dict(padding=1, stride=2), "relu",
                    (2, 3, 7, 6)),
    "conv_transpose2d": (gnn.ConvTranspose2d, torch.nn.ConvTranspose2d, (3, 2, 3),
                         dict(stride=2, padding=1), "tanh", (2, 3, 4, 5)),
}
FLOAT32_POOLS = {
    "max_pool2d": (gnn.MaxPool2d(3, stride=2, padding=1), torch.nn.MaxPool2d(3, 2, 1)),
    "avg_pool2d": (gnn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                   torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)),
}


@pytest.mark.parametrize("name", list(FLOAT32_LAYERS) + list(FLOAT32_POOLS))
def test_layers_float32_on_device(name, device):
    torch.manual_seed(13)
    if name in FLOAT32_LAYERS:
        ours_cls, torch_cls, args, kwargs, act, shape = FLOAT32_LAYERS[name]
        reference = torch_cls(*args, **kwargs)
        ours = ours_cls(*args, activation=act, **kwargs)
        ours.load_state_dict(reference.state_dict())
        reference = TorchFused(reference, act)
    else:
        (ours, reference), shape = FLOAT32_POOLS[name], (2, 3, 7, 6)
    x = torch.randn(*shape).contiguous(memory_format=CL)
    compare_float32_on_device(ours, reference, x, device=device, interpret=True, grad_scale=10.0)
