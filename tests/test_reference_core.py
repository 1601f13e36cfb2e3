"""The NumPy reference of the core ops (activations, dense, softmax, losses, dropout, batch norm)
against torch autograd in float64, gradcheck through the reference-backed ops, the Philox
stream against tl.rand bit for bit, and the edge values of SPEC section 4."""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import gpudnn.functional as F
from gpudnn.activations import activation_module
from gpudnn.kernels.activations import NAMES, Activation
from gpudnn.activations import activation_args
from gpudnn.ops.batchnorm import batch_norm_op
from gpudnn.ops.dense import dense
from gpudnn.ops.dropout import dropout_op
from gpudnn.reference import activations as ref_act
from gpudnn.reference import batchnorm as ref_bn
from gpudnn.reference import dense as ref_dense
from gpudnn.reference import dropout as ref_dropout
from gpudnn.reference import losses as ref_losses
from gpudnn.reference import softmax as ref_softmax
from gpudnn.reference.philox import philox_uniform
from gpudnn.testing import assert_close
from helpers import DEVICE

# every activation, leaky_relu also with a zero and a negative slope (derivative from z)
ACTS = [Activation.make(n) for n in NAMES] + [Activation("leaky_relu", 0.2),
                                              Activation("leaky_relu", 0.0),
                                              Activation("leaky_relu", -0.5)]
ACT_IDS = [f"{a.name}{'' if a.param == Activation.make(a.name).param else a.param}" for a in ACTS]
F64 = torch.float64


def randn(rng, *shape, scale=1.0, dtype=np.float64):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def torch_grads(out, inputs, grad_out):
    """Gradients of <out, grad_out> w.r.t. inputs (None where an input is None)."""
    present = [t for t in inputs if t is not None]
    grads = iter(torch.autograd.grad(out, present, grad_out, allow_unused=True))
    return [None if t is None else next(grads) for t in inputs]


def leaf(a):
    return None if a is None else torch.tensor(a, requires_grad=True)


# --- activations --------------------------------------------------------------------------------

def test_reference_covers_every_activation_name():
    assert tuple(ref_act.ACTIVATIONS) == NAMES


def test_erf_matches_math_erf():
    x = np.concatenate([np.linspace(-8, 8, 40001), [0.0, 3.0, -3.0, np.inf, -np.inf]])
    expected = np.array([math.erf(v) for v in x])
    assert_close(ref_act.erf(x), expected, name="erf")
    assert np.isnan(ref_act.erf(np.array([np.nan])))[0]


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(1,), (7, 13), (0, 3)])
def test_activation_vs_torch(rng, act, shape):
    x = randn(rng, *shape, scale=3.0)
    g = randn(rng, *shape)
    xt = leaf(x)
    yt = activation_module(act)(xt)
    (gx_t,) = torch_grads(yt, [xt], torch.tensor(g))
    y = ref_act.activation_forward(x, act)
    assert_close(y, yt, name="y")
    saved = y if act.from_output else x
    assert_close(ref_act.activation_backward(g, saved, act), gx_t, name="grad_x")


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_activation_float32_stays_float32(rng, act):
    x = randn(rng, 127, scale=4.0, dtype=np.float32)
    y = ref_act.activation_forward(x, act)
    assert y.dtype == np.float32
    expected = activation_module(act)(torch.tensor(x, dtype=F64))
    assert_close(y, expected, "float32", name="y")
    saved = y if act.from_output else x
    assert ref_act.activation_backward(np.ones_like(x), saved, act).dtype == np.float32


def test_activations_extreme_inputs():
    # values and derivatives as torch autograd gives them, at huge, infinite and NaN inputs and
    # signed zeros (relu'(NaN) = 1 as torch's threshold_backward; leaky_relu'(NaN) = the slope)
    x = np.array([-1e4, -80.0, 80.0, 1e4, 0.0, -0.0, np.inf, -np.inf, np.nan])
    g = np.linspace(0.5, 1.5, x.size)
    for act in ACTS:
        xt = leaf(x)
        expected = activation_module(act)(xt)
        (expected_grad,) = torch_grads(expected, [xt], torch.tensor(g))
        y = ref_act.activation_forward(x, act)
        assert_close(y, expected, name=act.name)
        saved = y if act.from_output else x
        assert_close(ref_act.activation_backward(g, saved, act), expected_grad,
                     name=f"{act.name}({act.param}) derivative")


