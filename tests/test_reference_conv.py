"""The NumPy reference of conv2d, conv_transpose2d, max_pool2d and avg_pool2d against torch
autograd in float64 (forward, every gradient, the output's memory format), the padding rules of
the public functions ("same", "valid", unbatched input), and gradcheck through the Functions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import gpudnn.functional as F
from gpudnn.activations import activation_module
from gpudnn.kernels.activations import Activation
from gpudnn.reference import conv as ref_conv
from gpudnn.reference import pool as ref_pool
from gpudnn.reference._windows import is_channels_last
from gpudnn.testing import assert_close

F64 = torch.float64
CL = torch.channels_last


def randn(*shape, channels_last=False, requires_grad=True):
    t = torch.randn(*shape, dtype=F64)
    if channels_last:
        t = t.contiguous(memory_format=CL)
    return t.requires_grad_(requires_grad)


def numpy_of(t):
    """The tensor's memory as NumPy (strides kept: channels_last stays channels_last)."""
    return None if t is None else t.detach().numpy()


def torch_grads(out, inputs, grad_out):
    present = [t for t in inputs if t is not None]
    grads = iter(torch.autograd.grad(out, present, grad_out))
    return [None if t is None else next(grads) for t in inputs]


def assert_same_format(actual: np.ndarray, expected: torch.Tensor, name: str) -> None:
    """The same NCHW / channels_last contiguity flags as torch's result."""
    a = torch.from_numpy(actual)
    for fmt in (torch.contiguous_format, CL):
        assert a.is_contiguous(memory_format=fmt) == expected.is_contiguous(memory_format=fmt), \
            f"{name}: strides {a.stride()}, torch's {expected.stride()}"


def check_grads(actual, expected, names):
    for a, e, name in zip(actual, expected, names):
        if e is None:
            assert a is None, name
        else:
            assert_close(a, e, F64, name=name)


def test_is_channels_last_follows_torchs_suggested_memory_format():
    from torch._prims_common import suggest_memory_format
    base = torch.zeros(2, 3, 4, 5, dtype=F64)
    cases = [base, base.contiguous(memory_format=CL), base[:, :1].contiguous(memory_format=CL),
             base[:, :, :1, :1].contiguous(memory_format=CL), base[:1, :, :1].transpose(1, 3),
             base.contiguous(memory_format=CL)[:, :, ::2], base.permute(0, 1, 3, 2),
             base[:, :1].expand(2, 3, 4, 5), base[:1, :1].contiguous(memory_format=CL),
             torch.zeros(0, 3, 4, 5, dtype=F64).contiguous(memory_format=CL),
             torch.zeros(3, 1, 1, 1, dtype=F64), torch.zeros(3, 4, 1, 1, dtype=F64)[:, :1]]
    for t in cases:
        assert is_channels_last(t.numpy()) == (suggest_memory_format(t) == CL), t.stride()


# --- conv2d ---------------------------------------------------------------------------------------

