"""Layer norm and group norm (gpudnn.functional.layer_norm / group_norm, gpudnn.nn.LayerNorm /
GroupNorm) with their fused activations.

- the NumPy reference against torch autograd in float64 (forward, every gradient, gradcheck);
- the Triton launchers (the interpreter on CPU, or CUDA) against the reference in float32, with
  outputs poisoned with NaN: single-block and online (multi-block) rows, several rows per
  program, transposed / strided / non-collapsible layouts, channels_last group norm, large mean
  and small spread, the 64-bit index paths, every gradient subset;
- the modules against their torch twins after load_state_dict (compare_with_twin), bf16 / fp16
  inputs with float32 parameters, autocast, gpudnn.nn.convert fusing the activation;
- bad input (torch's messages where torch has them), empty dims.
"""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import gpudnn
import gpudnn.functional as F
import gpudnn.nn as gnn
from gpudnn.kernels import alloc
from gpudnn.kernels.activations import NAMES, Activation
from gpudnn.kernels.triton import norm as t_norm
from gpudnn.reference import norm as r_norm
from gpudnn.testing import assert_close
from helpers import DEVICE, TorchFused, compare_float32_on_device, compare_with_twin

F32, F64 = torch.float32, torch.float64
ACTS = [None] + [Activation.make(n) for n in NAMES] + [Activation("leaky_relu", -0.1)]
ACT_IDS = ["identity"] + list(NAMES) + ["leaky_relu_negative_slope"]


def _np64(t):
    return None if t is None else t.detach().cpu().double().numpy()


def _close(actual, expected, name, scale=1.0):
    assert_close(actual, torch.as_tensor(np.asarray(expected)), F32, name=name, scale=scale)


def _torch_act(act: Activation | None):
    return gpudnn.activations.activation_module(act)


# --- the reference against torch in float64 ------------------------------------------------------

def _torch_ln(x, shape, w, b, act):
    return _torch_act(act)(TF.layer_norm(x, shape, w, b))


def _torch_gn(x, groups, w, b, act):
    return _torch_act(act)(TF.group_norm(x, groups, w, b))


REF_CASES = [("layer_norm", (4, 7), (7,)), ("layer_norm", (2, 3, 4, 5), (4, 5)),
             ("layer_norm", (6,), (6,)), ("group_norm", (3, 6, 4, 5), 3),
             ("group_norm", (2, 4, 7), 1), ("group_norm", (5, 6), 6),
             ("group_norm", (2, 4, 2, 3, 2), 2)]


@pytest.mark.parametrize("act", [None, Activation.make("gelu"), Activation.make("tanh"),
                                 Activation("leaky_relu", -0.1)],
                         ids=["identity", "gelu", "tanh", "leaky_relu_negative_slope"])
@pytest.mark.parametrize("op,shape,arg", REF_CASES, ids=[f"{o}-{s}" for o, s, _ in REF_CASES])
def test_reference_vs_torch_float64(op, shape, arg, act):
    gen = torch.Generator().manual_seed(len(shape) * 7 + sum(shape))
    x = (torch.randn(shape, generator=gen, dtype=F64) * 2 + 0.5).requires_grad_()
    params = arg if op == "layer_norm" else (shape[1],)
    w = (1 + 0.3 * torch.randn(params, generator=gen, dtype=F64)).requires_grad_()
    b = (0.2 * torch.randn(params, generator=gen, dtype=F64)).requires_grad_()
    forward, torch_fn = ((r_norm.layer_norm_forward, _torch_ln) if op == "layer_norm"
                         else (r_norm.group_norm_forward, _torch_gn))
    backward = r_norm.layer_norm_backward if op == "layer_norm" else r_norm.group_norm_backward
    y, mean, rstd = forward(_np64(x), arg, _np64(w), _np64(b), 1e-5, act)
    expected = torch_fn(x, arg, w, b, act)
    assert_close(torch.from_numpy(y), expected, F64, name="y")
    grad_y = torch.randn(shape, generator=gen, dtype=F64)
    gx, gw, gb = torch.autograd.grad(expected, (x, w, b), grad_y)
    got = backward(_np64(grad_y), _np64(x), arg, _np64(w), _np64(b), mean, rstd, act,
                   (True, True, True))
    for name, a, e in zip(("grad_x", "grad_weight", "grad_bias"), got, (gx, gw, gb)):
        assert_close(torch.from_numpy(a), e, F64, name=name, scale=10.0)
    assert got[0].shape == tuple(shape)


