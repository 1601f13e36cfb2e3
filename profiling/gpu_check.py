"""``python -m profiling.gpu_check`` (``make gpu-check``): the one prepared GPU check.

One command turns a lent GPU into evidence. Its phases, each a subprocess under its own time
budget, each writing its result as it finishes (a run killed at any point keeps everything
done before it), are the table ``PHASES`` below; ``--list`` prints it. After every phase the
summary (``profiling.summary``) is rewritten and everything is packed again, so the output
folder always holds the latest:

    profiling/results/<gpu>/          what to commit
        summary.json, summary.md      phase statuses and counts; every op's speedup over
                                      torch eager / torch.compile and its fraction of the ceiling
        results.json, results.md, *.png   the profile (ops and models merged)
        check/                        run.json, env.json, ceilings.json, phase-<name>.json,
                                      smoke-*.json, memcheck-*.json, racecheck-*.json,
                                      junit.xml, profile-ops/, profile-models/, *.log
    <--out>/                          what the device tool brings back (4 files)
        gpu-check-<gpu>.tar.gz        profiling/results/<gpu>/ (extract at the repo root)
        summary.md, summary.json, gpu-check.log

A phase's time is its budget plus whatever earlier phases left unused; the budgets scale to
``--budget`` (default ``BUDGET_S``, for a device command of at most 600 s). A phase that runs
out of time is stopped (SIGINT, then SIGKILL), recorded as "timed out" with what it finished,
and the run goes on. ``--dry-run`` runs every phase's code path on this CPU: tiny shapes, fake
times, the Triton interpreter, a stand-in for compute-sanitizer, a few tests (CI runs it:
tests/test_gpu_check.py). profiling/GPU.md says how to run it on the device and what to commit.

    python -m profiling.gpu_check [--out DIR] [--dry-run] [--budget S] [--phases NAME ...]
                                  [--results-root DIR] [--jobs N] [--list]
    python -m profiling.gpu_check --summarize profiling/results/<gpu> [--out DIR]
    python -m profiling.gpu_check --digest      # env.json's source_digest, for this tree
"""
from __future__ import annotations

import argparse
import datetime
import glob
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Callable

from . import summary as summaries
from .__main__ import DRY_RUN_GPU as DRY_GPU
from .report import write_json, write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET_S = 510          # the whole run; the device tool allows a command 600 s
RESERVE_S = 10          # of BUDGET_S, kept for the plots, the summary and the tarball
GRACE_S = 15            # after SIGINT, before SIGKILL
LOG_CAP = 2 * 2 ** 20   # a log longer than this keeps its head and its tail
GPU_BACKENDS = ["triton", "cupy"]
PROFILE_BACKENDS = [*GPU_BACKENDS, "eager", "compile", "fused"]
# the models also train under torch.compile with gpudnn's ops (issue 14): beside eager and
# torch.compile without gpudnn
MODEL_BACKENDS = [*GPU_BACKENDS, "eager", "compile", "gpudnn+compile"]
SANITIZER_TOOLS = ("memcheck", "racecheck")
# CPU-only or about this script: not what the GPU run is for (CI runs them)
GPU_TEST_IGNORE = ("tests/test_aot.py", "tests/test_gpu_check.py")
DRY_SANITIZED = ("--item", "softmax", "dropout")
DRY_TESTS = ("tests/test_profiling.py::test_speedups",
             "tests/test_profiling.py::test_timing_summary_and_rotation")


@dataclass(frozen=True)
class Phase:
    name: str
    budget_s: int
    what: str


