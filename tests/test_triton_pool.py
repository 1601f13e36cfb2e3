"""Triton max_pool2d / avg_pool2d forward and backward against the NumPy reference (float64),
on poisoned outputs, NCHW and channels_last, ceil_mode, padding, dilation, divisor rules."""
import pytest
import torch

from helpers import in_layout, is_channels_last_only, reference_launch

import gpudnn
from gpudnn.kernels.alloc import poison_outputs
from gpudnn.kernels.triton import pool as triton_pool
from gpudnn.testing import assert_close


# (shape, kernel, stride, padding, dilation, ceil_mode, channels_last)
MAX_CASES = [
    pytest.param((2, 3, 6, 8), (2, 2), (2, 2), (0, 0), (1, 1), False, False, id="2x2-s2"),
    pytest.param((1, 5, 7, 9), (3, 3), (2, 2), (1, 1), (1, 1), True, True, id="3x3-s2-p1-ceil-cl"),
    pytest.param((3, 2, 8, 7), (3, 2), (1, 2), (1, 0), (2, 1), False, False,
                 id="3x2-dilated"),
    pytest.param((1, 17, 5, 6), (2, 3), (3, 1), (1, 1), (1, 2), True, True,
                 id="17ch-ceil-dilated-cl"),
    pytest.param((1, 2, 13, 12), (12, 11), (1, 1), (0, 0), (1, 1), False, False,
                 id="12x11-window"),
    pytest.param((0, 3, 4, 4), (2, 2), (2, 2), (0, 0), (1, 1), False, True, id="batch0"),
]


@pytest.mark.parametrize("shape,kernel,stride,pad,dil,ceil,cl", MAX_CASES)
def test_max_pool2d(device, shape, kernel, stride, pad, dil, ceil, cl):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen)
    if x.numel():  # ties, -inf and NaN follow torch: first max, last NaN, first in-image tap
        x.view(-1)[::7] = 0.5
        x.view(-1)[3] = float("-inf")
        if x.shape[0] == 1:
            x[0, 1] = float("-inf")  # a whole channel of -inf
        x.view(-1)[-5] = float("nan")
    x = in_layout(x, cl)
    args = (kernel, stride, pad, dil, ceil)
    ref_y, ref_idx = reference_launch("max_pool2d_forward", x.double(), *args)
    with poison_outputs():
        y, saved = triton_pool.max_pool2d_forward(x.to(device), *args)
    assert_close(y, ref_y, torch.float32, name="y")
    assert is_channels_last_only(y) == is_channels_last_only(torch.nn.functional.max_pool2d(x, kernel, stride, pad, dil, ceil))
    assert saved.element_size() < 8, "indices more compact than torch's int64"
    grad_y = in_layout(torch.randn(ref_y.shape, generator=gen), cl)
    ref_gx = reference_launch("max_pool2d_backward", grad_y.double(), tuple(x.shape), ref_idx, *args)
    with poison_outputs():
        gx = triton_pool.max_pool2d_backward(grad_y.to(device), tuple(x.shape), saved, *args)
    assert_close(gx, ref_gx, torch.float32, name="grad_x", scale=2.0)
    assert is_channels_last_only(gx) == is_channels_last_only(grad_y) or x.shape[0] == 0


