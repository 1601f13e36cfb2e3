"""The Triton LSTM kernels (interpreter on CPU, the GPU under `make test-gpu`) against the NumPy
reference in float64 and torch.nn.LSTM: float32, small shapes (hidden 8-33, batch 1-3) so that
the per-step kernels cover partial blocks in every dimension; every output poisoned with NaN
first, so an element a kernel fails to write shows up."""
import importlib.util

import pytest
import torch

import gpudnn
import gpudnn.nn as gnn
from gpudnn.kernels.alloc import poison_outputs
from gpudnn.ops.lstm import lstm_cell_step, lstm_layer
from gpudnn.testing import assert_close
from helpers import (DEVICE, INTERPRETER_BF16_DOT, compare_recurrent, kernel_backends,
                     launcher, lstm_args)

F32, F64 = torch.float32, torch.float64


@pytest.fixture(autouse=True)
def _backend_has_lstm(request):
    """A backend without LSTM kernels yet (the CuPy family comes later) is skipped, saying so."""
    backend = request.node.callspec.params.get("backend") if hasattr(request.node, "callspec") \
        else None
    if backend and importlib.util.find_spec(f"gpudnn.kernels.{backend}.lstm") is None:
        pytest.skip(f"the {backend} backend has no LSTM kernels yet")


def _randn(*shape, gen, device="cpu"):
    return torch.randn(shape, dtype=F64, generator=gen).to(device)


@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.parametrize("steps,batch,input_size,hidden,reverse", [
    (9, 3, 5, 33, False),   # hidden = 2 blocks + 1
    (9, 2, 1, 17, True),    # block + 1, the backward direction
    (1, 1, 7, 8, False),    # one step, one row, less than a block
    (4, 2, 16, 16, True),   # exactly one block
])
def test_layer_matches_reference(backend, device, steps, batch, input_size, hidden, reverse):
    gen = torch.Generator().manual_seed(steps * 100 + batch * 10 + hidden + reverse)
    args = lstm_args(gen, (steps, batch, input_size), hidden)
    compare_recurrent(lstm_layer, args, (reverse,), backend, device, cotangent_seed=1)


@pytest.mark.parametrize("backend", kernel_backends())
def test_layer_float16_matches_reference(backend, device):
    """The 16-bit configuration (fp16 operands, fp32 accumulation and cell state). bfloat16 takes
    the same code; the Triton 3.9 interpreter's bf16 tl.dot is wrong, so it is checked on GPUs
    only (test_layer_bfloat16_on_gpu)."""
    gen = torch.Generator().manual_seed(21)
    steps, batch, inp, hidden = 5, 2, 6, 17
    args = lstm_args(gen, (steps, batch, inp), hidden)
    compare_recurrent(lstm_layer, args, (False,), backend, device, cotangent_seed=4,
                       dtype=torch.float16)


@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.skipif(DEVICE != "cuda", reason=INTERPRETER_BF16_DOT)
def test_layer_bfloat16_on_gpu(backend, device):
    gen = torch.Generator().manual_seed(22)
    steps, batch, inp, hidden = 5, 40, 6, 33
    args = lstm_args(gen, (steps, batch, inp), hidden)
    compare_recurrent(lstm_layer, args, (True,), backend, device, cotangent_seed=5,
                       dtype=torch.bfloat16)


@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.parametrize("batch,hidden", [(3, 33), (1, 8)])
def test_cell_matches_reference(backend, device, batch, hidden):
    gen = torch.Generator().manual_seed(batch + hidden)
    args = lstm_args(gen, (batch, 6), hidden)
    compare_recurrent(lstm_cell_step, args, (), backend, device, cotangent_seed=2)


def _module_pair(device, input_size, hidden, **kwargs):
    theirs = torch.nn.LSTM(input_size, hidden, **kwargs)
    ours = gnn.LSTM(input_size, hidden, **kwargs)
    ours.load_state_dict(theirs.state_dict())
    return ours.to(device), theirs.double()


@pytest.mark.parametrize("backend", kernel_backends())
@pytest.mark.parametrize("bias,batch_first,given_hx", [(True, True, True), (False, False, False)])
def test_two_layer_bidirectional_module_matches_torch(backend, device, bias, batch_first,
                                                      given_hx):
    """The whole network on the kernels against torch.nn.LSTM in float64: non-contiguous
    layer input (batch_first), given and default state, bias on and off."""
    torch.manual_seed(5)
    ours, theirs = _module_pair(device, 4, 9, num_layers=2, bidirectional=True, bias=bias,
                                batch_first=batch_first)
    x64 = torch.randn((2, 4, 4) if batch_first else (4, 2, 4), dtype=F64)
    hx64 = (torch.randn(4, 2, 9, dtype=F64), torch.randn(4, 2, 9, dtype=F64)) if given_hx else None
    xa = x64.to(device, F32).requires_grad_(True)
    xb = x64.clone().requires_grad_(True)
    hxa = tuple(t.to(device, F32).requires_grad_(True) for t in hx64) if given_hx else None
    hxb = tuple(t.clone().requires_grad_(True) for t in hx64) if given_hx else None
    with gpudnn.use_backend(backend):
        ya, (ha, ca) = ours(xa, hxa)
    yb, (hb, cb) = theirs(xb, hxb)
    for name, a, e in (("output", ya, yb), ("h_n", ha, hb), ("c_n", ca, cb)):
        assert_close(a, e, F32, name=name)
    gen = torch.Generator().manual_seed(3)
    cot = [torch.randn(t.shape, dtype=F64, generator=gen) for t in (yb, hb, cb)]
    torch.autograd.backward([yb, hb, cb], cot)
    with gpudnn.use_backend(backend):
        torch.autograd.backward([ya, ha, ca], [c.to(device, F32) for c in cot])
    assert_close(xa.grad, xb.grad, F32, name="input grad", scale=4.0)
    if given_hx:
        assert_close(hxa[0].grad, hxb[0].grad, F32, name="h0 grad", scale=4.0)
        assert_close(hxa[1].grad, hxb[1].grad, F32, name="c0 grad", scale=4.0)
    for (name, pa), (_, pb) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(pa.grad, pb.grad, F32, name=f"{name} grad", scale=4.0)


