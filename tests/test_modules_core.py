"""gpudnn.nn core modules against their torch.nn twins after load_state_dict: forward and every
gradient (parameters included), non-contiguous / channels_last / 3-D input, train/eval and
running statistics, zero-size batches, bad input, and the activation= argument."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import gpudnn.functional as F
import gpudnn.nn as gnn
from gpudnn.kernels.activations import NAMES
from gpudnn.reference.philox import philox_uniform
from gpudnn.testing import assert_close
from helpers import TorchFused, compare_float32_on_device, compare_with_twin

F64 = torch.float64
ACTIVATION_ARGS = [None, *NAMES, torch.nn.LeakyReLU(0.2), torch.nn.GELU(approximate="tanh")]
ACTIVATION_IDS = ["none", *NAMES, "LeakyReLU(0.2)", "GELU(tanh)"]


def twin_pair(ours: torch.nn.Module, theirs: torch.nn.Module):
    """Load ``theirs``'s state_dict into ``ours`` (keys must match) and make both float64."""
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    return ours.double(), theirs.double()


def run_both(ours, theirs, x, *extra, grad_seed=0):
    """compare_with_twin with this file's gradient tolerance (sums over up to ~100 terms)."""
    return compare_with_twin(ours, theirs, x, *extra, grad_scale=10.0, seed=grad_seed)


def assert_same_buffers(ours, theirs):
    for name, buf in theirs.named_buffers():
        mine = getattr(ours, name)
        if buf.is_floating_point():
            assert_close(mine, buf, name=name)
        else:  # num_batches_tracked
            assert torch.equal(mine, buf), f"{name}: {mine} != {buf}"


# --- Linear --------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATION_ARGS, ids=ACTIVATION_IDS)
def test_linear_vs_torch(activation):
    torch.manual_seed(1)
    ours, theirs = twin_pair(gnn.Linear(13, 7, activation=activation), torch.nn.Linear(13, 7))
    fused = TorchFused(theirs, activation)
    run_both(ours, fused, torch.randn(5, 13, dtype=F64))
    run_both(ours, fused, torch.randn(2, 3, 13, dtype=F64))           # 3-D input
    run_both(ours, fused, torch.randn(13, 6, dtype=F64).t())          # non-contiguous
    run_both(ours, fused, torch.randn(4, 13, 3, dtype=F64)[:, :, 1])  # strided rows


def test_linear_options_and_repr():
    torch.manual_seed(2)
    ours, theirs = twin_pair(gnn.Linear(4, 3, bias=False), torch.nn.Linear(4, 3, bias=False))
    run_both(ours, theirs, torch.randn(6, 4, dtype=F64))
    run_both(ours, theirs, torch.randn(4, dtype=F64))  # 1-D input, as torch
    assert "activation" not in repr(ours)
    assert repr(gnn.Linear(4, 3, activation="relu")).endswith("bias=True, activation=relu)")
    assert "leaky_relu(0.2)" in repr(gnn.Linear(4, 3, activation=torch.nn.LeakyReLU(0.2)))


def test_linear_zero_size_and_bad_input():
    layer = gnn.Linear(5, 3, activation="tanh")
    x = torch.randn(0, 5, requires_grad=True)
    y = layer(x)
    assert y.shape == (0, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 5)
    assert_close(layer.weight.grad, torch.zeros(3, 5), name="weight grad")
    assert layer(torch.randn(2, 0, 5)).shape == (2, 0, 3)
    with pytest.raises(ValueError, match=r"input.*\(2, 4\).*weight"):
        layer(torch.randn(2, 4))
    with pytest.raises(ValueError, match="bias"):
        F.linear(torch.randn(2, 5), torch.randn(3, 5), torch.randn(4))
    with pytest.raises(TypeError, match="dtypes differ"):
        F.linear(torch.randn(2, 5, dtype=F64), torch.randn(3, 5))
    with pytest.raises(TypeError, match="input"):
        F.linear(torch.ones(2, 5, dtype=torch.long), torch.randn(3, 5))


@pytest.mark.parametrize("bad", ["swish", "RELU", 3, torch.nn.Softplus(), torch.nn.Linear(2, 2)],
                         ids=["swish", "RELU", "int", "Softplus", "Linear"])
def test_activation_argument_rejects_others(bad):
    with pytest.raises(ValueError):
        gnn.Linear(3, 3, activation=bad)
    with pytest.raises(ValueError):
        gnn.BatchNorm2d(3, activation=bad)
    with pytest.raises(ValueError):
        F.linear(torch.randn(2, 3), torch.randn(3, 3), activation=bad)


