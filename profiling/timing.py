"""Timing on a CUDA GPU: CUDA events, warm-up, medians, L2 flush, rotated inputs, graph replay.

Two methods, chosen per case by the harness:
- ``"events+flush"`` (large kernels): every repetition writes a buffer twice the L2's size
  before its start event, so the kernel reads its inputs from device memory, not the cache.
- ``"graph+rotate"`` (small kernels, where launch gaps would dominate): one CUDA graph holds a
  sequence of calls that cycle through enough input sets to exceed the L2 twice over; the time
  per call is a replay's time over the number of calls. Code that cannot be captured (a host
  sync inside an op, say) falls back to ``"loop+rotate"``: the same sequence launched eagerly
  between two events, which then includes the CPU's launch overhead, as a user would see it.

Every method reports the median and the 20th/80th percentiles over its repetitions.
``Timer`` is the interface the harness uses, so tests and ``--dry-run`` pass a
``FakeTimer``.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Sequence

import torch


@dataclass
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    method: str

    def as_dict(self) -> dict:
        return {"time_ms": self.median_ms, "p20_ms": self.p20_ms, "p80_ms": self.p80_ms,
                "reps": self.reps, "method": self.method}


def summarize(samples_ms: Sequence[float], method: str) -> Timing:
    """Median and 20th/80th percentiles of per-call times."""
    if not samples_ms:
        raise ValueError("no timing samples")
    s = sorted(samples_ms)
    q = statistics.quantiles(s, n=5, method="inclusive") if len(s) > 1 else [s[0]] * 4
    return Timing(statistics.median(s), q[0], q[3], len(s), method)


def l2_bytes(device: torch.device | int | None = None) -> int:
    props = torch.cuda.get_device_properties(device or torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 50 * 2 ** 20) or 50 * 2 ** 20)


class Timer:
    """Times a callable ``call(i)`` that runs one call on input set ``i % n_sets``."""

    def __init__(self, warmup_ms: float = 25.0, rep_ms: float = 100.0, min_reps: int = 10,
                 max_reps: int = 1000):
        self.warmup_ms, self.rep_ms = warmup_ms, rep_ms
        self.min_reps, self.max_reps = min_reps, max_reps
        self._flush_buffer: torch.Tensor | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._flush_buffer is None:
            self._flush_buffer = torch.empty(2 * l2_bytes() // 4, dtype=torch.int32,
                                             device="cuda")
        self._flush_buffer.zero_()

    def _reps(self, estimate_ms: float) -> tuple[int, int]:
        estimate_ms = max(estimate_ms, 1e-4)
        warm = max(1, int(self.warmup_ms / estimate_ms))
        reps = int(self.rep_ms / estimate_ms)
        return min(warm, self.max_reps), max(self.min_reps, min(reps, self.max_reps))

    @staticmethod
    def _event_pairs(n: int):
        return ([torch.cuda.Event(enable_timing=True) for _ in range(n)],
                [torch.cuda.Event(enable_timing=True) for _ in range(n)])

    # -- methods ---------------------------------------------------------------------------
    def events_flush(self, call: Callable[[int], object], n_sets: int = 1) -> Timing:
        """One call per repetition, L2 flushed before each."""
        call(0)
        torch.cuda.synchronize()
        starts, ends = self._event_pairs(3)
        for i in range(3):
            self._flush()
            starts[i].record()
            call(i % n_sets)
            ends[i].record()
        torch.cuda.synchronize()
        estimate = min(s.elapsed_time(e) for s, e in zip(starts, ends))
        warm, reps = self._reps(estimate)
        for i in range(warm):
            call(i % n_sets)
        starts, ends = self._event_pairs(reps)
        for i in range(reps):
            self._flush()
            starts[i].record()
            call(i % n_sets)
            ends[i].record()
        torch.cuda.synchronize()
        return summarize([s.elapsed_time(e) for s, e in zip(starts, ends)], "events+flush")

    def _sequence(self, run_sequence: Callable[[], object], calls: int, method: str) -> Timing:
        start, end = self._event_pairs(1)
        start[0].record()
        run_sequence()
        end[0].record()
        torch.cuda.synchronize()
        estimate = start[0].elapsed_time(end[0])
        warm, reps = self._reps(estimate)
        for _ in range(min(warm, 50)):
            run_sequence()
        starts, ends = self._event_pairs(reps)
        for i in range(reps):
            starts[i].record()
            run_sequence()
            ends[i].record()
        torch.cuda.synchronize()
        return summarize([s.elapsed_time(e) / calls for s, e in zip(starts, ends)], method)

    def loop(self, fn: Callable[[], object], calls: int) -> Timing:
        """``calls`` eager calls back to back between two events, per call (training steps)."""
        def sequence():
            for _ in range(calls):
                fn()
        return self._sequence(sequence, calls, "loop")

    def graph_rotate(self, call: Callable[[int], object], n_sets: int,
                     calls: int | None = None) -> Timing:
        """CUDA-graph replay of ``calls`` calls cycling through ``n_sets`` input sets; falls back
        to an eager loop of the same calls when the code cannot be captured."""
        calls = calls or max(n_sets, 20)

        def loop():
            for i in range(calls):
                call(i % n_sets)

        # warm up on a side stream (what torch's graph docs ask for before capture)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(min(3, calls)):
                call(i % n_sets)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                loop()
        except Exception as exc:  # not capturable: time the eager loop instead
            del graph
            torch.cuda.synchronize()
            timing = self._sequence(loop, calls, "loop+rotate")
            timing.method = f"loop+rotate (graph capture failed: {type(exc).__name__}: " \
                            f"{str(exc).splitlines()[0][:160] if str(exc) else ''})"
            return timing
        torch.cuda.synchronize()
        try:
            return self._sequence(graph.replay, calls, "graph+rotate")
        finally:
            del graph


class FakeTimer:
    """``Timer``'s interface without a GPU, for tests and ``--dry-run``: runs each input set once
    (so the code paths run) and reports a fixed time, or the next of a list of times per
    measurement."""

    def __init__(self, ms):
        self.times = list(ms) if isinstance(ms, (list, tuple)) else None
        self.ms = ms

    def _time(self, call, n_sets, method):
        for i in range(n_sets):
            call(i)
        ms = self.times.pop(0) if self.times is not None else self.ms
        return Timing(ms, ms, ms, n_sets, method)

    def events_flush(self, call, n_sets=1):
        return self._time(call, n_sets, "fake-events")

    def graph_rotate(self, call, n_sets, calls=None):
        return self._time(call, n_sets, "fake-graph")

    def loop(self, fn, calls):
        fn()
        return Timing(self.ms, self.ms, self.ms, 1, "fake-loop")


@dataclass
class Memory:
    held_after_forward_bytes: int
    peak_bytes: int

    def as_dict(self) -> dict:
        return {"held_after_forward_bytes": self.held_after_forward_bytes,
                "peak_bytes": self.peak_bytes}


def measure_memory(forward: Callable[[], object], backward: Callable[[object], object]) -> Memory:
    """Device memory a forward keeps alive for backward (saved tensors and the output), and the
    peak of forward + backward, both above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = forward()
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - base
    grads = backward(out)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out, grads
    return Memory(held, peak)
