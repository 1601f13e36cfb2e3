"""The profile run: ceilings, then every case x dtype x pass x backend, then the models.

Robust by construction: every measurement runs inside its own ``try``; a backend that is not
there or fails is recorded with ``status`` "missing" or "error" and the message, and the run
goes on. Results are written after every case, so an interrupted run keeps what it measured.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import traceback
from typing import Callable, Iterable

import torch

from . import costs
from .registry import DTYPES, Case, Instance
from .timing import l2_bytes, measure_memory

GPUDNN_BACKENDS = ("triton", "cupy")
TORCH_BACKENDS = ("eager", "compile", "compile-max")
# a gpudnn backend run under other environment settings, for the cases whose instance lists it
# in ``impls``: the LSTM without its CUDA-graph replay of the step loops shows what it buys
VARIANTS = {"triton-no-graphs": ("triton", {"GPUDNN_CUDA_GRAPHS": "0"})}
# gpudnn's triton ops under torch.compile (Inductor sees their Triton kernels and fuses the torch
# code around them): beside "eager" and "compile" without gpudnn
GPUDNN_COMPILE = "gpudnn+compile"
BACKENDS = GPUDNN_BACKENDS + tuple(VARIANTS) + (GPUDNN_COMPILE,) + TORCH_BACKENDS + ("fused",)
COMPILE_MODES = {"compile": None, "compile-max": "max-autotune-no-cudagraphs",
                 GPUDNN_COMPILE: None}
MAX_ROTATED_SETS = 64
# set by ``python -m profiling --dry-run`` (the CPU rehearsal): gpudnn backends replaced by
# another (the Triton interpreter is too slow for whole models), and torch.compile's backend
# ("eager": dynamo traces, nothing is generated)
STAND_INS: dict = {}
COMPILE_BACKEND = "inductor"


# --- errors -----------------------------------------------------------------------------------

_MISSING_MARKS = ("has no kernel", "is not installed", "no module named", "has no attribute",
                  "not implemented")


def classify(exc: BaseException) -> str:
    """"missing" when the backend or op does not exist (yet) here, else "error"."""
    text = f"{type(exc).__name__}: {exc}".lower()
    if isinstance(exc, (ImportError, NotImplementedError)) or any(m in text for m in
                                                                  _MISSING_MARKS):
        return "missing"
    return "error"


def describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)
    last = f" (at {where[-1].filename}:{where[-1].lineno})" if where else ""
    return f"{type(exc).__name__}: {str(exc)[:600]}{last}"


def cuda_broken(device: str) -> str | None:
    """The error a synchronize raises when an earlier kernel broke the CUDA context."""
    if device != "cuda":
        return None
    try:
        torch.cuda.synchronize()
        torch.empty(1, device="cuda").add_(1)
        torch.cuda.synchronize()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


# --- building the callables ------------------------------------------------------------------

@contextlib.contextmanager
def _gpudnn_backend(name: str):
    import gpudnn
    with gpudnn.use_backend(name):
        yield


@contextlib.contextmanager
def _environment(settings: dict):
    """``os.environ`` updated with ``settings`` inside (gpudnn reads its switches per launch,
    the backward's included, so the whole measurement runs inside)."""
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _recorded(record: dict, device: str, empty_cache: bool = False):
    """Run a measurement: ``status`` "ok" when it completes, else its exception recorded in
    ``record`` (never raised, so one failure never stops the run); on CUDA the device is
    synchronised after (and its cache emptied), so a failure does not leak into the next."""
    try:
        yield
        record["status"] = "ok"
    except Exception as exc:
        record["status"] = classify(exc)
        record["error"] = describe(exc)
    finally:
        if device == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
                if empty_cache:
                    torch.cuda.empty_cache()


def gpudnn_backend(backend: str) -> str:
    """The ``gpudnn.use_backend`` name a profile backend (or variant) runs under."""
    name = VARIANTS[backend][0] if backend in VARIANTS else backend
    name = "triton" if name == GPUDNN_COMPILE else name
    return STAND_INS.get(name, name)


def runs_gpudnn(backend: str) -> bool:
    """Whether a profile backend runs gpudnn's ops (else torch's)."""
    return backend in GPUDNN_BACKENDS or backend in VARIANTS or backend == GPUDNN_COMPILE


def compiled(fn: Callable, backend: str, **kwargs) -> Callable:
    """``torch.compile`` of ``fn`` in the mode of ``backend`` ("compile", "compile-max")."""
    mode = COMPILE_MODES[backend] if COMPILE_BACKEND == "inductor" else None
    return torch.compile(fn, mode=mode, backend=COMPILE_BACKEND, **kwargs)


def make_runner(instance: Instance, backend: str) -> tuple[Callable, list] | None:
    """(callable(*args), extra grad leaves) of ``backend``; None when it does not apply."""
    if runs_gpudnn(backend):
        if backend in VARIANTS and backend not in instance.impls:
            return None
        fn = instance.impls[backend if backend in VARIANTS else "gpudnn"]()
        if backend == GPUDNN_COMPILE:
            fn = compiled(fn, backend, dynamic=False)
        name = gpudnn_backend(backend)

        def run(*args):
            with _gpudnn_backend(name):
                return fn(*args)
        return run, instance.leaves.get("gpudnn", [])
    if backend == "eager":
        return instance.impls["torch"](), instance.leaves.get("torch", [])
    if backend in COMPILE_MODES:
        return compiled(instance.impls["torch"](), backend, dynamic=False), \
            instance.leaves.get("torch", [])
    if backend in instance.impls:
        return instance.impls[backend](), instance.leaves.get(backend, [])
    return None


def _tensor_bytes(args: Iterable) -> int:
    return sum(a.numel() * a.element_size() for a in args if isinstance(a, torch.Tensor))


def rotated_sets(set_bytes: int, cache_bytes: int) -> int:
    """Input sets to cycle through so that one cycle moves at least twice the L2's size."""
    if set_bytes <= 0:
        return 1
    return max(2, min(MAX_ROTATED_SETS, math.ceil(2 * cache_bytes / set_bytes)))


def _relative_error(actual, expected) -> float:
    a, e = actual.detach().double(), expected.detach().double()
    if a.shape != e.shape:
        raise ValueError(f"shape {tuple(a.shape)} != torch's {tuple(e.shape)}")
    denom = torch.linalg.vector_norm(e).item()
    diff = torch.linalg.vector_norm(torch.nan_to_num(a - e, nan=float("inf"))).item()
    return diff / denom if denom else diff


# --- one measurement ------------------------------------------------------------------------

def input_sets(case: Case, instance: Instance, device: str) -> list[list]:
    """The input sets every backend of a case runs on: one for large shapes (the timer flushes
    the L2), enough to exceed the L2 twice for the graph-replayed model shapes."""
    first = instance.make_args()
    n_sets = 1
    if case.use_graph:
        n_sets = rotated_sets(_tensor_bytes(first), l2_bytes() if device == "cuda" else 2 ** 20)
    return [first] + [instance.make_args() for _ in range(n_sets - 1)]


def measure(case: Case, instance: Instance, backend: str, *args) -> dict | None:
    """Time one (case, dtype, pass, backend) on ``sets`` and return its record (None: not
    applicable); see ``_measure``. A variant backend runs under its environment settings."""
    with _environment(VARIANTS[backend][1] if backend in VARIANTS else {}):
        return _measure(case, instance, backend, *args)


def _measure(case: Case, instance: Instance, backend: str, mode: str, dtype: str, timer,
             device: str, ceilings: costs.Ceilings | None, tf32: dict, sets: list[list],
             reference_out: dict) -> dict | None:
    """Time one (case, dtype, pass, backend) on ``sets`` and return its record (None: not
    applicable). ``reference_out`` carries eager's forward output to compare against."""
    es = torch.empty((), dtype=DTYPES[dtype]).element_size()
    flops, nbytes = case.cost(es).of(mode)
    record = {"op": case.op, "family": case.family, "source": case.source, "shape": case.shape,
              "dtype": dtype, "pass": mode, "backend": backend, "flops": flops, "bytes": nbytes}
    with _recorded(record, device):
        made = make_runner(instance, backend)
        if made is None:
            return None
        run, leaves = made
        n_sets = len(sets)
        if mode == "fwd":
            def call(i):
                with torch.no_grad():
                    return run(*sets[i])
        elif mode == "fwd+bwd":
            targets, grad_outs = [], []
            for args in sets:
                out = run(*args)
                targets.append([a for a in args if isinstance(a, torch.Tensor)
                                and a.requires_grad] + list(leaves))
                grad_outs.append(torch.randn_like(out) if out.numel() > 1
                                 else torch.ones_like(out))
                del out

            def call(i):
                return torch.autograd.grad(run(*sets[i]), targets[i], grad_outs[i])
        elif mode == "step":
            def call(i):
                return run()
        else:
            raise ValueError(f"unknown pass {mode!r}")

        if mode == "fwd" and instance.comparable:
            out = call(0)
            if backend == "eager":
                reference_out["out"] = out.detach()
            elif "out" in reference_out and isinstance(out, torch.Tensor):
                record["rel_err_vs_eager"] = _relative_error(out, reference_out["out"])
            del out
        timing = (timer.graph_rotate(call, n_sets) if case.use_graph
                  else timer.events_flush(call, n_sets))
        record.update(timing.as_dict())
        record["rotated_sets"] = n_sets
        if mode == "fwd+bwd" and device == "cuda":
            record.update(measure_memory(
                lambda: run(*sets[0]),
                lambda out: torch.autograd.grad(out, targets[0], grad_outs[0])).as_dict())
        if ceilings is not None:
            matmul = None
            if case.matmul is not None:
                matmul = costs.matmul_key(dtype, tf32.get(case.matmul, False))
            record.update(costs.roofline(flops, nbytes, timing.median_ms / 1e3, ceilings, matmul))
    return record


def add_speedups(records: list[dict]) -> None:
    """Set ``speedup`` on every ok record: baseline time / its time, per baseline, within the
    same (op, shape, dtype, pass)."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["op"], r["source"], r["shape"], r["dtype"], r["pass"]), []).append(r)
    for group in groups.values():
        times = {r["backend"]: r["time_ms"] for r in group if r.get("status") == "ok"}
        for r in group:
            if r.get("status") == "ok":
                r["speedup"] = costs.speedups(times, r["backend"])


def profile_case(case: Case, dtypes: list[str], backends: list[str], timer, device: str,
                 ceilings: costs.Ceilings | None, tf32: dict,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Every dtype x pass x backend of one case."""
    records: list[dict] = []
    for dtype in dtypes:
        _reset_compiler()
        torch.manual_seed(0)
        try:
            instance = case.build(device, DTYPES[dtype])
        except Exception as exc:
            records.append({"op": case.op, "family": case.family, "source": case.source,
                            "shape": case.shape, "dtype": dtype, "pass": "*", "backend": "*",
                            "status": "error", "error": "building inputs: " + describe(exc)})
            log(f"  {case.key} {dtype}: cannot build inputs: {describe(exc)}")
            continue
        try:
            sets = input_sets(case, instance, device)
        except Exception as exc:
            records.append({"op": case.op, "family": case.family, "source": case.source,
                            "shape": case.shape, "dtype": dtype, "pass": "*", "backend": "*",
                            "status": "error", "error": "building inputs: " + describe(exc)})
            continue
        for mode in case.modes:
            reference_out: dict = {}
            order = sorted(backends, key=lambda b: b != "eager")   # eager first: the reference
            for backend in order:
                r = measure(case, instance, backend, mode, dtype, timer, device, ceilings, tf32,
                            sets, reference_out)
                if r is None:
                    continue
                records.append(r)
                log(_log_line(r))
        del instance, sets
        if device == "cuda":
            torch.cuda.empty_cache()
    add_speedups(records)
    return records


def _reset_compiler() -> None:
    with contextlib.suppress(Exception):
        torch._dynamo.reset()


def configure_compiler() -> None:
    """Room for one compiled graph per case without hitting dynamo's recompile limit."""
    import torch._dynamo.config as dynamo_config
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), 64))