def test_linear_under_autocast_matches_torch():
    torch.manual_seed(3)
    ours, theirs = gnn.Linear(8, 4, activation="relu"), torch.nn.Linear(8, 4)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ya, yb = ours(x), torch.relu(theirs(x))
        sa = F.softmax(ya, 1)
        sb = torch.softmax(yb, 1)
    assert ya.dtype == yb.dtype == torch.bfloat16
    # softmax runs in float32 under autocast (torch's CUDA autocast policy; CPU torch keeps bf16)
    assert sa.dtype == torch.float32
    assert_close(ya, yb, "bfloat16", name="autocast linear")
    assert_close(sa, sb, "bfloat16", name="autocast softmax")


# --- activations ---------------------------------------------------------------------------------

ACT_MODULES = [(gnn.ReLU, torch.nn.ReLU, {}), (gnn.LeakyReLU, torch.nn.LeakyReLU, {}),
               (gnn.LeakyReLU, torch.nn.LeakyReLU, {"negative_slope": -0.3}),
               (gnn.Sigmoid, torch.nn.Sigmoid, {}), (gnn.Tanh, torch.nn.Tanh, {}),
               (gnn.GELU, torch.nn.GELU, {}), (gnn.GELU, torch.nn.GELU, {"approximate": "tanh"}),
               (gnn.SiLU, torch.nn.SiLU, {})]


@pytest.mark.parametrize("ours_cls,theirs_cls,kwargs", ACT_MODULES,
                         ids=[f"{c[0].__name__}{c[2] or ''}" for c in ACT_MODULES])
def test_activation_modules_vs_torch(ours_cls, theirs_cls, kwargs):
    ours, theirs = ours_cls(**kwargs), theirs_cls(**kwargs)
    assert repr(ours) == repr(theirs)
    x = torch.randn(3, 4, 5, dtype=F64) * 3
    run_both(ours, theirs, x)
    run_both(ours, theirs, x.permute(2, 0, 1))                       # non-contiguous
    run_both(ours, theirs, torch.randn(2, 3, 4, 5, dtype=F64).to(memory_format=torch.channels_last))
    assert ours(torch.randn(0, 4)).shape == (0, 4)


@pytest.mark.parametrize("cls", [gnn.ReLU, gnn.LeakyReLU, gnn.SiLU])
def test_inplace_is_accepted_and_out_of_place(cls):
    x = torch.randn(10)
    before = x.clone()
    y = cls(inplace=True)(x)
    assert torch.equal(x, before)
    assert_close(y, getattr(torch.nn, cls.__name__)()(before), name="y")


# --- softmax -------------------------------------------------------------------------------------

@pytest.mark.parametrize("ours_cls,theirs_cls", [(gnn.Softmax, torch.nn.Softmax),
                                                 (gnn.LogSoftmax, torch.nn.LogSoftmax)])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_modules_vs_torch(ours_cls, theirs_cls, dim):
    ours, theirs = ours_cls(dim=dim), theirs_cls(dim=dim)
    x = torch.randn(4, 7, 3, dtype=F64) * 4
    run_both(ours, theirs, x)
    run_both(ours, theirs, x.transpose(0, 2))
    run_both(ours, theirs, torch.randn(0, 7, 3, dtype=F64))


def test_softmax_bad_dim():
    with pytest.raises(IndexError, match="dim 3"):
        F.softmax(torch.randn(2, 3, 4), 3)
    with pytest.raises(TypeError, match="dim"):
        F.softmax(torch.randn(2, 3))
    assert_close(F.softmax(torch.tensor(2.0, dtype=F64), 0), torch.tensor(1.0, dtype=F64))


# --- losses --------------------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_loss_vs_torch(reduction):
    torch.manual_seed(4)
    kwargs = {"reduction": reduction, "ignore_index": 2}
    ours, theirs = gnn.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**kwargs)
    for shape in [(7, 5), (3, 5, 4, 2), (5,), (0, 5)]:
        x = torch.randn(*shape, dtype=F64) * 3
        target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
        target = torch.randint(0, 5, target_shape)
        run_both(ours, theirs, x, target)
    # channels_last logits
    x = torch.randn(3, 5, 4, 2, dtype=F64).to(memory_format=torch.channels_last)
    run_both(ours, theirs, x, torch.randint(0, 5, (3, 4, 2)))


