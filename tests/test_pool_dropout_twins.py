"""adaptive_avg_pool2d / AdaptiveAvgPool2d, max_pool2d(return_indices=True) / MaxPool2d's indices,
and dropout1d / dropout2d / Dropout1d / Dropout2d.

- the NumPy reference against torch in float64 (forward, backward, gradcheck);
- the Triton kernels (interpreter) against the reference in float32 on poisoned outputs, NCHW and
  channels_last, windows longer than one step, upsampling, 16-bit dtypes;
- torch's int64 max-pool indices from every backend, bit for bit, with gradients still flowing;
- feature dropout: one Philox draw per (sample, channel), the [N, C] stream of plain dropout,
  the same mask on every backend and in backward, torch's p = 0 / p = 1 / eval results, torch's
  warnings and errors for other ranks;
- modules against their torch twins, compiled twins with no graph break, bad and empty input.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

import gpudnn
import gpudnn.functional as GF
import gpudnn.nn as gnn
from gpudnn.kernels.alloc import poison_outputs
from gpudnn.kernels.triton import dropout as triton_dropout
from gpudnn.kernels.triton import pool as triton_pool
from gpudnn.ops.pool import adaptive_avg_pool2d_op
from gpudnn.testing import assert_close
from helpers import (DEVICE, compare_float32_on_device, compare_with_twin, cupy_gpu, in_layout,
                     is_channels_last_only, launcher, reference_launch)

F64 = torch.float64
CL = torch.channels_last


def _randn(*shape, seed=0, dtype=F64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- adaptive average pooling ---------------------------------------------------------------------

# (input shape, output_size, channels_last)
ADAPTIVE = [
    pytest.param((2, 3, 7, 7), 1, False, id="global"),
    pytest.param((2, 3, 7, 7), 1, True, id="global-cl"),
    pytest.param((2, 4, 9, 7), (4, 3), False, id="overlapping"),
    pytest.param((1, 5, 10, 11), (3, None), True, id="none-cl"),
    pytest.param((2, 2, 3, 4), (7, 5), False, id="upsampling"),
    pytest.param((3, 7, 6), (2, 4), False, id="unbatched"),
    pytest.param((0, 3, 5, 5), 2, False, id="batch0"),
]


@pytest.mark.parametrize("shape,out,cl", ADAPTIVE)
def test_adaptive_reference_matches_torch(shape, out, cl):
    x = _randn(*shape)
    x = in_layout(x, cl) if x.dim() == 4 else x
    with gpudnn.use_backend("reference"):
        compare_with_twin(lambda t: GF.adaptive_avg_pool2d(t, out),
                          lambda t: F.adaptive_avg_pool2d(t, out), x, dtype=F64)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_adaptive_empty_channels_and_output(backend):
    """torch's own backward refuses these (its forward takes them): ours gives empty / zero
    gradients."""
    for shape, out in (((2, 0, 5, 5), 2), ((2, 3, 5, 5), (0, 2))):
        x = torch.ones(shape, requires_grad=True)
        with gpudnn.use_backend(backend):
            y = GF.adaptive_avg_pool2d(x, out)
            y.sum().backward()
        assert y.shape == F.adaptive_avg_pool2d(x, out).shape
        assert torch.equal(x.grad, torch.zeros(shape))


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("shape", [(7, 7), (2, 3, 4, 5, 6), (0, 4), (2, 3, 0, 5)])
def test_adaptive_global_mean_of_any_rank_as_torch(backend, shape):
    """torch computes a 1 x 1 output as mean((-2, -1)): any rank >= 2, NaN for empty planes."""
    with gpudnn.use_backend(backend):
        compare_with_twin(lambda t: GF.adaptive_avg_pool2d(t, 1),
                          lambda t: F.adaptive_avg_pool2d(t, 1),
                          _randn(*shape, dtype=torch.float32), dtype=torch.float32)


def test_adaptive_reference_gradcheck():
    x = _randn(2, 3, 7, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: adaptive_avg_pool2d_op(t, [3, 2], "reference"),
                                    (x,))


# (input shape, output size, channels_last, dtype): windows of 1..400 taps
TRITON_ADAPTIVE = [
    pytest.param((2, 3, 7, 7), (1, 1), False, id="global-49-taps"),
    pytest.param((2, 17, 7, 7), (1, 1), True, id="global-cl"),
    pytest.param((1, 3, 20, 20), (1, 1), False, id="global-400-taps-loop"),
    pytest.param((2, 5, 9, 7), (4, 3), True, id="overlapping-cl"),
    pytest.param((1, 4, 3, 5), (7, 8), False, id="upsampling"),
    pytest.param((1, 2, 13, 3), (5, 2), False, id="uneven"),
]


@pytest.mark.parametrize("shape,out,cl", TRITON_ADAPTIVE)
def test_adaptive_triton_matches_reference(device, shape, out, cl):
    gen = torch.Generator().manual_seed(sum(shape))
    x = in_layout(torch.randn(shape, generator=gen), cl)
    ref_y = reference_launch("adaptive_avg_pool2d_forward", x.double(), out)
    with poison_outputs():
        y = triton_pool.adaptive_avg_pool2d_forward(x.to(device), out)
    assert_close(y, ref_y, torch.float32, name="y")
    assert is_channels_last_only(y) == is_channels_last_only(F.adaptive_avg_pool2d(x, out))
    grad_y = in_layout(torch.randn(ref_y.shape, generator=gen), cl)
    ref_gx = reference_launch("adaptive_avg_pool2d_backward", grad_y.double(), tuple(x.shape))
    with poison_outputs():
        gx = triton_pool.adaptive_avg_pool2d_backward(grad_y.to(device), tuple(x.shape))
    assert_close(gx, ref_gx, torch.float32, name="grad_x")
    assert is_channels_last_only(gx) == is_channels_last_only(grad_y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_adaptive_triton_half_precision(device, dtype):
    x = _randn(2, 3, 8, 6, dtype=torch.float32).to(dtype)
    y = triton_pool.adaptive_avg_pool2d_forward(x.to(device), (3, 2))
    assert y.dtype == dtype
    assert_close(y, F.adaptive_avg_pool2d(x.double(), (3, 2)), dtype)


def test_adaptive_triton_output_size_zero_gives_zero_gradient(device):
    gx = triton_pool.adaptive_avg_pool2d_backward(torch.empty(2, 3, 0, 4).to(device),
                                                  (2, 3, 5, 5))
    assert torch.equal(gx.cpu(), torch.zeros(2, 3, 5, 5))


def test_adaptive_module_matches_torch_twin(device):
    ours, theirs = gnn.AdaptiveAvgPool2d((5, 3)), torch.nn.AdaptiveAvgPool2d((5, 3))
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, in_layout(_randn(2, 3, 11, 7), True), dtype=F64)
    compare_float32_on_device(ours, theirs, _randn(2, 3, 11, 7), device=device, interpret=True)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: GF.adaptive_avg_pool2d(torch.ones(7, 7), 2), RuntimeError, "3D or 4D"),
    (lambda: GF.adaptive_avg_pool2d(torch.ones(2, 3, 0, 7), 2), RuntimeError,
     "dimension 2 being empty"),
    (lambda: GF.adaptive_avg_pool2d(torch.ones(2, 3, 7, 7), (2, 3, 4)), ValueError,
     "output_size"),
    (lambda: GF.adaptive_avg_pool2d(torch.ones(2, 3, 7, 7), -1), ValueError, "greater than"),
    (lambda: GF.adaptive_avg_pool2d(torch.ones(2, 3, 7, 7), 1.5), ValueError, "output_size"),
    (lambda: GF.adaptive_avg_pool2d(torch.ones(1, 1, 7, 7, dtype=torch.int64), 1), TypeError,
     "floating"),
])
def test_adaptive_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- max_pool2d(return_indices=True) ------------------------------------------------------------

# (shape, kernel, stride, padding, dilation, ceil_mode, channels_last)
MAX_CASES = [
    pytest.param((2, 3, 7, 6), 3, 2, 1, 1, True, False, id="3x3-s2-p1-ceil"),
    pytest.param((1, 5, 8, 9), (3, 2), (1, 2), (1, 0), (2, 1), False, True,
                 id="dilated-cl"),
    pytest.param((3, 6, 6), 2, None, 0, 1, False, False, id="unbatched"),
]


def _with_specials(x):
    x = x.clone()
    x.view(-1)[::5] = 0.25  # ties
    x.view(-1)[2] = float("-inf")
    x.view(-1)[-3] = float("nan")
    if x.dim() == 4 and x.shape[1] > 1:
        x[0, 1] = float("-inf")  # a whole plane of -inf: the first in-image position
    return x


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("shape,kernel,stride,pad,dil,ceil,cl", MAX_CASES)
def test_max_pool2d_returns_torchs_indices(backend, shape, kernel, stride, pad, dil, ceil, cl):
    x = _with_specials(_randn(*shape, dtype=torch.float32))
    x = in_layout(x, cl) if x.dim() == 4 else x

    def ours(t):
        return GF.max_pool2d(t, kernel, stride, pad, dil, ceil, return_indices=True)

    def theirs(t):
        return F.max_pool2d(t, kernel, stride, pad, dil, ceil, return_indices=True)

    with gpudnn.use_backend(backend):
        (y, idx), (y_ref, idx_ref) = compare_with_twin(ours, theirs, x, dtype=torch.float32)
    assert idx.dtype == torch.int64 and torch.equal(idx, idx_ref)
    assert idx.stride() == idx_ref.stride()


# windows that hold no input position: a dilation steps over a small input (torch accepts these)
EMPTY_WINDOW_CASES = [
    pytest.param((2, 3, 1, 1), (1, 2), 1, (0, 1), (1, 2), id="1x1-image"),
    pytest.param((1, 1, 2, 1), (1, 2), 1, (0, 1), (1, 2), id="index-aliases-a-pixel"),
    pytest.param((1, 2, 2, 1), 2, 1, 1, 2, id="every-window"),
    pytest.param((1, 2, 3, 3), 3, 2, 1, 2, id="none-empty"),  # a control
]


@pytest.mark.parametrize("backend", ["reference", "triton",
                                     pytest.param("cupy", marks=cupy_gpu)])
@pytest.mark.parametrize("shape,kernel,stride,pad,dil", EMPTY_WINDOW_CASES)
def test_max_pool2d_window_without_input_positions(backend, shape, kernel, stride, pad, dil):
    """Such a window's maximum is -inf and its index torch's (the first tap at or past 0, past
    the image's end), the same on every backend; its gradient goes nowhere. torch's own CPU
    backward adds it at that index, i.e. into another pixel or plane or past the tensor (it
    corrupts the heap when the last plane's index is past the end), so the oracle of the gradient
    is the windows that hold an input position: for each, the gradient at its maximum."""
    dtype = torch.float64 if backend == "reference" else torch.float32
    device = "cpu" if backend == "reference" else DEVICE
    x = _randn(*shape, dtype=dtype).to(device).requires_grad_()
    y_ref, idx_ref = F.max_pool2d(x.detach().cpu(), kernel, stride, pad, dil, False, True)
    with gpudnn.use_backend(backend):
        y, idx = GF.max_pool2d(x, kernel, stride, pad, dil, return_indices=True)
        grad_y = torch.arange(1, y.numel() + 1, dtype=dtype, device=device).reshape(y.shape)
        y.backward(grad_y)
    assert torch.equal(y.cpu(), y_ref) and torch.equal(idx.cpu(), idx_ref)
    expected = torch.zeros(x.numel() // (shape[2] * shape[3]), shape[2] * shape[3],
                           dtype=torch.float64)
    inside = y_ref.reshape(expected.shape[0], -1) != float("-inf")
    planes = idx_ref.reshape(expected.shape[0], -1)
    for p, o in inside.nonzero().tolist():
        expected[p, planes[p, o]] += grad_y.reshape(expected.shape[0], -1)[p, o].item()
    assert_close(x.grad.cpu(), expected.reshape(shape).to(dtype), dtype, name="grad_x")
    if shape[2:] == (3, 3):
        assert bool(inside.all())  # the control: every window holds a position


def test_max_pool2d_triton_flat_indices_launchers(device):
    """The FLAT_INDEX variant of the Triton kernels against the reference, on poisoned outputs."""
    gen = torch.Generator().manual_seed(4)
    x = _with_specials(torch.randn(2, 3, 9, 8, generator=gen))
    args = ((3, 2), (2, 2), (1, 1), (1, 2), True)
    ref_y, ref_idx = reference_launch("max_pool2d_forward", x.double(), *args, True)
    with poison_outputs():
        y, idx = triton_pool.max_pool2d_forward(x.to(device), *args, True)
    assert torch.equal(idx.cpu(), ref_idx) and idx.dtype == torch.int64
    assert_close(y, ref_y, torch.float32, name="y")
    grad_y = torch.randn(ref_y.shape, generator=gen).contiguous(memory_format=CL)
    ref_gx = reference_launch("max_pool2d_backward", grad_y.double(), tuple(x.shape), ref_idx,
                              *args)
    with poison_outputs():
        gx = triton_pool.max_pool2d_backward(grad_y.to(device), tuple(x.shape), idx, *args)
    assert_close(gx, ref_gx, torch.float32, name="grad_x", scale=2.0)


def test_max_pool_module_with_indices_matches_twin_and_compiles():
    ours = gnn.MaxPool2d(3, 2, 1, return_indices=True)
    theirs = torch.nn.MaxPool2d(3, 2, 1, return_indices=True)
    x = _randn(2, 3, 7, 6, dtype=torch.float32)
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, x, dtype=torch.float32)
    torch._dynamo.reset()
    explained = torch._dynamo.explain(ours)(x)
    assert explained.graph_break_count == 0
    y, idx = torch.compile(ours, backend="aot_eager", fullgraph=True)(x)
    assert torch.equal(idx, theirs(x)[1])


# --- dropout1d / dropout2d ------------------------------------------------------------------------

def _feature_mask(y):
    """[N, C] bool of the kept channels of y [N, C, *], checking each channel is all or none."""
    kept = (y != 0).flatten(2)
    assert (kept.all(-1) | ~kept.any(-1)).all(), "a channel is dropped partially"
    return kept[..., 0]


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("cl", [False, True])
def test_dropout2d_one_draw_per_channel_same_on_every_backend(backend, cl):
    x = in_layout(_randn(3, 6, 4, 5, dtype=torch.float32).abs() + 1, cl)
    torch.manual_seed(7)
    expected = GF.dropout(torch.ones(3, 6), 0.4) != 0  # the reference's [N, C] stream
    xx = x.clone().requires_grad_()
    with gpudnn.use_backend(backend):
        torch.manual_seed(7)
        y = GF.dropout2d(xx, 0.4)
        y.backward(torch.ones_like(y))
    keep = _feature_mask(y)
    assert torch.equal(keep, expected)
    scale = torch.tensor(1 / 0.6, dtype=torch.float32)
    assert torch.equal(y, x * keep[:, :, None, None] * scale)
    assert torch.equal(xx.grad, (keep[:, :, None, None] * scale).expand_as(x))
    assert y.stride() == x.stride()


def test_feature_dropout_triton_launchers_match_reference(device):
    gen = torch.Generator().manual_seed(3)
    for x in (torch.randn(4, 5, 3, generator=gen), torch.randn(2, 3, 4, 5, generator=gen).to(
            memory_format=CL), torch.randn(3, 7, generator=gen)):
        ref = reference_launch("feature_dropout_forward", x.double(), 0.3, 2 ** 40 + 3, 5)
        with poison_outputs():
            y = triton_dropout.feature_dropout_forward(x.to(device), 0.3, 2 ** 40 + 3, 5)
        assert_close(y, ref, torch.float32, name="y")
        assert torch.equal(y.cpu() != 0, ref != 0)


def test_dropout1d_shapes_and_stream():
    with gpudnn.use_backend("triton"):
        torch.manual_seed(5)
        batched = GF.dropout1d(torch.ones(3, 5, 7), 0.5)
        torch.manual_seed(5)
        plain = GF.dropout(torch.ones(3, 5), 0.5)
        torch.manual_seed(5)
        unbatched = GF.dropout1d(torch.ones(5, 7), 0.5)
    assert torch.equal(_feature_mask(batched), plain != 0)
    assert torch.equal(_feature_mask(unbatched[None])[0], plain[0] != 0)


@pytest.mark.parametrize("p", [0.0, 1.0])
@pytest.mark.parametrize("name", ["dropout1d", "dropout2d"])
def test_p0_p1_and_eval_are_torchs(name, p):
    x = _randn(2, 3, 4, dtype=torch.float32) if name == "dropout1d" else \
        _randn(2, 3, 4, 5, dtype=torch.float32)
    x.view(-1)[0], x.view(-1)[1] = float("nan"), float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for training in (True, False):
            compare_with_twin(lambda t: getattr(GF, name)(t, p, training),
                              lambda t: getattr(F, name)(t, p, training), x, dtype=torch.float32,
                              signed_zeros=True)
    assert getattr(GF, name)(x, 0.5, False) is x


def test_modules_match_torch_in_eval_and_load_state_dict():
    for ours, theirs, x in ((gnn.Dropout1d(0.3), torch.nn.Dropout1d(0.3), _randn(2, 3, 4)),
                            (gnn.Dropout2d(0.3), torch.nn.Dropout2d(0.3), _randn(2, 3, 4, 4))):
        ours.load_state_dict(theirs.state_dict())
        ours.eval(), theirs.eval()
        compare_with_twin(ours, theirs, x, dtype=F64)
        assert repr(ours) == repr(theirs)


def test_dropout2d_keeps_about_1_minus_p_of_the_channels():
    torch.manual_seed(0)
    kept = _feature_mask(GF.dropout2d(torch.ones(64, 256, 1, 2), 0.3)).float().mean()
    assert abs(kept.item() - 0.7) < 0.02


def _torch_warnings(fn, *args):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn(*args)
            error = None
        except RuntimeError as exc:
            error = str(exc)
    return [str(w.message) for w in caught], error


@pytest.mark.parametrize("name", ["dropout1d", "dropout2d"])
@pytest.mark.parametrize("shape", [(), (4,), (2, 3), (2, 3, 4), (2, 3, 4, 5), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_torchs_warnings_and_errors_for_every_rank(name, shape, training):
    with gpudnn.use_backend("reference"):
        ours = _torch_warnings(getattr(GF, name), torch.ones(shape), 0.5, training)
    assert ours == _torch_warnings(getattr(F, name), torch.ones(shape), 0.5, training)


@pytest.mark.parametrize("name", ["dropout1d", "dropout2d"])
def test_p_out_of_range(name):
    with pytest.raises(ValueError, match="between 0 and 1"):
        getattr(GF, name)(torch.ones(2, 3, 4, 4), 1.5)


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter leg")
def test_compiled_dropout2d_matches_eager():
    layer = gnn.Dropout2d(0.5)
    x = _randn(2, 8, 3, 3, dtype=torch.float32)
    torch.manual_seed(3)
    expected = layer(x)
    torch._dynamo.reset()
    torch.manual_seed(3)
    with gpudnn.use_backend("triton"):
        got = torch.compile(layer, backend="aot_eager", fullgraph=True)(x)
    assert torch.equal(got, expected)


@cupy_gpu
def test_cupy_matches_reference():
    gen = torch.Generator().manual_seed(11)
    x = _with_specials(torch.randn(2, 3, 9, 8, generator=gen)).contiguous(memory_format=CL)
    cupy = {name: launcher(name, "cupy") for name in (
        "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward", "max_pool2d_forward",
        "feature_dropout_forward")}
    for out in ((4, 3), (1, 1), (11, 9)):
        ref = reference_launch("adaptive_avg_pool2d_forward", x.double(), out)
        assert_close(cupy["adaptive_avg_pool2d_forward"](x.cuda(), out), ref, torch.float32)
        grad_y = torch.randn(ref.shape, generator=gen)
        ref = reference_launch("adaptive_avg_pool2d_backward", grad_y.double(), tuple(x.shape))
        assert_close(cupy["adaptive_avg_pool2d_backward"](grad_y.cuda(), tuple(x.shape)), ref,
                     torch.float32)
    args = ((3, 2), (2, 2), (1, 1), (1, 2), True, True)
    _, idx = cupy["max_pool2d_forward"](x.cuda(), *args)
    assert torch.equal(idx.cpu(), F.max_pool2d(x, *args[:5], return_indices=True)[1])
    y = cupy["feature_dropout_forward"](x.cuda(), 0.3, 2 ** 40 + 3, 5)
    ref = reference_launch("feature_dropout_forward", x.double(), 0.3, 2 ** 40 + 3, 5)
    assert torch.equal(y.cpu() != 0, ref != 0)