PHASES = (
    Phase("env", 15, "(a) GPU, driver, versions, commit, kernel, tools: nvidia-smi, nvcc, "
                     "compute-sanitizer, ncu, pytest plugins"),
    Phase("ceilings", 25, "(a) device copy bandwidth and bf16/fp16/tf32/fp32 matmul rates "
                          "(profiling.ceilings, quick timer)"),
    Phase("smoke", 45, "python -m profiling.smoke per backend at once: every kernel family "
                       "forward + backward vs the reference; compiles the kernels once "
                       "(Triton's and CuPy's caches warm for the tests)"),
    Phase("tests", 175, "(b) the suite on CUDA tensors (make test-gpu) with -n <cores>, "
                        "junit XML; test_aot/test_gpu_check (CPU-only) left to CI"),
    Phase("sanitizer", 70, "(c) compute-sanitizer memcheck and racecheck on profiling.smoke, "
                           "per backend, four processes at once"),
    Phase("profile-ops", 100, "(d) python -m profiling --quick --family-first --no-models: "
                              "triton cupy eager compile fused, fp32 bf16, JSON/MD/PNG"),
    Phase("profile-models", 70, "(d) python -m profiling --models-only: cnn lstm gan, "
                                "triton cupy eager compile gpudnn+compile, fp32"),
)
ORDER = [p.name for p in PHASES]


# --- running subprocesses under a deadline -------------------------------------------------

@dataclass
class Job:
    label: str
    cmd: list
    env: dict = field(default_factory=dict)
    outputs: list = field(default_factory=list)   # removed before the start (no stale results)
    log: str = ""
    rc: int | None = None
    timed_out: bool = False
    wall_s: float = 0.0


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _signal_all(procs: list, sig: int) -> None:
    for proc in procs:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_all(procs: list, seconds: float) -> None:
    deadline = time.time() + seconds
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        time.sleep(0.2)


def _cap(path: str) -> None:
    """Keep the head and the tail of a log longer than LOG_CAP."""
    if os.path.getsize(path) <= LOG_CAP:
        return
    with open(path, "rb") as f:
        head = f.read(LOG_CAP // 8)
        f.seek(-(LOG_CAP - LOG_CAP // 8), os.SEEK_END)
        tail = f.read()
    with open(path, "wb") as f:
        f.write(head + b"\n\n[... cut by gpu_check: the log was longer ...]\n\n" + tail)


def run_jobs(jobs: list[Job], timeout: float, check: "Check", grace: float = GRACE_S
             ) -> list[Job]:
    """Start every job at once (each in its own process group, output to its log under
    check/) and wait for them until ``timeout`` seconds from now; then stop the ones still
    running, all together: SIGINT (pytest writes its junit XML), SIGKILL ``grace`` s later."""
    started = time.time()
    deadline = started + max(timeout, 1.0)
    procs = []
    for job in jobs:
        for path in job.outputs:
            _remove(path)
        job.log = os.path.join(check.check_dir, f"{job.label}.log")
        with open(job.log, "w") as log:
            log.write(f"$ {' '.join(job.cmd)}\n")
            log.flush()
            procs.append(subprocess.Popen(job.cmd, cwd=ROOT, env={**check.env, **job.env},
                                          stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True))
    while time.time() < deadline:
        for job, proc in zip(jobs, procs):
            if job.rc is None and proc.poll() is not None:
                job.rc, job.wall_s = proc.returncode, round(time.time() - started, 1)
        if all(job.rc is not None for job in jobs):
            break
        time.sleep(0.2)
    late = [proc for job, proc in zip(jobs, procs) if job.rc is None]
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 30)):
        _signal_all(late, sig)
        _wait_all(late, wait)
    for job, proc in zip(jobs, procs):
        if job.rc is None:
            job.timed_out, job.rc = True, proc.returncode
            job.wall_s = round(time.time() - started, 1)
        _cap(job.log)
    return jobs


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-lines:])[:400]
    except OSError:
        return ""


# --- the check's state -------------------------------------------------------------------

@dataclass
class Check:
    results_dir: str
    out_dir: str
    dry: bool
    jobs: int
    env: dict
    python: str = sys.executable

    @property
    def check_dir(self) -> str:
        return os.path.join(self.results_dir, "check")

    def path(self, name: str) -> str:
        return os.path.join(self.check_dir, name)

    def module(self, name: str, *args: str) -> list:
        return [self.python, "-m", name, *args]