@pytest.mark.parametrize("backend", kernel_backends())
def test_inference_without_saved_gates_and_strided_weights(backend, device):
    """Under no_grad the step kernel stores no gates; weights and states given as
    non-contiguous views give the right answer."""
    gen = torch.Generator().manual_seed(11)
    hidden, inp = 20, 3
    bases = [_randn(5, 2, inp, gen=gen), _randn(hidden, 2, gen=gen), _randn(2, 2 * hidden, gen=gen),
             _randn(inp, 4 * hidden, gen=gen) * 0.4, _randn(hidden, 4 * hidden, gen=gen) * 0.3,
             _randn(2, 4 * hidden, gen=gen) * 0.3]

    def views(x, h0t, c0wide, w_ih_t, w_hh_t, b):
        # h0 and both weights transposed, c0 every other column: no state or weight contiguous
        return (x, h0t.t(), c0wide[:, ::2], w_ih_t.t(), w_hh_t.t(), b[0], b[1])

    expected_args = views(*bases)
    kernel_args = views(*[t.to(device, F32) for t in bases])
    assert not any(t.is_contiguous() for t in kernel_args[1:5])
    with gpudnn.use_backend("reference"):
        expected = lstm_layer(*expected_args, True)  # reverse; nothing requires grad
    with torch.no_grad(), gpudnn.use_backend(backend), poison_outputs():
        got = lstm_layer(*kernel_args, True)
    for name, a, e in zip(("y", "h_n", "c_n"), got, expected):
        assert_close(a, e, F32, name=name)
    saved = launcher("lstm_layer_forward", backend)(*kernel_args, True, False)[3]
    assert saved is None


@pytest.mark.parametrize("backend", kernel_backends())
def test_zero_size_batch(backend, device):
    ours, _ = _module_pair(device, 3, 4, num_layers=2)
    x = torch.randn(3, 0, 3, device=device, requires_grad=True)
    with gpudnn.use_backend(backend), poison_outputs():
        y, (h, c) = ours(x)
        assert y.shape == (3, 0, 4) and h.shape == (2, 0, 4) and c.shape == (2, 0, 4)
        (y.sum() + h.sum() + c.sum()).backward()
    assert x.grad.shape == x.shape
    for name, p in ours.named_parameters():
        assert torch.equal(p.grad, torch.zeros_like(p)), name


@pytest.mark.parametrize("backend", kernel_backends())
def test_outputs_can_be_modified_in_place(backend, device):
    """Outputs are tensors of their own, not views of a workspace (autograd forbids in-place
    updates of a custom Function's view outputs). y is saved for backward (as cuDNN does), so
    backward after modifying y must refuse rather than use the modified values."""
    ours, _ = _module_pair(device, 3, 4)
    cell = gnn.LSTMCell(3, 4).to(device)
    x = torch.randn(2, 1, 3, device=device, requires_grad=True)
    with gpudnn.use_backend(backend):
        _, (h, c) = ours(x)
        h.add_(1.0)
        c.mul_(2.0)
        cell_h, _ = cell(x[0])
        cell_h.mul_(2.0)
        (h.sum() + c.sum() + cell_h.sum()).backward()
        assert x.grad is not None
        y, _ = ours(x)
        y.mul_(2.0)
        with pytest.raises(RuntimeError, match="inplace"):
            y.sum().backward()


@pytest.mark.parametrize("backend", kernel_backends())
def test_float64_is_refused_with_a_clear_error(backend, device):
    ours, _ = _module_pair(device, 3, 4)
    x = torch.randn(2, 1, 3, dtype=F64, device=device)
    with gpudnn.use_backend(backend), pytest.raises(TypeError, match="reference"):
        ours.double()(x)


def test_batch_past_the_grid_limit_is_refused_before_any_work():
    """The step kernels put batch blocks of 64 on grid axis 1 (at most 65535): a larger batch is
    a clear ValueError before the input projection runs."""
    from gpudnn.kernels.triton import lstm as triton_lstm
    batch = 65535 * 64 + 1
    x = torch.zeros(1, 1, 1).expand(1, batch, 1)  # no memory
    h0 = torch.zeros(1, 1).expand(batch, 1)
    w = torch.zeros(4, 1)
    with pytest.raises(ValueError, match=r"dimension y = 65536 \(batch blocks\)"):
        triton_lstm.lstm_layer_forward(x, h0, h0, w, w, None, None, False, True)
