"""The backend registry and selection API (SPEC section 3), and the package's own plumbing."""
import importlib.util
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

import gpudnn
from gpudnn import backend
from gpudnn.activations import parse_activation
from gpudnn.kernels.activations import NAMES, Activation
from gpudnn.backend import KERNELS
from gpudnn.ops.dense import DENSE, dense
from gpudnn.testing import TOLERANCES, assert_close
from helpers import DEVICE, launcher

ON_CUDA = pytest.mark.skipif(DEVICE != "cuda", reason="needs CUDA tensors (GPUDNN_TEST_DEVICE=cuda, "
                             "`make test-gpu`)")


def test_reference_always_available():
    assert "reference" in gpudnn.available_backends()


def test_triton_available_under_interpreter():
    # conftest sets TRITON_INTERPRET=1 on CPU runs
    if os.environ.get("GPUDNN_TEST_DEVICE", "cpu") == "cpu":
        assert "triton" in gpudnn.available_backends()


def test_default_is_auto_and_set_backend_round_trips():
    assert gpudnn.get_backend() == "auto"
    gpudnn.set_backend("reference")
    assert gpudnn.get_backend() == "reference"
    gpudnn.set_backend("AUTO")
    assert gpudnn.get_backend() == "auto"


def test_use_backend_is_scoped_and_nests():
    with gpudnn.use_backend("reference"):
        assert gpudnn.get_backend() == "reference"
        with gpudnn.use_backend("triton"):
            assert gpudnn.get_backend() == "triton"
        assert gpudnn.get_backend() == "reference"
    assert gpudnn.get_backend() == "auto"


def test_use_backend_restores_after_exception():
    with pytest.raises(KeyError):
        with gpudnn.use_backend("reference"):
            raise KeyError("boom")
    assert gpudnn.get_backend() == "auto"


def test_use_backend_is_per_thread():
    seen = []
    with gpudnn.use_backend("reference"):
        t = threading.Thread(target=lambda: seen.append(gpudnn.get_backend()))
        t.start()
        t.join()
    assert seen == ["auto"]


def test_unknown_backend_is_value_error():
    with pytest.raises(ValueError, match="unknown gpudnn backend"):
        gpudnn.set_backend("tpu")
    with pytest.raises(ValueError):
        with gpudnn.use_backend("numpy"):
            pass


def test_environment_variable_selects_backend():
    code = "import gpudnn; print(gpudnn.get_backend())"
    env = dict(os.environ, GPUDNN_BACKEND="reference")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "reference"
    env["GPUDNN_BACKEND"] = "bogus"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown gpudnn backend" in bad.stderr


def test_auto_picks_reference_for_cpu_tensors():
    assert backend.resolve(DENSE, torch.ones(2)) == "reference"


def test_triton_on_cpu_without_interpreter_is_a_clear_runtime_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with gpudnn.use_backend("triton"):
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            backend.resolve(DENSE, torch.ones(2))
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):  # and the public API
            gpudnn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))


def test_cupy_on_cpu_tensors_is_a_clear_runtime_error():
    with gpudnn.use_backend("cupy"):
        with pytest.raises(RuntimeError, match="cupy backend"):
            backend.resolve(DENSE, torch.ones(2))


def test_mixed_devices_are_refused():
    meta = torch.ones(2, device="meta")
    with pytest.raises(RuntimeError, match="different devices"):
        backend.resolve(DENSE, torch.ones(2), meta)


def test_kernels_tables():
    # every op's launchers, one Kernels per op, looked up by backend name only
    assert {"dense", "conv2d", "lstm_layer", "adam_step"} <= set(KERNELS)
    assert KERNELS["dense"] is DENSE and DENSE.forward("reference").__wrapped_numpy__
    with pytest.raises(ValueError, match="not 'auto'"):
        DENSE.forward("auto")
    with pytest.raises(ValueError, match="unknown gpudnn backend"):
        DENSE.forward("tpu")
    with pytest.raises(ValueError, match="defined twice"):
        backend.Kernels("dense", reference=DENSE.reference)


def test_reference_adapter_round_trips_torch_and_numpy(monkeypatch):
    calls = {}

    def fake(x, scale, out_list):
        calls["types"] = (type(x), type(out_list[0]))
        out_list[0][...] = 7.0  # in-place update must reach the tensor
        return x * scale, np.arange(3)

    wrapped = backend.reference_launcher(fake)
    x = torch.ones(2, 3, dtype=torch.float64)
    buf = torch.zeros(2)
    y, idx = wrapped(x, 2.0, [buf])
    assert calls["types"] == (np.ndarray, np.ndarray)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float64 and torch.all(y == 2)
    assert idx.dtype == torch.int64
    assert torch.all(buf == 7.0)
    # an output never aliases an input
    y2, _ = backend.reference_launcher(lambda x, s, o: (x, np.arange(1)))(x, 1.0, [buf])
    y2.add_(1)
    assert torch.all(x == 1)


