"""CUDA-graph replay of kernel loops (kernels/graphs.py) and the Triton LSTM step loops that use
it. On the CPU a capture is emulated: it records every kernel launch's arguments, refusing any
tensor but the pointer table (a CUDA graph bakes its arguments, so a loop that passed another
tensor would replay on stale memory), and a replay re-issues exactly those launches. Under
`make test-gpu` the same LSTM tests capture and replay real CUDA graphs."""
import pytest
import torch

import gpudnn
import gpudnn.nn as gnn
from gpudnn.kernels import graphs
from gpudnn.ops.lstm import lstm_layer
from gpudnn.testing import assert_close
from graph_capture import RecordedGraph, emulated_captures
from helpers import lstm_args

triton_lstm = pytest.importorskip("gpudnn.kernels.triton.lstm")
from gpudnn.kernels.triton._table import (TABLE_SLOTS, addresses_aligned,  # noqa: E402
                                          write_pointer_table)

F32, F64 = torch.float32, torch.float64
_STEP_KERNELS = ("_lstm_step_forward_kernel", "_lstm_step_backward_kernel")


@pytest.fixture
def capture_stats(monkeypatch):
    """Counts of captures and replays; on the CPU captures are emulated (see the module
    docstring), on CUDA they are real."""
    yield from emulated_captures(monkeypatch, triton_lstm, _STEP_KERNELS)


# --- the cache -----------------------------------------------------------------------------

def _counting(log):
    """(write, launch) functions that log the table address they are given, in order."""
    return (lambda table: log.append(("write", table.data_ptr())),
            lambda table: log.append(("launch", table.data_ptr())))


def _fake_capture(stats):
    def capture(fn, device):
        stats["captures"] += 1
        return RecordedGraph([], stats)
    return capture


@pytest.fixture
def cpu_capture(monkeypatch):
    """Captures allowed on the CPU, emulated by an empty recorded graph; counts."""
    stats = {"captures": 0, "replays": 0}
    monkeypatch.setattr(graphs, "_failure", [])
    monkeypatch.setattr(graphs, "_can_capture", lambda device: True)
    monkeypatch.setattr(graphs, "_capture", _fake_capture(stats))
    return stats


def test_first_call_runs_eagerly_the_second_captures_then_replays(cpu_capture, monkeypatch):
    cache = graphs.LaunchGraphs(TABLE_SLOTS)
    log = []
    sequence = cache.sequence("key", torch.device("cpu"))
    sequence.run(*_counting(log))
    table = sequence.table.data_ptr()
    assert log == [("write", table), ("launch", table)]
    assert (cpu_capture["captures"], cpu_capture["replays"]) == (0, 0)
    assert cache.sequence("key", torch.device("cpu")) is sequence
    for calls in (2, 3):
        sequence.run(*_counting(log))  # the table is rewritten, the launches come from replay
        assert log[-1] == ("write", table) and len(log) == calls + 1
        assert (cpu_capture["captures"], cpu_capture["replays"]) == (1, calls - 1)
    assert cache.sequence("other", torch.device("cpu")) is not sequence
    monkeypatch.setattr(graphs, "_can_capture", lambda device: False)  # e.g. switched off now
    sequence.run(*_counting(log))
    assert log[-2:] == [("write", table), ("launch", table)] and cpu_capture["replays"] == 2


def test_a_failed_capture_warns_and_switches_graphs_off(monkeypatch):
    def refuse(fn, device):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs, "_failure", [])
    monkeypatch.setattr(graphs, "_capture", refuse)
    monkeypatch.setattr(graphs, "_can_capture", lambda device: graphs.graphs_enabled())
    cache = graphs.LaunchGraphs(TABLE_SLOTS)
    sequence = cache.sequence("key", torch.device("cpu"))
    log = []
    sequence.run(*_counting(log))
    with pytest.warns(RuntimeWarning, match=f"not permitted.*{graphs.ENV}=0"):
        sequence.run(*_counting(log))
    other = cache.sequence("other", torch.device("cpu"))
    for s in (sequence, other, other):  # no second attempt anywhere, no second warning
        s.run(*_counting(log))
    assert [what for what, _ in log].count("launch") == 5 and sequence.graph is None
    assert not graphs.graphs_enabled()


def test_least_recently_used_sequences_are_evicted():
    cache = graphs.LaunchGraphs(TABLE_SLOTS, capacity=2)
    cpu = torch.device("cpu")
    first = cache.sequence("a", cpu)
    second = cache.sequence("b", cpu)
    assert cache.sequence("a", cpu) is first  # "a" is now the most recent
    cache.sequence("c", cpu)  # evicts "b"
    assert len(cache) == 2
    assert cache.sequence("a", cpu) is first
    assert cache.sequence("b", cpu) is not second and len(cache) == 2


def test_uncapturable_and_one_off_sequences(cpu_capture, monkeypatch):
    cache = graphs.LaunchGraphs(TABLE_SLOTS)
    cpu = torch.device("cpu")
    single = cache.sequence("key", cpu, capture=False)  # kept, launched directly every time
    assert cache.sequence("key", cpu, capture=False) is single
    assert cache.sequence("key", cpu) is not single
    for _ in range(3):
        single.run(*_counting([]))
    assert cpu_capture["captures"] == 0
    # inside a user's capture: a fresh table per call, so the user's graph owns its own
    monkeypatch.setattr(graphs, "_stream_capturing", lambda device: True)
    before = len(cache)
    one_off = cache.sequence("key", cpu)
    assert cache.sequence("key", cpu) is not one_off and len(cache) == before
    for _ in range(3):
        one_off.run(*_counting([]))
    assert cpu_capture["captures"] == 0


