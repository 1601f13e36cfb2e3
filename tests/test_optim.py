"""gpudnn.optim against torch.optim: parameters and state after N steps (reference backend in
float64, Triton in float32, fp16/bf16 Triton against the reference), schedulers, state_dict round
trips in both directions, torch's errors for bad hyper-parameters, one launch per group and dtype.
"""
import copy

import pytest
import torch

import gpudnn
import gpudnn.optim as gopt
from gpudnn.kernels.triton import optim as triton_optim
from gpudnn.testing import assert_close

BLOCK = triton_optim.BLOCK
TORCH_TWIN = {gopt.SGD: torch.optim.SGD, gopt.Adam: torch.optim.Adam, gopt.AdamW: torch.optim.AdamW}

CASES = [
    (gopt.SGD, dict(lr=0.1)),
    (gopt.SGD, dict(lr=0.1, momentum=0.9)),
    (gopt.SGD, dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.1)),
    (gopt.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (gopt.SGD, dict(lr=0.1, momentum=0.5, maximize=True, weight_decay=0.02)),
    (gopt.Adam, dict(lr=0.01)),
    (gopt.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    (gopt.Adam, dict(lr=0.02, amsgrad=True, maximize=True, weight_decay=0.05)),
    (gopt.Adam, dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    (gopt.AdamW, dict(lr=0.01)),
    (gopt.AdamW, dict(lr=0.02, amsgrad=True, weight_decay=0.1, eps=1e-6)),
]
CASE_IDS = [f"{cls.__name__}-" + ",".join(f"{k}={v}" for k, v in kw.items()) for cls, kw in CASES]


def make_params(device, dtype, generator_seed=0):
    """Odd shapes: 1, 7, block +- 1, a 0-d scalar, a zero-size tensor, a channels_last 4-d
    tensor, a transposed (non-contiguous) leaf, a view at a misaligned storage offset."""
    g = torch.Generator().manual_seed(generator_seed)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(device, dtype)

    tensors = [randn(1), randn(7), randn(BLOCK - 1), randn(BLOCK + 1), randn(()), randn(0, 3),
               randn(2, 3, 5, 7).contiguous(memory_format=torch.channels_last),
               randn(5, 9).t(), randn(60)[1:50]]
    return tensors


def copy_layout(t):
    """A copy of ``t`` in fresh memory with the same strides and storage offset."""
    base = torch.empty(t.untyped_storage().nbytes() // t.element_size(), dtype=t.dtype,
                       device=t.device)
    out = base.as_strided(t.shape, t.stride(), t.storage_offset())
    out.copy_(t)
    return out


def grads_like(params, step, round_to=None):
    """Fixed pseudo-random gradients (rounded through ``round_to`` first when given)."""
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(p.shape, generator=g, dtype=torch.float64).to(round_to or p.dtype)
            .to(p.device, p.dtype) for p in params]


def run(cls, kwargs, tensors, n_steps, backend, torch_twin=False, skip_grad_of=(),
        round_grads_to=None):
    """Parameters and state of ``cls`` after ``n_steps`` on fixed pseudo-random gradients."""
    params = [torch.nn.Parameter(copy_layout(t)) for t in tensors]
    opt = (TORCH_TWIN[cls] if torch_twin else cls)(params, **kwargs)
    for step in range(n_steps):
        for i, (p, g) in enumerate(zip(params, grads_like(params, step, round_grads_to))):
            p.grad = None if i in skip_grad_of else g
        with gpudnn.use_backend(backend):
            opt.step()
    return params, opt


def assert_same(params_a, opt_a, params_b, opt_b, dtype, name=""):
    for i, (a, b) in enumerate(zip(params_a, params_b)):
        assert_close(a, b, dtype, name=f"{name} param {i}")
        state_a, state_b = opt_a.state.get(a, {}), opt_b.state.get(b, {})
        assert sorted(state_a) == sorted(state_b), f"{name} param {i}: state keys differ"
        for key in state_a:
            if key == "step":
                assert state_a[key].dtype == state_b[key].dtype
                assert state_a[key].device == state_b[key].device
                assert float(state_a[key]) == float(state_b[key])
            else:
                assert state_a[key].dtype == state_b[key].dtype
                assert_close(state_a[key], state_b[key], dtype, name=f"{name} param {i} {key}")


@pytest.mark.parametrize("cls,kwargs", CASES, ids=CASE_IDS)
def test_reference_matches_torch_float64(cls, kwargs, device):
    tensors = make_params(device, torch.float64)
    ours = run(cls, kwargs, tensors, 3, "reference", skip_grad_of=(1,))
    theirs = run(cls, kwargs, tensors, 3, "reference", torch_twin=True, skip_grad_of=(1,))
    assert_same(*ours, *theirs, torch.float64, "reference")
    assert 1 not in ours[1].state  # a parameter without a gradient gets no state, as in torch


@pytest.mark.parametrize("cls,kwargs", CASES, ids=CASE_IDS)
def test_triton_matches_torch_float32(cls, kwargs, device):
    tensors = make_params(device, torch.float32)
    ours = run(cls, kwargs, tensors, 3, "triton")
    theirs = run(cls, kwargs, tensors, 3, "reference", torch_twin=True)
    assert_same(*ours, *theirs, torch.float32, "triton")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls,kwargs", [CASES[3], CASES[7], CASES[10]],
                         ids=[CASE_IDS[3], CASE_IDS[7], CASE_IDS[10]])