# (N, Cin, Cout, H, W, kernel, stride, padding (top, bottom, left, right), dilation, groups,
#  activation, bias, channels_last input, channels_last weight)
CONV_CASES = [
    (3, 4, 6, 7, 9, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, None, True, False, False),
    (1, 4, 6, 8, 7, (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 2, "relu", True, True, False),
    (3, 4, 4, 9, 6, (3, 3), (3, 3), (1, 1, 0, 0), (1, 1), 4, ("leaky_relu", 0.2), True, False,
     False),
    (1, 3, 5, 5, 6, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "tanh", False, False, True),
    (3, 2, 3, 11, 10, (5, 5), (2, 1), (2, 2, 1, 1), (1, 2), 1, "gelu", True, True, True),
    (1, 3, 4, 6, 7, (1, 3), (1, 1), (0, 1, 2, 0), (1, 1), 1, "silu", True, False, False),
    (3, 2, 2, 6, 5, (2, 2), (1, 1), (0, 1, 0, 1), (1, 1), 1, "sigmoid", True, True, False),
    (0, 4, 6, 5, 5, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "relu", True, False, False),
    (2, 6, 4, 7, 8, (3, 2), (1, 3), (1, 2, 0, 1), (2, 1), 2, "gelu_tanh", True, False, False),
    (2, 5, 3, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, "relu", True, True, False),
    (1, 3, 3, 1, 127, (1, 3), (1, 2), (0, 0, 1, 1), (1, 1), 3, None, False, False, False),
    (2, 3, 4, 5, 6, (3, 3), (1, 2), (1, 1, 1, 1), (1, 1), 1, None, True, False, True),
]


def parse_act(spec):
    if spec is None:
        return None
    return Activation(*spec) if isinstance(spec, tuple) else Activation.make(spec)


def torch_conv2d(x, w, b, stride, pad4, dilation, groups, act):
    top, bottom, left, right = pad4
    z = TF.conv2d(TF.pad(x, (left, right, top, bottom)), w, b, stride, 0, dilation, groups)
    return activation_module(act)(z)


@pytest.mark.parametrize("case", CONV_CASES, ids=[f"conv{i}" for i in range(len(CONV_CASES))])
def test_conv2d_vs_torch(case):
    n, cin, cout, h, w, kernel, stride, pad4, dilation, groups, act, has_bias, x_cl, w_cl = case
    act = parse_act(act)
    x = randn(n, cin, h, w, channels_last=x_cl)
    weight = randn(cout, cin // groups, *kernel, channels_last=w_cl)
    bias = randn(cout) if has_bias else None
    y_t = torch_conv2d(x, weight, bias, stride, pad4, dilation, groups, act)
    grad_y = torch.randn_like(y_t)
    expected = torch_grads(y_t, [x, weight, bias], grad_y)

    y, saved = ref_conv.conv2d_forward(numpy_of(x), numpy_of(weight), numpy_of(bias), stride,
                                       pad4, dilation, groups, act)
    assert_close(y, y_t, F64, name="y")
    assert_same_format(y, TF.conv2d(x, weight, None, stride, 0, dilation, groups), "y format")
    assert (saved is None) == (act is None)
    grads = ref_conv.conv2d_backward(numpy_of(grad_y), numpy_of(x), numpy_of(weight), saved,
                                     stride, pad4, dilation, groups, act,
                                     (True, True, has_bias))
    check_grads(grads, expected, ["grad_x", "grad_weight", "grad_bias"])


def test_conv2d_backward_skips_unneeded_grads():
    x, weight, bias = randn(2, 3, 5, 5), randn(4, 3, 3, 3), randn(4)
    y, saved = ref_conv.conv2d_forward(numpy_of(x), numpy_of(weight), numpy_of(bias), (1, 1),
                                       (0, 0, 0, 0), (1, 1), 1, None)
    grads = ref_conv.conv2d_backward(np.ones_like(y), numpy_of(x), numpy_of(weight), saved,
                                     (1, 1), (0, 0, 0, 0), (1, 1), 1, None, (False, True, False))
    assert grads[0] is None and grads[2] is None and grads[1].shape == (4, 3, 3, 3)


# --- conv_transpose2d -------------------------------------------------------------------------

# (N, Cin, Cout, H, W, kernel, stride, padding, output_padding, dilation, groups, activation,
#  bias, channels_last input)
CONV_T_CASES = [
    (2, 4, 6, 5, 4, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1, None, True, False),
    (1, 4, 4, 3, 5, (3, 2), (3, 2), (0, 1), (2, 1), (1, 1), 4, "relu", True, True),
    (3, 6, 4, 4, 3, (2, 2), (1, 1), (0, 0), (1, 1), (2, 2), 2, "tanh", False, False),
    (0, 3, 2, 4, 4, (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), 1, None, True, False),
    (1, 3, 2, 7, 1, (1, 3), (1, 2), (0, 1), (0, 1), (1, 1), 1, "gelu", True, True),
    (2, 2, 3, 4, 5, (5, 5), (2, 3), (2, 1), (1, 0), (1, 2), 1, ("leaky_relu", 0.1), True, False),
]


@pytest.mark.parametrize("case", CONV_T_CASES,
                         ids=[f"convT{i}" for i in range(len(CONV_T_CASES))])
def test_conv_transpose2d_vs_torch(case):
    n, cin, cout, h, w, kernel, stride, padding, out_pad, dilation, groups, act, has_bias, x_cl = \
        case
    act = parse_act(act)
    x = randn(n, cin, h, w, channels_last=x_cl)
    weight = randn(cin, cout // groups, *kernel)
    bias = randn(cout) if has_bias else None
    z_t = TF.conv_transpose2d(x, weight, bias, stride, padding, out_pad, groups, dilation)
    y_t = activation_module(act)(z_t)
    grad_y = torch.randn_like(y_t)
    expected = torch_grads(y_t, [x, weight, bias], grad_y)

    y, saved = ref_conv.conv_transpose2d_forward(numpy_of(x), numpy_of(weight), numpy_of(bias),
                                                 stride, padding, out_pad, groups, dilation, act)
    assert_close(y, y_t, F64, name="y")
    assert_same_format(y, z_t, "y format")
    grads = ref_conv.conv_transpose2d_backward(
        numpy_of(grad_y), numpy_of(x), numpy_of(weight), saved, stride, padding, out_pad, groups,
        dilation, act, (True, True, has_bias))
    check_grads(grads, expected, ["grad_x", "grad_weight", "grad_bias"])


# --- pooling ----------------------------------------------------------------------------------

# (N, C, H, W, kernel, stride, padding, dilation, ceil_mode, channels_last)
MAX_POOL_CASES = [
    (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), (1, 1), False, False),
    (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), (1, 1), True, True),
    (1, 2, 8, 6, (2, 3), (2, 2), (1, 0), (2, 1), True, False),
    (3, 2, 5, 5, (2, 2), (2, 2), (1, 1), (1, 1), True, False),  # ceil window would start in
    (3, 2, 6, 6, (3, 3), (3, 3), (1, 1), (1, 1), True, False),  # the right padding: dropped
    (1, 4, 5, 11, (2, 2), (1, 3), (0, 1), (1, 2), False, True),
    (0, 3, 5, 5, (3, 3), (2, 2), (0, 0), (1, 1), True, False),
    (2, 1, 1, 7, (1, 3), (1, 2), (0, 1), (1, 1), True, False),
]


@pytest.mark.parametrize("case", MAX_POOL_CASES,
                         ids=[f"max{i}" for i in range(len(MAX_POOL_CASES))])
def test_max_pool2d_vs_torch(case):
    n, c, h, w, kernel, stride, padding, dilation, ceil_mode, channels_last = case
    x = randn(n, c, h, w, channels_last=channels_last)
    y_t = TF.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    grad_y = torch.randn_like(y_t)
    (grad_x_t,) = torch_grads(y_t, [x], grad_y)
    y, saved = ref_pool.max_pool2d_forward(numpy_of(x), kernel, stride, padding, dilation,
                                           ceil_mode)
    assert_close(y, y_t, F64, name="y")
    assert_same_format(y, y_t, "y format")
    _, indices_t = TF.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode,
                                 return_indices=True)
    np.testing.assert_array_equal(saved, indices_t.numpy())
    grad_x = ref_pool.max_pool2d_backward(numpy_of(grad_y), tuple(x.shape), saved, kernel, stride,
                                          padding, dilation, ceil_mode)
    assert_close(grad_x, grad_x_t, F64, name="grad_x")