# --- dense ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("act", [None] + ACTS, ids=["none"] + ACT_IDS)
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (7, 13, 5), (0, 4, 3)])
def test_dense_vs_torch(rng, act, m, k, n):
    x, w, b = randn(rng, m, k), randn(rng, n, k), randn(rng, n)
    g = randn(rng, m, n)
    for bias in (b, None):
        xt, wt, bt = leaf(x), leaf(w), leaf(bias)
        yt = activation_module(act)(TF.linear(xt, wt, bt))
        expected_grads = torch_grads(yt, [xt, wt, bt], torch.tensor(g))
        y, saved = ref_dense.dense_forward(x, w, bias, act)
        assert_close(y, yt, name="y", scale=math.sqrt(k))
        if act is None:
            assert saved is None
        else:  # one saved tensor: y where the derivative allows it, else the pre-activation
            z = x @ w.T + (0 if bias is None else bias)
            assert_close(saved, y if act.from_output else z, name="saved")
        grads = ref_dense.dense_backward(g, x, w, saved, act, (True, True, bias is not None))
        for name, got, want in zip(("grad_x", "grad_weight", "grad_bias"), grads, expected_grads):
            if want is None:
                assert got is None
            else:
                assert_close(got, want, name=name, scale=math.sqrt(max(m, n)))
        assert ref_dense.dense_backward(g, x, w, saved, act, (False, True, False))[0] is None


# --- softmax -------------------------------------------------------------------------------------

@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((7,), 0), ((3, 5, 4), 0), ((3, 5, 4), 1),
                                       ((3, 5, 4), 2), ((2, 129), -1), ((0, 6), 1)])
def test_softmax_vs_torch(rng, log, shape, dim):
    x = randn(rng, *shape, scale=5.0)
    g = randn(rng, *shape)
    xt = leaf(x)
    yt = (torch.log_softmax if log else torch.softmax)(xt, dim)
    (gx_t,) = torch_grads(yt, [xt], torch.tensor(g))
    y = ref_softmax.softmax_forward(x, dim, log)
    assert_close(y, yt, name="y")
    assert_close(ref_softmax.softmax_backward(g, y, dim, log), gx_t, name="grad_x")


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_softmax_special_values_as_torch(fn):
    inf, nan = math.inf, math.nan
    x = torch.tensor([[0.0, -inf, 1.0, -inf],     # some -inf entries
                      [-inf, -inf, -inf, -inf],   # all -inf: NaN in torch
                      [1e300, 1e300, -1e300, 0.0],  # huge values
                      [1.0, nan, 2.0, 3.0],       # NaN poisons the row
                      [inf, 0.0, 1.0, 2.0],       # +inf
                      [1e4, 1e4 + 1, 1e4 - 3, -1e4]], dtype=F64)
    assert_close(getattr(F, fn)(x, 1), getattr(torch, fn)(x, 1), name=fn)
    xt = x[[0, 2, 5]].clone().requires_grad_(True)
    g = torch.linspace(-1, 1, xt.numel(), dtype=F64).reshape(xt.shape)
    (expected,) = torch.autograd.grad(getattr(torch, fn)(xt, 1), xt, g)
    xg = x[[0, 2, 5]].clone().requires_grad_(True)
    (got,) = torch.autograd.grad(getattr(F, fn)(xg, 1), xg, g)
    assert_close(got, expected, name=f"{fn} grad")


# --- losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("n,c", [(1, 1), (7, 5), (9, 129), (0, 3)])
def test_cross_entropy_vs_torch(rng, reduction, n, c):
    logits = randn(rng, n, c, scale=3.0)
    target = rng.integers(0, c, size=n)
    target[::3] = -100  # every third row ignored
    lt = leaf(logits)
    loss_t = TF.cross_entropy(lt, torch.tensor(target), reduction=reduction)
    g = randn(rng, *loss_t.shape)
    (grad_t,) = torch_grads(loss_t, [lt], torch.tensor(g))
    loss, lse = ref_losses.cross_entropy_forward(logits, target, -100, reduction)
    assert lse.shape == (n,)
    assert_close(loss, loss_t, name="loss")
    grad = ref_losses.cross_entropy_backward(g, logits, target, lse, -100, reduction)
    assert_close(grad, grad_t, name="grad_logits")