def subprocess_env(dry: bool) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    if dry:
        env["TRITON_INTERPRET"] = "1"
    return env


def record(status: str, passed: int = 0, failed: int = 0, skipped: int = 0, detail: str = "",
           problems: list | None = None, jobs: list[Job] = (), **extra) -> dict:
    """A phase's record (the orchestrator adds its name, budget and times)."""
    if any(j.timed_out for j in jobs):
        status = "timed out"
    return {"status": status, "passed": passed, "failed": failed, "skipped": skipped,
            "detail": detail, "problems": (problems or [])[:100],
            "jobs": [{"label": j.label, "rc": j.rc, "timed_out": j.timed_out,
                      "wall_s": j.wall_s, "log": os.path.basename(j.log)} for j in jobs],
            **extra}


def _one(job: Job, produced: str, what: str) -> dict:
    """The record of a phase that is one job writing one file."""
    ok = job.rc == 0 and os.path.exists(produced)
    return record("ok" if ok else "failed", int(ok), int(not ok),
                  detail="" if ok else f"{what} failed (rc {job.rc}): {_tail(job.log)}",
                  jobs=[job])


# --- phases ------------------------------------------------------------------------------------

def phase_env(check: Check, timeout: float) -> dict:
    args = ["_worker", "env", check.path("env.json")] + (["--dry-run"] if check.dry else [])
    job, = run_jobs([Job("env", check.module("profiling.gpu_check", *args),
                         outputs=[check.path("env.json")])], timeout, check)
    rec = _one(job, check.path("env.json"), "the environment")
    env = summaries.load(check.path("env.json")) or {}
    if env:
        rec["detail"] = (f"{env.get('gpu')} · torch {env.get('torch')} · triton "
                         f"{env.get('triton')} · cupy {env.get('cupy')} · driver "
                         f"{env.get('driver')} · kernel {env.get('kernel')}")
    return rec


def phase_ceilings(check: Check, timeout: float) -> dict:
    args = ["_worker", "ceilings", check.path("ceilings.json")] + (["--dry-run"] if check.dry
                                                                    else [])
    job, = run_jobs([Job("ceilings", check.module("profiling.gpu_check", *args),
                         outputs=[check.path("ceilings.json")])], timeout, check)
    rec = _one(job, check.path("ceilings.json"), "measuring the ceilings")
    c = (summaries.load(check.path("ceilings.json")) or {}).get("ceilings")
    if c:
        rec["detail"] = summaries._ceilings_line(c)
    return rec


def _smoke_job(check: Check, label: str, backend: str, prefix: list = (), env=None) -> Job:
    args = ["--backend", backend, "--out", check.path(f"{label}.json")]
    if check.dry:   # the smoke phase runs every item under the interpreter; here a few do
        args += ["--device", "cpu"] + (list(DRY_SANITIZED) if prefix else [])
    return Job(label, list(prefix) + check.module("profiling.smoke", *args), env or {},
               outputs=[check.path(f"{label}.json")])


def _smoke_counts(check: Check, jobs: list[Job]) -> tuple[int, int, int, list[str]]:
    passed = failed = skipped = 0
    problems = []
    for job in jobs:
        data = summaries.load(check.path(f"{job.label}.json"))
        if data is None:
            failed += 1
            problems.append(f"{job.label}: no result (rc {job.rc}): {_tail(job.log)}")
            continue
        for item in data["items"]:
            status = item["status"]
            if "reference_error" in item:
                problems.append(f"{job.label}: {item['item']} not compared: the reference "
                                f"failed: {item['reference_error'][:300]}")
            if status == "ok":
                passed += 1
                continue
            if status in ("missing", "not run"):
                skipped += 1
            else:
                failed += 1
            err = f" {item['rel_err']:.1e}" if "rel_err" in item else ""
            problems.append(f"{job.label}: {item['item']} {status}{err} "
                            f"{item.get('error', '')[:300]}".rstrip())
        if data.get("running"):
            failed += 1
            problems.append(f"{job.label}: stopped inside {data['running']}")
    return passed, failed, skipped, problems


