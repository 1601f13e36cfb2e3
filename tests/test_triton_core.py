"""Triton kernels of the core families (activations, dense, softmax, losses, dropout, batch norm)
against the NumPy reference launchers.

Inputs are float32 on DEVICE (CPU tensors under TRITON_INTERPRET=1, or CUDA); the reference runs
in float64 on the same values; outputs are allocated poisoned with NaN, so an element a kernel
forgets to write fails the comparison. Sizes are tiny (the interpreter is slow) but cross the
kernels' block edges.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

import gpudnn
from helpers import DEVICE, INTERPRETER_BF16_DOT
from gpudnn.kernels import alloc
from gpudnn.kernels.activations import NAMES, Activation
from gpudnn.kernels.triton import _pointwise
from gpudnn.kernels.triton import activations as t_act
from gpudnn.kernels.triton import batchnorm as t_bn
from gpudnn.kernels.triton import dense as t_dense
from gpudnn.kernels.triton import dropout as t_drop
from gpudnn.kernels.triton import losses as t_loss
from gpudnn.kernels.triton import softmax as t_soft
from gpudnn.reference import activations as r_act
from gpudnn.reference import batchnorm as r_bn
from gpudnn.reference import dense as r_dense
from gpudnn.reference import dropout as r_drop
from gpudnn.reference import losses as r_loss
from gpudnn.reference import softmax as r_soft
from gpudnn.testing import assert_close

F32 = torch.float32


# --- helpers ------------------------------------------------------------------------------------

def _np64(value):
    """torch tensors -> float64 NumPy arrays (integer tensors keep their dtype), recursively."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        return (t.double() if t.is_floating_point() else t).numpy()
    if isinstance(value, (list, tuple)):
        return type(value)(_np64(v) for v in value)
    return value


def ref(fn, *args):
    """Run a reference launcher on float64 copies of the arguments."""
    return fn(*[_np64(a) for a in args])


def triton_run(fn, *args):
    """Run a Triton launcher with every output allocation poisoned with NaN."""
    with alloc.poison_outputs():
        return fn(*args)


def rand(shape, device, scale=1.0, layout="contiguous", generator=None):
    """float32 normal values of ``shape`` in the given memory layout: "contiguous",
    "channels_last" (4-d), "transposed" (last two dims swapped in memory) or "strided" (every
    other element of a larger tensor)."""
    g = torch.Generator().manual_seed(zlib.crc32(repr((tuple(shape), layout)).encode())) \
        if generator is None else generator
    if layout == "transposed":
        base = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=g) * scale
        return base.transpose(-1, -2).to(device)
    if layout == "strided":
        base = torch.randn(*shape[:-1], shape[-1] * 2, generator=g) * scale
        return base.to(device)[..., ::2]
    t = (torch.randn(*shape, generator=g) * scale).to(device)
    if layout == "channels_last":
        t = t.contiguous(memory_format=torch.channels_last)
    return t


def close(actual, expected, name, scale=1.0):
    assert isinstance(actual, torch.Tensor), f"{name}: got {type(actual).__name__}"
    expected = torch.as_tensor(np.asarray(expected))
    assert_close(actual, expected, F32, name=name, scale=scale)


ACTS = [None] + [Activation.make(n) for n in NAMES] + [Activation("leaky_relu", -0.1)]
ACT_IDS = ["identity"] + list(NAMES) + ["leaky_relu_negative_slope"]


# --- activations --------------------------------------------------------------------------------

def test_registry_covers_every_activation_name():
    codes = {Activation.make(n).code for n in NAMES}
    assert codes == set(range(1, len(NAMES) + 1))
    assert (t_act.RELU, t_act.SILU) == (Activation.make("relu").code, Activation.make("silu").code)


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("shape,layout", [((1,), "contiguous"), ((1025,), "contiguous"),
                                          ((7, 9), "transposed"), ((2, 3, 4, 5), "channels_last"),
                                          ((3, 11), "strided"), ((0, 4), "contiguous")])
def test_activation_forward_backward(device, act, shape, layout):
    x = rand(shape, device, scale=3.0, layout=layout)
    y = triton_run(t_act.activation_forward, x, act)
    close(y, ref(r_act.activation_forward, x, act), "y")
    if x.numel() and layout in ("channels_last", "transposed"):
        assert y.stride() == x.stride()  # dense layouts are kept
    grad_y = rand(shape, device, layout="contiguous")
    saved = y if act is not None and act.from_output else x
    grad_x = triton_run(t_act.activation_backward, grad_y, saved, act)
    close(grad_x, ref(r_act.activation_backward, grad_y, saved, act), "grad_x")


def test_activation_extreme_inputs(device):
    x = torch.tensor([-1e4, -80.0, -1e-6, 0.0, 1e-6, 80.0, 1e4], device=device)
    for name in NAMES:
        act = Activation.make(name)
        y = triton_run(t_act.activation_forward, x, act)
        close(y, ref(r_act.activation_forward, x, act), f"{name}(x)")


# --- dense --------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_dense_every_activation(device, act):
    x, w, b = rand((7, 33), device), rand((65, 33), device, 0.2), rand((65,), device)
    y, saved = triton_run(t_dense.dense_forward, x, w, b, act)
    y_ref, saved_ref = ref(r_dense.dense_forward, x, w, b, act)
    close(y, y_ref, "y")
    if act is None:
        assert saved is None
    else:
        close(saved, saved_ref, "saved")
        assert (saved is y) == act.from_output  # one tensor kept: y when f' is a function of y
    grad_y = rand((7, 65), device)
    grads = triton_run(t_dense.dense_backward, grad_y, x, w, saved, act, (True, True, True))
    expected = ref(r_dense.dense_backward, grad_y, x, w, saved_ref, act, (True, True, True))
    for name, got, exp in zip(("grad_x", "grad_weight", "grad_bias"), grads, expected):
        close(got, exp, name, scale=3.0)