def test_max_pool2d_backward_other_grad_layout(device):
    """grad_y in another memory format than the saved indices."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 4, 6, 6, generator=gen)
    args = ((3, 3), (2, 2), (1, 1), (1, 1), False)
    ref_y, ref_idx = reference_launch("max_pool2d_forward", x.double(), *args)
    y, saved = triton_pool.max_pool2d_forward(x.to(device), *args)
    grad_y = torch.randn(ref_y.shape, generator=gen).contiguous(memory_format=torch.channels_last)
    ref_gx = reference_launch("max_pool2d_backward", grad_y.double(), tuple(x.shape), ref_idx, *args)
    gx = triton_pool.max_pool2d_backward(grad_y.to(device), tuple(x.shape), saved, *args)
    assert_close(gx, ref_gx, torch.float32, name="grad_x")


# (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, channels_last)
AVG_CASES = [
    pytest.param((2, 3, 6, 8), (2, 2), (2, 2), (0, 0), False, True, None, False, id="2x2-s2"),
    pytest.param((1, 5, 7, 9), (3, 3), (2, 2), (1, 1), True, True, None, True,
                 id="3x3-p1-ceil-include-cl"),
    pytest.param((3, 2, 7, 6), (3, 3), (2, 2), (1, 1), True, False, None, False,
                 id="3x3-p1-ceil-exclude"),
    pytest.param((1, 17, 5, 7), (3, 2), (1, 3), (1, 1), False, False, 5, True,
                 id="divisor-override-cl"),
    pytest.param((1, 4, 5, 5), (5, 5), (1, 1), (2, 2), True, True, None, False, id="5x5-same"),
    pytest.param((0, 3, 4, 4), (2, 2), (2, 2), (0, 0), False, True, None, False, id="batch0"),
]


@pytest.mark.parametrize("shape,kernel,stride,pad,ceil,include,divisor,cl", AVG_CASES)
def test_avg_pool2d(device, shape, kernel, stride, pad, ceil, include, divisor, cl):
    gen = torch.Generator().manual_seed(2)
    x = in_layout(torch.randn(shape, generator=gen), cl)
    args = (kernel, stride, pad, ceil, include, divisor)
    ref_y = reference_launch("avg_pool2d_forward", x.double(), *args)
    with poison_outputs():
        y = triton_pool.avg_pool2d_forward(x.to(device), *args)
    assert_close(y, ref_y, torch.float32, name="y")
    assert is_channels_last_only(y) == is_channels_last_only(torch.nn.functional.avg_pool2d(x, kernel, stride, pad, ceil,
                                                              include, divisor))
    grad_y = in_layout(torch.randn(ref_y.shape, generator=gen), cl)
    ref_gx = reference_launch("avg_pool2d_backward", grad_y.double(), tuple(x.shape), *args)
    with poison_outputs():
        gx = triton_pool.avg_pool2d_backward(grad_y.to(device), tuple(x.shape), *args)
    assert_close(gx, ref_gx, torch.float32, name="grad_x")


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_functional_pool_triton(device, kind):
    """End to end through gpudnn.functional with the triton backend, against torch."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 7, 6, generator=gen)
    if kind == "max":
        fn = lambda f, t: f.max_pool2d(t, 3, 2, 1, ceil_mode=True)  # noqa: E731
    else:
        fn = lambda f, t: f.avg_pool2d(t, 3, 2, 1, ceil_mode=True,  # noqa: E731
                                       count_include_pad=False)
    xt = x.clone().to(device).requires_grad_()
    with gpudnn.use_backend("triton"):  # backward too: max pooling's saved record is per backend
        y = fn(gpudnn.functional, xt)
        grad_y = torch.randn(y.shape, generator=gen)
        y.backward(grad_y.to(device))
    xr = x.double().requires_grad_()
    yr = fn(torch.nn.functional, xr)
    yr.backward(grad_y.double())
    assert_close(y, yr, torch.float32)
    assert_close(xt.grad, xr.grad, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pool(device, dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 6, 6, generator=gen).to(dtype)
    y, _ = triton_pool.max_pool2d_forward(x.to(device), (2, 2), (2, 2), (0, 0), (1, 1), False)
    assert y.dtype == dtype
    assert_close(y, torch.nn.functional.max_pool2d(x.double(), 2), dtype)
    ya = triton_pool.avg_pool2d_forward(x.to(device), (3, 3), (1, 1), (1, 1), False, True, None)
    assert_close(ya, torch.nn.functional.avg_pool2d(x.double(), 3, 1, 1), dtype)