def phase_smoke(check: Check, timeout: float) -> dict:
    backends = ["triton"] if check.dry else GPU_BACKENDS
    jobs = run_jobs([_smoke_job(check, f"smoke-{b}", b) for b in backends], timeout, check)
    passed, failed, skipped, problems = _smoke_counts(check, jobs)
    return record("failed" if failed else "ok", passed, failed, skipped, problems=problems,
                  jobs=jobs, detail="processes: " + ", ".join(j.label for j in jobs))


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def pytest_command(check: Check) -> list:
    cmd = check.module("pytest", "-q", "-rfE", "-p", "no:cacheprovider", "--durations=15",
                       f"--junitxml={check.path('junit.xml')}", "-o", "junit_family=xunit2")
    if check.jobs > 1 and _has("xdist"):
        cmd += ["-n", str(check.jobs)]
    if _has("pytest_timeout"):
        cmd += ["--timeout=120"]
    if check.dry:
        return cmd + list(DRY_TESTS)
    return cmd + [f"--ignore={p}" for p in GPU_TEST_IGNORE] + ["tests"]


def junit_counts(path: str) -> dict | None:
    """tests / failures / errors / skipped of a junit XML, and the failed tests (None: no
    readable file)."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {k: sum(int(s.get(k, 0)) for s in suites)
              for k in ("tests", "failures", "errors", "skipped")}
    failed = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                message = (node.get("message") or "").splitlines()
                failed.append(f"{case.get('classname')}::{case.get('name')} {kind}: "
                              f"{message[0][:240] if message else ''}")
    counts["failed_tests"] = failed
    return counts


PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped)\b")


def log_counts(log: str) -> dict | None:
    """The counts of pytest's last summary line ("== 3 failed, 120 passed in 9s ==") when it
    wrote no junit XML (killed); None without one."""
    try:
        with open(log, errors="replace") as f:
            lines = [ln for ln in f if ln.startswith("=") and PYTEST_COUNT.search(ln)]
    except OSError:
        return None
    if not lines:
        return None
    found = {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
             for n, kind in PYTEST_COUNT.findall(lines[-1])}
    failures, errors = found.get("failed", 0), found.get("error", 0)
    return {"tests": sum(found.values()), "failures": failures, "errors": errors,
            "skipped": found.get("skipped", 0),
            "failed_tests": ["(no junit XML: counts from the log's last summary line)"]}


def phase_tests(check: Check, timeout: float) -> dict:
    env = {} if check.dry else {"GPUDNN_TEST_DEVICE": "cuda"}
    job, = run_jobs([Job("tests", pytest_command(check), env, [check.path("junit.xml")])],
                    timeout, check)
    counts = junit_counts(check.path("junit.xml")) or log_counts(job.log)
    if counts is None:
        return record("error", detail=f"no junit XML (rc {job.rc}): {_tail(job.log)}",
                      jobs=[job])
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    status = "failed" if failed or job.rc not in (0, 1) else "ok"
    return record(status, passed, failed, counts["skipped"], problems=counts["failed_tests"],
                  jobs=[job], detail=f"rc {job.rc}; {_tail(job.log, 1)}")


def find_tool(name: str) -> str | None:
    """A CUDA tool on PATH or in the usual CUDA folders."""
    found = shutil.which(name)
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    homes += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    candidates = [os.path.join(h, "bin", name) for h in homes if h]
    candidates += sorted(glob.glob(f"/opt/nvidia/nsight-compute/*/{name}"), reverse=True)
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


SANITIZER_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors?")
RACECHECK_SUMMARY = re.compile(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?")


def sanitizer_errors(log: str) -> int | None:
    """Errors the sanitizer reported in ``log`` (None: it printed no summary)."""
    try:
        with open(log, errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    found = [int(n) for n in SANITIZER_SUMMARY.findall(text) + RACECHECK_SUMMARY.findall(text)]
    return max(found) if found else None


def sanitizer_prefix(check: Check, tool: str) -> list | None:
    if check.dry:   # a stand-in that runs the driver and prints compute-sanitizer's summary
        return check.module("profiling.gpu_check", "_worker", "sanitizer-stub", tool, "--")
    exe = find_tool("compute-sanitizer")
    if exe is None:
        return None
    return [exe, "--tool", tool, "--print-limit", "50", "--report-api-errors", "no",
            "--target-processes", "all"]


def phase_sanitizer(check: Check, timeout: float) -> dict:
    if check.dry:
        pairs = [("memcheck", "triton"), ("racecheck", "reference")]
    else:
        pairs = [(tool, b) for tool in SANITIZER_TOOLS for b in GPU_BACKENDS]
    if sanitizer_prefix(check, "memcheck") is None:
        return record("skipped", detail="compute-sanitizer not found (PATH, CUDA_HOME, "
                                        "/usr/local/cuda*)")
    # memcheck sees an out-of-bounds access only outside torch's cached blocks
    jobs = run_jobs([_smoke_job(check, f"{tool}-{b}", b, sanitizer_prefix(check, tool),
                                {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1"} if tool == "memcheck"
                                else {}) for tool, b in pairs], timeout, check)
    passed, failed, skipped, problems = _smoke_counts(check, jobs)
    reported = {j.label: sanitizer_errors(j.log) for j in jobs}
    for label, n in reported.items():
        if n is None:
            problems.append(f"{label}: no sanitizer summary in {label}.log")
        elif n:
            failed += 1
            problems.append(f"{label}: the sanitizer reported {n} errors (see {label}.log)")
    status = "failed" if failed or None in reported.values() else "ok"
    return record(status, passed, failed, skipped, problems=problems, jobs=jobs,
                  sanitizer_errors=reported,
                  detail="sanitizer errors: " + ", ".join(f"{k} {v}" for k, v in
                                                          reported.items()))


def _profile_args(check: Check, timeout: float, folder: str) -> list:
    args = ["--out", check.path(folder), "--no-plots",
            "--time-budget", f"{max(timeout - 30, 5):.0f}"]
    if os.path.exists(check.path("ceilings.json")):
        args += ["--ceilings", check.path("ceilings.json")]
    return args + (["--dry-run"] if check.dry else [])


def _profile_phase(check: Check, timeout: float, folder: str, args: list) -> dict:
    job, = run_jobs([Job(folder, check.module("profiling", *args,
                                              *_profile_args(check, timeout, folder)),
                         outputs=[check.path(folder)])], timeout, check)
    merge_profiles(check.results_dir, plots=False)   # the plots once, at the end
    data = summaries.load(check.path(os.path.join(folder, "results.json")))
    if data is None:
        return record("error", detail=f"no results.json (rc {job.rc}): {_tail(job.log)}",
                      jobs=[job])
    records = data.get("ops", []) + data.get("models", [])
    counts = {s: sum(r.get("status") == s for r in records) for s in ("ok", "error",
                                                                       "missing")}
    from .report import failures
    problems = [line[2:] for line in failures(records, limit=40).splitlines()]
    problems += data.get("notes", [])
    status = "failed" if counts["error"] or job.rc else "ok"
    return record(status, counts["ok"], counts["error"], counts["missing"], problems=problems,
                  jobs=[job], detail=f"{len(records)} measurements; "
                                     f"{len(data.get('notes', []))} notes")


def phase_profile_ops(check: Check, timeout: float) -> dict:
    args = ["--quick", "--family-first", "--no-models", "--backend", *PROFILE_BACKENDS,
            "--dtype", "fp32", "bf16"]
    if check.dry:
        args += ["--op", "softmax", "--dtype", "fp32"]
    return _profile_phase(check, timeout, "profile-ops", args)


def phase_profile_models(check: Check, timeout: float) -> dict:
    args = ["--models-only", "--backend", *MODEL_BACKENDS, "--dtype", "fp32"]
    if check.dry:
        args += ["--model", "cnn"]
    return _profile_phase(check, timeout, "profile-models", args)


RUNNERS: dict[str, Callable[[Check, float], dict]] = {
    "env": phase_env, "ceilings": phase_ceilings, "smoke": phase_smoke, "tests": phase_tests,
    "sanitizer": phase_sanitizer, "profile-ops": phase_profile_ops,
    "profile-models": phase_profile_models}


def merge_profiles(results_dir: str, plots: bool) -> None:
    """results.json / results.md (and the plots) of the results folder: the op profile with
    the models' records added."""
    from .report import write_all
    check = os.path.join(results_dir, "check")
    ops = summaries.load(os.path.join(check, "profile-ops", "results.json"))
    models = summaries.load(os.path.join(check, "profile-models", "results.json"))
    if ops is None and models is None:
        return
    merged = dict(ops or models)
    merged["ops"] = (ops or {}).get("ops", [])
    merged["models"] = (models or {}).get("models", [])
    merged["notes"] = (ops or {}).get("notes", []) + (models or {}).get("notes", [])
    if ops and models:
        merged["selection"] = {"ops": ops.get("selection"), "models": models.get("selection")}
    write_all(merged, results_dir, plots=plots)