def test_max_pool2d_ties_nan_and_all_minus_inf_windows_pick_torchs_index():
    x = torch.tensor([[1.0, 1.0, np.nan, 0.0, np.nan],
                      [-np.inf, -np.inf, 2.0, 2.0, 5.0],
                      [-np.inf, -np.inf, np.nan, 7.0, 7.0],
                      [3.0, -np.inf, 3.0, -np.inf, 1.0]], dtype=F64).reshape(1, 1, 4, 5)
    for kernel, stride, padding, ceil_mode in [(2, 1, 0, False), (3, 2, 1, True),
                                               ((2, 3), (2, 1), (1, 1), False)]:
        y_t, indices_t = TF.max_pool2d(x, kernel, stride, padding, 1, ceil_mode,
                                       return_indices=True)
        y, saved = ref_pool.max_pool2d_forward(x.numpy(), (kernel,) * 2 if isinstance(
            kernel, int) else kernel, (stride,) * 2 if isinstance(stride, int) else stride,
            (padding,) * 2 if isinstance(padding, int) else padding, (1, 1), ceil_mode)
        assert_close(y, y_t, F64, name="y")
        np.testing.assert_array_equal(saved, indices_t.numpy())


# (N, C, H, W, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, CL)
AVG_POOL_CASES = [
    (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), False, True, None, False),
    (2, 3, 7, 9, (3, 3), (2, 2), (1, 1), True, False, None, True),
    (1, 2, 8, 6, (2, 3), (3, 2), (1, 1), True, True, None, False),
    (3, 2, 6, 6, (3, 3), (3, 3), (1, 1), True, True, 5, False),
    (3, 2, 5, 5, (2, 2), (2, 2), (1, 1), True, True, None, False),  # ceil window dropped
    (1, 4, 5, 11, (4, 2), (1, 3), (2, 1), False, False, 3, True),
    (0, 3, 5, 5, (3, 3), (2, 2), (0, 0), True, True, None, False),
    (2, 1, 1, 7, (1, 3), (1, 2), (0, 1), True, False, None, False),
]