@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (63, 64, 65), (65, 7, 31), (0, 5, 3), (4, 3, 0)])
@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
def test_dense_shapes_and_strides(device, M, N, K, layout):
    act = Activation.make("gelu")
    x = rand((M, K), device, layout=layout)
    w = rand((N, K), device, 0.3, layout="transposed" if layout == "contiguous" else "strided")
    b = rand((N,), device)
    y, saved = triton_run(t_dense.dense_forward, x, w, b, act)
    y_ref, saved_ref = ref(r_dense.dense_forward, x, w, b, act)
    close(y, y_ref, "y", scale=max(1.0, K ** 0.5))
    grad_y = rand((M, N), device)
    needs = (True, True, True)
    grads = triton_run(t_dense.dense_backward, grad_y, x, w, saved, act, needs)
    expected = ref(r_dense.dense_backward, grad_y, x, w, saved_ref, act, needs)
    for name, got, exp in zip(("grad_x", "grad_weight", "grad_bias"), grads, expected):
        close(got, exp, name, scale=max(1.0, max(M, N) ** 0.5))


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False),
                                   (False, False, True), (False, True, True)])
def test_dense_needs_and_no_bias(device, needs):
    act = Activation.make("tanh")
    x, w = rand((9, 5), device), rand((6, 5), device)
    b = rand((6,), device) if needs[2] else None
    y, saved = triton_run(t_dense.dense_forward, x, w, b, act)
    close(y, ref(r_dense.dense_forward, x, w, b, act)[0], "y")
    grad_y = rand((9, 6), device)
    grads = triton_run(t_dense.dense_backward, grad_y, x, w, saved, act, needs)
    expected = ref(r_dense.dense_backward, grad_y, x, w, ref(r_dense.dense_forward, x, w, b,
                                                                act)[1], act, needs)
    for name, need, got, exp in zip(("grad_x", "grad_weight", "grad_bias"), needs, grads,
                                    expected):
        if need:
            close(got, exp, name)
        else:
            assert got is None, name


def test_dense_precision_follows_torch_switch():
    previous = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert t_dense._precision(torch.float32) == "ieee"
        torch.backends.cuda.matmul.allow_tf32 = True
        assert t_dense._precision(torch.float32) == "tf32"
        assert t_dense._precision(torch.bfloat16) == "ieee"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


def test_dense_heuristic_picks_only_listed_tiles():
    listed = set(t_dense._TILES.values())
    for which in ("fwd", "bwd"):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for shape in [(1, 1, 1), (4096, 4096, 4096), (64, 100000, 64), (2048, 2048, 8)]:
                assert t_dense._config(which, *shape, dtype) in listed


# --- softmax ------------------------------------------------------------------------------------

SOFTMAX_CASES = [
    ((1,), 0, "contiguous"), ((3, 7), 1, "contiguous"), ((3, 7), 0, "transposed"),
    ((2, 17), -1, "contiguous"),  # block 16 + 1
    ((2, 4097), 1, "contiguous"),  # online path (block 4096 + 1)
    ((2, 300, 3), 1, "contiguous"),  # a non-last dim longer than its block: online, strided rows
    ((2, 3, 4, 5), 1, "channels_last"), ((3, 5, 4), 2, "strided"), ((0, 5), 1, "contiguous"),
    ((), 0, "contiguous"),
]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim,layout", SOFTMAX_CASES,
                         ids=[f"{s}-{d}-{l}" for s, d, l in SOFTMAX_CASES])
def test_softmax(device, shape, dim, layout, log):
    x = rand(shape, device, 3.0, layout=layout) if shape else torch.tensor(1.5, device=device)
    y = triton_run(t_soft.softmax_forward, x, dim, log)
    grad_y = rand(shape, device) if shape else torch.tensor(0.7, device=device)
    grad_x = triton_run(t_soft.softmax_backward, grad_y, y, dim, log)
    if not shape:  # the reference takes no 0-d input; torch defines it (a one-element row)
        x64 = x.detach().cpu().double().requires_grad_()
        y64 = torch.log_softmax(x64, dim) if log else torch.softmax(x64, dim)
        y64.backward(grad_y.cpu().double())
        close(y, y64.detach(), "y")
        close(grad_x, x64.grad, "grad_x")
        return
    close(y, ref(r_soft.softmax_forward, x, dim, log), "y")
    close(grad_x, ref(r_soft.softmax_backward, grad_y, y, dim, log), "grad_x")


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("R", [9, 4100])
def test_softmax_special_values_as_torch(device, R, log):
    x = rand((5, R), device)
    x[0, :3] = float("-inf")       # some -inf: probability 0
    x[1, :] = float("-inf")        # all -inf: NaN row
    x[2, 4] = float("nan")         # NaN: NaN row
    x[3, 1] = 1e30                 # huge values
    x[4, R - 1] = -1e30
    y = triton_run(t_soft.softmax_forward, x, 1, log)
    expected = torch.log_softmax(x.cpu().double(), 1) if log else torch.softmax(x.cpu().double(), 1)
    close(y, expected, "y")
    close(y, ref(r_soft.softmax_forward, x, 1, log), "y vs reference")


# --- losses -------------------------------------------------------------------------------------

CE_CASES = [(1, 1, "contiguous"), (7, 5, "transposed"), (129, 3, "contiguous"),
            (3, 4097, "contiguous"), (0, 4, "contiguous"), (6, 17, "strided")]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("N,C,layout", CE_CASES, ids=[f"{n}x{c}-{l}" for n, c, l in CE_CASES])
