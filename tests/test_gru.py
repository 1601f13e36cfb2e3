"""The GRU (gpudnn.nn.GRU / GRUCell, gpudnn.functional.gru / gru_cell).

Reference backend: against torch.nn.GRU / GRUCell in float64 after load_state_dict (forward and
every gradient: input, h0, all parameters), gradcheck through the reference-backed ops, state_dict
and repr equality, convert, dropout between layers, zero-size batches and bad input (the float32
leg on the test device is tests/test_lstm.py's test_recurrent_float32_on_device).
Triton kernels (the interpreter on CPU, the GPU under `make test-gpu`): float32 against the
reference in float64, small shapes (hidden 8-33, batch 1-3) so that the step kernels cover
partial blocks in every dimension, every output poisoned with NaN first; and the step loops'
CUDA-graph capture and replay on fresh tensors of one shape (emulated on the CPU)."""
import itertools

import numpy as np
import pytest
import torch

import gpudnn
import gpudnn.functional as F
import gpudnn.nn as gnn
from gpudnn.kernels.alloc import poison_outputs
from gpudnn.kernels.triton import gru as triton_gru
from gpudnn.ops.gru import gru_cell_step, gru_layer
from gpudnn.testing import assert_close
from graph_capture import emulated_captures
from helpers import (DEVICE, INTERPRETER_BF16_DOT, compare_recurrent, compare_with_twin,
                     launcher, lstm_args)

F32, F64 = torch.float32, torch.float64


def gru_args(gen, x_shape, hidden):
    """float64 (x, h0, w_ih, w_hh, b_ih, b_hh) of a GRU layer (x [T, B, I]) or cell (x [B, I])."""
    return lstm_args(gen, x_shape, hidden, gates=3, states=1)


def gru_twins(input_size, hidden, **kwargs):
    """(gpudnn.nn.GRU, torch.nn.GRU) in float64 holding the same parameters."""
    theirs = torch.nn.GRU(input_size, hidden, **kwargs).double()
    ours = gnn.GRU(input_size, hidden, **kwargs).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


# --- the reference against torch, float64 ----------------------------------------------------

@pytest.mark.parametrize("num_layers,bidirectional,batch_first,given_hx,steps",
                         list(itertools.product((1, 2), (False, True), (False, True),
                                                (False, True), (1, 7))))
def test_gru_reference_matches_torch(num_layers, bidirectional, batch_first, given_hx, steps):
    torch.manual_seed(num_layers * 16 + bidirectional * 8 + batch_first * 4 + given_hx * 2 + steps)
    ours, theirs = gru_twins(5, 7, num_layers=num_layers, bidirectional=bidirectional,
                             batch_first=batch_first)
    batch = 3
    x = torch.randn((batch, steps, 5) if batch_first else (steps, batch, 5), dtype=F64)
    hx = torch.randn(num_layers * (2 if bidirectional else 1), batch, 7, dtype=F64) \
        if given_hx else None
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, x, hx, grad_scale=10.0)


@pytest.mark.parametrize("bias", [False, True])
def test_gru_without_bias_and_noncontiguous_input(bias):
    ours, theirs = gru_twins(6, 5, num_layers=2, bias=bias, bidirectional=True)
    x = torch.randn(2, 6, 4, dtype=F64).permute(2, 0, 1)  # [T, B, I], no dimension contiguous
    hx = torch.randn(2, 4, 5, dtype=F64).transpose(0, 1)  # [layers * directions, B, H]
    assert not x.is_contiguous() and not hx.is_contiguous()
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, x, hx, grad_scale=10.0)


def test_gru_unbatched_input():
    ours, theirs = gru_twins(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(5, 4, dtype=F64)
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, x, torch.randn(4, 6, dtype=F64))
        compare_with_twin(ours, theirs, x)
        y, h = ours(x)
    assert y.shape == (5, 12) and h.shape == (4, 6)


@pytest.mark.parametrize("bias,given_hx,unbatched", [(True, True, False), (False, True, False),
                                                     (True, False, False), (True, True, True)])
def test_gru_cell_reference_matches_torch(bias, given_hx, unbatched):
    theirs = torch.nn.GRUCell(5, 7, bias=bias).double()
    ours = gnn.GRUCell(5, 7, bias=bias).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    lead = () if unbatched else (3,)
    x = torch.randn(*lead, 5, dtype=F64)
    hx = torch.randn(*lead, 7, dtype=F64) if given_hx else None
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, x, hx, seed=1)