def test_cross_entropy_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"target shape \(3,\).*\(4, 3\)"):
        F.cross_entropy(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(x, torch.tensor([0, 1, 3, 0]))
    # weight=, label_smoothing and probability targets: tests/test_losses_options.py
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, torch.zeros(4, dtype=torch.long), reduction="avg")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_and_mse_losses_vs_torch(reduction):
    torch.manual_seed(5)
    x = torch.randn(6, 3, dtype=F64) * 5
    x[0, 0], x[1, 1] = 1e4, -1e4
    target = torch.rand(6, 3, dtype=F64)
    for ours, theirs in [(gnn.BCEWithLogitsLoss(reduction=reduction),
                          torch.nn.BCEWithLogitsLoss(reduction=reduction)),
                         (gnn.MSELoss(reduction=reduction), torch.nn.MSELoss(reduction=reduction))]:
        run_both(ours, theirs, x, target)
        run_both(ours, theirs, x.t(), target.t())
        run_both(ours, theirs, x[:0], target[:0])
        # the target's gradient too
        ta = target.clone().requires_grad_(True)
        tb = target.clone().requires_grad_(True)
        la, lb = ours(x, ta), theirs(x, tb)
        g = torch.ones_like(la)
        la.backward(g)
        lb.backward(g)
        assert_close(ta.grad, tb.grad, name="target grad")


def test_bce_and_mse_errors():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        F.binary_cross_entropy_with_logits(torch.randn(4), torch.rand(3))
    # weight= and pos_weight=: tests/test_losses_options.py
    with pytest.raises(ValueError, match="broadcast"), pytest.warns(UserWarning):
        F.mse_loss(torch.randn(4), torch.randn(3))
    with pytest.warns(UserWarning):  # broadcasting target, as torch (with its warning)
        assert_close(F.mse_loss(torch.randn(4, 3, dtype=F64).fill_(2.0), torch.zeros(3, dtype=F64)),
                     torch.tensor(4.0, dtype=F64))


# --- dropout -------------------------------------------------------------------------------------

def test_dropout_module():
    x = torch.randn(4, 9, 5, requires_grad=True)
    layer = gnn.Dropout(0.3)
    torch.manual_seed(11)
    y = layer(x)
    torch.manual_seed(11)
    assert torch.equal(layer(x), y)                       # reproducible under torch.manual_seed
    assert not torch.equal(layer(x), y)                   # and a fresh mask on the next call
    keep = y != 0
    scale = float(np.float32(1 / 0.7))
    assert_close(y[keep], x[keep] * scale, name="kept")
    assert 0.5 < keep.float().mean().item() < 0.9
    y.backward(torch.ones_like(y))
    assert_close(x.grad, keep.float() * scale, name="grad")  # the same mask, regenerated
    # the mask is the Philox stream of the drawn seed (what the Triton kernel draws bit for bit)
    torch.manual_seed(11)
    seed = int(torch.randint(2 ** 31 - 1, (1,)).item())
    expected_keep = philox_uniform(seed, np.arange(x.numel(), dtype=np.int64)) >= np.float32(0.3)
    assert np.array_equal(keep.numpy().reshape(-1), expected_keep)
    layer.eval()
    assert torch.equal(layer(x), x)


def test_dropout_edges():
    x = torch.randn(3, 4, requires_grad=True)
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.5, training=False) is x
    inf = x.detach().masked_fill(torch.tensor(True), float("inf"))
    # p == 1 is torch's input * 0: zeros, but inf (and NaN) give NaN, as torch's
    assert_close(F.dropout(inf, 1.0), torch.nn.functional.dropout(inf, 1.0))
    assert F.dropout(inf, 1.0).isnan().all()
    F.dropout(x, 1.0).sum().backward()
    assert torch.equal(x.grad, torch.zeros(3, 4))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            F.dropout(x, p)
        with pytest.raises(ValueError):
            gnn.Dropout(p)
    assert F.dropout(torch.randn(0, 4), 0.5).shape == (0, 4)
    xt = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    torch.manual_seed(3)
    a = F.dropout(xt, 0.5)
    torch.manual_seed(3)
    b = F.dropout(xt.contiguous(), 0.5)
    assert torch.equal(a, b)  # the mask follows the logical index, not the memory order


# --- batch norm ----------------------------------------------------------------------------------

BN_CASES = [(gnn.BatchNorm1d, torch.nn.BatchNorm1d, (8, 5)),
            (gnn.BatchNorm1d, torch.nn.BatchNorm1d, (4, 5, 7)),
            (gnn.BatchNorm2d, torch.nn.BatchNorm2d, (3, 5, 4, 3))]