def test_cross_entropy(device, N, C, layout, reduction):
    logits = rand((N, C), device, 3.0, layout=layout)
    gen = torch.Generator().manual_seed(N * 1000 + C)
    target = torch.randint(0, C, (N,), generator=gen).to(device)
    if N > 2:
        target[1] = -100
    loss, lse = triton_run(t_loss.cross_entropy_forward, logits, target, -100, reduction)
    loss_ref, lse_ref = ref(r_loss.cross_entropy_forward, logits, target, -100, reduction)
    close(loss, loss_ref, "loss", scale=max(1.0, N ** 0.5))
    close(lse, lse_ref, "lse")
    assert lse.dtype == torch.float32
    grad_loss = rand(tuple(loss.shape), device) if reduction == "none" else \
        torch.tensor(0.75, device=device)
    grad = triton_run(t_loss.cross_entropy_backward, grad_loss, logits, target, lse, -100,
                      reduction)
    close(grad, ref(r_loss.cross_entropy_backward, grad_loss, logits, target, lse_ref, -100,
                    reduction), "grad_logits")


def test_cross_entropy_all_ignored_and_custom_index(device):
    logits = rand((4, 3), device)
    target = torch.full((4,), 2, dtype=torch.int64, device=device)
    loss, lse = triton_run(t_loss.cross_entropy_forward, logits, target, 2, "mean")
    assert torch.isnan(loss).item()  # mean over no rows, as torch
    grad = triton_run(t_loss.cross_entropy_backward, torch.tensor(1.0, device=device), logits,
                      target, lse, 2, "mean")
    close(grad, np.zeros((4, 3)), "grad_logits")
    loss, _ = triton_run(t_loss.cross_entropy_forward, logits, target, 2, "sum")
    close(loss, np.float64(0.0), "sum over no rows")


def test_cross_entropy_target_out_of_range_is_nan_not_wrong(device):
    logits = rand((3, 4), device)
    target = torch.tensor([0, 7, 1], device=device)
    loss, _ = triton_run(t_loss.cross_entropy_forward, logits, target, -100, "none")
    assert torch.isnan(loss[1]) and not torch.isnan(loss[0]) and not torch.isnan(loss[2])


POINTWISE = [("bce", t_loss.bce_with_logits_forward, t_loss.bce_with_logits_backward,
              r_loss.bce_with_logits_forward, r_loss.bce_with_logits_backward),
             ("mse", t_loss.mse_loss_forward, t_loss.mse_loss_backward,
              r_loss.mse_loss_forward, r_loss.mse_loss_backward)]
PW_CASES = [((1,), "contiguous"), ((1025,), "contiguous"), ((2, 3, 4, 5), "channels_last"),
            ((5, 6), "transposed"), ((0, 3), "contiguous")]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape,layout", PW_CASES, ids=[f"{s}-{l}" for s, l in PW_CASES])
@pytest.mark.parametrize("name,fwd,bwd,rfwd,rbwd", POINTWISE, ids=[p[0] for p in POINTWISE])
def test_bce_mse(device, name, fwd, bwd, rfwd, rbwd, shape, layout, reduction):
    x = rand(shape, device, 4.0, layout=layout)
    target = torch.rand(shape, generator=torch.Generator().manual_seed(3)).to(device)
    loss = triton_run(fwd, x, target, reduction)
    close(loss, ref(rfwd, x, target, reduction), "loss", scale=max(1.0, x.numel() ** 0.5))
    grad_loss = rand(shape, device) if reduction == "none" else torch.tensor(1.3, device=device)
    for needs in [(True, True), (True, False), (False, True)]:
        got = triton_run(bwd, grad_loss, x, target, reduction, needs)
        expected = ref(rbwd, grad_loss, x, target, reduction, needs)
        for label, need, g, e in zip(("grad_x", "grad_target"), needs, got, expected):
            if need:
                close(g, e, label)
            else:
                assert g is None


def test_bce_stable_at_large_logits(device):
    x = torch.tensor([-1e4, -50.0, 0.0, 50.0, 1e4], device=device)
    target = torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0], device=device)
    loss = triton_run(t_loss.bce_with_logits_forward, x, target, "none")
    close(loss, ref(r_loss.bce_with_logits_forward, x, target, "none"), "loss")


@pytest.mark.parametrize("x,t", [(20.0, 1.0), (30.0, 1.0), (-20.0, 0.0), (-30.0, 0.0),
                                 (20.0, 0.0), (-20.0, 1.0), (17.0, 1.0), (1e-3, 1.0)])
def test_bce_tiny_losses_keep_their_relative_precision(device, x, t):
    """log1p, not log(1 + e): at x = 20, t = 1 the loss is 2.06e-9, which log(1 + e) rounds to 0.
    The float32 rtol with atol = 0: these losses are tiny by construction, so the table's atol
    (meant for values of order 1) would accept 0 for them. Expected: the formula with float64
    log1p (torch's float64 agrees at x = 20, 30; at x = -30, t = 0 it is itself 1% off)."""
    xs = torch.tensor([x], device=device)
    ts = torch.tensor([t], device=device)
    loss = triton_run(t_loss.bce_with_logits_forward, xs, ts, "none")
    expected = max(x, 0.0) - x * t + np.log1p(np.exp(-abs(x)))
    assert_close(loss, np.array([expected]), F32, name=f"bce({x}, {t})", atol=0.0)
    if x > 0:
        torch64 = torch.nn.functional.binary_cross_entropy_with_logits(
            xs.double().cpu(), ts.double().cpu(), reduction="none")
        assert_close(loss, torch64, F32, name=f"bce({x}, {t}) vs torch", atol=0.0)