@pytest.mark.parametrize("case", AVG_POOL_CASES,
                         ids=[f"avg{i}" for i in range(len(AVG_POOL_CASES))])
def test_avg_pool2d_vs_torch(case):
    n, c, h, w, kernel, stride, padding, ceil_mode, include_pad, divisor, channels_last = case
    x = randn(n, c, h, w, channels_last=channels_last)
    y_t = TF.avg_pool2d(x, kernel, stride, padding, ceil_mode, include_pad, divisor)
    grad_y = torch.randn_like(y_t)
    (grad_x_t,) = torch_grads(y_t, [x], grad_y)
    y = ref_pool.avg_pool2d_forward(numpy_of(x), kernel, stride, padding, ceil_mode, include_pad,
                                    divisor)
    assert_close(y, y_t, F64, name="y")
    assert_same_format(y, y_t, "y format")
    grad_x = ref_pool.avg_pool2d_backward(numpy_of(grad_y), tuple(x.shape), kernel, stride,
                                          padding, ceil_mode, include_pad, divisor)
    assert_close(grad_x, grad_x_t, F64, name="grad_x")


def test_pool_grad_takes_grad_y_memory_format():
    x = randn(2, 3, 6, 6)
    y, saved = ref_pool.max_pool2d_forward(numpy_of(x), (2, 2), (2, 2), (0, 0), (1, 1), False)
    grad_y_cl = np.ascontiguousarray(np.ones_like(y).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    grad_x = ref_pool.max_pool2d_backward(grad_y_cl, (2, 3, 6, 6), saved, (2, 2), (2, 2), (0, 0),
                                          (1, 1), False)
    assert is_channels_last(grad_x)
    grad_x = ref_pool.avg_pool2d_backward(grad_y_cl, (2, 3, 6, 6), (2, 2), (2, 2), (0, 0), False,
                                          True, None)
    assert is_channels_last(grad_x)


# --- the public functions (reference backend) -------------------------------------------------

@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel,dilation", [((3, 3), (1, 1)), ((2, 2), (1, 1)), ((2, 4), (1, 2)),
                                             ((1, 1), (1, 1))])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_conv2d_string_padding_vs_torch(kernel, dilation, padding):
    x, weight, bias = randn(2, 3, 7, 8), randn(4, 3, *kernel), randn(4)
    y_t = TF.conv2d(x, weight, bias, 1, padding, dilation)
    grad_y = torch.randn_like(y_t)
    expected = torch_grads(y_t, [x, weight, bias], grad_y)
    y = F.conv2d(x, weight, bias, 1, padding, dilation)
    assert_close(y, y_t, name="y")
    check_grads(torch_grads(y, [x, weight, bias], grad_y), expected,
                ["grad_x", "grad_weight", "grad_bias"])