@pytest.mark.parametrize("ours_cls,theirs_cls,shape", BN_CASES, ids=["1d", "1d_len", "2d"])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False},
                                    {"track_running_stats": False}],
                         ids=["default", "cumulative", "no_affine", "no_running_stats"])
@pytest.mark.parametrize("activation", [None, "relu", torch.nn.LeakyReLU(0.2), "gelu"],
                         ids=["none", "relu", "leaky0.2", "gelu"])
def test_batch_norm_vs_torch(ours_cls, theirs_cls, shape, kwargs, activation):
    torch.manual_seed(6)
    theirs = theirs_cls(shape[1], **kwargs)
    if theirs.affine:
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.uniform_(-0.5, 0.5)
    ours, theirs = twin_pair(ours_cls(shape[1], activation=activation, **kwargs), theirs)
    fused = TorchFused(theirs, activation)
    for step in range(3):  # running statistics over several training steps
        x = torch.randn(*shape, dtype=F64) * (step + 1) + step
        if len(shape) == 4 and step == 1:
            x = x.to(memory_format=torch.channels_last)
        if step == 2:
            x = torch.randn(*reversed(shape), dtype=F64).permute(*reversed(range(len(shape))))
        run_both(ours, fused, x, grad_seed=step)
        assert_same_buffers(ours, theirs)
        ours.zero_grad()
        fused.zero_grad()
    ours.eval()
    fused.eval()
    run_both(ours, fused, torch.randn(*shape, dtype=F64))
    if not kwargs.get("track_running_stats", True):
        assert ours.running_mean is None
    assert list(ours.state_dict()) == list(theirs.state_dict())


def test_batch_norm_zero_batch_and_repr():
    ours, theirs = twin_pair(gnn.BatchNorm2d(3, activation="silu"), torch.nn.BatchNorm2d(3))
    x = torch.randn(0, 3, 4, 4, dtype=F64, requires_grad=True)
    y = ours(x)
    theirs(x.detach())
    assert y.shape == (0, 3, 4, 4)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 4, 4)
    assert_same_buffers(ours, theirs)
    assert repr(ours).endswith("track_running_stats=True, activation=silu)")
    assert repr(gnn.BatchNorm1d(3)) == repr(torch.nn.BatchNorm1d(3))


def test_batch_norm_bad_input():
    with pytest.raises(ValueError, match="2D or 3D"):
        gnn.BatchNorm1d(3)(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match="4D"):
        gnn.BatchNorm2d(3)(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        gnn.BatchNorm1d(3)(torch.randn(1, 3))
    with pytest.raises(ValueError, match=r"weight shape \(4,\).*3 channels"):
        F.batch_norm(torch.randn(2, 3), None, None, torch.ones(4), None, True)
    with pytest.raises(ValueError, match="evaluation"):
        F.batch_norm(torch.randn(2, 3), None, None)


def test_fused_module_deepcopy():
    # deepcopy keeps the fused activation and copies the parameters
    layer = gnn.Linear(3, 2, activation="gelu")
    clone = copy.deepcopy(layer)
    assert clone.activation == layer.activation
    assert clone.weight is not layer.weight


@pytest.mark.parametrize("ours_cls,theirs", [(gnn.Linear, torch.nn.Linear(4, 3)),
                                            (gnn.BatchNorm1d, torch.nn.BatchNorm1d(4))],
                         ids=["Linear", "BatchNorm1d"])
def test_class_swapped_module_has_no_activation(ours_cls, theirs):
    # gpudnn.nn.convert turns a torch layer into its twin by swapping __class__ (no __init__)
    reference = copy.deepcopy(theirs).double()
    theirs.double().__class__ = ours_cls
    assert theirs.activation is None
    run_both(theirs, reference, torch.randn(5, 4, dtype=F64))


# --- float32 on the test device (CUDA under `make test-gpu`; the Triton interpreter on CPU) ----

def _batch_norm2d_twins(activation):
    """(gpudnn BatchNorm2d(3) fusing ``activation``, torch's followed by it), non-trivial affine
    parameters, the same state."""
    theirs = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-0.5, 0.5)
    ours = gnn.BatchNorm2d(3, activation=activation)
    ours.load_state_dict(theirs.state_dict())
    return ours, TorchFused(theirs, activation)