# --- dropout ------------------------------------------------------------------------------------

DROP_CASES = [((1,), "contiguous"), ((1025,), "contiguous"), ((2, 3, 4, 5), "channels_last"),
              ((7, 6), "transposed"), ((0, 3), "contiguous")]


@pytest.mark.parametrize("p,seed,offset", [(0.3, 1234, 0), (0.9, 2 ** 31 - 1, 77),
                                           (0.5, 5, 2 ** 33 + 3)])
@pytest.mark.parametrize("shape,layout", DROP_CASES, ids=[f"{s}-{l}" for s, l in DROP_CASES])
def test_dropout_bit_equal_to_reference(device, shape, layout, p, seed, offset):
    x = rand(shape, device, layout=layout)
    y = triton_run(t_drop.dropout_forward, x, p, seed, offset)
    expected = torch.from_numpy(r_drop.dropout_forward(x.detach().cpu().numpy(), p, seed, offset))
    assert y.shape == x.shape
    assert torch.equal(y.cpu(), expected), "dropout output differs from the reference bit for bit"
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    grad_y = rand(shape, device, layout="contiguous")
    grad_x = triton_run(t_drop.dropout_backward, grad_y, p, seed, offset)
    expected = torch.from_numpy(r_drop.dropout_backward(grad_y.cpu().numpy(), p, seed, offset))
    assert torch.equal(grad_x.cpu(), expected)


def test_dropout_rejects_p_outside_open_interval(device):
    for p in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            t_drop.dropout_forward(torch.ones(3, device=device), p, 1, 0)


# --- batch norm ---------------------------------------------------------------------------------

def _bn_case(device, shape, layout, act, training, affine=True, loc=0.0, scale=1.0):
    C = shape[1]
    gen = torch.Generator().manual_seed(sum(shape) + C)
    x = (torch.randn(shape, generator=gen) * scale + loc).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    w = (torch.randn(C, generator=gen)).to(device) if affine else None
    b = (torch.randn(C, generator=gen)).to(device) if affine else None
    rm = (torch.randn(C, generator=gen) + loc).to(device)
    rv = (torch.rand(C, generator=gen) + 0.5).to(device)
    rm_ref, rv_ref = _np64(rm).copy(), _np64(rv).copy()
    y, mean, invstd = triton_run(t_bn.batch_norm_forward, x, w, b, rm, rv, training, 0.1, 1e-5,
                                 act)
    y_ref, mean_ref, invstd_ref = r_bn.batch_norm_forward(_np64(x), _np64(w), _np64(b), rm_ref,
                                                          rv_ref, training, 0.1, 1e-5, act)
    close(y, y_ref, "y")
    close(mean, mean_ref, "mean")
    close(invstd, invstd_ref, "invstd")
    close(rm, rm_ref, "running_mean")
    close(rv, rv_ref, "running_var")
    if x.numel() and layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    grad_y = rand(shape, device)
    needs = (True, affine, affine)
    got = triton_run(t_bn.batch_norm_backward, grad_y, x, w, b, mean, invstd, act, training,
                     needs)
    expected = ref(r_bn.batch_norm_backward, grad_y, x, w, b, mean_ref, invstd_ref, act,
                   training, needs)
    for name, need, g, e in zip(("grad_x", "grad_weight", "grad_bias"), needs, got, expected):
        if need:
            close(g, e, name, scale=max(1.0, (x.numel() / max(C, 1)) ** 0.5))
        else:
            assert g is None


BN_SHAPES = [((7, 3), "contiguous"), ((4, 9, 5), "contiguous"), ((5, 3), "contiguous"),
             ((2, 5, 3, 3), "contiguous"),
             ((2, 33, 3, 3), "channels_last"), ((3, 2, 31, 29), "contiguous"),
             ((2, 3, 30, 31), "channels_last"), ((3, 2, 4, 5), "transposed"),
             ((0, 3, 2, 2), "contiguous")]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape,layout", BN_SHAPES, ids=[f"{s}-{l}" for s, l in BN_SHAPES])
def test_batch_norm_shapes(device, shape, layout, training):
    _bn_case(device, shape, layout, Activation.make("relu"), training)


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_batch_norm_every_activation(device, act):
    _bn_case(device, (3, 4, 3, 2), "channels_last", act, True)


def test_batch_norm_without_affine(device):
    _bn_case(device, (5, 3, 4), "contiguous", None, True, affine=False)
    _bn_case(device, (5, 3, 4), "contiguous", Activation.make("silu"), False, affine=False)


def test_batch_norm_large_mean_small_std(device):
    # a naive E[x^2] - E[x]^2 in fp32 has nothing left of the variance here
    _bn_case(device, (8, 3, 17, 9), "contiguous", None, True, loc=1e4, scale=1e-2)
    _bn_case(device, (8, 3, 17, 9), "channels_last", None, True, loc=1e4, scale=1e-2)


def test_batch_norm_without_running_stats(device):
    x = rand((6, 4, 3), device)
    y, mean, invstd = triton_run(t_bn.batch_norm_forward, x, None, None, None, None, True, 0.1,
                                 1e-5, None)
    y_ref, mean_ref, _ = ref(r_bn.batch_norm_forward, x, None, None, None, None, True, 0.1, 1e-5,
                             None)
    close(y, y_ref, "y")
    close(mean, mean_ref, "mean")


# --- 64-bit indexing (forced: real >2**31-element tensors do not fit CI) ------------------------