def test_functional_gru_cell_and_gru_match_torch():
    cell = torch.nn.GRUCell(3, 4).double()
    x, hx = torch.randn(2, 3, dtype=F64), torch.randn(2, 4, dtype=F64)
    h = F.gru_cell(x, hx, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    assert_close(h, cell(x, hx), name="h'")
    net = torch.nn.GRU(3, 4, num_layers=2).double()
    xs = torch.randn(5, 2, 3, dtype=F64)
    y, h_n = F.gru(xs, None, net._flat_weights, 2, True, False, 0.0, False, False)
    yb, hb = net(xs)
    assert_close(y, yb, name="output")
    assert_close(h_n, hb, name="h_n")


def _leaves(*shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, dtype=F64, generator=g).requires_grad_(True) for s in shapes]


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_layer_op(reverse):
    steps, batch, inp, hidden = 3, 2, 3, 2
    args = _leaves((steps, batch, inp), (batch, hidden), (3 * hidden, inp), (3 * hidden, hidden),
                   (3 * hidden,), (3 * hidden,), seed=7)
    with gpudnn.use_backend("reference"):
        assert torch.autograd.gradcheck(lambda *a: gru_layer(*a, reverse), args)


def test_gradcheck_cell_op():
    batch, inp, hidden = 2, 3, 2
    args = _leaves((batch, inp), (batch, hidden), (3 * hidden, inp), (3 * hidden, hidden),
                   (3 * hidden,), (3 * hidden,), seed=8)
    with gpudnn.use_backend("reference"):
        assert torch.autograd.gradcheck(gru_cell_step, args)


def test_gradcheck_two_layer_bidirectional_without_bias():
    ours = gnn.GRU(2, 2, num_layers=2, bidirectional=True, bias=False).double()
    x, h0 = _leaves((2, 1, 2), (4, 1, 2), seed=9)
    with gpudnn.use_backend("reference"):
        assert torch.autograd.gradcheck(lambda x, h0: ours(x, h0), (x, h0))


