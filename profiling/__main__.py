"""``python -m profiling``: time every gpudnn op and model against torch on this GPU.

    python -m profiling [--op NAME ...] [--dtype fp32 bf16] [--backend triton cupy eager
                        compile compile-max fused] [--quick] [--no-models] [--models-only]
                        [--model cnn lstm gan] [--family-first] [--time-budget S]
                        [--ceilings JSON] [--out DIR] [--list] [--dry-run]

Measures the GPU's ceilings first, then every selected op (forward, forward + backward; the
optimizers' step), then training steps of the three models, and writes results.json,
results.md and PNG plots to profiling/results/<gpu-name>/ (or --out). Without a CUDA GPU it
says so in one line and exits with code 2. ``--dry-run`` rehearses the whole run on the CPU
(tiny shapes, fake times; see ``dry_run``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_GPU = ("profiling: no CUDA GPU here (torch.cuda.is_available() is False); run `make profile` "
          "(or `python -m profiling`) on a machine with an NVIDIA GPU and CUDA builds of torch "
          "and triton (optional: cupy-cuda13x, matplotlib)")


def parse_args(argv: list[str] | None):
    from .harness import BACKENDS
    from .models import TASKS
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--op", nargs="+", metavar="NAME",
                        help="ops to time: an op name (linear+relu), its base (linear) or a "
                             "family (dense, conv, lstm, optim, ...)")
    parser.add_argument("--dtype", nargs="+", choices=["fp32", "bf16", "fp16"],
                        default=["fp32", "bf16"])
    parser.add_argument("--backend", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--quick", action="store_true",
                        help="one shape per op and source, shorter timing windows")
    parser.add_argument("--no-models", action="store_true", help="skip the end-to-end models")
    parser.add_argument("--models-only", action="store_true", help="only the end-to-end models")
    parser.add_argument("--out", metavar="DIR",
                        help="output folder (default profiling/results/<gpu-name>)")
    parser.add_argument("--model", nargs="+", choices=list(TASKS), default=list(TASKS),
                        help="the end-to-end models to time (default: all three)")
    parser.add_argument("--family-first", action="store_true",
                        help="one case of every family first (with --time-budget: a run cut "
                             "short has still measured every family)")
    parser.add_argument("--time-budget", type=float, metavar="S",
                        help="start no new op case or model after S seconds (the ones left "
                             "are listed in the notes)")
    parser.add_argument("--ceilings", metavar="JSON",
                        help="take the ceilings from this file (a results.json, or any JSON "
                             "with its 'ceilings' entry) instead of measuring them")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="rehearse on the CPU: tiny shapes, a fake timer, the reference "
                             "backend standing in for triton and cupy, torch.compile's 'eager' "
                             "backend")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from . import registry
    cases = [] if args.models_only else registry.select(registry.all_cases(), args.op,
                                                        args.quick, args.family_first)
    if args.dry_run:
        cases = [c.shrunk() for c in cases]
    if args.list:
        for c in cases:
            print(f"{c.source:<6} {c.family:<12} {c.key}")
        return 0
    if args.dry_run:
        return dry_run(args, cases)
    import torch
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    return run(args, cases)


DRY_RUN_GPU = "dry run (cpu)"


def dry_run(args, cases) -> int:
    """The whole run on the CPU, so that CI proves the script works: the cases at their tiny
    shapes, a fake timer (every call runs once), the reference backend standing in for triton
    and cupy (the Triton interpreter is too slow for whole models; tests/ run it; cupy needs
    CUDA), torch.compile with its "eager" backend (no code generation)."""
    from . import ceilings as ceil
    from . import harness
    from .timing import FakeTimer
    saved = harness.STAND_INS, harness.COMPILE_BACKEND
    harness.STAND_INS = {"triton": "reference", "cupy": "reference"}
    harness.COMPILE_BACKEND = "eager"
    try:
        return run(args, cases, device="cpu", timer=FakeTimer(0.5),
                   environment={"gpu": DRY_RUN_GPU, "dry_run": True},
                   measure=lambda timer: ceil.measure_ceilings(timer, copy_bytes=2 ** 16, n=32,
                                                               device="cpu"))
    finally:
        harness.STAND_INS, harness.COMPILE_BACKEND = saved


def run(args, cases, device: str = "cuda", timer=None, tasks=None, environment=None,
        measure=None) -> int:
    """The whole run; ``device``, ``timer``, ``tasks``, ``environment`` (entries that override
    the measured ones) and ``measure`` (the ceilings' measurement) are parameters so that a
    test or the dry run can run the orchestration on the CPU with a fake timer."""
    import torch

    from . import ceilings as ceil
    from . import costs, harness, report
    from .models import TASKS
    from .timing import Timer

    # the strongest eager baseline: cuDNN picks its fastest algorithm per shape (the warm-up
    # runs absorb the search)
    torch.backends.cudnn.benchmark = True
    timer = timer or Timer(warmup_ms=10 if args.quick else 25, rep_ms=30 if args.quick else 100)
    tasks = [TASKS[m] for m in args.model] if tasks is None else list(tasks)
    env = {**ceil.environment(), **(environment or {})}
    out_dir = args.out or os.path.join(ROOT, "profiling", "results",
                                       ceil.slug(env.get("gpu", "unknown")))
    results: dict = {"environment": env,
                     "selection": {"ops": args.op, "dtypes": args.dtype,
                                   "backends": args.backend, "quick": args.quick,
                                   "models": [t.name for t in tasks],
                                   "time_budget_s": args.time_budget},
                     "ceilings": {}, "ops": [], "models": [], "notes": []}
    print(f"profiling on {env.get('gpu', device)} -> {out_dir}")
    started = time.time()

    def out_of_time(left: list[str]) -> bool:
        """True (and a note naming what is ``left``) once the time budget is spent."""
        if args.time_budget is None or time.time() - started < args.time_budget:
            return False
        results["notes"].append(f"time budget of {args.time_budget:g} s spent: {len(left)} "
                                f"not measured: {', '.join(left)}")
        return True

    ceilings = None
    try:
        if args.ceilings:
            with open(args.ceilings) as f:
                given = json.load(f)
            ceilings, details = costs.Ceilings.from_dict(given["ceilings"]), {
                "from": args.ceilings, **given.get("ceiling_details", {})}
        else:
            ceilings, details = (measure or ceil.measure_ceilings)(timer)
        results["ceilings"], results["ceiling_details"] = ceilings.as_dict(), details
        print("ceilings:", results["ceilings"])
    except Exception as exc:  # the op timings are still worth having
        ceilings = None
        results["ceilings"] = {"error": harness.describe(exc)}
        print(f"ceilings failed: {results['ceilings']['error']}")
    report.write_all(results, out_dir, plots=False)

    harness.configure_compiler()
    tf32 = env["tf32"]
    for i, case in enumerate(cases):
        if out_of_time([c.key for c in cases[i:]]):
            break
        print(f"[{i + 1}/{len(cases)}] {case.source} {case.key}")
        results["ops"] += harness.profile_case(case, args.dtype, args.backend, timer, device,
                                               ceilings, tf32)
        report.write_all(results, out_dir, plots=False)
        broken = harness.cuda_broken(device)
        if broken:   # a sticky CUDA error: every later measurement would fail the same way
            results["notes"].append(f"stopped after {case.key}: the CUDA context is broken "
                                    f"({broken}); rerun the remaining ops with --op")
            args.no_models = True
            break

    if not args.no_models:
        try:
            for i, task in enumerate(tasks):
                if out_of_time([f"model {t.name}" for t in tasks[i:]]):
                    break
                print(f"model {task.name}")
                results["models"] += harness.profile_model(task, args.dtype, args.backend,
                                                           timer, device)
                report.write_all(results, out_dir, plots=False)
        except Exception as exc:  # e.g. gpudnn.nn.convert missing entirely
            results["notes"].append(f"end-to-end models not measured: {harness.describe(exc)}")
    results["environment"]["wall_s"] = round(time.time() - started, 1)
    if device == "cuda":
        results["environment"]["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    paths = report.write_all(results, out_dir, plots=not args.no_plots)
    ok = sum(r.get("status") == "ok" for r in results["ops"] + results["models"])
    total = len(results["ops"]) + len(results["models"])
    print(f"done: {ok}/{total} measurements ok in {results['environment']['wall_s']} s; wrote "
          f"{paths['md']} (README: `python -m profiling.readme`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