def test_reference_adapter_keeps_channels_last():
    x = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    y = backend.reference_launcher(lambda a: a * 2)(x)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_kernels_is_not_a_top_level_package():
    # SPEC section 2: the folder kernels/ installs as gpudnn.kernels, never as bare `kernels`
    assert importlib.util.find_spec("gpudnn.kernels") is not None
    # without PYTHONPATH: `make test-gpu` puts the checkout on it, where kernels/ is a folder
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", "import kernels"], capture_output=True,
                         cwd="/", text=True, env=env)
    assert out.returncode != 0


def test_parse_activation_names_modules_and_errors():
    assert parse_activation(None) is None
    for name in NAMES:
        assert parse_activation(name).name == name
    assert parse_activation(torch.nn.LeakyReLU(0.2)) == Activation("leaky_relu", 0.2)
    assert parse_activation(torch.nn.GELU(approximate="tanh")).name == "gelu_tanh"
    assert parse_activation(torch.nn.GELU()).name == "gelu"
    assert parse_activation(torch.nn.SiLU()).name == "silu"
    assert parse_activation("leaky_relu").param == 0.01
    for bad in ("swish", torch.nn.Softmax(dim=1), 3, torch.nn.Hardtanh()):
        with pytest.raises(ValueError):
            parse_activation(bad)


def test_activation_saved_tensor_rule():
    assert Activation("relu").from_output and Activation("tanh").from_output
    assert not Activation("gelu").from_output and not Activation("silu").from_output
    assert Activation("leaky_relu", 0.1).from_output
    assert not Activation("leaky_relu", -0.5).from_output  # sign of y no longer tells the branch


def test_assert_close_reports_where_and_how_much():
    a = torch.zeros(3, 4)
    b = torch.zeros(3, 4)
    b[1, 2] = 1.0
    with pytest.raises(AssertionError, match=r"1 of 12 elements.*\(1, 2\)"):
        assert_close(a, b, name="out")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(a, b[:2])
    nan = torch.full((2,), float("nan"))
    assert_close(nan, nan)
    with pytest.raises(AssertionError, match="NaN mismatch"):
        assert_close(nan, torch.zeros(2))
    with pytest.raises(AssertionError, match="inf mismatch"):
        assert_close(torch.tensor([float("inf")]), torch.tensor([-float("inf")]))
    assert set(TOLERANCES) >= {"float64", "float32", "bfloat16", "float16"}
    assert_close(torch.tensor([1.0 + 1e-6]), torch.tensor([1.0]))  # float32 row


def test_reference_adapter_leaves_unmodified_half_arguments_alone():
    # a copy-back into an argument the launcher did not change would bump its version counter
    # and break autograd for tensors saved for backward
    x = torch.randn(4, dtype=torch.bfloat16)
    version = x._version
    backend.reference_launcher(lambda a: a * 2)(x)
    assert x._version == version
    stats = torch.zeros(3, dtype=torch.bfloat16)

    def update(a):
        a += 1.5

    backend.reference_launcher(update)(stats)
    assert torch.all(stats == 1.5)


@ON_CUDA
def test_triton_available_and_auto_picks_it_for_cuda_tensors():
    assert "triton" in gpudnn.available_backends()
    x = torch.ones(2, device="cuda")
    for name in ("dense", "max_pool2d", "lstm_layer", "sgd_step"):
        assert backend.resolve(KERNELS[name], x) == "triton", name
    assert backend.resolve(DENSE, torch.ones(2)) == "reference"  # CPU tensors


def test_the_op_runs_the_backend_it_is_given(monkeypatch):
    seen = _record_backends(monkeypatch)
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    with gpudnn.use_backend("triton"):  # the selection says triton; the op's argument wins
        y, _ = dense(x, w, None, "", 0.0, "reference")
    assert seen == [("reference", "dense", 0)]
    assert_close(y, x @ w.t())


def test_a_backend_without_the_kernel_is_a_clear_runtime_error():
    partial = backend.Kernels("test_partial_op", reference=DENSE.reference,
                              triton=(DENSE.triton[0], None))
    try:
        assert partial.forward("triton") is DENSE.triton[0]
        with pytest.raises(RuntimeError, match="'cupy' has no kernel for test_partial_op"):
            partial.forward("cupy")
        with gpudnn.use_backend("cupy"), pytest.raises(RuntimeError, match="cupy"):
            backend.resolve(partial, torch.ones(2, device=DEVICE))
    finally:
        del KERNELS["test_partial_op"]


