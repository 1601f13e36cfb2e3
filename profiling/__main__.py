"""``python -m profiling``: time every gpudnn op and model against torch on this GPU.

    python -m profiling [--op NAME ...] [--dtype fp32 bf16] [--backend triton cupy eager
                        compile compile-max fused] [--quick] [--no-models] [--models-only]
                        [--out DIR] [--list]

Measures the GPU's ceilings first, then every selected op (forward, forward + backward; the
optimizers' step), then training steps of the three models, and writes results.json,
results.md and PNG plots to profiling/results/<gpu-name>/ (or --out). Without a CUDA GPU it
says so in one line and exits with code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_GPU = ("profiling: no CUDA GPU here (torch.cuda.is_available() is False); run `make profile` "
          "(or `python -m profiling`) on a machine with an NVIDIA GPU and CUDA builds of torch "
          "and triton (optional: cupy-cuda13x, matplotlib)")


def parse_args(argv: list[str] | None):
    from .harness import BACKENDS
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
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--list", action="store_true", help="list the selected cases and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from . import registry
    cases = [] if args.models_only else registry.select(registry.all_cases(), args.op,
                                                        args.quick)
    if args.list:
        for c in cases:
            print(f"{c.source:<6} {c.family:<12} {c.key}")
        return 0
    import torch
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    return run(args, cases)


def run(args, cases, device: str = "cuda", timer=None, tasks=None) -> int:
    """The whole run; ``device``, ``timer`` and ``tasks`` are parameters so that a test can run
    the orchestration on the CPU with a fake timer."""
    import torch

    from . import ceilings as ceil
    from . import harness, report
    from .models import TASKS
    from .timing import Timer

    # the strongest eager baseline: cuDNN picks its fastest algorithm per shape (the warm-up
    # runs absorb the search)
    torch.backends.cudnn.benchmark = True
    timer = timer or Timer(warmup_ms=10 if args.quick else 25, rep_ms=30 if args.quick else 100)
    tasks = TASKS.values() if tasks is None else tasks
    env = ceil.environment()
    out_dir = args.out or os.path.join(ROOT, "profiling", "results",
                                       ceil.slug(env.get("gpu", "unknown")))
    results: dict = {"environment": env,
                     "selection": {"ops": args.op, "dtypes": args.dtype,
                                   "backends": args.backend, "quick": args.quick},
                     "ceilings": {}, "ops": [], "models": [], "notes": []}
    print(f"profiling on {env.get('gpu', device)} -> {out_dir}")
    started = time.time()
    ceilings = None
    try:
        ceilings, details = ceil.measure_ceilings(timer)
        results["ceilings"], results["ceiling_details"] = ceilings.as_dict(), details
        print("ceilings:", results["ceilings"])
    except Exception as exc:  # the op timings are still worth having
        results["ceilings"] = {"error": harness.describe(exc)}
        print(f"ceilings failed: {results['ceilings']['error']}")
    report.write_all(results, out_dir, plots=False)

    harness.configure_compiler()
    tf32 = env["tf32"]
    for i, case in enumerate(cases):
        print(f"[{i + 1}/{len(cases)}] {case.source} {case.key}")
        results["ops"] += harness.profile_case(case, args.dtype, args.backend, timer, device,
                                               ceilings, tf32)
        report.write_all(results, out_dir, plots=False)
        broken = _cuda_broken(device)
        if broken:   # a sticky CUDA error: every later measurement would fail the same way
            results["notes"].append(f"stopped after {case.key}: the CUDA context is broken "
                                    f"({broken}); rerun the remaining ops with --op")
            args.no_models = True
            break

    if not args.no_models:
        try:
            for task in tasks:
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


def _cuda_broken(device: str) -> str | None:
    """The error a synchronize raises when an earlier kernel broke the CUDA context."""
    if device != "cuda":
        return None
    import torch
    try:
        torch.cuda.synchronize()
        torch.empty(1, device="cuda").add_(1)
        torch.cuda.synchronize()
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc)[:300]}"
    return None


if __name__ == "__main__":
    sys.exit(main())
