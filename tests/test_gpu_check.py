"""``make gpu-check`` without a GPU: its dry run end to end (every phase's code path on the CPU,
what it leaves in the results folder and in the output folder, the README table made from its
summary), and its parts: the schedule, stopping a phase at its deadline, the parsers."""
import json
import os
import sys
import tarfile
import time
import xml.etree.ElementTree as ET

import pytest
import torch

from helpers import DEVICE
from profiling import gpu_check, readme, smoke

SLUG = "dry-run-cpu"


@pytest.mark.skipif(DEVICE == "cuda", reason="the CPU rehearsal of the GPU check (CI runs it)")
def test_dry_run_leaves_every_result_and_the_readme_table(tmp_path):
    out, root = tmp_path / "out", tmp_path / "results"
    assert gpu_check.main(["--dry-run", "--results-root", str(root), "--out", str(out)]) == 0

    # what the device tool brings back: at most 8 files of at most 16 MiB, no folders
    names = sorted(os.listdir(out))
    assert names == sorted([f"gpu-check-{SLUG}.tar.gz", "summary.json", "summary.md",
                            "gpu-check.log"])
    assert all(os.path.getsize(out / n) < 16 * 2 ** 20 for n in names)
    base = f"profiling/results/{SLUG}"
    with tarfile.open(out / f"gpu-check-{SLUG}.tar.gz") as tar:
        members = set(tar.getnames())
        assert {f"{base}/summary.json", f"{base}/results.json", f"{base}/results.md",
                f"{base}/check/junit.xml", f"{base}/check/env.json"} <= members
        junit = ET.fromstring(tar.extractfile(f"{base}/check/junit.xml").read())
        assert sum(int(s.get("tests")) for s in junit.iter("testsuite")) == 2
        packed = json.load(tar.extractfile(f"{base}/summary.json"))

    summary = json.loads((out / "summary.json").read_text())
    assert summary == packed and summary["dry_run"] and summary["gpu"] == "dry run (cpu)"
    phases = {p["name"]: p for p in summary["phases"]}
    assert list(phases) == gpu_check.ORDER
    for name, p in phases.items():    # the script worked; what the kernels did is data
        assert p["status"] in ("ok", "failed"), (name, p)
        assert p["wall_s"] <= p["timeout_s"] and p["passed"] > 0, (name, p)
    assert phases["env"]["status"] == phases["ceilings"]["status"] == "ok"
    assert (phases["tests"]["passed"], phases["tests"]["failed"]) == (2, 0)
    smoked = phases["smoke"]
    assert smoked["passed"] + smoked["failed"] + smoked["skipped"] == len(smoke.ITEMS)
    assert phases["sanitizer"]["sanitizer_errors"] == {"memcheck-triton": 0,
                                                       "racecheck-reference": 0}
    assert summary["ceilings"]["copy_GBps"] > 0
    # the profile: eager always measures; the reference backend stands in for triton
    softmax = [r for r in summary["ops"] if r["op"] == "softmax"]
    assert {r["pass"] for r in softmax} == {"fwd", "fwd+bwd"}
    assert all(r["eager_ms"] == 0.5 and r["compile_ms"] == 0.5 for r in softmax)
    assert all(r["triton"]["x_eager"] == 1.0 for r in softmax), softmax
    assert [m["model"] for m in summary["models"]] == ["cnn"]
    # the model also trains with gpudnn's ops under torch.compile, beside eager and compile
    assert summary["models"][0]["gpudnn+compile"]["x_eager"] == 1.0
    assert (out / "summary.md").read_text().startswith("### GPU check on dry run (cpu)")

    # python -m profiling.readme: the summary becomes the README's table
    page = tmp_path / "README.md"
    page.write_text(f"intro\n{readme.START}\nstale\n{readme.END}\noutro\n")
    assert readme.main(["--readme", str(page), "--results", str(root)]) == 0
    text = page.read_text()
    assert "stale" not in text and text.endswith(f"{readme.END}\noutro\n")
    assert "### GPU check on dry run (cpu) (DRY RUN" in text
    assert "| softmax | tiny | rows=7 cols=9 | fp32 | fwd | 0.500 | 0.500 | 0.500 | 1.00× |" \
        in text
    assert f"(results/{SLUG}/summary.md)" in text

    # rebuilding the summary from the folder gives the same phases
    assert gpu_check.main(["--summarize", str(root / SLUG)]) == 0
    again = json.loads((root / SLUG / "summary.json").read_text())
    assert again["phases"] == summary["phases"]


def test_schedule_fits_the_device_command_and_scales():
    total = sum(p.budget_s for p in gpu_check.PHASES) + gpu_check.RESERVE_S
    assert total == gpu_check.BUDGET_S <= 9 * 60
    # worst case: the last phase stopped at its deadline (SIGINT, grace, SIGKILL) in 600 s
    assert gpu_check.BUDGET_S + gpu_check.GRACE_S + 30 < 600
    # profiling/GPU.md's table shows the same phases and budgets
    with open(os.path.join(gpu_check.ROOT, "profiling", "GPU.md")) as f:
        rows = [line.split("|")[1:3] for line in f if line.startswith("| ")]
    documented = {name.strip(): cell.strip() for name, cell in rows}
    assert all(documented[p.name] == f"{p.budget_s} s" for p in gpu_check.PHASES), documented
    assert documented["(summary)"] == f"{gpu_check.RESERVE_S} s"
    chosen = gpu_check.schedule(["tests", "profile-ops"], 200)
    assert [p.name for p, _ in chosen] == ["tests", "profile-ops"]
    assert sum(s for _, s in chosen) == pytest.approx(200 - gpu_check.RESERVE_S)