def test_conv2d_same_padding_with_stride_is_an_error():
    with pytest.raises(ValueError, match="strided"):
        F.conv2d(randn(1, 2, 5, 5), randn(2, 2, 3, 3), stride=2, padding="same")
    with pytest.raises(ValueError, match="padding string"):
        F.conv2d(randn(1, 2, 5, 5), randn(2, 2, 3, 3), padding="full")


def test_unbatched_and_non_contiguous_inputs():
    x = randn(3, 9, 8)
    weight = randn(4, 3, 3, 3)
    assert_close(F.conv2d(x, weight, padding=1, activation="relu"),
                 TF.relu(TF.conv2d(x, weight, padding=1)), name="conv2d 3-D")
    wt = randn(3, 2, 3, 3)
    assert_close(F.conv_transpose2d(x, wt, stride=2), TF.conv_transpose2d(x, wt, stride=2),
                 name="conv_transpose2d 3-D")
    assert_close(F.max_pool2d(x, 2), TF.max_pool2d(x, 2), name="max_pool2d 3-D")
    assert_close(F.avg_pool2d(x, 3, 2, 1), TF.avg_pool2d(x, 3, 2, 1), name="avg_pool2d 3-D")
    strided = randn(2, 8, 9, 10)[:, ::2, 1:, ::3].transpose(2, 3)  # neither NCHW nor NHWC
    assert_close(F.conv2d(strided, weight[:, :1].repeat(1, 4, 1, 1)),
                 TF.conv2d(strided, weight[:, :1].repeat(1, 4, 1, 1)), name="strided conv")
    assert_close(F.max_pool2d(strided, 2, ceil_mode=True),
                 TF.max_pool2d(strided, 2, ceil_mode=True), name="strided max_pool")


def test_functions_accept_zero_batch_and_give_zero_grads():
    x, weight, bias = randn(0, 3, 6, 6), randn(4, 3, 3, 3), randn(4)
    for fn in (lambda: F.conv2d(x, weight, bias, activation="tanh"),
               lambda: F.conv_transpose2d(x, randn(3, 2, 3, 3), randn(2)),
               lambda: F.max_pool2d(x, 2), lambda: F.avg_pool2d(x, 2)):
        y = fn()
        assert y.shape[0] == 0
        y.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.any()
    assert weight.grad.shape == weight.shape and not weight.grad.any()
    assert bias.grad.shape == bias.shape and not bias.grad.any()


def test_gradcheck_through_the_functions():
    x = randn(2, 4, 4, 3)
    weight, bias = randn(4, 2, 3, 2), randn(4)
    assert torch.autograd.gradcheck(
        lambda x, w, b: F.conv2d(x, w, b, (2, 1), 1, (1, 2), 2, activation="gelu"),
        (x, weight, bias))
    weight_t, bias_t = randn(4, 1, 2, 3), randn(2)
    assert torch.autograd.gradcheck(
        lambda x, w, b: F.conv_transpose2d(x, w, b, 2, (1, 0), 1, 2, activation="silu"),
        (x, weight_t, bias_t))
    assert torch.autograd.gradcheck(lambda x: F.max_pool2d(x, 2, 1, 1, ceil_mode=True), (x,))
    assert torch.autograd.gradcheck(
        lambda x: F.avg_pool2d(x, 3, 2, 1, True, False), (x,))