@pytest.mark.parametrize("op", ["layer_norm", "group_norm"])
def test_gradcheck_reference_backend(op):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 3, generator=gen, dtype=F64, requires_grad=True)
    w = (1 + 0.2 * torch.randn(4, generator=gen, dtype=F64)).requires_grad_()
    b = (0.1 * torch.randn(4, generator=gen, dtype=F64)).requires_grad_()
    with gpudnn.use_backend("reference"):
        if op == "layer_norm":
            fn = lambda x, w, b: F.layer_norm(x.transpose(1, 2), (4,), w, b,  # noqa: E731
                                              activation="silu")
        else:
            fn = lambda x, w, b: F.group_norm(x, 2, w, b, activation="gelu")  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, w, b))


# --- Triton against the reference in float32 ----------------------------------------------------

def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """``t`` in a memory layout: "contiguous", "transposed" (the first two dims swapped in
    memory), "strided" (every other element of a larger tensor along the last dim),
    "channels_last", or "permuted" (4-d: H and W swapped in memory, which do not collapse)."""
    if layout == "transposed":
        return t.transpose(0, 1).contiguous().transpose(0, 1)
    if layout == "strided":
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        big[..., ::2] = t
        return big[..., ::2]
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "permuted":
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


def _check(op, shape, arg, layout, act, device, affine=True, loc=0.0, scale=1.0,
           needs=(True, True, True), grad_layout="contiguous"):
    """One forward and backward of the Triton launchers against the reference."""
    gen = torch.Generator().manual_seed(sum(shape) * 13 + len(layout))
    x = _layout((torch.randn(shape, generator=gen) * scale + loc).to(device), layout)
    params = arg if op == "layer_norm" else shape[1:2]
    w = (1 + 0.3 * torch.randn(params, generator=gen)).to(device) if affine else None
    b = (0.2 * torch.randn(params, generator=gen)).to(device) if affine else None
    if op == "layer_norm":
        fwd, bwd = t_norm.layer_norm_forward, t_norm.layer_norm_backward
        rfwd, rbwd = r_norm.layer_norm_forward, r_norm.layer_norm_backward
    else:
        fwd, bwd = t_norm.group_norm_forward, t_norm.group_norm_backward
        rfwd, rbwd = r_norm.group_norm_forward, r_norm.group_norm_backward
    with alloc.poison_outputs():
        y, mean, rstd = fwd(x, arg, w, b, 1e-5, act)
    y_ref, mean_ref, rstd_ref = rfwd(_np64(x), arg, _np64(w), _np64(b), 1e-5, act)
    _close(y, y_ref, "y")
    _close(mean, mean_ref, "mean", scale=max(1.0, abs(loc)))
    _close(rstd, rstd_ref, "rstd", scale=1.0 / scale)
    if op == "group_norm" and x.dim() == 4 and layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    else:
        assert y.is_contiguous()
    grad_y = _layout(torch.randn(shape, generator=gen).to(device), grad_layout)
    with alloc.poison_outputs():
        got = bwd(grad_y, x, arg, w, b, mean, rstd, act, needs)
    expected = rbwd(_np64(grad_y), _np64(x), arg, _np64(w), _np64(b), mean_ref, rstd_ref, act,
                    needs)
    rows = x.numel() // max(mean.numel(), 1)
    for name, need, g, e in zip(("grad_x", "grad_weight", "grad_bias"), needs, got, expected):
        if need and (affine or name == "grad_x"):
            grad_scale = (1.0 / scale if name == "grad_x"
                          else max(1.0, (x.numel() / max(rows, 1)) ** 0.5))
            _close(g, e, name, scale=grad_scale)
            if name == "grad_x" and layout != "permuted":
                assert g.stride() == torch.empty_like(x).stride(), "grad_x takes x's layout"
        else:
            assert g is None