def test_a_job_past_its_deadline_is_interrupted_then_killed(tmp_path):
    """SIGINT first, so that a job can write what it has (pytest's junit XML); SIGKILL for
    one that ignores it; both recorded as timed out, the others finish normally."""
    check = gpu_check.Check(str(tmp_path), str(tmp_path / "out"), True, 0,
                            gpu_check.subprocess_env(True))
    os.makedirs(check.check_dir)
    wrote = tmp_path / "partial.txt"
    polite = ("import sys, time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
              f"    open({str(wrote)!r}, 'w').write('so far')\n    sys.exit(2)\n")
    stubborn = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)"
    jobs = [gpu_check.Job("polite", [sys.executable, "-c", polite]),
            gpu_check.Job("stubborn", [sys.executable, "-c", stubborn]),
            gpu_check.Job("quick", [sys.executable, "-c", "print('done')"])]
    started = time.time()
    gpu_check.run_jobs(jobs, 2.0, check, grace=1.0)
    assert time.time() - started < 2 + 1 + 10
    polite_job, stubborn_job, quick_job = jobs
    assert polite_job.timed_out and polite_job.rc == 2 and wrote.read_text() == "so far"
    assert stubborn_job.timed_out and stubborn_job.rc == -9
    assert not quick_job.timed_out and quick_job.rc == 0 and quick_job.wall_s < 2
    assert open(quick_job.log).read().splitlines()[-1] == "done"
    rec = gpu_check.record("ok", 1, jobs=jobs)
    assert rec["status"] == "timed out" and [j["timed_out"] for j in rec["jobs"]] == [
        True, True, False]


def test_parsers(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="1" skipped="1">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="assert 1 == 2'
        '&#10;more"/></testcase>'
        '<testcase classname="tests.test_b" name="test_boom"><error message="RuntimeError"/>'
        '</testcase><testcase classname="tests.test_b" name="test_skip"><skipped/></testcase>'
        '</testsuite></testsuites>')
    counts = gpu_check.junit_counts(str(xml))
    assert (counts["tests"], counts["failures"], counts["errors"], counts["skipped"]) == \
        (4, 1, 1, 1)
    assert counts["failed_tests"] == ["tests.test_a::test_bad failure: assert 1 == 2",
                                      "tests.test_b::test_boom error: RuntimeError"]
    assert gpu_check.junit_counts(str(tmp_path / "missing.xml")) is None
    pytest_log = tmp_path / "tests.log"
    pytest_log.write_text("..F.\n!!! KeyboardInterrupt !!!\n"
                          "==== 2 failed, 117 passed, 3 skipped, 1 error in 170.2s ====\n")
    counts = gpu_check.log_counts(str(pytest_log))
    assert (counts["tests"], counts["failures"], counts["errors"], counts["skipped"]) == \
        (123, 2, 1, 3)
    pytest_log.write_text("collecting ...\n")
    assert gpu_check.log_counts(str(pytest_log)) is None
    log = tmp_path / "memcheck.log"
    log.write_text("========= COMPUTE-SANITIZER\n========= Invalid __global__ read\n"
                   "========= ERROR SUMMARY: 3 errors\n")
    assert gpu_check.sanitizer_errors(str(log)) == 3
    log.write_text("========= RACECHECK SUMMARY: 2 hazards displayed (1 error, 1 warning)\n")
    assert gpu_check.sanitizer_errors(str(log)) == 1
    log.write_text("killed before the summary\n")
    assert gpu_check.sanitizer_errors(str(log)) is None


def test_smoke_driver_records_a_failing_family_and_goes_on(monkeypatch, tmp_path):
    """A family that raises is recorded with its error and the next one still runs; one that
    differs from the reference is a mismatch; the JSON says where the driver is."""
    def broken(device):
        raise RuntimeError("boom")

    def scaled(factor):
        def build(device):
            import gpudnn
            x = torch.ones(3, requires_grad=True)
            # 1 on the reference backend, ``factor`` on the others
            return (lambda: x * (1.0 if gpudnn.get_backend() == "reference" else factor)), [x]
        return build

    monkeypatch.setattr(smoke, "ITEMS", {"a": ("fa", broken), "b": ("fb", scaled(1.0)),
                                         "c": ("fc", scaled(1.5))})
    out = tmp_path / "smoke.json"
    record = smoke.run(["triton"], "cpu", ["a", "b", "c"], out=str(out), log=lambda line: None)
    status = {i["item"]: i["status"] for i in record["items"]}
    assert status == {"a": "error", "b": "ok", "c": "mismatch"}
    assert "boom" in record["items"][0]["error"]
    assert record["items"][1]["rel_err"] == 0.0
    assert record["items"][2]["rel_err"] == pytest.approx(0.5)
    saved = json.loads(out.read_text())
    assert saved["done"] and saved["running"] is None and len(saved["items"]) == 3
    nan = smoke.relative_error([torch.tensor([float("nan")])], [torch.ones(1)])
    assert nan == float("inf")
