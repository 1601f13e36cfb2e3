"""The LSTM on the NumPy reference backend: gpudnn.nn.LSTM / LSTMCell against torch.nn.LSTM /
LSTMCell in float64 after load_state_dict (forward and every gradient: input, h0, c0, all
parameters), gradcheck through the reference-backed Functions, state_dict and repr equality,
dropout between layers, zero-size batches and bad input."""
import itertools

import pytest
import torch

import gpudnn
import gpudnn.functional as F
import gpudnn.nn as gnn
from gpudnn.ops.lstm import lstm_cell_step, lstm_layer
from gpudnn.testing import assert_close
from helpers import compare_float32_on_device, compare_with_twin

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def lstm_twins(input_size, hidden, **kwargs):
    """(gpudnn.nn.LSTM, torch.nn.LSTM) in float64 holding the same parameters."""
    theirs = torch.nn.LSTM(input_size, hidden, **kwargs).double()
    ours = gnn.LSTM(input_size, hidden, **kwargs).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def run_lstm_pair(ours, theirs, x, hx=None, *, seed=0, dtype=None, scale=10.0):
    """compare_with_twin on (x, hx): the outputs, h_n, c_n and the gradients of x, hx and every
    parameter, after random cotangents of output, h_n and c_n."""
    return compare_with_twin(ours, theirs, x, hx, dtype=dtype, grad_scale=scale, seed=seed)


@pytest.mark.parametrize("num_layers,bidirectional,batch_first,given_hx,steps",
                         list(itertools.product((1, 2), (False, True), (False, True),
                                                (False, True), (1, 9))))
def test_lstm_reference_matches_torch(num_layers, bidirectional, batch_first, given_hx, steps):
    torch.manual_seed(num_layers * 16 + bidirectional * 8 + batch_first * 4 + given_hx * 2 + steps)
    ours, theirs = lstm_twins(5, 7, num_layers=num_layers, bidirectional=bidirectional,
                              batch_first=batch_first)
    batch = 3
    x = torch.randn((batch, steps, 5) if batch_first else (steps, batch, 5), dtype=F64)
    hx = None
    if given_hx:
        shape = (num_layers * (2 if bidirectional else 1), batch, 7)
        hx = (torch.randn(shape, dtype=F64), torch.randn(shape, dtype=F64))
    with gpudnn.use_backend("reference"):
        run_lstm_pair(ours, theirs, x, hx)


@pytest.mark.parametrize("bias", [False, True])
def test_lstm_without_bias_and_noncontiguous_input(bias):
    ours, theirs = lstm_twins(6, 5, num_layers=2, bias=bias, bidirectional=True)
    # [T, B, I] view of a [B, I, T] tensor: no dimension is contiguous
    x = torch.randn(2, 6, 4, dtype=F64).permute(2, 0, 1)
    assert not x.is_contiguous()
    # h0 [2 layers * 2 directions, B, H] as a transposed view
    hx = (torch.randn(2, 4, 5, dtype=F64).transpose(0, 1), torch.randn(4, 2, 5, dtype=F64))
    assert not hx[0].is_contiguous()
    with gpudnn.use_backend("reference"):
        run_lstm_pair(ours, theirs, x, hx)


def test_lstm_unbatched_input():
    ours, theirs = lstm_twins(4, 6, num_layers=2, bidirectional=True)
    x = torch.randn(5, 4, dtype=F64)
    hx = (torch.randn(4, 6, dtype=F64), torch.randn(4, 6, dtype=F64))
    run_lstm_pair(ours, theirs, x, hx)
    run_lstm_pair(ours, theirs, x)
    y, (h, c) = ours(x)
    assert y.shape == (5, 12) and h.shape == (4, 6) and c.shape == (4, 6)


@pytest.mark.parametrize("bias,given_hx,unbatched", [(True, True, False), (False, True, False),
                                                     (True, False, False), (True, True, True)])
def test_lstm_cell_reference_matches_torch(bias, given_hx, unbatched):
    theirs = torch.nn.LSTMCell(5, 7, bias=bias).double()
    ours = gnn.LSTMCell(5, 7, bias=bias).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    lead = () if unbatched else (3,)
    x = torch.randn(*lead, 5, dtype=F64)
    hx = (torch.randn(*lead, 7, dtype=F64), torch.randn(*lead, 7, dtype=F64)) if given_hx else None
    with gpudnn.use_backend("reference"):
        compare_with_twin(ours, theirs, x, hx, seed=1)