# --- summary and packing -------------------------------------------------------------------

def pack(results_dir: str, out_dir: str | None) -> dict:
    """summary.json / summary.md in ``results_dir``; with ``out_dir``, copies of them and the
    tarball of the folder (as profiling/results/<gpu>/, to extract at the repo root)."""
    summary = summaries.build(results_dir, ORDER)
    write_json(os.path.join(results_dir, "summary.json"), summary)
    write_text(os.path.join(results_dir, "summary.md"), summaries.render_markdown(summary))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        slug = os.path.basename(os.path.normpath(results_dir))
        tmp = os.path.join(out_dir, f".gpu-check-{slug}.tar.gz.tmp")
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(results_dir, arcname=f"profiling/results/{slug}")
        os.replace(tmp, os.path.join(out_dir, f"gpu-check-{slug}.tar.gz"))
        for name in ("summary.json", "summary.md", "check/gpu-check.log"):
            if os.path.exists(os.path.join(results_dir, name)):
                shutil.copyfile(os.path.join(results_dir, name),
                                os.path.join(out_dir, os.path.basename(name)))
    return summary


def gpu_name(dry: bool) -> str:
    if dry:
        return DRY_GPU
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        names = out.stdout.strip().splitlines()
        if out.returncode == 0 and names:
            return names[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown GPU"


def schedule(names: list[str], budget: float) -> list[tuple[Phase, float]]:
    """(phase, scaled budget) of the selected phases, scaled to fill ``budget`` less the
    reserve."""
    chosen = [p for p in PHASES if p.name in names]
    scale = max(budget - RESERVE_S, 1) / sum(p.budget_s for p in chosen)
    return [(p, p.budget_s * scale) for p in chosen]


def run_check(check: Check, names: list[str], budget: float) -> dict:
    started = time.time()
    os.makedirs(check.check_dir, exist_ok=True)
    log_path = check.path("gpu-check.log")

    def say(line: str) -> None:
        print(line, flush=True)
        with open(log_path, "a") as f:
            f.write(line + "\n")

    run = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "gpu": os.path.basename(check.results_dir), "dry_run": check.dry, "budget_s": budget,
           "phases": names, "argv": sys.argv[1:], "jobs": check.jobs}
    write_json(check.path("run.json"), run)
    say(f"gpu-check{' (DRY RUN)' if check.dry else ''}: {check.results_dir} -> "
        f"{check.out_dir}; budget {budget:.0f} s")
    end = started
    for phase, allowed in schedule(names, budget):
        end += allowed                      # this phase may run until its scheduled end
        timeout = end - time.time()
        t0 = time.time()
        say(f"[{phase.name}] up to {timeout:.0f} s: {phase.what}")
        try:
            rec = RUNNERS[phase.name](check, timeout)
        except Exception as exc:            # a bug here must not cost the other phases
            rec = record("error", detail=f"gpu_check: {type(exc).__name__}: {exc}")
        rec.update(name=phase.name, budget_s=round(allowed, 1), timeout_s=round(timeout, 1),
                   wall_s=round(time.time() - t0, 1))
        write_json(check.path(f"phase-{phase.name}.json"), rec)
        say(f"[{phase.name}] {rec['status']}: {rec['passed']} passed, {rec['failed']} failed, "
            f"{rec['skipped']} skipped in {rec['wall_s']:.0f} s. {rec['detail'][:300]}")
        run["wall_s"] = round(time.time() - started, 1)
        write_json(check.path("run.json"), run)
        pack(check.results_dir, check.out_dir)
    if any(name.startswith("profile") for name in names):
        merge_profiles(check.results_dir, plots=True)
    run["wall_s"] = round(time.time() - started, 1)
    write_json(check.path("run.json"), run)
    say(summaries.phases_table(summaries.build(check.results_dir, ORDER)["phases"]))
    say(f"gpu-check done in {run['wall_s']:.0f} s: {check.results_dir} and "
        f"{check.out_dir} (gpu-check-{os.path.basename(check.results_dir)}.tar.gz, "
        "summary.md, summary.json, gpu-check.log)")
    return pack(check.results_dir, check.out_dir)


