"""Triton conv2d / conv_transpose2d (implicit GEMM, depthwise) against the NumPy reference.

Each case runs the Triton launchers in float32 on poisoned outputs (every element must be
written) and the reference launchers in float64 on the same values; forward, saved tensor and
every gradient must agree within the float32 row of the tolerance table. Then the public
functions end to end against torch autograd.
"""
import math

import pytest
import torch

import gpudnn
from gpudnn.activations import Activation
from gpudnn.kernels.alloc import poison_outputs
from gpudnn.kernels.limits import check_grid
from gpudnn.kernels.triton import conv as triton_conv
from gpudnn.testing import assert_close
from helpers import (DEVICE, INTERPRETER_BF16_DOT, in_layout, is_channels_last_only,
                     reference_launch)


@pytest.fixture(autouse=True)
def _ieee_fp32(monkeypatch):
    """float32 tolerance needs true fp32 products: no tf32 on a GPU (torch's switch)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _act(name, param=None):
    return None if name is None else Activation.make(name, param)


# (batch, Cin, H, W, Cout, kernel, stride, padding (t, b, l, r), dilation, groups, act,
#  channels_last, bias)
CONV_CASES = [
    pytest.param(3, 4, 7, 9, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, ("relu",), False, True,
                 id="3x3-s1-p1-relu"),
    pytest.param(1, 4, 8, 5, 8, (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 2, ("gelu",), True, True,
                 id="3x3-s2-p2-d2-g2-gelu-cl"),
    pytest.param(2, 3, 9, 7, 5, (5, 5), (3, 3), (2, 2, 0, 0), (1, 1), 1, ("silu",), False, True,
                 id="5x5-s3-p20-silu"),
    pytest.param(1, 3, 5, 6, 4, (1, 3), (1, 1), (0, 0, 1, 1), (1, 1), 1, None, True, False,
                 id="1x3-same-nobias-cl"),
    pytest.param(3, 2, 6, 6, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, ("sigmoid",), False,
                 True, id="1x1-sigmoid"),
    pytest.param(1, 5, 6, 7, 5, (2, 2), (1, 1), (0, 1, 0, 1), (1, 1), 1, ("tanh",), True, True,
                 id="2x2-same-asymmetric-tanh-cl"),
    pytest.param(1, 17, 5, 4, 33, (3, 3), (1, 2), (1, 1, 2, 2), (2, 1), 1, ("gelu_tanh",), False,
                 True, id="block-edges-17-33-gelu_tanh"),
    pytest.param(3, 6, 9, 7, 6, (5, 5), (3, 3), (2, 2, 2, 2), (1, 1), 6, ("silu",), False, True,
                 id="depthwise-5x5-s3"),
    pytest.param(1, 3, 6, 8, 6, (3, 3), (2, 1), (1, 1, 0, 2), (1, 2), 3, ("leaky_relu", 0.2),
                 True, True, id="depthwise-mult2-leaky-cl"),
    pytest.param(2, 4, 5, 5, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4, ("leaky_relu", -0.5),
                 False, False, id="depthwise-negative-slope-nobias"),
    pytest.param(1, 2, 2, 5, 3, (1, 1), (3, 3), (0, 0, 0, 0), (1, 1), 1, None, False, True,
                 id="image-smaller-than-stride"),
    pytest.param(0, 4, 5, 5, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, ("relu",), True, True,
                 id="batch0"),
]


@pytest.mark.parametrize("n,cin,h,w,cout,k,stride,pad,dil,groups,act,cl,has_bias", CONV_CASES)
def test_conv2d_forward_backward(device, n, cin, h, w, cout, k, stride, pad, dil, groups, act,
                                 cl, has_bias):
    act = _act(*act) if act else None
    gen = torch.Generator().manual_seed(7)
    x = in_layout(torch.randn(n, cin, h, w, generator=gen), cl)
    weight = torch.randn(cout, cin // groups, *k, generator=gen) / math.sqrt(cin // groups * k[0]
                                                                             * k[1])
    bias = torch.randn(cout, generator=gen) if has_bias else None
    ref_y, ref_saved = reference_launch("conv2d_forward", x.double(), weight.double(),
                                  None if bias is None else bias.double(), stride, pad, dil,
                                  groups, act)
    xd, wd = x.to(device), weight.to(device)
    bd = None if bias is None else bias.to(device)
    with poison_outputs():
        y, saved = triton_conv.conv2d_forward(xd, wd, bd, stride, pad, dil, groups, act)
    red = cin // groups * k[0] * k[1]
    assert_close(y, ref_y, torch.float32, name="y", scale=math.sqrt(red))
    assert is_channels_last_only(y) == is_channels_last_only(torch.nn.functional.conv2d(x, weight, None, stride, 0, dil,
                                                          groups)), "y memory format"
    if act is None:
        assert saved is None
    else:
        assert_close(saved, ref_saved, torch.float32, name="saved", scale=math.sqrt(red))

    grad_y = in_layout(torch.randn(ref_y.shape, generator=gen), cl)
    needs = (True, True, has_bias)
    ref_grads = reference_launch("conv2d_backward", grad_y.double(), x.double(), weight.double(),
                           ref_saved, stride, pad, dil, groups, act, needs)
    with poison_outputs():
        grads = triton_conv.conv2d_backward(grad_y.to(device), xd, wd, saved, stride, pad, dil,
                                            groups, act, needs)
    pixels = max(n * y.shape[2] * y.shape[3], 1)
    scales = (math.sqrt(cout // groups * k[0] * k[1]), math.sqrt(pixels), math.sqrt(pixels))
    for name, got, want, scale in zip(("grad_x", "grad_weight", "grad_bias"), grads, ref_grads,
                                      scales):
        if want is None:
            assert got is None, name
        else:
            assert_close(got, want, torch.float32, name=name, scale=scale)
    assert grads[0].shape == x.shape and is_channels_last_only(grads[0]) == is_channels_last_only(y)


def test_conv2d_needs_subset(device):
    """Only the requested gradients are computed (None elsewhere)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 5, 5, generator=gen).to(device)
    weight = torch.randn(4, 4, 3, 3, generator=gen).to(device)
    y, saved = triton_conv.conv2d_forward(x, weight, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, None)
    gy = torch.randn(y.shape, generator=gen).to(device)
    gx, gw, gb = triton_conv.conv2d_backward(gy, x, weight, saved, (1, 1), (1, 1, 1, 1), (1, 1),
                                             1, None, (False, True, False))
    assert gx is None and gb is None and gw.shape == weight.shape