def test_cross_entropy_huge_logits_and_all_ignored():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4 - 1]])
    target = np.array([1, 2])
    expected = TF.cross_entropy(torch.tensor(logits), torch.tensor(target), reduction="none")
    loss, _ = ref_losses.cross_entropy_forward(logits, target, -100, "none")
    assert_close(loss, expected, name="loss")
    assert np.isfinite(loss).all()
    loss, _ = ref_losses.cross_entropy_forward(logits, np.array([-100, -100]), -100, "mean")
    assert np.isnan(loss)  # mean over zero rows, as torch
    assert torch.isnan(TF.cross_entropy(torch.tensor(logits), torch.tensor([-100, -100])))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_bce_with_logits_vs_torch(rng, reduction):
    x = np.concatenate([randn(rng, 30, scale=4.0), [1e4, -1e4, 50.0, -50.0, 0.0]])
    t = rng.uniform(size=x.shape)
    t[-5:] = [0.0, 1.0, 0.3, 0.7, 0.5]
    xt, tt = leaf(x), leaf(t)
    loss_t = TF.binary_cross_entropy_with_logits(xt, tt, reduction=reduction)
    g = randn(rng, *loss_t.shape)
    gx_t, gt_t = torch_grads(loss_t, [xt, tt], torch.tensor(g))
    loss = ref_losses.bce_with_logits_forward(x, t, reduction)
    assert np.isfinite(loss).all()
    assert_close(loss, loss_t, name="loss")
    gx, gt = ref_losses.bce_with_logits_backward(g, x, t, reduction, (True, True))
    assert_close(gx, gx_t, name="grad_x")
    assert_close(gt, gt_t, name="grad_target")
    assert ref_losses.bce_with_logits_backward(g, x, t, reduction, (True, False))[1] is None


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shape", [(1,), (7, 3), (0, 2)])
def test_mse_vs_torch(rng, reduction, shape):
    x, t = randn(rng, *shape), randn(rng, *shape)
    xt, tt = leaf(x), leaf(t)
    loss_t = TF.mse_loss(xt, tt, reduction=reduction)
    g = randn(rng, *loss_t.shape)
    gx_t, gt_t = torch_grads(loss_t, [xt, tt], torch.tensor(g))
    assert_close(ref_losses.mse_loss_forward(x, t, reduction), loss_t, name="loss")
    gx, gt = ref_losses.mse_loss_backward(g, x, t, reduction, (True, True))
    assert_close(gx, gx_t, name="grad_x")
    assert_close(gt, gt_t, name="grad_target")


# --- dropout and Philox --------------------------------------------------------------------------