def _record_backends(monkeypatch) -> list:
    """Every (backend, op, launcher index) looked up in a Kernels table from now on."""
    seen, real = [], backend.Kernels.of

    def spy(self, name_of_backend):
        launchers = real(self, name_of_backend)

        class Recorder(tuple):
            def __getitem__(inner, index):
                seen.append((name_of_backend, self.name, index))
                return tuple.__getitem__(inner, index)

        return Recorder(launchers)

    monkeypatch.setattr(backend.Kernels, "of", spy)
    return seen


def _max_pool(x):
    return gpudnn.functional.max_pool2d(x, 3, 2, 1)


def _lstm(x):
    torch.manual_seed(3)
    return gpudnn.nn.LSTM(4, 5).to(x.device)(x)[0]


@pytest.mark.parametrize("op,torch_op,shape,backward_name", [
    (_max_pool, lambda x: torch.nn.functional.max_pool2d(x, 3, 2, 1), (2, 3, 8, 8),
     "max_pool2d"),
    (_lstm, lambda x: (torch.manual_seed(3), torch.nn.LSTM(4, 5).to(x.device)(x)[0])[1],
     (3, 2, 4), "lstm_layer"),
], ids=["max_pool2d", "lstm"])
def test_backward_runs_on_the_forward_backend(op, torch_op, shape, backward_name, device,
                                              monkeypatch):
    # forward inside use_backend("triton") (the interpreter on CPU), backward outside it and
    # under another selection: the backward must still run triton's kernel, on triton's saved
    x = torch.randn(*shape, device=device, requires_grad=True)
    with gpudnn.use_backend("triton"):
        y = op(x)
    seen = _record_backends(monkeypatch)
    grad = torch.randn_like(y)
    with gpudnn.use_backend("reference"):
        y.backward(grad)
    assert [b for b, n, i in seen if (n, i) == (backward_name, 1)] == ["triton"], seen
    expected = x.detach().clone().requires_grad_(True)
    torch_op(expected).backward(grad)
    assert_close(x.grad, expected.grad, name="grad", scale=10.0)


def test_backward_on_autograds_thread_uses_the_forward_backend(monkeypatch):
    # a backward that runs where the forward's use_backend is not set (autograd's own thread on
    # CUDA) must not fall back to the global selection
    x = torch.randn(5, 6, requires_grad=True)
    with gpudnn.use_backend("triton"):
        y = gpudnn.functional.softmax(x, 1)
    seen = _record_backends(monkeypatch)
    gpudnn.set_backend("reference")
    worker = threading.Thread(target=lambda: y.backward(torch.ones_like(y)))
    worker.start()
    worker.join()
    assert [b for b, n, i in seen if (n, i) == ("softmax", 1)] == ["triton"], seen
    assert x.grad is not None


def test_reference_adapter_keeps_float32_outputs_float32():
    logits = (torch.randn(4, 5) * 3 + 300).bfloat16()
    target = torch.randint(0, 5, (4,))
    loss, lse = launcher("cross_entropy_forward", "reference")(logits, target, -100, "mean")
    assert loss.dtype == torch.bfloat16 and lse.dtype == torch.float32
    assert_close(lse, torch.logsumexp(logits.double(), 1), torch.float32, name="lse")
    x = torch.randn(4, 3, 5, dtype=torch.float16)
    y, mean, invstd = launcher("batch_norm_forward", "reference")(
        x, None, None, None, None, True, 0.1, 1e-5, None)
    assert y.dtype == torch.float16 and mean.dtype == invstd.dtype == torch.float32
    x64 = torch.randn(4, 3, dtype=torch.float64)
    _, mean64, _ = launcher("batch_norm_forward", "reference")(
        x64, None, None, None, None, True, 0.1, 1e-5, None)
    assert mean64.dtype == torch.float64  # "at least float32"


def test_auto_sends_float64_on_cuda_to_the_reference(monkeypatch):
    # the GPU kernels compute in fp32 at most; pretend these CPU tensors live on a GPU
    monkeypatch.setattr(backend, "_device_type", lambda tensors: "cuda")
    monkeypatch.setattr(backend, "_why_not", lambda name, device: None)
    assert backend.resolve(DENSE, torch.ones(2)) == "triton"
    backend._warned.discard("dense")
    with pytest.warns(RuntimeWarning, match="float64"):
        assert backend.resolve(DENSE, torch.ones(2, dtype=torch.float64)) == "reference"
    assert backend.resolve(KERNELS["sgd_step"], [torch.ones(2, dtype=torch.float64)]) == \
        "reference"
