"""CUDA-graph capture of the Triton step loops (kernels/graphs.py) in tests. On the CPU a capture
is emulated: it records every kernel launch's arguments, refusing any tensor but the pointer
table (a CUDA graph bakes its arguments, so a loop that passed another tensor would replay on
stale memory), and a replay re-issues exactly those launches. On CUDA captures are real and
their replays counted."""
import torch

from gpudnn.kernels import graphs
from helpers import DEVICE


class RecordedGraph:
    def __init__(self, launches, stats):
        self.launches, self.stats = launches, stats

    def replay(self):
        self.stats["replays"] += 1
        for kernel, grid, args, kwargs in self.launches:
            kernel[grid](*args, **kwargs)


class _CountedGraph:
    """A real CUDA graph whose replays are counted."""

    def __init__(self, graph, stats):
        self.graph, self.stats = graph, stats

    def replay(self):
        self.stats["replays"] += 1
        self.graph.replay()


class _Recorder:
    """Stands in for a Triton kernel during an emulated capture."""

    def __init__(self, kernel, launches):
        self.kernel, self.launches = kernel, launches

    def __getitem__(self, grid):
        from gpudnn.kernels.triton._table import TABLE_SLOTS

        def launch(*args, **kwargs):
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            assert len(tensors) == 1 and tensors[0].dtype == torch.int64 \
                and tensors[0].numel() == TABLE_SLOTS, \
                "a captured launch may take no tensor but the pointer table"
            self.launches.append((self.kernel, grid, args, kwargs))
        return launch


def emulated_captures(monkeypatch, family, kernel_names):
    """Generator for a fixture: counts of captures and replays of the step loops of Triton
    module ``family`` (its ``_FORWARD_LOOPS`` / ``_BACKWARD_LOOPS`` caches emptied before and
    after), whose launches of ``kernel_names`` are recorded during an emulated capture."""
    stats = {"captures": 0, "replays": 0}
    caches = (family._FORWARD_LOOPS, family._BACKWARD_LOOPS)
    for cache in caches:
        cache.clear()
    real_capture = graphs._capture

    def capture(fn, device):
        stats["captures"] += 1
        if device.type == "cuda":
            return _CountedGraph(real_capture(fn, device), stats)
        launches = []
        with monkeypatch.context() as patch:
            for name in kernel_names:
                patch.setattr(family, name, _Recorder(getattr(family, name), launches))
            fn()
        assert launches, "the capture recorded no launch"
        return RecordedGraph(launches, stats)

    monkeypatch.setattr(graphs, "_capture", capture)
    monkeypatch.setattr(graphs, "_failure", [])
    if DEVICE != "cuda":
        monkeypatch.setattr(graphs, "_can_capture", lambda device: True)
    yield stats
    for cache in caches:
        cache.clear()