LN_SHAPES = [((7, 3), (3,), "contiguous"), ((5, 33), (33,), "contiguous"),
             ((3, 6, 5), (6, 5), "contiguous"), ((1, 1), (1,), "contiguous"),
             ((6, 9), (9,), "transposed"), ((4, 10), (10,), "strided"),
             ((3, 4, 6), (4, 6), "strided"),            # normalized dims that do not collapse
             ((2, 4100), (4100,), "contiguous"),         # one 8192 block (16 warps)
             ((2, 8200), (8200,), "contiguous"),         # online: five blocks
             ((3, 2, 4200), (2, 4200), "transposed")]    # online, strided rows


@pytest.mark.parametrize("shape,arg,layout", LN_SHAPES,
                         ids=[f"{s}-{l}" for s, _, l in LN_SHAPES])
def test_layer_norm_triton_shapes(device, shape, arg, layout):
    _check("layer_norm", shape, arg, layout, Activation.make("relu"), device)


GN_SHAPES = [((2, 6, 4, 5), 3, "contiguous"), ((2, 6, 4, 5), 3, "channels_last"),
             ((2, 6, 4, 5), 2, "permuted"), ((3, 4, 7), 2, "contiguous"),
             ((5, 8), 4, "contiguous"), ((2, 4, 1, 1), 2, "channels_last"),
             ((3, 2, 5, 3), 2, "transposed"),
             ((1, 2, 70, 70), 1, "contiguous"),          # online: 9800-element rows
             ((1, 8, 48, 48), 2, "channels_last")]       # online, channel-fastest


@pytest.mark.parametrize("shape,groups,layout", GN_SHAPES,
                         ids=[f"{s}-G{g}-{l}" for s, g, l in GN_SHAPES])
def test_group_norm_triton_shapes(device, shape, groups, layout):
    _check("group_norm", shape, groups, layout, Activation.make("silu"), device)


@pytest.mark.parametrize("act", ACTS, ids=ACT_IDS)
def test_every_activation(device, act):
    _check("layer_norm", (5, 12), (12,), "contiguous", act, device)
    _check("group_norm", (2, 6, 3, 3), 3, "channels_last", act, device)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False),
                                   (False, False, True), (False, True, True)],
                         ids=["x", "weight", "bias", "params"])
def test_gradient_subsets(device, needs):
    act = Activation.make("gelu_tanh")
    _check("layer_norm", (9, 20), (20,), "contiguous", act, device, needs=needs)
    _check("layer_norm", (2, 8200), (8200,), "contiguous", act, device, needs=needs)
    _check("group_norm", (3, 4, 5), 2, "contiguous", act, device, needs=needs)


def test_without_affine_and_strided_grad(device):
    _check("layer_norm", (6, 7), (7,), "contiguous", None, device, affine=False)
    _check("group_norm", (2, 4, 3, 3), 2, "channels_last", Activation.make("tanh"), device,
           affine=False)
    _check("layer_norm", (6, 8), (8,), "contiguous", None, device, grad_layout="transposed")
    _check("group_norm", (2, 4, 3, 3), 2, "channels_last", None, device,
           grad_layout="transposed")


def test_large_mean_small_spread(device):
    # the shift keeps the variance where a naive E[x^2] - E[x]^2 in fp32 keeps nothing
    _check("layer_norm", (4, 300), (300,), "contiguous", None, device, loc=1e4, scale=1e-2)
    _check("layer_norm", (2, 8200), (8200,), "contiguous", None, device, loc=1e4, scale=1e-2)
    _check("group_norm", (2, 4, 8, 9), 2, "channels_last", None, device, loc=1e4, scale=1e-2)


def test_layer_norm_backward_spreads_rows_over_programs(device, monkeypatch):
    # several programs of several row tiles each write the parameter partials
    monkeypatch.setattr(t_norm, "TARGET_PROGRAMS", 3)
    _check("layer_norm", (70, 64), (64,), "contiguous", Activation.make("relu"), device)
    _check("layer_norm", (7, 8200), (8200,), "contiguous", Activation.make("relu"), device)