@pytest.mark.parametrize("module", [_pointwise, t_soft, t_loss, t_bn, t_drop],
                         ids=["pointwise", "softmax", "losses", "batchnorm", "dropout"])
def test_int64_index_paths(device, monkeypatch, module):
    monkeypatch.setattr(module, "INT32_LIMIT", 0)
    x = rand((3, 5, 2, 3), device, layout="channels_last")
    if module is _pointwise:
        act = Activation.make("gelu")
        close(triton_run(t_act.activation_forward, x, act), ref(r_act.activation_forward, x, act),
              "y")
        close(triton_run(t_loss.mse_loss_forward, x, x * 0.5, "none"),
              ref(r_loss.mse_loss_forward, x, x * 0.5, "none"), "mse")
    elif module is t_soft:
        close(triton_run(t_soft.softmax_forward, x, 1, False),
              ref(r_soft.softmax_forward, x, 1, False), "softmax")
    elif module is t_loss:
        logits, target = x.reshape(9, 10), torch.arange(9, device=device)
        loss, lse = triton_run(t_loss.cross_entropy_forward, logits, target, -100, "none")
        close(loss, ref(r_loss.cross_entropy_forward, logits, target, -100, "none")[0], "ce")
    elif module is t_bn:
        _bn_case(device, (3, 5, 2, 3), "channels_last", Activation.make("tanh"), True)
    else:
        y = triton_run(t_drop.dropout_forward, x, 0.4, 11, 5)
        assert torch.equal(y.cpu(), torch.from_numpy(
            r_drop.dropout_forward(x.cpu().numpy(), 0.4, 11, 5)))


def test_int64_dense(device, monkeypatch):
    monkeypatch.setattr(t_dense, "INT32_LIMIT", 0)
    act = Activation.make("sigmoid")
    x, w, b = rand((5, 3), device), rand((4, 3), device), rand((4,), device)
    y, saved = triton_run(t_dense.dense_forward, x, w, b, act)
    close(y, ref(r_dense.dense_forward, x, w, b, act)[0], "y")
    grad_y = rand((5, 4), device)
    grads = triton_run(t_dense.dense_backward, grad_y, x, w, saved, act, (True, True, True))
    saved_ref = ref(r_dense.dense_forward, x, w, b, act)[1]
    expected = ref(r_dense.dense_backward, grad_y, x, w, saved_ref, act, (True, True, True))
    for name, got, exp in zip(("grad_x", "grad_weight", "grad_bias"), grads, expected):
        close(got, exp, name)


# --- 64-bit indexing, genuinely: the last programs of a grid past 2^31 elements ------------------
#
# Under the interpreter program_id(0) can be made to report offset + its real index, so a launch
# of one program runs as program 2^20 + 1 (etc.) of a huge grid. Strides of 0 across the huge
# dim and views 4096 elements into their buffers keep every address inside small tensors, also
# the negative offsets a 32-bit start wraps to; the test sees those as writes before the view.

needs_interpreter = pytest.mark.skipif(
    DEVICE != "cpu", reason="program ids are forced through the Triton interpreter (CPU only)")


@pytest.fixture
def programs_from(monkeypatch):
    """programs_from(offset): program_id(0) reports offset + its index from then on."""
    from triton.runtime import interpreter
    builder = interpreter.interpreter_builder
    real = builder.create_get_program_id

    def start(offset: int) -> None:
        def program_id(axis):
            handle = real(axis)
            if axis == 0:
                handle = interpreter.TensorHandle(handle.data + np.int32(offset), handle.dtype)
            return handle
        monkeypatch.setattr(builder, "create_get_program_id", program_id)
    return start


def _past(buffer: torch.Tensor, lead: int) -> torch.Tensor:
    """The view of ``buffer`` that starts ``lead`` elements in."""
    return buffer[lead:]


@needs_interpreter
def test_batch_norm_apply_as_a_late_program(programs_from):
    block_e, pid, lead = 2048, 2 ** 20 + 1, 4096
    start = pid * block_e                        # 2^31 + 2048: wraps in 32 bits
    E, S = start + 1000, block_e                 # the program's first 1000 elements exist
    x_buf, y_buf = rand((2 * lead,), "cpu"), torch.full((2 * lead,), float("nan"))
    shift, mean_d, invstd = (torch.tensor([v]) for v in (0.25, -0.5, 1.5))
    w, b = torch.tensor([2.0]), torch.tensor([-1.0])
    programs_from(pid)
    # x, y: [N, 1, S] with N = E / S rows that all alias one row (s_n = 0): element e at e % S
    t_bn._bn_apply_kernel[(1, 1)](
        _past(x_buf, lead), _past(y_buf, lead), w, b, shift, mean_d, invstd, 1, E, S,
        0, 0, 1, 0, 0, 1, 0.0, HAS_W=True, HAS_B=True, CODE=0, BLOCK_E=block_e, BLOCK_C=1,
        I64=True)
    x = x_buf[lead:lead + 1000].double()
    close(y_buf[lead:lead + 1000], (x - 0.25 + 0.5) * 1.5 * 2.0 - 1.0, "y")
    assert y_buf[:lead].isnan().all(), "wrote before y: a 32-bit start wrapped"
    assert y_buf[lead + 1000:].isnan().all(), "wrote past E"