def test_refuses_tensors_past_int32_offsets():
    """2^31 or more elements: a clear error before anything is allocated, never a wrap."""
    x = torch.zeros(1, 1, 1, 1).expand(2 ** 12, 2 ** 7, 2 ** 6, 2 ** 6)  # 2^31, no memory
    weight = torch.zeros(1, 2 ** 7, 1, 1)
    with pytest.raises(ValueError, match="2\\^31"):
        triton_conv.conv2d_forward(x, weight, None, (1, 1), (0, 0, 0, 0), (1, 1), 1, None)


def test_refuses_grids_past_cuda_axis_limits():
    """Grid axes 1 and 2 stop at 65535: groups (axis 2 of the GEMM) and groups x taps (axis 1 of
    the weight gradient) past it are a clear ValueError before the launch (the interpreter would
    run such a grid; the GPU would fail to launch it)."""
    x = torch.zeros(1, 1, 1, 1).expand(1, 2 * 65536, 1, 1)  # no memory
    weight = torch.zeros(1, 1, 1, 1).expand(65536, 2, 1, 1)
    with pytest.raises(ValueError, match=r"dimension z = 65536 \(groups\)"):
        triton_conv.conv2d_forward(x, weight, None, (1, 1), (0, 0, 0, 0), (1, 1), 65536, None)
    groups = 8192  # forward fine (axis 2 = 8192), weight gradient: 8192 * 9 taps on axis 1
    x = torch.zeros(1, 1, 1, 1).expand(1, 2 * groups, 3, 3)
    weight = torch.zeros(1, 1, 1, 1).expand(groups, 2, 3, 3)
    grad_y = torch.zeros(1, 1, 1, 1).expand(1, groups, 1, 1)
    with pytest.raises(ValueError, match=r"dimension y = 73728 \(groups x kernel taps\)"):
        triton_conv.conv2d_backward(grad_y, x, weight, None, (1, 1), (0, 0, 0, 0), (1, 1),
                                    groups, None, (False, True, False))
    assert check_grid("op", (2 ** 31 - 1, 65535, 65535), ("a", "b", "c"))
    with pytest.raises(ValueError, match=r"dimension x = 2147483648 \(a\)"):
        check_grid("op", (2 ** 31, 1, 1), ("a", "b", "c"))