def _log_line(r: dict) -> str:
    head = f"  {r['op']:<26} {r['shape'][:44]:<44} {r['dtype']:<4} {r['pass']:<7} " \
           f"{r['backend']:<11}"
    if r.get("status") != "ok":
        return f"{head} {r.get('status')}: {r.get('error', '')[:120]}"
    extra = f" {100 * r['ceiling_fraction']:5.1f}% of ceiling" if "ceiling_fraction" in r else ""
    return f"{head} {r['time_ms']:9.4f} ms{extra}"


# --- end to end -----------------------------------------------------------------------------

def _e2e_variant(task, twin, backend: str, device: str):
    """(parts, optimizers, loss_fn, context factory, optimizer origin) for one backend."""
    import torch.nn.functional as F

    from . import models
    model = copy.deepcopy(twin).to(device)
    context = contextlib.nullcontext
    origin = "torch.optim.Adam"
    loss_fn = getattr(F, task.loss)
    optim_class = torch.optim.Adam
    if runs_gpudnn(backend):
        import gpudnn
        import gpudnn.functional as G
        model = models.to_gpudnn(model)
        loss_fn = getattr(G, task.loss)
        try:
            import gpudnn.optim
            optim_class, origin = gpudnn.optim.Adam, "gpudnn.optim.Adam"
        except ImportError as exc:
            origin = f"torch.optim.Adam (gpudnn.optim not importable: {exc})"

        def context():
            return gpudnn.use_backend(gpudnn_backend(backend))
    parts = task.parts(model)
    if backend in COMPILE_MODES:
        parts = tuple(compiled(p, backend) for p in parts)
    optimizers = [optim_class(p.parameters(), lr=2e-4, betas=task.betas) for p in parts]
    return parts, optimizers, loss_fn, context, origin