@needs_interpreter
def test_batch_norm_stats_as_a_late_program(programs_from):
    chunk, pid, lead = 2048, 2 ** 20 + 1, 4096
    E, S = pid * chunk + 1000, chunk
    x_buf = rand((2 * lead,), "cpu")
    mean_part = torch.full((pid + 1, 1), float("nan"))
    m2_part = torch.full((pid + 1, 1), float("nan"))
    programs_from(pid)
    t_bn._bn_stats_kernel[(1, 1)](_past(x_buf, lead), mean_part, m2_part, 1, E, S, 0, 0, 1,
                                  chunk, BLOCK_E=chunk, BLOCK_C=1, I64=True)
    d = x_buf[lead:lead + 1000].double() - x_buf[lead].double()
    close(mean_part[pid], d.mean().reshape(1), "chunk mean")
    close(m2_part[pid], ((d - d.mean()) ** 2).sum().reshape(1), "chunk M2", scale=30.0)
    assert mean_part[:pid].isnan().all() and m2_part[:pid].isnan().all()


def test_batch_norm_finish_counts_chunks_past_2_to_the_31(device):
    """Chunk p holds min(chunk, E - p * chunk) elements; p * chunk = 2^31 must not wrap."""
    chunk, E = 2 ** 30, 2 ** 31 + 5
    means, m2s = torch.tensor([1.0, 3.0, 100.0]), torch.tensor([2.0, 4.0, 8.0])
    counts = torch.tensor([chunk, chunk, 5], dtype=torch.float64)
    x = torch.zeros(1, device=device)
    outs = [torch.empty(1, device=device) for _ in range(4)]
    t_bn._bn_finish_stats_kernel[(1,)](
        x, means[:, None].to(device), m2s[:, None].to(device), x, x, *outs, 1, E, 1, 3, chunk,
        0.1, 1e-5, TRAINING=True, UPDATE=False, BLOCK_C=t_bn.FINISH_BLOCK_C)
    mean = (counts * means.double()).sum() / counts.sum()
    m2 = (m2s.double() + counts * (means.double() - mean) ** 2).sum()
    close(outs[0], mean.reshape(1), "mean")
    close(outs[1], (1.0 / torch.sqrt(m2 / counts.sum() + 1e-5)).reshape(1), "invstd")


@needs_interpreter
def test_softmax_rows_as_a_late_program(programs_from):
    """Rows 2^31 + 256 + [0, 256), of which the first 100 exist; row j (the inner index) holds
    16 elements at j * 16, the outer dim has stride 0. ``row_indices`` is cross-entropy's too
    (its lse output, indexed by row without a stride, cannot be kept small this way)."""
    rows, R, pid, lead = 256, 16, 2 ** 23 + 1, 4096
    n_rows = pid * rows + 100
    x_buf, y_buf = rand((2 * lead,), "cpu"), torch.full((2 * lead,), float("nan"))
    programs_from(pid)
    t_soft._softmax_forward_kernel[(1,)](
        _past(x_buf, lead), _past(y_buf, lead), n_rows, R, rows, 0, R, 1, 0, R, 1,
        LOG=False, ONLINE=False, ROWS=rows, BLOCK_R=R, I64=True)
    x = x_buf[lead:lead + 100 * R].double().reshape(100, R)
    close(y_buf[lead:lead + 100 * R].reshape(100, R), torch.softmax(x, 1), "softmax")
    assert y_buf[:lead].isnan().all(), "wrote before y: a 32-bit row index wrapped"
    assert y_buf[lead + 100 * R:].isnan().all(), "wrote rows past n_rows"


@pytest.fixture
def shifted_pointers(monkeypatch):
    """shift(t, n): kernels see ``t``'s pointer n elements early, so that a late program of a
    huge launch, adding its 64-bit offset n, lands on the small tensor ``t``; an offset that
    wraps in 32 bits lands gigabytes away instead (a crash, or ``t`` left NaN)."""
    from triton.runtime import interpreter
    real = interpreter._implicit_cvt
    shifts = {}

    def convert(arg):
        out = real(arg)
        if hasattr(arg, "data_ptr") and arg.data_ptr() in shifts:
            out.handle.data[0] -= np.uint64(shifts[arg.data_ptr()])
        return out
    monkeypatch.setattr(interpreter, "_implicit_cvt", convert)

    def shift(t: torch.Tensor, elements: int) -> torch.Tensor:
        assert t.data_ptr() not in shifts
        shifts[t.data_ptr()] = elements * t.element_size()
        return t
    return shift


# One 16x16 tile, K (or R) = 20: two reduction steps, the second partial. "rows": the last row
# tile of a 2^29 + 21-row operand (5 rows exist, 11 past the edge), "cols": the last column
# tile of a 2^29 + 23-column one (7 exist); base offsets 2^29 * 20 pass 2^31.
LATE_PID, LATE_TILE, LATE_K = 2 ** 25 + 1, 16, 20


def _nan_buffers(*numels):
    return [torch.full((n,), float("nan")) for n in numels]


@needs_interpreter
@pytest.mark.parametrize("late", ["rows", "cols"])
def test_dense_forward_as_a_late_program(programs_from, shifted_pointers, late):
    act = Activation.make("gelu_tanh")
    T, K, start = LATE_TILE, LATE_K, LATE_PID * LATE_TILE
    m, n = (5, 7) if late == "rows" else (1, 7)   # rows / columns that exist in the tile
    M, N = (start + m, n) if late == "rows" else (m, start + n)
    x, w, b = rand((m, K), "cpu"), rand((n, K), "cpu", 0.3), rand((n,), "cpu")
    y, z = _nan_buffers(m * n, m * n)
    if late == "rows":   # x, y, z: [M, .] row-major; this program's rows start at `start`
        x_arg, w_arg, b_arg = shifted_pointers(x.clone(), start * K), w, b
        for t in (y, z):
            shifted_pointers(t, start * N)
    else:                # w: [N, K], b: [N], y, z: [1, N]; this program's columns from `start`
        x_arg, w_arg = x, shifted_pointers(w.clone(), start * K)
        b_arg = shifted_pointers(b.clone(), start)
        for t in (y, z):
            shifted_pointers(t, start)
    programs_from(LATE_PID)
    t_dense._dense_forward_kernel[(1,)](
        x_arg, w_arg, b_arg, y, z, M, N, K, K, 1, K, 1, act.param, HAS_BIAS=True, CODE=act.code,
        STORE_Z=True, PRECISION="ieee", BM=T, BN=T, BK=T, GROUP=t_dense.GROUP, I64=True)
    y_ref, z_ref = ref(r_dense.dense_forward, x, w, b, act)
    close(z.reshape(m, n), z_ref, "z")
    close(y.reshape(m, n), y_ref, "y")