def test_triton_low_precision_fp32_master_math(cls, kwargs, dtype, device):
    """fp16/bf16 parameters: Triton loads, updates in fp32 and stores, like the reference (which
    gets fp32 copies); both keep the state in the parameter's dtype, as torch does. Against
    torch.optim run in fp32 (torch's own fp16 math underflows eps=1e-8 to 0 and gives NaN)."""
    tensors = make_params(device, dtype)
    ours = run(cls, kwargs, tensors, 2, "triton")
    reference = run(cls, kwargs, tensors, 2, "reference")
    assert_same(*ours, *reference, dtype, "triton vs reference")
    theirs = run(cls, kwargs, [t.float() for t in tensors], 2, "reference", torch_twin=True,
                 round_grads_to=dtype)
    for i, (a, b) in enumerate(zip(ours[0], theirs[0])):
        assert_close(a, b, dtype, name=f"triton vs torch param {i}")


class _CountingKernel:
    """Stands in for a @triton.jit kernel and counts launches."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]


@pytest.mark.parametrize("cls,kernel_name", [(gopt.SGD, "sgd_kernel"), (gopt.Adam, "adam_kernel")])
def test_one_launch_per_group_and_dtype(cls, kernel_name, device, monkeypatch):
    counter = _CountingKernel(getattr(triton_optim, kernel_name))
    monkeypatch.setattr(triton_optim, kernel_name, counter)
    fp32 = [torch.nn.Parameter(torch.randn(n, device=device)) for n in (3, BLOCK + 5, 17)]
    mixed = [torch.nn.Parameter(torch.randn(n, device=device, dtype=dt))
             for n, dt in ((9, torch.float32), (4, torch.bfloat16), (BLOCK, torch.bfloat16))]
    opt = cls([{"params": fp32}, {"params": mixed, "lr": 0.5}], lr=0.1)
    for p in fp32 + mixed:
        p.grad = torch.randn_like(p)
    with gpudnn.use_backend("triton"):
        opt.step()
    assert counter.launches == 1 + 2  # one group of one dtype, one group of two dtypes


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("scheduler", ["StepLR", "CosineAnnealingLR"])
@pytest.mark.parametrize("cls,kwargs", [CASES[3], CASES[10]], ids=[CASE_IDS[3], CASE_IDS[10]])
def test_lr_schedulers_drive_them(cls, kwargs, scheduler, backend, device):
    tensors = make_params(device, torch.float32)[:4]
    results = []
    for optimizer_cls in (cls, TORCH_TWIN[cls]):
        params = [torch.nn.Parameter(t.clone()) for t in tensors]
        opt = optimizer_cls(params, **kwargs)
        sched = (torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
                 if scheduler == "StepLR" else
                 torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4))
        lrs = []
        for step in range(5):
            for p, g in zip(params, grads_like(params, step)):
                p.grad = g
            with gpudnn.use_backend(backend if optimizer_cls is cls else "reference"):
                opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        results.append((params, lrs))
    (ours, our_lrs), (theirs, their_lrs) = results
    assert our_lrs == their_lrs and len(set(our_lrs)) > 1
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b, torch.float32, name=f"param {i}")


@pytest.mark.parametrize("direction", ["gpudnn->torch", "torch->gpudnn"])
@pytest.mark.parametrize("cls,kwargs", [CASES[2], CASES[7], CASES[10]],
                         ids=[CASE_IDS[2], CASE_IDS[7], CASE_IDS[10]])
def test_state_dict_round_trips(cls, kwargs, direction, device):
    tensors = make_params(device, torch.float64)[:5]
    first, second = ((cls, TORCH_TWIN[cls]) if direction == "gpudnn->torch"
                     else (TORCH_TWIN[cls], cls))
    # two steps in the first optimizer, then its state_dict goes to the second one
    params_a = [torch.nn.Parameter(t.clone()) for t in tensors]
    opt_a = first(params_a, **kwargs)
    params_b = [torch.nn.Parameter(t.clone()) for t in tensors]
    opt_b = second(params_b, **kwargs)
    for step in range(2):
        for p, g in zip(params_a, grads_like(params_a, step)):
            p.grad = g
        opt_a.step()
    saved = copy.deepcopy(opt_a.state_dict())  # load_state_dict would alias the state tensors
    twin_state = TORCH_TWIN[cls](params_b, **kwargs).state_dict()
    assert sorted(saved["param_groups"][0]) == sorted(twin_state["param_groups"][0])
    with torch.no_grad():
        for a, b in zip(params_a, params_b):
            b.copy_(a)
    opt_b.load_state_dict(saved)
    for step in range(2, 4):  # both continue from the same state
        for pa, pb, g in zip(params_a, params_b, grads_like(params_a, step)):
            pa.grad, pb.grad = g, g.clone()
        opt_a.step()
        opt_b.step()
    assert_same(params_a, opt_a, params_b, opt_b, torch.float64, direction)
    assert opt_a.state_dict()["param_groups"] == opt_b.state_dict()["param_groups"]


BAD_HYPERPARAMETERS = [
    (gopt.SGD, dict(lr=-0.1)),
    (gopt.SGD, dict(lr=0.1, momentum=-0.5)),
    (gopt.SGD, dict(lr=0.1, weight_decay=-1e-4)),
    (gopt.SGD, dict(lr=0.1, nesterov=True)),
    (gopt.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)),
    (gopt.Adam, dict(lr=-1e-3)),
    (gopt.Adam, dict(eps=-1e-8)),
    (gopt.Adam, dict(betas=(1.0, 0.999))),
    (gopt.Adam, dict(betas=(0.9, -0.1))),
    (gopt.Adam, dict(weight_decay=-0.1)),
    (gopt.AdamW, dict(betas=(0.9, 1.5))),
    (gopt.AdamW, dict(lr=-0.5)),
]


@pytest.mark.parametrize("cls,kwargs", BAD_HYPERPARAMETERS,
                         ids=[f"{c.__name__}-{kw}" for c, kw in BAD_HYPERPARAMETERS])
def test_bad_hyperparameters_give_torchs_errors(cls, kwargs):
    params = [torch.nn.Parameter(torch.randn(3))]
    with pytest.raises(Exception) as theirs:
        TORCH_TWIN[cls](params, **kwargs)
    with pytest.raises(type(theirs.value)) as ours:
        cls(params, **kwargs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("cls", [gopt.SGD, gopt.Adam, gopt.AdamW])
def test_unsupported_options_are_refused_clearly(cls):
    params = [torch.nn.Parameter(torch.randn(3))]
    with pytest.raises(TypeError, match="Tensor lr"):
        cls(params, lr=torch.tensor(0.1))
    with pytest.raises(ValueError, match="fused"):
        cls(params, lr=0.1, fused=True)
    with pytest.raises(ValueError, match="differentiable"):
        cls(params, lr=0.1, differentiable=True)
    opt = cls(params, lr=0.1)
    opt.param_groups[0]["lr"] = torch.tensor(0.1)
    params[0].grad = torch.randn(3)
    with pytest.raises(TypeError, match="Tensor lr"):
        opt.step()


def test_closure_and_subclassing(device):
    p = torch.nn.Parameter(torch.randn(4, device=device))
    opt = gopt.SGD([p], lr=0.1, momentum=0.9)
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(opt, torch.optim.SGD)

    def closure():
        opt.zero_grad()
        loss = (p ** 2).sum()
        loss.backward()
        return loss

    before = p.detach().clone()
    loss = opt.step(closure)
    assert_close(loss, (before ** 2).sum(), torch.float32, name="loss")
    assert_close(p, before - 0.1 * 2 * before, torch.float32, name="param")


def test_triton_launcher_checks_arguments(device):
    params = [torch.randn(3, device=device)]
    with pytest.raises(ValueError, match="grads has 0 tensors"):
        triton_optim.sgd_step(params, [], None, None, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match=r"grads\[0\]"):
        triton_optim.sgd_step(params, [torch.randn(4, device=device)], None, None, 0.1, 0.0, 0.0,
                              0.0, False, False)
    with pytest.raises(TypeError, match="dtype torch.int32"):
        ints = [torch.ones(3, dtype=torch.int32, device=device)]
        triton_optim.sgd_step(ints, ints, None, None, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="fresh_buffers"):
        triton_optim.sgd_step(params, params, params, None, 0.1, 0.0, 0.9, 0.0, False, False)
    with pytest.raises(ValueError, match="steps has 2 entries"):
        triton_optim.adam_step(params, params, params, params, None, [1, 2], 0.1, 0.9, 0.99,
                               1e-8, 0.0, False, False, False)


@pytest.mark.parametrize("cls,kwargs", [
    (gopt.SGD, dict(lr=1e39, momentum=0.5, dampening=0.25, weight_decay=1e-45)),
    (gopt.Adam, dict(lr=1e-3, eps=1e-60, weight_decay=1e-50)),
    (gopt.AdamW, dict(lr=1e39, betas=(0.9, 0.999), eps=1e-60, weight_decay=1e-41)),
], ids=["SGD", "Adam", "AdamW"])
def test_triton_float64_runs_hyperparameters_in_float64(cls, kwargs, device, monkeypatch):
    """fp64 parameters: every hyper-parameter reaches the kernel in fp64. These values do not
    survive fp32 (1e39 is inf, 1e-60 is 0, 1e-45 / 1e-41 are rounded subnormals); eps = 0 on a
    zero gradient gives 0 / 0. Compiled, a Python float kernel argument is an fp32 scalar; the
    interpreter keeps it a Python float, so on CPU the launches are also checked to pass none."""
    name = "sgd_kernel" if cls is gopt.SGD else "adam_kernel"
    kernel = getattr(triton_optim, name)
    float_args = []

    class FloatArgsSpy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                float_args.extend(a for a in args if isinstance(a, float))
                return kernel[grid](*args, **kwargs)
            return launch
    monkeypatch.setattr(triton_optim, name, FloatArgsSpy())
    tensors = [torch.randn(BLOCK + 3, dtype=torch.float64, generator=torch.Generator()
                           .manual_seed(5)).to(device)]

    def run_twin(twin, backend):
        params = [torch.nn.Parameter(t.clone()) for t in tensors]
        opt = (TORCH_TWIN[cls] if twin else cls)(params, **kwargs)
        for step in range(2):
            grad = grads_like(params, step)[0]
            grad[::3] = 0.0  # zero gradients: m = v = 0, the update is 0 / (0 + eps)
            params[0].grad = grad
            with gpudnn.use_backend(backend):
                opt.step()
        return params, opt

    ours = run_twin(False, "triton")
    assert not float_args, f"{name} got float scalars (fp32 when compiled): {float_args}"
    assert torch.isfinite(ours[0][0]).all()
    assert_same(*ours, *run_twin(True, "reference"), torch.float64, "triton fp64")


def test_capturable_is_refused_and_the_launchers_refuse_a_capture(monkeypatch):
    params = [torch.nn.Parameter(torch.randn(3))]
    for cls in (gopt.Adam, gopt.AdamW):  # torch.optim.SGD has no capturable option
        with pytest.raises(ValueError, match="capturable"):
            cls(params, lr=0.1, capturable=True)
    # the launchers check the current CUDA stream (a CUDA-only state: faked here)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="CUDA graph"):
        triton_optim._refuse_capture(torch.device("cuda"), "sgd_step")
    triton_optim._refuse_capture(torch.device("cpu"), "sgd_step")  # CPU tensors: no capture
