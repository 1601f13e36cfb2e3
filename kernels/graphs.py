"""Replaying a fixed sequence of kernel launches as one CUDA graph.

A recurrence (the LSTM's step loop) launches the same kernels with the same arguments on every
call of the same shape; only the tensors' addresses change. Each launch costs tens of
microseconds of host time (Triton's Python launcher), far more than a small step kernel runs,
so a loop of T launches leaves the GPU idle. The kernels of such a loop therefore read every
tensor address from a small device *pointer table* instead of taking them as arguments. The
launches then depend on nothing but the shape key and the table's own address, so they are
captured once per (key, device, stream) into a CUDA graph and replayed; each call only rewrites
the table first (one launch, stream-ordered before the replay).

``LaunchSequence.run(write, launch)`` enqueues ``write(table)`` (every call) and then
``launch(table)`` (eagerly, or as a graph replay). Rules of ``launch``: it enqueues kernels on
the current stream, computes every argument from the key and ``table`` alone (a graph bakes its
arguments: no tensor, global switch or other state may be read at launch time), allocates
nothing and never synchronises.

The first call of a key runs eagerly (it compiles and loads every kernel variant, which must not
happen during a capture); the second captures and replays; later calls replay. Graphs are used
only on CUDA, when ``GPUDNN_CUDA_GRAPHS`` is not ``0`` and the stream is not already being
captured (inside a user's capture the launches go into the user's graph, with a fresh table).
A failed capture warns and switches graphs off for the process: torch's allocator may be left
in a capture state after a failed ``capture_end``, so it is not retried.
"""
from __future__ import annotations

import collections
import contextlib
import os
import threading
import warnings
from typing import Callable, Hashable

import torch

ENV = "GPUDNN_CUDA_GRAPHS"
_failure: list[str] = []  # the first failed capture's message; then no more captures


def graphs_enabled() -> bool:
    """False when ``GPUDNN_CUDA_GRAPHS=0`` (read at every call, so a benchmark can compare) or
    after a capture failed in this process."""
    return os.environ.get(ENV, "1").strip() != "0" and not _failure


def on_device(device: torch.device):
    """Make ``device`` current: Triton launches on the current device's current stream, and a
    graph replays on its capture device's, so a table write and its replay must agree."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _stream_capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _capture(fn: Callable[[], None], device: torch.device):
    """The launches of ``fn()`` captured into a torch.cuda.CUDAGraph on a side stream (capture
    needs a non-default stream; nothing runs until replay). thread_local: autograd's backward
    threads and other user threads may keep working while this thread captures."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.device(device), torch.cuda.stream(_side_stream(device)):
        graph.capture_begin(capture_error_mode="thread_local")
        try:
            fn()
        finally:
            graph.capture_end()
    return graph


_SIDE_STREAMS: dict[int, torch.cuda.Stream] = {}
_CAPTURE_LOCK = threading.Lock()  # one side stream per device, shared by all threads


def _side_stream(device: torch.device):
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SIDE_STREAMS:
        _SIDE_STREAMS[index] = torch.cuda.Stream(device=index)
    return _SIDE_STREAMS[index]


def _can_capture(device: torch.device) -> bool:
    return device.type == "cuda" and graphs_enabled() and not _stream_capturing(device)


class LaunchSequence:
    """One key's pointer table (int64 ``[table_size]`` on the device) and, once captured, its
    graph. ``capturable`` False: launched directly every time (a single launch gains nothing
    from a graph; a one-off inside a user's capture)."""

    def __init__(self, table: torch.Tensor, capturable: bool, stream=None):
        self.table = table
        self.capturable = capturable
        self.stream = stream  # the CUDA stream it is replayed on
        self.graph = None
        self.eager_runs = 0
        # threads sharing a stream share this table: its write and the launches that read it
        # are enqueued together
        self.lock = threading.Lock()

    def run(self, write: Callable[[torch.Tensor], None],
            launch: Callable[[torch.Tensor], None]) -> None:
        """Enqueue ``write(self.table)`` then ``launch(self.table)``: replayed from a graph
        when one is (or can now be) captured, else launched directly."""
        with self.lock:
            write(self.table)
            if self.capturable and _can_capture(self.table.device):
                if self.graph is None and self.eager_runs > 0:
                    self.graph = _try_capture(lambda: launch(self.table), self.table.device)
                if self.graph is not None:
                    self.graph.replay()
                    return
            self.eager_runs += 1
            launch(self.table)


def _try_capture(fn: Callable[[], None], device: torch.device):
    """The graph of ``fn``, or None (with a warning, graphs off from now on) if capture fails."""
    try:
        with _CAPTURE_LOCK:
            return _capture(fn, device)
    except Exception as error:  # a driver or launcher that refuses capture
        _failure.append(str(error))
        warnings.warn(f"gpudnn: CUDA-graph capture of a kernel loop failed ({error}); gpudnn "
                      "launches its loops one by one from now on. If CUDA errors follow, "
                      f"torch's allocator may be left in capture mode: set {ENV}=0",
                      RuntimeWarning, stacklevel=4)
        return None


class LaunchGraphs:
    """Least-recently-used cache of ``LaunchSequence`` by (key, device, stream)."""

    def __init__(self, table_size: int, capacity: int = 64):
        self.table_size = table_size
        self.capacity = capacity
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._retired: list = []  # evicted graphs, kept until the work queued before is done
        self._lock = threading.Lock()

    def sequence(self, key: Hashable, device: torch.device, capture: bool = True
                 ) -> LaunchSequence:
        """The sequence of ``key`` on ``device`` and the current stream (call it under
        ``on_device(device)``); ``capture`` False: never captured. A stream being captured by
        the user gets a fresh one-off table (the user's graph owns it), never stored."""
        if _stream_capturing(device):
            return LaunchSequence(self._new_table(device), capturable=False)
        stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        full_key = (key, capture, str(device), stream.cuda_stream if stream is not None else 0)
        with self._lock:
            entry = self._entries.get(full_key)
            if entry is None:
                entry = self._entries[full_key] = LaunchSequence(self._new_table(device),
                                                                 capturable=capture,
                                                                 stream=stream)
                self._evict()
            self._entries.move_to_end(full_key)
            return entry

    def _new_table(self, device: torch.device) -> torch.Tensor:
        return torch.empty(self.table_size, dtype=torch.int64, device=device)

    def _evict(self) -> None:
        # cudaGraphExecDestroy of a graph still queued is deferred by CUDA, and the table is
        # freed stream-ordered; holding an evicted graph until an event recorded after its last
        # replay has passed keeps this independent of either guarantee
        self._retired = [(event, entry) for event, entry in self._retired
                         if not event.query()]
        while len(self._entries) > self.capacity:
            _, entry = self._entries.popitem(last=False)
            if entry.graph is not None and entry.stream is not None:
                event = torch.cuda.Event()
                event.record(entry.stream)
                self._retired.append((event, entry))

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