def test_modules_match_torch_signature_state_dict_repr_and_convert():
    kwargs = dict(num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True)
    ours, theirs = gnn.GRU(3, 4, **kwargs), torch.nn.GRU(3, 4, **kwargs)
    # RNNBase in mode "GRU" like torch's, but not a torch.nn.GRU: torch.compile refuses to
    # trace instances of torch's RNN classes; convert still maps torch.nn.GRU to it
    assert isinstance(ours, torch.nn.RNNBase) and ours.mode == "GRU"
    assert not isinstance(ours, torch.nn.GRU) and gnn.GRU.torch_twin is torch.nn.GRU
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    assert repr(ours) == repr(theirs)
    cell_ours, cell_theirs = gnn.GRUCell(3, 4, bias=False), torch.nn.GRUCell(3, 4, bias=False)
    assert isinstance(cell_ours, torch.nn.GRUCell)
    assert cell_ours.state_dict().keys() == cell_theirs.state_dict().keys()
    assert repr(cell_ours) == repr(cell_theirs)
    pos = gnn.GRU(3, 4, 2, False, True, 0.0, True)  # positional, as torch.nn.GRU takes them
    assert (pos.num_layers, pos.bias, pos.batch_first, pos.bidirectional) == (2, False, True, True)
    model = torch.nn.Sequential(torch.nn.GRU(3, 4), torch.nn.GRUCell(4, 2))
    converted = gnn.convert(model, inplace=False)
    assert type(converted[0]) is gnn.GRU and type(converted[1]) is gnn.GRUCell
    for (name, a), (_, b) in zip(converted.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name


def test_gru_zero_size_batch():
    ours, theirs = gru_twins(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 3, dtype=F64, requires_grad=True)
    with gpudnn.use_backend("reference"):
        y, h = ours(x)
        assert y.shape == theirs(x)[0].shape == (5, 0, 8) and h.shape == (4, 0, 4)
        (y.sum() + h.sum()).backward()
    assert x.grad.shape == x.shape
    for name, p in ours.named_parameters():
        assert torch.equal(p.grad, torch.zeros_like(p)), name


def test_gru_dropout_between_layers():
    ours = gnn.GRU(3, 4, num_layers=3, dropout=0.5).double()
    x = torch.randn(6, 2, 3, dtype=F64)
    # the module draws one dropout seed per inner layer boundary, in order: replay them by hand
    torch.manual_seed(123)
    y, h = ours(x)
    torch.manual_seed(123)
    layer_in, hs = x, []
    for layer in range(3):
        if layer:
            layer_in = F.dropout(layer_in, 0.5, training=True)
        weights = [getattr(ours, f"{n}_l{layer}") for n in
                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        layer_in, hl = F.gru(layer_in, None, weights, 1, True, False, 0.0, True, False)
        hs.append(hl)
    assert_close(y, layer_in, name="output")
    assert_close(h, torch.cat(hs), name="h_n")
    with torch.no_grad():
        ours.eval()
        y_eval, _ = ours(x)
    assert not torch.allclose(y, y_eval)  # the mask really drops
    theirs = torch.nn.GRU(3, 4, num_layers=3, dropout=0.5).double().eval()
    theirs.load_state_dict(ours.state_dict())
    assert_close(y_eval, theirs(x)[0], name="eval output")


def test_gru_bad_input():
    with pytest.raises(ValueError, match="proj_size"):
        gnn.GRU(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="proj_size"):
        gnn.GRU(3, 4, 1, True, False, 0.0, False, 2)  # proj_size given positionally
    ours = gnn.GRU(3, 4, num_layers=2)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    with pytest.raises(NotImplementedError, match="PackedSequence"):
        ours(packed)
    with pytest.raises(ValueError, match="input_size"):
        ours(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 2, 4\)"):
        ours(torch.randn(5, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 4\)"):  # unbatched input
        ours(torch.randn(5, 3), torch.zeros(2, 1, 4))
    with pytest.raises(TypeError, match="hx"):
        ours(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4),))
    with pytest.raises(TypeError, match="dtypes differ"):
        ours(torch.randn(5, 2, 3, dtype=F64))
    with pytest.raises(TypeError, match="floating"):
        ours(torch.ones(5, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="sequence length"):
        ours(torch.randn(0, 2, 3))
    weights = [getattr(ours, n) for n in ours._flat_weights_names]
    with pytest.raises(ValueError, match="dropout"):
        F.gru(torch.randn(5, 2, 3), None, weights, 2, True, False, 1.5, True, False)
    with pytest.raises(ValueError, match="weight tensors"):
        F.gru(torch.randn(5, 2, 3), None, weights[:-1], 2, True, False, 0.0, True, False)
    with pytest.raises(ValueError, match=r"w_hh of layer 1 must have shape \(12, 4\)"):
        F.gru(torch.randn(5, 2, 3), None, weights[:5] + [torch.zeros(16, 4)] + weights[6:], 2,
              True, False, 0.0, True, False)
    lstm_weights = [getattr(gnn.LSTM(3, 4), n) for n in ("weight_ih_l0", "weight_hh_l0")]
    with pytest.raises(ValueError, match=r"3\*hidden_size"):
        F.gru(torch.randn(5, 2, 3), None, lstm_weights, 1, False, False, 0.0, True, False)
    cell = gnn.GRUCell(3, 4)
    with pytest.raises(ValueError, match="w_ih"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 4\)"):
        cell(torch.randn(2, 3), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"hx must have shape \(4,\)"):
        cell(torch.randn(3), torch.zeros(1, 4))


@pytest.mark.parametrize("reverse", [False, True])
def test_reference_layer_backward_of_an_empty_sequence(reverse):
    # no steps: the state gradient passes straight through to h0, weights get zeros
    rng = np.random.default_rng(0)
    batch, inputs, hidden = 2, 3, 4
    x = np.zeros((0, batch, inputs))
    h0 = rng.standard_normal((batch, hidden))
    w_ih = rng.standard_normal((3 * hidden, inputs))
    w_hh = rng.standard_normal((3 * hidden, hidden))
    bias = rng.standard_normal(3 * hidden)
    forward = launcher("gru_layer_forward", "reference").__wrapped_numpy__
    backward = launcher("gru_layer_backward", "reference").__wrapped_numpy__
    y, h_n, saved = forward(x, h0, w_ih, w_hh, bias, bias, reverse, True)
    assert y.shape == (0, batch, hidden) and (h_n == h0).all()
    g_h = rng.standard_normal((batch, hidden))
    grads = backward(y, g_h, x, h0, w_ih, w_hh, y, saved, reverse, (True,) * 6)
    assert grads[0].shape == x.shape and (grads[1] == g_h).all()
    for g, w in zip(grads[2:], (w_ih, w_hh, bias, bias)):
        assert g.shape == w.shape and not g.any()


# --- the Triton kernels against the reference, float32 --------------------------------------

@pytest.mark.parametrize("steps,batch,input_size,hidden,reverse", [
    (7, 3, 5, 33, False),   # hidden = 2 blocks + 1
    (6, 2, 1, 17, True),    # block + 1, the backward direction
    (1, 1, 7, 8, False),    # one step, one row, less than a block
])
def test_triton_layer_matches_reference(device, steps, batch, input_size, hidden, reverse):
    gen = torch.Generator().manual_seed(steps * 100 + batch * 10 + hidden + reverse)
    args = gru_args(gen, (steps, batch, input_size), hidden)
    compare_recurrent(gru_layer, args, (reverse,), "triton", device, cotangent_seed=1)


def test_triton_layer_float16_matches_reference(device):
    """The 16-bit configuration (fp16 operands, fp32 accumulation). bfloat16 takes the same
    code; the interpreter's bf16 tl.dot is wrong, so it is checked on GPUs only."""
    gen = torch.Generator().manual_seed(21)
    args = gru_args(gen, (4, 2, 6), 17)
    compare_recurrent(gru_layer, args, (False,), "triton", device, cotangent_seed=4,
                      dtype=torch.float16)


@pytest.mark.skipif(DEVICE != "cuda", reason=INTERPRETER_BF16_DOT)
def test_triton_layer_bfloat16_on_gpu(device):
    gen = torch.Generator().manual_seed(22)
    args = gru_args(gen, (5, 40, 6), 33)
    compare_recurrent(gru_layer, args, (True,), "triton", device, cotangent_seed=5,
                      dtype=torch.bfloat16)


@pytest.mark.parametrize("batch,hidden", [(3, 33), (1, 8)])
def test_triton_cell_matches_reference(device, batch, hidden):
    gen = torch.Generator().manual_seed(batch + hidden)
    args = gru_args(gen, (batch, 6), hidden)
    compare_recurrent(gru_cell_step, args, (), "triton", device, cotangent_seed=2)


@pytest.mark.parametrize("bias,batch_first,given_hx", [(True, True, True), (False, False, False)])
def test_triton_two_layer_bidirectional_module_matches_torch(device, bias, batch_first,
                                                             given_hx):
    """The whole network on the kernels against torch.nn.GRU in float64: non-contiguous layer
    input (batch_first), given and default state, bias on and off."""
    torch.manual_seed(5)
    theirs = torch.nn.GRU(4, 9, num_layers=2, bidirectional=True, bias=bias,
                          batch_first=batch_first).double()
    ours = gnn.GRU(4, 9, num_layers=2, bidirectional=True, bias=bias, batch_first=batch_first)
    ours.load_state_dict(theirs.state_dict())
    ours = ours.to(device)
    x64 = torch.randn((2, 4, 4) if batch_first else (4, 2, 4), dtype=F64)
    hx64 = torch.randn(4, 2, 9, dtype=F64) if given_hx else None
    xa, xb = x64.to(device, F32).requires_grad_(True), x64.clone().requires_grad_(True)
    hxa = hx64.to(device, F32).requires_grad_(True) if given_hx else None
    hxb = hx64.clone().requires_grad_(True) if given_hx else None
    with gpudnn.use_backend("triton"), poison_outputs():
        ya, ha = ours(xa, hxa)
    yb, hb = theirs(xb, hxb)
    assert_close(ya, yb, F32, name="output")
    assert_close(ha, hb, F32, name="h_n")
    gen = torch.Generator().manual_seed(3)
    cot = [torch.randn(t.shape, dtype=F64, generator=gen) for t in (yb, hb)]
    torch.autograd.backward([yb, hb], cot)
    with gpudnn.use_backend("triton"), poison_outputs():
        torch.autograd.backward([ya, ha], [c.to(device, F32) for c in cot])
    assert_close(xa.grad, xb.grad, F32, name="input grad", scale=4.0)
    if given_hx:
        assert_close(hxa.grad, hxb.grad, F32, name="h0 grad", scale=4.0)
    for (name, pa), (_, pb) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(pa.grad, pb.grad, F32, name=f"{name} grad", scale=4.0)


def test_triton_inference_without_saved_gates_and_strided_weights(device):
    """Under no_grad the step kernel stores no gates; weights and states given as
    non-contiguous views give the right answer."""
    gen = torch.Generator().manual_seed(11)
    hidden, inp = 20, 3
    bases = [torch.randn(s, dtype=F64, generator=gen) * k for s, k in (
        ((5, 2, inp), 1.0), ((hidden, 2), 1.0), ((inp, 3 * hidden), 0.4),
        ((hidden, 3 * hidden), 0.3), ((3 * hidden, 2), 0.3))]

    def views(x, h0t, w_ih_t, w_hh_t, b):  # h0, both weights and both biases strided
        return (x, h0t.t(), w_ih_t.t(), w_hh_t.t(), b[:, 0], b[:, 1])

    expected_args = views(*bases)
    kernel_args = views(*[t.to(device, F32) for t in bases])
    assert not any(t.is_contiguous() for t in kernel_args[1:])
    with gpudnn.use_backend("reference"):
        expected = gru_layer(*expected_args, True)  # reverse; nothing requires grad
    with torch.no_grad(), gpudnn.use_backend("triton"), poison_outputs():
        got = gru_layer(*kernel_args, True)
    for name, a, e in zip(("y", "h_n"), got, expected):
        assert_close(a, e, F32, name=name)
    assert launcher("gru_layer_forward", "triton")(*kernel_args, True, False)[2] is None


def test_triton_zero_size_batch_and_hidden(device):
    ours = gnn.GRU(3, 4, num_layers=2).to(device)
    x = torch.randn(3, 0, 3, device=device, requires_grad=True)
    with gpudnn.use_backend("triton"), poison_outputs():
        y, h = ours(x)
        assert y.shape == (3, 0, 4) and h.shape == (2, 0, 4)
        (y.sum() + h.sum()).backward()
    assert x.grad.shape == x.shape
    for name, p in ours.named_parameters():
        assert torch.equal(p.grad, torch.zeros_like(p)), name
    w = torch.zeros(0, 3, device=device)
    with gpudnn.use_backend("triton"), poison_outputs():
        h = F.gru_cell(torch.randn(2, 3, device=device), None, w, torch.zeros(0, 0, device=device))
    assert h.shape == (2, 0)


def test_triton_outputs_can_be_modified_in_place(device):
    """Outputs are tensors of their own, not views of a workspace; y is saved for backward, so
    backward after modifying y must refuse rather than use the modified values."""
    ours = gnn.GRU(3, 4).to(device)
    cell = gnn.GRUCell(3, 4).to(device)
    x = torch.randn(2, 1, 3, device=device, requires_grad=True)
    with gpudnn.use_backend("triton"):
        _, h = ours(x)
        h.add_(1.0)
        cell_h = cell(x[0])
        cell_h.mul_(2.0)
        (h.sum() + cell_h.sum()).backward()
        assert x.grad is not None
        y, _ = ours(x)
        y.mul_(2.0)
        with pytest.raises(RuntimeError, match="inplace"):
            y.sum().backward()


def test_triton_refuses_float64_and_cupy_clearly(device):
    ours = gnn.GRU(3, 4).double().to(device)
    x = torch.randn(2, 1, 3, dtype=F64, device=device)
    with gpudnn.use_backend("triton"), pytest.raises(TypeError, match="reference"):
        ours(x)
    with gpudnn.use_backend("cupy"), pytest.raises(RuntimeError, match="gru"):
        ours(x)


def test_triton_batch_past_the_grid_limit_is_refused_before_any_work():
    batch = 65535 * 64 + 1
    x = torch.zeros(1, 1, 1).expand(1, batch, 1)  # no memory
    h0 = torch.zeros(1, 1).expand(batch, 1)
    w = torch.zeros(3, 1)
    with pytest.raises(ValueError, match=r"gru: .*dimension y = 65536 \(batch blocks\)"):
        triton_gru.gru_layer_forward(x, h0, w, w, None, None, False, True)


# --- the step loops under CUDA-graph capture and replay ---------------------------------------

@pytest.fixture
def capture_stats(monkeypatch):
    yield from emulated_captures(monkeypatch, triton_gru,
                                 ("_gru_step_forward_kernel", "_gru_step_backward_kernel"))


@pytest.mark.parametrize("reverse", [False, True])
def test_layer_replays_are_right_for_new_tensors_of_the_same_shape(capture_stats, device,
                                                                   reverse):
    """Three calls on fresh tensors (new addresses) of one shape: eager, captured, replayed;
    each forward and gradient matches the reference."""
    gen = torch.Generator().manual_seed(40 + reverse)
    for call in range(3):
        compare_recurrent(gru_layer, gru_args(gen, (5, 3, 4), 18), (reverse,), "triton",
                          device, cotangent_seed=call)
    # the forward loop and the backward loop: captured once each, replayed on calls 2 and 3
    assert (capture_stats["captures"], capture_stats["replays"]) == (2, 4)
    for loops in (triton_gru._FORWARD_LOOPS, triton_gru._BACKWARD_LOOPS):
        assert [s.graph is not None for s in loops._entries.values()] == [True]


def test_a_single_step_is_launched_directly(capture_stats, device):
    """The cell (one step) reuses a table and is never captured."""
    cell = gnn.GRUCell(3, 5).to(device)
    with gpudnn.use_backend("triton"):
        for _ in range(3):
            cell(torch.randn(2, 3, device=device)).sum().backward()
    assert capture_stats["captures"] == 0
    assert [s.graph for s in triton_gru._FORWARD_LOOPS._entries.values()] == [None]