def _tl_rand(seed: int, offsets: torch.Tensor) -> torch.Tensor:
    import triton
    import triton.language as tl

    @triton.jit
    def rand_kernel(out_ptr, offsets_ptr, seed, n, BLOCK: tl.constexpr):
        """out_ptr [n] float32, offsets_ptr [n] int32 or int64."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = i < n
        offsets = tl.load(offsets_ptr + i, mask=mask, other=0)
        tl.store(out_ptr + i, tl.rand(seed, offsets), mask=mask)

    offsets = offsets.to(DEVICE)
    out = torch.empty(offsets.numel(), dtype=torch.float32, device=DEVICE)
    rand_kernel[(triton.cdiv(offsets.numel(), 64),)](out, offsets, seed, offsets.numel(), BLOCK=64)
    return out.cpu()


@pytest.mark.skipif(DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
                    reason="tl.rand on CPU tensors needs the Triton interpreter (TRITON_INTERPRET=1)")
@pytest.mark.parametrize("seed", [0, 1234567, 2 ** 31 - 1, 2 ** 40 + 17])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_philox_bit_equal_to_tl_rand(seed, dtype):
    if dtype == torch.int32:
        offsets = torch.cat([torch.arange(70, dtype=dtype),
                             torch.tensor([2 ** 31 - 1, -1, -(2 ** 31), 123456789], dtype=dtype)])
    else:
        offsets = torch.cat([torch.arange(70, dtype=dtype) + 2 ** 32 - 35,
                             torch.tensor([2 ** 33 + 2 ** 31 + 1, 2 ** 40 + 3, 2 ** 62, -7],
                                          dtype=dtype)])
    expected = _tl_rand(seed, offsets).numpy()
    got = philox_uniform(seed, offsets.numpy())
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_philox_uniform_range_and_mean():
    u = philox_uniform(42, np.arange(200_000, dtype=np.int64))
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    # int32 and int64 offsets below 2**31 give the same stream
    np.testing.assert_array_equal(philox_uniform(42, np.arange(100, dtype=np.int32)), u[:100])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_mask_from_philox(rng, p):
    x = randn(rng, 3, 7, 11)
    seed, offset = 987, 2 ** 32 + 5
    y = ref_dropout.dropout_forward(x, p, seed, offset)
    u = philox_uniform(seed, np.arange(x.size, dtype=np.int64) + offset).reshape(x.shape)
    keep = u >= np.float32(p)
    scale = float(np.float32(1.0 / (1.0 - p)))
    np.testing.assert_array_equal(y, np.where(keep, x * scale, 0.0))
    g = randn(rng, *x.shape)
    np.testing.assert_array_equal(ref_dropout.dropout_backward(g, p, seed, offset),
                                  np.where(keep, g * scale, 0.0))
    assert abs(keep.mean() - (1 - p)) < 0.08
    # non-contiguous input: the mask follows the row-major logical index
    xt = np.ascontiguousarray(x.transpose(2, 0, 1)).transpose(1, 2, 0)
    np.testing.assert_array_equal(ref_dropout.dropout_forward(xt, p, seed, offset), y)


# --- batch norm ----------------------------------------------------------------------------------

BN_CASES = [((7, 3), False), ((5, 4, 9), False), ((3, 5, 4, 3), False), ((3, 5, 4, 3), True)]


@pytest.mark.parametrize("act", [None, ACTS[0], ACTS[4], ACTS[7]], ids=["none", "relu", "gelu",
                                                                          "leaky0.2"])
@pytest.mark.parametrize("shape,channels_last", BN_CASES,
                         ids=["1d", "1d_len", "2d", "2d_channels_last"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
def test_batch_norm_vs_torch(rng, act, shape, channels_last, training, affine):
    c = shape[1]
    x = randn(rng, *shape, scale=2.0) + 1.5
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w, b = (randn(rng, c), randn(rng, c)) if affine else (None, None)
    rm, rv = randn(rng, c), rng.uniform(0.5, 2.0, size=c)
    g = randn(rng, *shape)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    rm_t, rv_t = torch.tensor(rm), torch.tensor(rv)
    yt = activation_module(act)(TF.batch_norm(xt, rm_t, rv_t, wt, bt, training, 0.3, 1e-3))
    expected = torch_grads(yt, [xt, wt, bt], torch.tensor(g))
    y, mean, invstd = ref_bn.batch_norm_forward(x, w, b, rm, rv, training, 0.3, 1e-3, act)
    assert_close(y, yt, name="y")
    assert_close(rm, rm_t, name="running_mean")
    assert_close(rv, rv_t, name="running_var")
    grads = ref_bn.batch_norm_backward(g, x, w, b, mean, invstd, act, training,
                                       (True, affine, affine))
    for name, got, want in zip(("grad_x", "grad_weight", "grad_bias"), grads, expected):
        if want is None:
            assert got is None
        else:
            assert_close(got, want, name=name, scale=10.0)


def test_batch_norm_large_mean_small_std(rng):
    x = 1e4 + 1e-2 * randn(rng, 16, 3, 5, 5)
    rm, rv = np.zeros(3), np.ones(3)
    xt = torch.tensor(x, requires_grad=True)
    rm_t, rv_t = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
    yt = TF.batch_norm(xt, rm_t, rv_t, None, None, True, 0.1, 1e-10)
    g = randn(rng, *x.shape)
    (gx_t,) = torch_grads(yt, [xt], torch.tensor(g))
    y, mean, invstd = ref_bn.batch_norm_forward(x, None, None, rm, rv, True, 0.1, 1e-10, None)
    assert_close(y, yt, name="y")
    assert abs(np.std(y) - 1.0) < 1e-6  # a one-pass E[x^2] - E[x]^2 would lose every digit here
    assert_close(rm, rm_t, name="running_mean")
    assert_close(rv, rv_t, name="running_var")
    gx, _, _ = ref_bn.batch_norm_backward(g, x, None, None, mean, invstd, None, True,
                                          (True, False, False))
    assert_close(gx, gx_t, name="grad_x", scale=100.0)


def test_batch_norm_empty_batch_keeps_running_stats():
    x = np.zeros((0, 3, 2, 2))
    rm, rv = np.arange(3.0), np.ones(3)
    y, _, _ = ref_bn.batch_norm_forward(x, np.ones(3), np.zeros(3), rm, rv, True, 0.1, 1e-5, None)
    assert y.shape == x.shape
    np.testing.assert_array_equal(rm, np.arange(3.0))
    np.testing.assert_array_equal(rv, np.ones(3))


# --- gradcheck through the reference-backed ops (float64, tiny) ----------------------------

def _t(*shape):
    return torch.randn(*shape, dtype=F64).requires_grad_(True)


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_gradcheck_activation(act):
    x = _t(3, 4) + 0.05  # keep away from relu's kink at 0
    fn = {"relu": lambda v: F.relu(v), "sigmoid": F.sigmoid, "tanh": F.tanh, "silu": F.silu,
          "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
          "leaky_relu": lambda v: F.leaky_relu(v, act.param)}[act.name]
    assert torch.autograd.gradcheck(fn, (x.detach().requires_grad_(True),))


@pytest.mark.parametrize("act", [None, Activation("tanh"), Activation("gelu"),
                                 Activation("leaky_relu", -0.3)], ids=["none", "tanh", "gelu",
                                                                       "leaky-0.3"])
def test_gradcheck_dense(act):
    x, w, b = _t(3, 4), _t(2, 4), _t(2)
    assert torch.autograd.gradcheck(lambda *a: dense(*a, *activation_args(act), "reference")[0],
                                    (x, w, b))
    assert torch.autograd.gradcheck(lambda x3, w: F.linear(x3, w, None, activation=act),
                                    (_t(2, 3, 4), w))


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
def test_gradcheck_softmax(fn):
    assert torch.autograd.gradcheck(lambda x: getattr(F, fn)(x, 1), (_t(2, 5, 3),))


def test_gradcheck_losses():
    logits = _t(5, 4)
    target = torch.tensor([0, 3, -100, 1, 2])
    for reduction in ("none", "mean", "sum"):
        assert torch.autograd.gradcheck(
            lambda z: F.cross_entropy(z, target, reduction=reduction), (logits,))
        assert torch.autograd.gradcheck(
            lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction),
            (_t(3, 2), torch.rand(3, 2, dtype=F64).requires_grad_(True)))
        assert torch.autograd.gradcheck(
            lambda x, t: F.mse_loss(x, t, reduction=reduction), (_t(3, 2), _t(3, 2)))
    assert torch.autograd.gradcheck(lambda z: F.cross_entropy(z, torch.tensor([[1, 0], [2, 2]])),
                                    (_t(2, 3, 2),))


def test_gradcheck_dropout():
    # a fixed seed: gradcheck calls the function many times and needs the same mask each time
    assert torch.autograd.gradcheck(lambda x: dropout_op(x, 0.4, torch.tensor(77), "reference"),
                                    (_t(4, 5),))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("act", [None, Activation("silu"), Activation("relu")],
                         ids=["none", "silu", "relu"])
def test_gradcheck_batch_norm(training, act):
    x, w, b = _t(4, 3, 2) * 2 + 1, _t(3), _t(3)
    x = x.detach().requires_grad_(True)

    def fn(x, w, b):
        rm, rv = torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64)
        return batch_norm_op(x, w, b, rm, rv, training, 0.1, 1e-5, *activation_args(act),
                             "reference")[0]

    assert torch.autograd.gradcheck(fn, (x, w, b))


# --- float32 (what the Triton kernels are compared with) and purity ------------------------------

def test_reference_launchers_compute_in_float32(rng):
    """float32 in -> float32 out, within the float32 row of the table of the float64 result."""
    act = Activation("gelu")
    x, w, b = randn(rng, 9, 17), randn(rng, 5, 17), randn(rng, 5)
    g = randn(rng, 9, 5)
    target = rng.integers(0, 5, size=9)
    rm, rv = np.zeros(5), np.ones(5)
    calls = {
        "dense": lambda d: ref_dense.dense_forward(x.astype(d), w.astype(d), b.astype(d), act)[0],
        "dense_backward": lambda d: ref_dense.dense_backward(
            g.astype(d), x.astype(d), w.astype(d),
            ref_dense.dense_forward(x.astype(d), w.astype(d), b.astype(d), act)[1], act,
            (True, True, True))[1],
        "softmax": lambda d: ref_softmax.softmax_forward(g.astype(d), 1, False),
        "log_softmax_backward": lambda d: ref_softmax.softmax_backward(
            g.astype(d), ref_softmax.softmax_forward(x[:, :5].astype(d), 1, True), 1, True),
        "cross_entropy": lambda d: ref_losses.cross_entropy_forward(g.astype(d), target, -100,
                                                                    "mean")[0],
        "cross_entropy_backward": lambda d: ref_losses.cross_entropy_backward(
            np.asarray(1.0, d), g.astype(d), target,
            ref_losses.cross_entropy_forward(g.astype(d), target, -100, "none")[1], -100, "sum"),
        "bce": lambda d: ref_losses.bce_with_logits_forward(g.astype(d), (g > 0).astype(d), "sum"),
        "mse_backward": lambda d: ref_losses.mse_loss_backward(
            np.asarray(1.0, d), g.astype(d), x[:, :5].astype(d), "mean", (True, True))[0],
        "dropout": lambda d: ref_dropout.dropout_forward(g.astype(d), 0.3, 5, 0),
        "batch_norm": lambda d: ref_bn.batch_norm_forward(
            g.astype(d), w[:, 0].astype(d), b.astype(d), rm.astype(d), rv.astype(d), True, 0.1,
            1e-5, act)[0],
        "batch_norm_backward": lambda d: ref_bn.batch_norm_backward(
            x[:, :5].astype(d), g.astype(d), w[:, 0].astype(d), b.astype(d),
            g.mean(0).astype(d), (1 / g.std(0)).astype(d), act, True, (True, True, True))[0],
    }
    for name, call in calls.items():
        got, want = np.asarray(call(np.float32)), np.asarray(call(np.float64))
        assert got.dtype == np.float32, f"{name} returned {got.dtype}"
        assert_close(got, want, "float32", name=name, scale=4.0)


def test_reference_modules_do_not_import_torch():
    # every module of the reference package, and the shape helpers it shares with the Functions
    import pathlib

    import gpudnn.ops._shapes as shapes
    import gpudnn.reference as package
    sources = sorted(pathlib.Path(package.__file__).parent.glob("*.py"))
    assert len(sources) >= 12, sources
    for path in sources + [pathlib.Path(shapes.__file__)]:
        source = path.read_text()
        assert "import torch" not in source and "from torch" not in source, path.name


def test_functions_accept_expanded_and_strided_grads():
    x = torch.randn(4, 6, dtype=F64, requires_grad=True)
    w = torch.randn(3, 6, dtype=F64, requires_grad=True)
    F.linear(x, w, activation="silu").sum().backward()  # grad_y is an expanded (stride-0) tensor
    xe = x.detach().clone().requires_grad_(True)
    TF.silu(TF.linear(xe, w.detach())).sum().backward()
    assert_close(x.grad, xe.grad, name="grad_x")
    y = F.softmax(x, 0)
    (gx,) = torch.autograd.grad(y, x, torch.randn(6, 4, dtype=F64).t())  # transposed grad
    assert gx.shape == x.shape


@pytest.mark.parametrize("log", [False, True])
def test_reference_softmax_of_a_scalar_is_a_row_of_one(log):
    x = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)
    expected = (torch.log_softmax if log else torch.softmax)(x, 0)
    expected.backward(torch.tensor(0.7, dtype=torch.float64))
    y = ref_softmax.softmax_forward(np.array(2.5), 0, log)
    assert y.shape == () and y == expected.item()
    grad = ref_softmax.softmax_backward(np.array(0.7), y, 0, log)
    assert grad.shape == () and abs(grad - x.grad.item()) < 1e-15