def test_graphs_are_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv(graphs.ENV, "0")
    assert not graphs.graphs_enabled()
    assert not graphs._can_capture(torch.device("cuda"))  # decided before touching CUDA
    monkeypatch.setenv(graphs.ENV, "1")
    assert graphs.graphs_enabled()
    assert not graphs._can_capture(torch.device("cpu"))


def test_the_pointer_table_holds_the_addresses(device):
    table = torch.full((TABLE_SLOTS,), -1, dtype=torch.int64, device=device)
    tensors = [torch.empty(5, device=device), None, torch.empty(3, 2, device=device)]
    write_pointer_table(table, tensors)
    expected = [tensors[0].data_ptr(), table.data_ptr(), tensors[2].data_ptr()] \
        + [table.data_ptr()] * (TABLE_SLOTS - 3)
    assert table.cpu().tolist() == expected
    odd = torch.empty(9, device=device)[1:]  # 4 bytes past a 16-byte boundary
    assert addresses_aligned(tensors) and not addresses_aligned([tensors[0], odd])
    with pytest.raises(ValueError, match="8 addresses"):
        write_pointer_table(table, [None] * (TABLE_SLOTS + 1))


# --- the LSTM loops under capture and replay -----------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_layer_replays_are_right_for_new_tensors_of_the_same_shape(capture_stats, device,
                                                                   reverse):
    """Three calls on fresh tensors (new addresses) of one shape: eager, captured, replayed;
    each forward and gradient matches the reference."""
    gen = torch.Generator().manual_seed(40 + reverse)
    for call in range(3):
        args64 = lstm_args(gen, (6, 3, 5), 18)
        ref_in = [a.clone().requires_grad_(True) for a in args64]
        ker_in = [a.to(device, F32).requires_grad_(True) for a in args64]
        with gpudnn.use_backend("reference"):
            expected = lstm_layer(*ref_in, reverse)
        with gpudnn.use_backend("triton"):
            got = lstm_layer(*ker_in, reverse)
        for name, a, e in zip(("y", "h_n", "c_n"), got, expected):
            assert_close(a, e, F32, name=f"call {call} {name}")
        cot = [torch.randn(e.shape, dtype=F64, generator=gen) for e in expected]
        torch.autograd.backward(expected, cot)
        with gpudnn.use_backend("triton"):
            torch.autograd.backward(got, [c.to(device, F32) for c in cot])
        for name, a, e in zip(("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"), ker_in, ref_in):
            assert_close(a.grad, e.grad, F32, name=f"call {call} grad {name}", scale=4.0)
    # the forward loop and the backward loop: captured once each, replayed on calls 2 and 3
    assert (capture_stats["captures"], capture_stats["replays"]) == (2, 4)
    for loops in (triton_lstm._FORWARD_LOOPS, triton_lstm._BACKWARD_LOOPS):
        assert [s.graph is not None for s in loops._entries.values()] == [True]


def test_module_whose_layers_share_a_loop_matches_torch(capture_stats, device):
    """Two layers of a bidirectional LSTM share each direction's loop key, so one captured loop
    serves both layers with the table rewritten in between; three calls against torch."""
    torch.manual_seed(8)
    theirs = torch.nn.LSTM(4, 9, num_layers=2, bidirectional=True).double()
    ours = gnn.LSTM(4, 9, num_layers=2, bidirectional=True)
    ours.load_state_dict(theirs.state_dict())
    ours = ours.to(device)
    for call in range(3):
        x64 = torch.randn(5, 2, 4, dtype=F64)
        xa, xb = x64.to(device, F32).requires_grad_(True), x64.clone().requires_grad_(True)
        with gpudnn.use_backend("triton"):
            ya, (ha, ca) = ours(xa)
        yb, (hb, cb) = theirs(xb)
        for name, a, e in (("output", ya, yb), ("h_n", ha, hb), ("c_n", ca, cb)):
            assert_close(a, e, F32, name=f"call {call} {name}")
        cot = [torch.randn(t.shape, dtype=F64) for t in (yb, hb, cb)]
        torch.autograd.backward([yb, hb, cb], cot)
        with gpudnn.use_backend("triton"):
            torch.autograd.backward([ya, ha, ca], [c.to(device, F32) for c in cot])
        assert_close(xa.grad, xb.grad, F32, name=f"call {call} input grad", scale=4.0)
    for (name, pa), (_, pb) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert_close(pa.grad, pb.grad, F32, name=f"{name} grad (3 calls)", scale=8.0)
    # per direction: forward and backward loops, each captured once on its second use
    assert capture_stats["captures"] == 4
    assert len(triton_lstm._FORWARD_LOOPS) == 2 and len(triton_lstm._BACKWARD_LOOPS) == 2


def test_a_single_step_is_launched_directly(capture_stats, device):
    """The cell (one step) and one-step sequences reuse a table and are never captured."""
    cell = gnn.LSTMCell(3, 5).to(device)
    with gpudnn.use_backend("triton"):
        for _ in range(3):
            h, c = cell(torch.randn(2, 3, device=device))
            (h.sum() + c.sum()).backward()
    assert capture_stats["captures"] == 0
    assert [s.graph for s in triton_lstm._FORWARD_LOOPS._entries.values()] == [None]