# (batch, Cin, H, W, Cout, kernel, stride, padding, output_padding, dilation, groups, act, cl)
TRANSPOSE_CASES = [
    pytest.param(2, 4, 5, 4, 6, (3, 3), (2, 2), (1, 1), (1, 1), (1, 1), 1, ("relu",), True,
                 id="3x3-s2-op1-relu-cl"),
    pytest.param(1, 4, 3, 5, 4, (4, 4), (2, 2), (1, 1), (0, 0), (1, 1), 2, ("tanh",), False,
                 id="dcgan-4x4-s2-g2-tanh"),
    pytest.param(3, 3, 4, 4, 2, (1, 3), (3, 1), (0, 1), (2, 0), (1, 2), 1, None, False,
                 id="1x3-s3-d2-op2"),
    pytest.param(1, 2, 3, 3, 3, (3, 3), (1, 1), (0, 0), (1, 1), (2, 2), 1, ("gelu",), True,
                 id="op-ge-stride-lt-dilation"),
    pytest.param(0, 4, 3, 3, 4, (3, 3), (2, 2), (1, 1), (0, 0), (1, 1), 1, ("silu",), False,
                 id="batch0"),
]


@pytest.mark.parametrize("n,cin,h,w,cout,k,stride,pad,opad,dil,groups,act,cl", TRANSPOSE_CASES)
def test_conv_transpose2d_forward_backward(device, n, cin, h, w, cout, k, stride, pad, opad, dil,
                                           groups, act, cl):
    act = _act(*act) if act else None
    gen = torch.Generator().manual_seed(11)
    x = in_layout(torch.randn(n, cin, h, w, generator=gen), cl)
    weight = torch.randn(cin, cout // groups, *k, generator=gen) / math.sqrt(cin)
    bias = torch.randn(cout, generator=gen)
    args = (stride, pad, opad, groups, dil, act)
    ref_y, ref_saved = reference_launch("conv_transpose2d_forward", x.double(), weight.double(),
                                  bias.double(), *args)
    xd, wd = x.to(device), weight.to(device)
    with poison_outputs():
        y, saved = triton_conv.conv_transpose2d_forward(xd, wd, bias.to(device), *args)
    red = cin // groups * k[0] * k[1]
    assert_close(y, ref_y, torch.float32, name="y", scale=math.sqrt(red))
    assert is_channels_last_only(y) == is_channels_last_only(ref_y), "y memory format"
    grad_y = in_layout(torch.randn(ref_y.shape, generator=gen), cl)
    needs = (True, True, True)
    ref_grads = reference_launch("conv_transpose2d_backward", grad_y.double(), x.double(),
                           weight.double(), ref_saved, stride, pad, opad, groups, dil, act, needs)
    with poison_outputs():
        grads = triton_conv.conv_transpose2d_backward(grad_y.to(device), xd, wd, saved, stride,
                                                      pad, opad, groups, dil, act, needs)
    pixels = max(n * h * w, 1)
    scales = (math.sqrt(red), math.sqrt(pixels * 4), math.sqrt(pixels * 4))
    for name, got, want, scale in zip(("grad_x", "grad_weight", "grad_bias"), grads, ref_grads,
                                      scales):
        assert_close(got, want, torch.float32, name=name, scale=scale)


def test_wgrad_split_reduction(device):
    """Enough pixels that the weight and bias gradients split their reductions."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 17, 17, generator=gen)
    weight = torch.randn(3, 2, 3, 3, generator=gen)
    pad = (1, 1, 1, 1)
    splits, _ = triton_conv._split(17 * 17, 9, 16)
    assert splits > 1, "the case must exercise the split path"
    grad_y = torch.randn(1, 3, 17, 17, generator=gen)
    ref = reference_launch("conv2d_backward", grad_y.double(), x.double(), weight.double(), None,
                     (1, 1), pad, (1, 1), 1, None, (False, True, True))
    with poison_outputs():
        _, gw, gb = triton_conv.conv2d_backward(grad_y.to(device), x.to(device),
                                                weight.to(device), None, (1, 1), pad, (1, 1), 1,
                                                None, (False, True, True))
    assert_close(gw, ref[1], torch.float32, name="grad_weight", scale=17.0)
    assert_close(gb, ref[2], torch.float32, name="grad_bias", scale=17.0)


# --- end to end through gpudnn.functional ---------------------------------------------------------

def _torch_grads(fn, tensors, grad_y):
    leaves = [t.detach().double().requires_grad_() for t in tensors]
    out = fn(*leaves)
    out.backward(grad_y.double())
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_functional_conv2d_triton(device, layout):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 6, 5, generator=gen)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.randn(2, 4, 6, 10, generator=gen)[..., ::2]  # neither NCHW nor NHWC dense
    weight = torch.randn(4, 2, 3, 3, generator=gen) / 5
    bias = torch.randn(4, generator=gen)
    tensors = [t.to(device).requires_grad_() for t in (x, weight, bias)]
    grad_y = torch.randn(2, 4, 6, 5, generator=gen)
    with gpudnn.use_backend("triton"):
        y = gpudnn.functional.conv2d(*tensors, padding="same", groups=2, activation="silu")
        y.backward(grad_y.to(device))
    ref_y, ref_grads = _torch_grads(lambda a, b, c: torch.nn.functional.silu(
        torch.nn.functional.conv2d(a, b, c, padding="same", groups=2)), (x, weight, bias), grad_y)
    assert_close(y, ref_y, torch.float32, scale=math.sqrt(18))
    for t, want in zip(tensors, ref_grads):
        assert_close(t.grad, want, torch.float32, scale=math.sqrt(2 * 6 * 5))


def test_functional_conv_transpose2d_triton(device):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 4, 3, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4, 3, 4, 4, generator=gen) / 4
    bias = torch.randn(3, generator=gen)
    tensors = [t.to(device).requires_grad_() for t in (x, weight, bias)]
    grad_y = torch.randn(2, 3, 8, 6, generator=gen)
    with gpudnn.use_backend("triton"):
        y = gpudnn.functional.conv_transpose2d(*tensors, stride=2, padding=1,
                                               activation=torch.nn.LeakyReLU(0.2))
        y.backward(grad_y.to(device))
    ref_y, ref_grads = _torch_grads(lambda a, b, c: torch.nn.functional.leaky_relu(
        torch.nn.functional.conv_transpose2d(a, b, c, stride=2, padding=1), 0.2),
        (x, weight, bias), grad_y)
    assert_close(y, ref_y, torch.float32, scale=8.0)
    assert y.is_contiguous(memory_format=torch.channels_last)
    for t, want in zip(tensors, ref_grads):
        assert_close(t.grad, want, torch.float32, scale=8.0)


@pytest.mark.parametrize("dtype", [
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        DEVICE == "cpu", reason=INTERPRETER_BF16_DOT)),
])
def test_half_precision_conv(device, dtype):
    """fp16 / bf16 operands with fp32 accumulation, within their rows of the table."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 16, 5, 5, generator=gen)
    weight = torch.randn(16, 16, 3, 3, generator=gen) / 12
    xh, wh = x.to(dtype), weight.to(dtype)
    y, saved = triton_conv.conv2d_forward(xh.to(device), wh.to(device), None, (1, 1),
                                          (1, 1, 1, 1), (1, 1), 1, Activation.make("relu"))
    want = torch.relu(torch.nn.functional.conv2d(xh.double(), wh.double(), padding=1))
    assert y.dtype == dtype
    assert_close(y, want, dtype)