@needs_interpreter
@pytest.mark.parametrize("late", ["rows", "cols"])
def test_dense_grad_as_a_late_program(programs_from, shifted_pointers, late):
    """c = dz b and db = row sums of dz (dz = dy * f'(s)), as the fused dW + db GEMM."""
    act = Activation.make("gelu_tanh")
    T, R, start = LATE_TILE, LATE_K, LATE_PID * LATE_TILE
    p, q = (5, 7) if late == "rows" else (1, 7)
    P, Q = (start + p, q) if late == "rows" else (p, start + q)
    dy, s = rand((p, R), "cpu"), rand((p, R), "cpu", 2.0)
    b = rand((q, R), "cpu").t()                     # [R, q] with strides (1, R)
    c, db = _nan_buffers(p * q, p)
    if late == "rows":   # dy, s: [P, R] row-major, c: [P, Q], db: [P]
        dy_arg, s_arg = (shifted_pointers(t.clone(), start * R) for t in (dy, s))
        b_arg = b
        shifted_pointers(c, start * Q)
        shifted_pointers(db, start)
    else:                # b: [R, Q] with strides (1, R), c: [1, Q]; db is column tile 0's
        dy_arg, s_arg = dy, s
        b_arg = shifted_pointers(b.t().clone(), start * R).t()
        shifted_pointers(c, start)
    programs_from(LATE_PID)
    t_dense._dense_grad_kernel[(1,)](
        dy_arg, s_arg, b_arg, c, db, P, Q, R, R, 1, R, 1, 1, R, act.param, CODE=act.code,
        COMPUTE_C=True, BIAS_GRAD=True, PRECISION="ieee", BP=T, BQ=T, BR=T, GROUP=t_dense.GROUP,
        I64=True)
    dz = torch.as_tensor(ref(r_act.activation_backward, dy, s, act))
    close(c.reshape(p, q), dz @ b.double(), "c")
    if late == "rows":
        close(db, dz.sum(1), "db")
    else:
        assert db.isnan().all(), "db written by a program of column tile > 0"


def test_dense_i64_refuses_tiles_past_int32(device, monkeypatch):
    """Under I64 a tile's offsets are 32-bit: a tile spanning 2^31+ elements is refused, not
    wrapped (shown with the limit lowered to 100 elements)."""
    monkeypatch.setattr(t_dense, "INT32_LIMIT", 0)          # every launch takes I64
    monkeypatch.setattr(t_dense._pointwise, "INT32_LIMIT", 100)
    x, w = rand((7, 33), device), rand((4, 33), device)
    with pytest.raises(ValueError, match="tile spans more than 2"):
        t_dense.dense_forward(x, w, None, None)              # 6 rows * 33 + 32 > 100
    assert t_dense._tile_fits(rand((5, 3), device), 64, 64)           # 4 * 3 + 2
    assert t_dense._tile_fits(rand((300, 3), device)[:, :1], 16, 64)  # 16 * 3, one column
    assert not t_dense._tile_fits(rand((300, 3), device), 64, 64)     # 64 * 3 + 2


def test_cross_entropy_int64_decision_sees_every_row_indexed_tensor(device, monkeypatch):
    """The target (and the per-row loss / gradient) are indexed by row with their own strides:
    their spans count in the int32 / int64 decision, forward and backward."""
    seen = []
    real = t_loss._ce_i64
    monkeypatch.setattr(t_loss, "_ce_i64", lambda *ts: seen.append(ts) or real(*ts))
    logits = rand((5, 3), device)
    target = torch.arange(10, device=device)[::2] % 3  # stride 2
    loss, lse = triton_run(t_loss.cross_entropy_forward, logits, target, -100, "none")
    grad_loss = torch.ones(10, device=device)[::2]
    triton_run(t_loss.cross_entropy_backward, grad_loss, logits, target, lse, -100, "none")
    assert len(seen) == 2
    for tensors in seen:
        assert any(t is target for t in tensors), "the target's span is not counted"
    assert any(t is loss for t in seen[0]) and any(t is grad_loss for t in seen[1])

    class Huge:  # a [3] tensor with stride 2^30: span 2^31
        shape, dtype = (3,), torch.int64

        @staticmethod
        def stride():
            return (2 ** 30,)
    assert not real(logits) and real(logits, Huge())


# --- through the autograd Functions with the triton backend -------------------------------------

def _compare_functions(fn, inputs, device):
    """Forward and input gradients of fn with the triton backend vs the reference backend."""
    results = {}
    for backend in ("triton", "reference"):
        leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        with gpudnn.use_backend(backend):
            torch.manual_seed(0)
            out = fn(*leaves)
            out.backward(torch.ones_like(out) * 0.5)
        results[backend] = (out.detach(), [t.grad for t in leaves if t.requires_grad])
    (y_t, g_t), (y_r, g_r) = results["triton"], results["reference"]
    assert_close(y_t, y_r, F32, name="output")
    for i, (a, b) in enumerate(zip(g_t, g_r)):
        assert_close(a, b, F32, name=f"grad {i}")