def test_int64_index_paths(device, monkeypatch):
    monkeypatch.setattr(t_norm, "INT32_LIMIT", 0)
    act = Activation.make("gelu")
    _check("layer_norm", (5, 9), (9,), "transposed", act, device)
    _check("layer_norm", (2, 8200), (8200,), "contiguous", act, device)
    _check("group_norm", (2, 6, 3, 4), 3, "channels_last", act, device)


def test_heuristic_picks_only_listed_configurations():
    # the AOT list is read in a subprocess without the interpreter (@triton.jit functions are
    # interpreted here and cannot be listed)
    import json
    import os
    import subprocess
    import sys
    script = ("import json; from gpudnn.kernels.triton import norm; print(json.dumps(sorted({"
              "(c.kernel.fn.__name__ if hasattr(c.kernel, 'fn') else c.kernel.__name__, "
              "c.constexprs.get('ROWS'), c.constexprs.get('BLOCK'), c.constexprs.get('ONLINE')) "
              "for c in norm.aot_configs()})))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    listed = {tuple(c) for c in json.loads(out.stdout.strip().splitlines()[-1])}
    for L in (1, 7, 16, 17, 100, 1024, 4096, 4097, 8192, 8193, 10 ** 6):
        for kernel, backward in (("_norm_forward_kernel", False), ("_norm_backward_kernel", True)):
            rows, block, online = t_norm._block_shape(L, backward)
            limit = t_norm.MAX_BLOCK_BACKWARD if backward else t_norm.MAX_BLOCK
            assert online == (L > limit) and (online or rows * block >= t_norm.TILE)
            assert [kernel, rows, block, online] in [list(c) for c in listed], (kernel, L)


def test_triton_refuses_float64(device):
    x = torch.randn(3, 4, dtype=F64, device=device)
    with pytest.raises(TypeError, match="float64"):
        t_norm.layer_norm_forward(x, (4,), None, None, 1e-5, None)
    with pytest.raises(TypeError, match="float64"):
        t_norm.group_norm_forward(x, 2, None, None, 1e-5, None)


# --- the modules against their torch twins ------------------------------------------------------

def _twins(ours, theirs, activation):
    with torch.no_grad():
        for p in theirs.parameters():
            p.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    return ours, TorchFused(theirs, activation)


LN_MODULES = [((5,), {}, (4, 5)), ((3, 4), {}, (2, 5, 3, 4)), ((6,), {"bias": False}, (3, 6)),
              ((6,), {"elementwise_affine": False}, (2, 2, 6)), (7, {"eps": 1e-3}, (3, 7))]


@pytest.mark.parametrize("activation", [None, "relu", torch.nn.GELU(approximate="tanh")],
                         ids=["none", "relu", "gelu_tanh"])
@pytest.mark.parametrize("shape,kwargs,x_shape", LN_MODULES,
                         ids=["1d", "2d", "no_bias", "no_affine", "int_shape_eps"])
def test_layer_norm_module_vs_torch(shape, kwargs, x_shape, activation):
    torch.manual_seed(4)
    theirs = torch.nn.LayerNorm(shape, **kwargs, dtype=F64)
    ours = gnn.LayerNorm(shape, **kwargs, dtype=F64, activation=activation)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours, fused = _twins(ours, theirs, activation)
    x = torch.randn(x_shape, dtype=F64) * 2 + 1
    compare_with_twin(ours, fused, x, grad_scale=10.0)
    compare_with_twin(ours, fused, x.transpose(0, -1).contiguous().transpose(0, -1),
                      grad_scale=10.0)


GN_MODULES = [(2, 4, {}, (3, 4, 5)), (3, 6, {}, (2, 6, 4, 3)),
              (1, 4, {"affine": False}, (2, 4, 3)), (4, 4, {"eps": 1e-3}, (5, 4))]
if "bias" in inspect.signature(torch.nn.GroupNorm).parameters:  # torch 2.13's bias=False
    GN_MODULES.append((2, 4, {"bias": False}, (3, 4, 2, 2)))


@pytest.mark.parametrize("activation", [None, "silu", torch.nn.LeakyReLU(0.2)],
                         ids=["none", "silu", "leaky0.2"])
@pytest.mark.parametrize("groups,channels,kwargs,x_shape", GN_MODULES,
                         ids=["1d", "2d", "no_affine", "channels_only", "no_bias"][
                             :len(GN_MODULES)])
def test_group_norm_module_vs_torch(groups, channels, kwargs, x_shape, activation):
    torch.manual_seed(5)
    theirs = torch.nn.GroupNorm(groups, channels, **kwargs, dtype=F64)
    ours = gnn.GroupNorm(groups, channels, **kwargs, dtype=F64, activation=activation)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours, fused = _twins(ours, theirs, activation)
    x = torch.randn(x_shape, dtype=F64) * 2 - 1
    compare_with_twin(ours, fused, x, grad_scale=10.0)
    if x.dim() == 4:
        compare_with_twin(ours, fused, x.to(memory_format=torch.channels_last), grad_scale=10.0)


@pytest.mark.parametrize("module", ["LayerNorm", "GroupNorm"])
def test_modules_float32_on_device(device, module):
    torch.manual_seed(6)
    if module == "LayerNorm":
        ours, fused = _twins(gnn.LayerNorm(24, activation="gelu"), torch.nn.LayerNorm(24), "gelu")
        x = torch.randn(3, 5, 24)
    else:
        ours, fused = _twins(gnn.GroupNorm(4, 8, activation="relu"), torch.nn.GroupNorm(4, 8),
                             "relu")
        x = torch.randn(2, 8, 5, 6).to(memory_format=torch.channels_last)
    compare_float32_on_device(ours, fused, x, device=device, interpret=True, grad_scale=10.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_16bit_input_with_float32_parameters(dtype, backend, device):
    torch.manual_seed(7)
    x = torch.randn(4, 6, 5, device=device).to(dtype)
    key = "bfloat16" if dtype == torch.bfloat16 else "float16"
    with gpudnn.use_backend(backend):
        for ours, theirs, params in (
                (lambda x, w, b: F.layer_norm(x, (5,), w, b, activation="relu"),
                 lambda x, w, b: torch.relu(TF.layer_norm(x, (5,), w, b)), 5),
                (lambda x, w, b: F.group_norm(x, 3, w, b, activation="silu"),
                 lambda x, w, b: TF.silu(TF.group_norm(x, 3, w, b)), 6)):
            w = torch.rand(params, device=device) + 0.5
            b = torch.randn(params, device=device)
            compare_with_twin(ours, theirs, x, w, b, dtype=key, grad_scale=4.0)


def test_autocast_follows_torch():
    # CPU autocast leaves layer_norm / group_norm alone (CUDA runs them in float32)
    x = torch.randn(3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.layer_norm(x, (4,)).dtype == TF.layer_norm(x, (4,)).dtype == F32
        xb = x.bfloat16()
        assert F.group_norm(xb.reshape(3, 4, 1), 2).dtype == torch.bfloat16


def test_convert_fuses_the_following_activation():
    torch.manual_seed(8)
    model = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.LayerNorm(6), torch.nn.GELU(),
                                torch.nn.Unflatten(1, (2, 3)), torch.nn.GroupNorm(1, 2),
                                torch.nn.SiLU()).double()
    converted = gnn.convert(model, inplace=False)
    assert isinstance(converted[1], gnn.LayerNorm) and converted[1].activation.name == "gelu"
    assert isinstance(converted[4], gnn.GroupNorm) and converted[4].activation.name == "silu"
    assert isinstance(converted[2], torch.nn.Identity) and isinstance(converted[5],
                                                                      torch.nn.Identity)
    assert list(converted.state_dict()) == list(model.state_dict())
    compare_with_twin(converted, model, torch.randn(4, 5, dtype=F64), grad_scale=10.0)


def test_reprs():
    assert repr(gnn.LayerNorm(4)) == repr(torch.nn.LayerNorm(4))
    assert repr(gnn.GroupNorm(2, 4)) == repr(torch.nn.GroupNorm(2, 4))
    assert repr(gnn.LayerNorm(4, activation="relu")).endswith("bias=True, activation=relu)")
    assert repr(gnn.GroupNorm(2, 4, activation="silu")).endswith("True, activation=silu)")


# --- empty dims and bad input --------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_dims(backend):
    with gpudnn.use_backend(backend):
        for shape, arg, op in (((0, 5), (5,), F.layer_norm), ((3, 0), (0,), F.layer_norm),
                               ((2, 0, 4), (4,), F.layer_norm), ((0, 4, 3), 2, F.group_norm),
                               ((2, 0, 3), 1, F.group_norm), ((2, 4, 0), 2, F.group_norm)):
            x = torch.randn(shape, requires_grad=True)
            params = arg if op is F.layer_norm else shape[1:2]
            w = torch.randn(params, requires_grad=True)
            b = torch.randn(params, requires_grad=True)
            y = op(x, arg, w, b, activation="gelu")
            assert y.shape == x.shape
            y.sum().backward()
            assert x.grad.shape == x.shape
            # a sum over no elements is 0 (torch's group norm gives NaN at a spatial size of 0)
            assert torch.equal(w.grad, torch.zeros_like(w)), (shape, w.grad)
            assert torch.equal(b.grad, torch.zeros_like(b)), (shape, b.grad)


def test_layer_norm_bad_input():
    x = torch.randn(3, 4)
    with pytest.raises(RuntimeError, match=r"normalized_shape=\[5\], expected input with shape "
                                           r"\[\*, 5\], but got input of size\[3, 4\]"):
        F.layer_norm(x, (5,))
    with pytest.raises(RuntimeError, match=r"Expected weight to be of same shape as "
                                           r"normalized_shape, but got weight of shape \[5\]"):
        F.layer_norm(x, (4,), torch.randn(5))
    with pytest.raises(RuntimeError, match="bias of shape"):
        F.layer_norm(x, (4,), None, torch.randn(2, 2))
    with pytest.raises(TypeError, match="normalized_shape.*tuple of ints"):
        F.layer_norm(x, 4)
    with pytest.raises(RuntimeError, match="at least 1-dimensional"):
        F.layer_norm(x, ())
    with pytest.raises(TypeError, match="dtypes differ.*weight is torch.float64"):
        F.layer_norm(x, (4,), torch.randn(4, dtype=F64))
    with pytest.raises(TypeError, match="input must be a floating-point tensor"):
        F.layer_norm(torch.ones(3, 4, dtype=torch.int64), (4,))
    with pytest.raises(RuntimeError, match="different devices"):
        F.layer_norm(x, (4,), torch.randn(4, device="meta"))
    with pytest.raises(TypeError, match="eps"):
        F.layer_norm(x, (4,), eps=None)


def test_group_norm_bad_input():
    x = torch.randn(3, 4, 2)
    with pytest.raises(RuntimeError, match=r"divisible by num_groups, but got input of shape "
                                           r"\[3, 4, 2\] and num_groups=3"):
        F.group_norm(x, 3)
    with pytest.raises(RuntimeError, match=r"Expected weight to be a vector of size equal to "
                                           r"the number of channels in input, but got weight of "
                                           r"shape \[3\]"):
        F.group_norm(x, 2, torch.randn(3))
    with pytest.raises(RuntimeError, match="bias of shape"):
        F.group_norm(x, 2, None, torch.randn(4, 1))
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        F.group_norm(torch.randn(4), 1)
    with pytest.raises(ValueError, match="num_groups must be a positive integer"):
        F.group_norm(x, 0)
    with pytest.raises(TypeError, match="num_groups"):
        F.group_norm(x, 2.0)
    with pytest.raises(TypeError, match="dtypes differ.*bias is torch.float16"):
        F.group_norm(x, 2, None, torch.randn(4, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"num_channels \(4\) must be divisible by num_groups"):
        gnn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="unknown activation"):
        gnn.GroupNorm(2, 4, activation="swish")