def test_functional_lstm_cell_matches_torch():
    cell = torch.nn.LSTMCell(3, 4).double()
    x = torch.randn(2, 3, dtype=F64)
    hx = (torch.randn(2, 4, dtype=F64), torch.randn(2, 4, dtype=F64))
    h, c = F.lstm_cell(x, hx, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    hb, cb = cell(x, hx)
    assert_close(h, hb, name="h'")
    assert_close(c, cb, name="c'")


def _leaves(*shapes, seed):
    g = _gen(seed)
    return [torch.randn(s, dtype=F64, generator=g).requires_grad_(True) for s in shapes]


@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_layer_function(reverse):
    steps, batch, inp, hidden = 3, 2, 3, 2
    args = _leaves((steps, batch, inp), (batch, hidden), (batch, hidden), (4 * hidden, inp),
                   (4 * hidden, hidden), (4 * hidden,), (4 * hidden,), seed=7)
    with gpudnn.use_backend("reference"):
        assert torch.autograd.gradcheck(
            lambda *a: lstm_layer(*a, reverse), args)


def test_gradcheck_cell_function():
    batch, inp, hidden = 2, 3, 2
    args = _leaves((batch, inp), (batch, hidden), (batch, hidden), (4 * hidden, inp),
                   (4 * hidden, hidden), (4 * hidden,), (4 * hidden,), seed=8)
    with gpudnn.use_backend("reference"):
        assert torch.autograd.gradcheck(lstm_cell_step, args)


def test_gradcheck_two_layer_bidirectional_without_bias():
    ours = gnn.LSTM(2, 2, num_layers=2, bidirectional=True, bias=False).double()
    x, h0, c0 = _leaves((2, 1, 2), (4, 1, 2), (4, 1, 2), seed=9)
    with gpudnn.use_backend("reference"):
        def network(x, h0, c0):
            y, (h_n, c_n) = ours(x, (h0, c0))
            return y, h_n, c_n

        assert torch.autograd.gradcheck(network, (x, h0, c0))


def test_modules_match_torch_signature_state_dict_and_repr():
    kwargs = dict(num_layers=2, bias=False, batch_first=True, dropout=0.25, bidirectional=True)
    ours, theirs = gnn.LSTM(3, 4, **kwargs), torch.nn.LSTM(3, 4, **kwargs)
    # RNNBase in mode "LSTM" like torch's, but not a torch.nn.LSTM: torch.compile refuses to
    # trace instances of torch's RNN classes; convert still maps torch.nn.LSTM to it
    assert isinstance(ours, torch.nn.RNNBase) and ours.mode == "LSTM"
    assert not isinstance(ours, torch.nn.LSTM) and gnn.LSTM.torch_twin is torch.nn.LSTM
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    assert repr(ours) == repr(theirs)
    cell_ours, cell_theirs = gnn.LSTMCell(3, 4), torch.nn.LSTMCell(3, 4)
    assert cell_ours.state_dict().keys() == cell_theirs.state_dict().keys()
    assert repr(cell_ours) == repr(cell_theirs)
    # positional arguments as torch.nn.LSTM takes them
    pos = gnn.LSTM(3, 4, 2, False, True, 0.0, True)
    assert (pos.num_layers, pos.bias, pos.batch_first, pos.bidirectional) == (2, False, True, True)


def test_lstm_zero_size_batch():
    ours, theirs = lstm_twins(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(5, 0, 3, dtype=F64, requires_grad=True)
    with gpudnn.use_backend("reference"):
        y, (h, c) = ours(x)
    yb, (hb, cb) = theirs(x)
    assert y.shape == yb.shape == (5, 0, 8)
    assert h.shape == hb.shape == (4, 0, 4) and c.shape == (4, 0, 4)
    with gpudnn.use_backend("reference"):
        (y.sum() + h.sum() + c.sum()).backward()
    assert x.grad.shape == x.shape
    for name, p in ours.named_parameters():
        assert torch.equal(p.grad, torch.zeros_like(p)), name


def test_lstm_dropout_between_layers():
    ours = gnn.LSTM(3, 4, num_layers=3, dropout=0.5).double()
    x = torch.randn(6, 2, 3, dtype=F64)
    # the module draws one dropout seed per inner layer boundary, in order: replay them by hand
    torch.manual_seed(123)
    y, (h, c) = ours(x)
    torch.manual_seed(123)
    layer_in, hs, cs = x, [], []
    for layer in range(3):
        if layer:
            layer_in = F.dropout(layer_in, 0.5, training=True)
        weights = [getattr(ours, f"{n}_l{layer}") for n in
                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        layer_in, (hl, cl) = F.lstm(layer_in, None, weights, 1, True, False, 0.0, True, False)
        hs.append(hl)
        cs.append(cl)
    assert_close(y, layer_in, name="output")
    assert_close(h, torch.cat(hs), name="h_n")
    assert_close(c, torch.cat(cs), name="c_n")
    # the mask really drops: some output differs from the no-dropout network
    with torch.no_grad():
        ours.eval()
        y_eval, _ = ours(x)
    assert not torch.allclose(y, y_eval)
    # eval mode: no dropout, equal to torch.nn.LSTM in eval mode
    theirs = torch.nn.LSTM(3, 4, num_layers=3, dropout=0.5).double().eval()
    theirs.load_state_dict(ours.state_dict())
    assert_close(y_eval, theirs(x)[0], name="eval output")


def test_lstm_under_no_grad_saves_nothing_and_matches():
    ours, theirs = lstm_twins(3, 4, bidirectional=True)
    x = torch.randn(4, 2, 3, dtype=F64)
    with torch.no_grad(), gpudnn.use_backend("reference"):
        y, (h, c) = ours(x)
    yb, (hb, cb) = theirs(x)
    assert_close(y, yb, name="output")
    assert_close(c, cb, name="c_n")


def test_lstm_bad_input():
    with pytest.raises(NotImplementedError, match="proj_size"):
        gnn.LSTM(3, 4, proj_size=2)
    ours = gnn.LSTM(3, 4, num_layers=2)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.randn(5, 2, 3), [5, 3])
    with pytest.raises(NotImplementedError, match="PackedSequence"):
        ours(packed)
    with pytest.raises(ValueError, match="input_size"):
        ours(torch.randn(5, 2, 4))
    with pytest.raises(ValueError, match="2D or 3D"):
        ours(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        ours(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(ValueError, match=r"hx\[1\]"):
        ours(torch.randn(5, 2, 3), (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(TypeError, match="hx"):
        ours(torch.randn(5, 2, 3), torch.zeros(2, 2, 4))
    with pytest.raises(TypeError, match="dtypes differ"):
        ours(torch.randn(5, 2, 3, dtype=F64))
    with pytest.raises(TypeError, match="floating"):
        ours(torch.ones(5, 2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="sequence length"):
        ours(torch.randn(0, 2, 3))
    weights = [getattr(ours, n) for n in ours._flat_weights_names]
    with pytest.raises(ValueError, match="dropout"):
        F.lstm(torch.randn(5, 2, 3), None, weights, 2, True, False, 1.5, True, False)
    with pytest.raises(ValueError, match="weight tensors"):
        F.lstm(torch.randn(5, 2, 3), None, weights[:-1], 2, True, False, 0.0, True, False)
    with pytest.raises(ValueError, match="w_hh of layer 1"):
        F.lstm(torch.randn(5, 2, 3), None, weights[:5] + [torch.zeros(16, 3)] + weights[6:], 2,
               True, False, 0.0, True, False)
    cell = gnn.LSTMCell(3, 4)
    with pytest.raises(ValueError, match="w_ih"):
        cell(torch.randn(2, 5))
    with pytest.raises(ValueError, match="1D or 2D"):
        cell(torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match=r"hx\[0\]"):
        cell(torch.randn(2, 3), (torch.zeros(3, 4), torch.zeros(2, 4)))


@pytest.mark.parametrize("cls,args", [(gnn.LSTM, dict(num_layers=2, bidirectional=True)),
                                      (gnn.LSTMCell, {}),
                                      (gnn.GRU, dict(num_layers=2, bidirectional=True)),
                                      (gnn.GRUCell, {})],
                         ids=["LSTM", "LSTMCell", "GRU", "GRUCell"])
def test_recurrent_float32_on_device(cls, args, device):
    # CUDA: the GPU kernels against torch's; CPU: the reference (the interpreter is slow here)
    torch.manual_seed(14)
    theirs = getattr(torch.nn, cls.__name__)(5, 6, **args)
    ours = cls(5, 6, **args)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 3, 5) if issubclass(cls, torch.nn.RNNBase) else torch.randn(3, 5)
    compare_float32_on_device(ours, theirs, x, device=device, grad_scale=10.0)


@pytest.mark.parametrize("reverse", [False, True])
def test_reference_layer_backward_of_an_empty_sequence(reverse):
    # no steps: the state gradients pass straight through to h0 and c0, weights get zeros
    import numpy as np
    from gpudnn.reference.lstm import lstm_layer_backward, lstm_layer_forward
    rng = np.random.default_rng(0)
    batch, inputs, hidden = 2, 3, 4
    x = np.zeros((0, batch, inputs))
    h0, c0 = rng.standard_normal((batch, hidden)), rng.standard_normal((batch, hidden))
    w_ih, w_hh = rng.standard_normal((4 * hidden, inputs)), rng.standard_normal((4 * hidden, hidden))
    bias = rng.standard_normal(4 * hidden)
    y, h_n, c_n, saved = lstm_layer_forward(x, h0, c0, w_ih, w_hh, bias, bias, reverse, True)
    assert y.shape == (0, batch, hidden) and (h_n == h0).all() and (c_n == c0).all()
    g_h, g_c = rng.standard_normal((batch, hidden)), rng.standard_normal((batch, hidden))
    grads = lstm_layer_backward(y, g_h, g_c, x, h0, c0, w_ih, w_hh, y, saved, reverse, (True,) * 7)
    assert grads[0].shape == x.shape
    assert (grads[1] == g_h).all() and (grads[2] == g_c).all()
    for g, w in zip(grads[3:], (w_ih, w_hh, bias, bias)):
        assert g.shape == w.shape and not g.any()