# --- workers (the phases' subprocesses) ----------------------------------------------------

def _tool_version(name: str) -> dict:
    exe = find_tool(name)
    info: dict = {"path": exe}
    if exe:
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
            lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
            info["version"] = lines[-1].strip() if lines else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            info["version"] = f"unknown ({exc})"
    return info


SOURCES = ("gpudnn", "kernels", "profiling", "tests", "Makefile", "pyproject.toml")


def source_digest(root: str = ROOT) -> str:
    """sha256 of the source files (.py, .cu, .cuh, Makefile, pyproject.toml) under SOURCES:
    names which code ran where there is no .git (the device's copy of the working tree)."""
    import hashlib
    digest = hashlib.sha256()
    paths = []
    for top in SOURCES:
        full = os.path.join(root, top)
        if os.path.isfile(full):
            paths.append(full)
        for folder, dirs, files in os.walk(full):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "results"))
            paths += [os.path.join(folder, f) for f in files
                      if f.endswith((".py", ".cu", ".cuh"))]
    for path in sorted(paths):
        digest.update(os.path.relpath(path, root).encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(f.read() + b"\0")
    return digest.hexdigest()[:16]


def worker_env(out: str, dry: bool) -> None:
    import platform

    from .ceilings import _run, environment
    env = environment()
    if dry:
        env.update(gpu=DRY_GPU, dry_run=True)
    if not env.get("git_commit"):    # the device's copy has no .git: the command passes it
        env["git_commit"] = os.environ.get("GPUDNN_GIT_COMMIT") or None
        env["git_commit_from"] = "GPUDNN_GIT_COMMIT" if env["git_commit"] else "nowhere"
        env["git_dirty"] = None   # unknown: source_digest tells which files ran
    env["source_digest"] = source_digest()
    env["kernel"] = platform.release()
    env["cpus"] = os.cpu_count()
    env["tools"] = {name: _tool_version(name) for name in
                    ("nvidia-smi", "nvcc", "compute-sanitizer", "ncu")}
    env["python_packages"] = {m: _has(m) for m in ("pytest", "xdist", "pytest_timeout", "cupy",
                                                   "matplotlib")}
    env["nvidia_smi"] = _run(["nvidia-smi"])
    write_json(out, env)


def worker_ceilings(out: str, dry: bool) -> None:
    from .ceilings import measure_ceilings
    from .timing import FakeTimer, Timer
    if dry:
        ceilings, details = measure_ceilings(FakeTimer(0.5), copy_bytes=2 ** 16, n=32,
                                             device="cpu")
    else:
        ceilings, details = measure_ceilings(Timer(warmup_ms=10, rep_ms=30))
    write_json(out, {"ceilings": ceilings.as_dict(), "ceiling_details": details})


def worker_sanitizer_stub(tool: str, cmd: list) -> int:
    """The dry run's compute-sanitizer: runs ``cmd`` and prints the summary lines the real one
    prints, so the phase's parsing runs too."""
    print(f"========= COMPUTE-SANITIZER (dry-run stand-in, --tool {tool})", flush=True)
    rc = subprocess.call(cmd)
    if tool == "racecheck":
        print("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)")
    print("========= ERROR SUMMARY: 0 errors", flush=True)
    return rc


def worker(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "sanitizer-stub":
        return worker_sanitizer_stub(argv[1], argv[argv.index("--") + 1:])
    {"env": worker_env, "ceilings": worker_ceilings}[kind](argv[1], "--dry-run" in argv)
    return 0


# --- command line ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_worker"]:
        return worker(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m profiling.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", metavar="DIR",
                        help="where the tarball and the summary go (the device's $OUT); "
                             "default build/gpu-check (build/gpu-check-dry with --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="every phase on this CPU: tiny shapes, fake times, no GPU")
    parser.add_argument("--budget", type=float, metavar="S",
                        help=f"seconds for the whole run (default {BUDGET_S}; three times "
                             "that with --dry-run, for a loaded CI machine); the phases' "
                             "budgets scale to it")
    parser.add_argument("--phases", nargs="+", choices=ORDER, default=ORDER, metavar="NAME",
                        help=f"the phases to run (default all: {' '.join(ORDER)})")
    parser.add_argument("--results-root", metavar="DIR",
                        help="default profiling/results (build/gpu-check-dry/results with "
                             "--dry-run)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="pytest-xdist workers for the tests (default: the CPU count; "
                             "0 with --dry-run)")
    parser.add_argument("--list", action="store_true", help="print the phases and exit")
    parser.add_argument("--digest", action="store_true",
                        help="print the source digest (env.json's source_digest) and exit")
    parser.add_argument("--summarize", metavar="RESULTS_DIR",
                        help="only rebuild a results folder's results.json / .md / plots "
                             "(from check/profile-*) and summary.json / .md (with --out, the "
                             "tarball too), after phases were rerun or tarballs extracted")
    args = parser.parse_args(argv)
    budget = args.budget or BUDGET_S * (3 if args.dry_run else 1)
    if args.list:
        for phase, allowed in schedule(args.phases, budget):
            print(f"{phase.name:<15} {allowed:5.0f} s  {phase.what}")
        print(f"{'(summary)':<15} {RESERVE_S:5.0f} s  plots, summary.json/.md, tarball; "
              f"total {budget:.0f} s")
        return 0
    if args.digest:
        print(source_digest())
        return 0
    if args.summarize:
        merge_profiles(args.summarize, plots=True)
        summary = pack(args.summarize, args.out)
        print(summaries.phases_table(summary["phases"]))
        return 0
    dry = args.dry_run
    default = os.path.join(ROOT, "build", "gpu-check-dry" if dry else "gpu-check")
    root = args.results_root or (os.path.join(default, "results") if dry
                                 else os.path.join(ROOT, "profiling", "results"))
    from .ceilings import slug
    check = Check(results_dir=os.path.join(os.path.abspath(root), slug(gpu_name(dry))),
                  out_dir=os.path.abspath(args.out or (os.path.join(default, "out") if dry
                                                       else default)),
                  dry=dry, jobs=args.jobs if args.jobs is not None else (
                      0 if dry else os.cpu_count() or 1),
                  env=subprocess_env(dry))
    run_check(check, args.phases, budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