def _float32_cases():
    torch.manual_seed(12)
    ours_bn, bn = _batch_norm2d_twins("relu")
    linear = torch.nn.Linear(13, 7)
    ours_linear = gnn.Linear(13, 7, activation="gelu")
    ours_linear.load_state_dict(linear.state_dict())
    logits = torch.randn(7, 5) * 3
    return {
        "linear_gelu": (ours_linear, TorchFused(linear, "gelu"), (torch.randn(5, 13),)),
        "batchnorm2d_relu": (ours_bn, bn,
                             (torch.randn(4, 3, 5, 5).to(memory_format=torch.channels_last),)),
        "gelu_tanh": (gnn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh"),
                      (torch.randn(3, 4, 5) * 3,)),
        "log_softmax": (gnn.LogSoftmax(1), torch.nn.LogSoftmax(1), (torch.randn(4, 7, 3) * 4,)),
        "cross_entropy": (gnn.CrossEntropyLoss(ignore_index=2), torch.nn.CrossEntropyLoss(
            ignore_index=2), (logits, torch.randint(0, 5, (7,)))),
        "bce_with_logits": (gnn.BCEWithLogitsLoss(), torch.nn.BCEWithLogitsLoss(),
                            (logits, torch.rand(7, 5))),
        "mse": (gnn.MSELoss(reduction="sum"), torch.nn.MSELoss(reduction="sum"),
                (logits, torch.randn(7, 5))),
    }


@pytest.mark.parametrize("case", list(_float32_cases()))
def test_modules_float32_on_device(case, device):
    ours, theirs, inputs = _float32_cases()[case]
    compare_float32_on_device(ours, theirs, *inputs, device=device, interpret=True,
                              grad_scale=10.0)
    assert_same_buffers(ours, theirs.layer if isinstance(theirs, TorchFused) else theirs)


# --- 16-bit inputs -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cross_entropy_16bit_logits_vs_torch(dtype):
    # large logits: the log-sum-exp must stay float32 between forward and backward (rounded to
    # bf16 it is off by up to 1 at 300, and every gradient entry by a factor up to e)
    torch.manual_seed(15)
    logits = (torch.randn(6, 5, dtype=F64) * 3 + 300).to(dtype)
    target = torch.randint(0, 5, (6,))
    ours = logits.clone().requires_grad_(True)
    exact = logits.double().requires_grad_(True)  # torch on the same (rounded) values, exactly
    loss, loss_exact = F.cross_entropy(ours, target), TF.cross_entropy(exact, target)
    loss.backward()
    loss_exact.backward()
    assert loss.dtype == ours.grad.dtype == dtype
    assert_close(loss, loss_exact, dtype, name="loss")
    assert_close(ours.grad, exact.grad, dtype, name="grad")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_batch_norm_16bit_input_float32_parameters_vs_torch(dtype):
    # outside autocast torch accepts a 16-bit input with float32 weight / bias / running stats,
    # computes in float32 and returns the input's dtype; the parameter grads stay float32
    torch.manual_seed(16)
    ours, fused = _batch_norm2d_twins("relu")
    x = (torch.randn(4, 3, 5, 5) * 2 + 1).to(dtype)
    for train in (True, False):
        ours.train(train)
        fused.train(train)
        compare_with_twin(ours, fused, x, dtype=dtype, grad_scale=10.0)
        assert_same_buffers(ours, fused.layer)
    with pytest.raises(TypeError, match="dtypes differ"):  # no other mix, as torch
        F.batch_norm(torch.randn(4, 3), None, None, torch.ones(3, dtype=dtype), None, True)


def test_batch_norm_under_autocast_keeps_the_input_dtype():
    torch.manual_seed(17)
    conv, bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)
    ours_conv, ours_bn = gnn.Conv2d(3, 4, 3), gnn.BatchNorm2d(4)
    ours_conv.load_state_dict(conv.state_dict())
    ours_bn.load_state_dict(bn.state_dict())
    x = torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = ours_bn(ours_conv(x)), bn(conv(x))
    assert y.dtype == y_ref.dtype == torch.bfloat16
    assert_close(y, y_ref, torch.bfloat16, name="autocast conv -> batch norm")
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    for name in ("weight", "bias"):
        ours_p, theirs_p = getattr(ours_bn, name), getattr(bn, name)
        assert ours_p.grad.dtype == torch.float32
        assert_close(ours_p.grad, theirs_p.grad, torch.bfloat16, name=f"{name} grad", scale=10.0)
    assert_same_buffers(ours_bn, bn)