def profile_model(task, dtypes: list[str], backends: list[str], timer, device: str,
                  log: Callable[[str], None] = print, steps_per_sample: int = 5) -> list[dict]:
    """Training-step time and peak memory of one model per backend and precision
    (fp32, or bf16 under torch.autocast). The batch is synthetic and fixed."""
    records = []
    for dtype in dtypes:
        torch.manual_seed(0)
        try:
            twin = task.build_twin()
            batch = task.make_batch(torch.device(device), torch.Generator().manual_seed(1))
        except Exception as exc:   # gpudnn.models missing or changed
            records.append({"model": task.name, "dtype": dtype, "backend": "*",
                            "status": classify(exc), "error": "building the model: "
                            + describe(exc)})
            log(f"  model {task.name}: not measured: {records[-1]['error'][:160]}")
            continue
        for backend in backends:
            if backend == "fused":
                continue
            _reset_compiler()
            record = {"model": task.name, "dtype": dtype, "backend": backend,
                      "precision": "fp32" if dtype == "fp32" else f"{dtype} autocast"}
            with _recorded(record, device, empty_cache=True):
                parts, optimizers, loss_fn, context, origin = _e2e_variant(
                    task, twin, backend, device)
                record["optimizer"] = origin

                def step():
                    autocast = (torch.autocast(device_type=torch.device(device).type,
                                               dtype=DTYPES[dtype]) if dtype != "fp32"
                                else contextlib.nullcontext())
                    with context(), autocast:
                        return task.step(parts, optimizers, batch, loss_fn)

                record["first_loss"] = float(step().detach().float())
                if device == "cuda":
                    for _ in range(2):
                        step()
                    record["peak_bytes"] = measure_memory(step, lambda loss: None).peak_bytes
                record.update(timer.loop(step, steps_per_sample).as_dict())
            records.append(record)
            if record["status"] == "ok":
                log(f"  model {task.name:<5} {dtype:<4} {backend:<11} {record['time_ms']:9.3f}"
                    f" ms/step")
            else:
                log(f"  model {task.name:<5} {dtype:<4} {backend:<11} {record['status']}: "
                    f"{record['error'][:120]}")
    groups: dict = {}
    for r in records:
        if r["status"] == "ok":
            groups.setdefault(r["dtype"], {})[r["backend"]] = r["time_ms"]
    for r in records:
        if r["status"] == "ok":
            r["speedup"] = costs.speedups(groups[r["dtype"]], r["backend"])
    return records