def test_functions_end_to_end(device):
    F = gpudnn.functional
    x = rand((6, 5), device)
    w, b = rand((4, 5), device), rand((4,), device)
    _compare_functions(lambda x, w, b: F.linear(x, w, b, activation="gelu_tanh"), [x, w, b],
                       device)
    _compare_functions(lambda x: F.silu(x), [x], device)
    _compare_functions(lambda x: F.log_softmax(x, dim=0), [x], device)
    target = torch.tensor([0, 4, 2, -100, 1, 3], device=device)
    _compare_functions(lambda x: F.cross_entropy(x, target), [x], device)
    _compare_functions(lambda x, t: F.binary_cross_entropy_with_logits(x, t), [x, x.sigmoid()],
                       device)
    _compare_functions(lambda x, t: F.mse_loss(x, t), [x, x * 0.5], device)
    _compare_functions(lambda x: F.dropout(x, 0.4, training=True), [x], device)
    img = rand((2, 3, 4, 4), device, layout="channels_last")
    wb = [rand((3,), device), rand((3,), device)]
    _compare_functions(
        lambda x, w, b: F.batch_norm(x, torch.zeros(3, device=device), torch.ones(3, device=device),
                                     w, b, training=True, activation="relu"), [img, *wb], device)


def test_triton_backend_runs_these_launchers(device):
    x = rand((3, 4), device)
    for name in ("activation", "dense", "softmax", "cross_entropy", "bce_with_logits",
                 "mse_loss", "dropout", "batch_norm"):
        with gpudnn.use_backend("triton"):
            assert gpudnn.backend.resolve(gpudnn.backend.KERNELS[name], x) == "triton"


# --- every tile configuration, half precision, refused dtypes ------------------------------------

@pytest.mark.parametrize("key", list(t_dense._TILES), ids=["-".join(k) for k in t_dense._TILES])
def test_dense_every_tile_shape(device, monkeypatch, key):
    """Each tile shape the heuristic can pick, at sizes just past one tile."""
    tiles = t_dense._TILES[key]
    monkeypatch.setattr(t_dense, "_config", lambda *args: tiles)
    act = Activation.make("silu")
    M, N, K = tiles.BP + 1, tiles.BQ + 1, tiles.BR + 3
    x, w, b = rand((M, K), device), rand((N, K), device, 0.3), rand((N,), device)
    y, saved = triton_run(t_dense.dense_forward, x, w, b, act)
    y_ref, saved_ref = ref(r_dense.dense_forward, x, w, b, act)
    close(y, y_ref, "y", scale=K ** 0.5)
    grad_y = rand((M, N), device)
    grads = triton_run(t_dense.dense_backward, grad_y, x, w, saved, act, (True, True, True))
    expected = ref(r_dense.dense_backward, grad_y, x, w, saved_ref, act, (True, True, True))
    for name, got, exp in zip(("grad_x", "grad_weight", "grad_bias"), grads, expected):
        close(got, exp, name, scale=max(M, N) ** 0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision(device, dtype):
    act = Activation.make("gelu_tanh")
    x, w, b = (rand(s, device).to(dtype) for s in ((9, 17), (5, 17), (5,)))
    s = triton_run(t_soft.softmax_forward, x, 1, True)
    assert_close(s, torch.as_tensor(ref(r_soft.softmax_forward, x, 1, True)), dtype,
                 name="log_softmax")
    a = triton_run(t_act.activation_forward, x, act)
    assert_close(a, torch.as_tensor(ref(r_act.activation_forward, x, act)), dtype, name="act")


@pytest.mark.parametrize("dtype", [
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(
        DEVICE == "cpu", reason=INTERPRETER_BF16_DOT))],
    ids=["fp16", "bf16"])
def test_dense_half_precision(device, dtype):
    act = Activation.make("gelu_tanh")
    x, w, b = (rand(s, device).to(dtype) for s in ((9, 17), (5, 17), (5,)))
    y, saved = triton_run(t_dense.dense_forward, x, w, b, act)
    assert y.dtype == dtype and saved.dtype == dtype
    y_ref, saved_ref = ref(r_dense.dense_forward, x, w, b, act)
    assert_close(y, torch.as_tensor(y_ref), dtype, name="dense y")
    grad_y = rand((9, 5), device).to(dtype)
    grads = triton_run(t_dense.dense_backward, grad_y, x, w, saved, act, (True, True, True))
    expected = ref(r_dense.dense_backward, grad_y, x, w, saved_ref, act, (True, True, True))
    for name, got, exp in zip(("grad_x", "grad_weight", "grad_bias"), grads, expected):
        assert got.dtype == dtype
        assert_close(got, torch.as_tensor(exp), dtype, name=name, scale=3.0)


def test_float64_is_refused_with_a_clear_error(device):
    x = torch.ones(2, 3, dtype=torch.float64, device=device)
    act = Activation.make("relu")
    calls = [lambda: t_act.activation_forward(x, act),
             lambda: t_dense.dense_forward(x, x, None, act),
             lambda: t_soft.softmax_forward(x, 1, False),
             lambda: t_loss.mse_loss_forward(x, x, "mean"),
             lambda: t_loss.cross_entropy_forward(x, torch.zeros(2, dtype=torch.int64,
                                                                 device=device), -100, "mean"),
             lambda: t_drop.dropout_forward(x, 0.5, 1, 0),
             lambda: t_bn.batch_norm_forward(x, None, None, None, None, True, 0.1, 1e-5, None)]
    for call in calls:
        with pytest.raises(TypeError, match="float64"):
            call()
