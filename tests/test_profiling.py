"""The profiling harness without a GPU: its arithmetic (FLOPs, minimum bytes, roofline
fractions, speedups), the op registry (every case's gpudnn call against its torch twin on tiny
CPU shapes), the harness loop with a fake timer, the JSON / Markdown / README writing, the
kernel report's formatting, and the CLI's no-GPU message and exit code."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from gpudnn.testing import assert_close
from profiling import costs, harness, kernel_report, readme, registry, report
from profiling.timing import FakeTimer, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CEILINGS = costs.Ceilings(2e12, {"bf16": 800e12, "fp16": 800e12, "tf32": 400e12,
                                 "fp32": 50e12})


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


# --- costs -----------------------------------------------------------------------------------

def test_dense_cost_by_hand():
    c = costs.dense(3, 5, 7, 4, bias=True, act=True)
    assert c.fwd_flops == 2 * 3 * 5 * 7 and c.fb_flops == 3 * c.fwd_flops
    assert c.fwd_bytes == 4 * (3 * 7 + 5 * 7 + 5 + 3 * 5)
    # backward: read dy, x, w, saved; write dx, dw, db
    assert c.fb_bytes - c.fwd_bytes == 4 * (15 + 21 + 35 + 15 + 21 + 35 + 5)
    no_act = costs.dense(3, 5, 7, 4, bias=True, act=False)
    assert c.fb_bytes - no_act.fb_bytes == 4 * 15   # no saved tensor without an activation


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("n,cin,h,w,cout,k,stride,pad,dil,groups,out_pad", [
    (2, 3, 7, 6, 4, 3, 1, 1, 1, 1, 0), (1, 4, 9, 5, 6, 4, 2, 1, 1, 2, 1),
    (3, 6, 8, 8, 6, 3, 3, 2, 2, 6, 0), (2, 2, 5, 7, 3, 1, 2, 0, 1, 1, 1)])
def test_conv_cost_matches_torch_shapes(transposed, n, cin, h, w, cout, k, stride, pad, dil,
                                        groups, out_pad):
    x = torch.empty(n, cin, h, w, device="meta")
    if transposed:
        wt = torch.empty(cin, cout // groups, k, k, device="meta")
        y = torch.nn.functional.conv_transpose2d(x, wt, None, stride, pad, out_pad, groups, dil)
        c = costs.conv_transpose2d(n, cin, h, w, cout, k, k, 2, stride=stride, padding=pad,
                                   output_padding=out_pad, dilation=dil, groups=groups,
                                   bias=False, act=False)
        macs = x.numel() * (cout // groups) * k * k
    else:
        wt = torch.empty(cout, cin // groups, k, k, device="meta")
        y = torch.nn.functional.conv2d(x, wt, None, stride, pad, dil, groups)
        c = costs.conv2d(n, cin, h, w, cout, k, k, 2, stride=stride, padding=pad, dilation=dil,
                         groups=groups, bias=False, act=False)
        macs = y.numel() * (cin // groups) * k * k
    assert c.fwd_flops == 2 * macs
    assert c.fwd_bytes == 2 * (x.numel() + wt.numel() + y.numel())
    assert c.fb_bytes == c.fwd_bytes + 2 * (y.numel() + 2 * x.numel() + 2 * wt.numel())


def test_memory_bound_costs():
    n = 1000
    assert costs.softmax(n, 2) == costs.Cost(0, 4000, 0, 4000 + 6000)
    assert costs.dropout(n, 4) == costs.Cost(0, 8000, 0, 16000)   # no mask in memory
    ce = costs.cross_entropy(10, 100, 2)
    assert ce.fwd_bytes == 2 * 1000 + 8 * 10 + 4 * 10 + 2
    assert ce.fb_bytes - ce.fwd_bytes == 2 * 2 * 1000 + 8 * 10 + 4 * 10
    bn = costs.batch_norm(2, 3, 4, 4)
    assert bn.fwd_bytes == 4 * 2 * 24 + 4 * 3 * 2 + 4 * 3 * 4 + 4 * 3 * 2
    mp, ap = (costs.pool2d(1, 2, 4, 4, 2, 2, 0, 4, r) for r in (True, False))
    assert mp.fwd_bytes == ap.fwd_bytes == 4 * (32 + 8)
    assert mp.fb_bytes - ap.fb_bytes == 4 * 32            # max pool re-reads x
    assert costs.optimizer_step(10, 4, "adam").fwd_bytes == 7 * 4 * 10
    assert costs.optimizer_step(10, 2, "sgd").of("step") == (0, 5 * 2 * 10)


def test_lstm_cost_by_hand():
    c = costs.lstm(steps=3, batch=2, input_size=5, hidden=4, es=4)
    assert c.fwd_flops == 2 * 3 * 2 * 16 * (5 + 4) and c.fb_flops == 3 * c.fwd_flops
    weights = 16 * 9 + 32
    assert c.fwd_bytes == 4 * (30 + weights + 24 + 16)


def test_roofline_memory_and_compute_bound():
    # memory-bound: 2 GB at 2 TB/s is 1 ms; measured 2 ms -> 50% of the copy ceiling
    r = costs.roofline(0, 2e9, 2e-3, CEILINGS, None)
    assert r["bound"] == "memory" and r["ceiling"] == "copy"
    assert r["GBps"] == pytest.approx(1000) and r["ceiling_fraction"] == pytest.approx(0.5)
    assert r["floor_ms"] == pytest.approx(1.0)
    # compute-bound: 8e12 FLOP at 800 TFLOP/s = 10 ms floor; measured 12.5 ms -> 80%
    r = costs.roofline(8e12, 1e6, 12.5e-3, CEILINGS, "bf16")
    assert r["bound"] == "compute" and r["ceiling"] == "bf16"
    assert r["TFLOPs"] == pytest.approx(640) and r["ceiling_fraction"] == pytest.approx(0.8)
    # the same FLOPs against fp32's ceiling
    assert costs.roofline(8e12, 1e6, 0.2, CEILINGS, "fp32")["ceiling_fraction"] == \
        pytest.approx(0.8)
    with pytest.raises(ValueError):
        costs.roofline(1, 1, 0.0, CEILINGS, None)


def test_matmul_key_and_ceilings_round_trip():
    assert costs.matmul_key("fp32", True) == "tf32"
    assert costs.matmul_key("fp32", False) == "fp32"
    assert costs.matmul_key("bf16", True) == "bf16"
    back = costs.Ceilings.from_dict(CEILINGS.as_dict())
    assert back.copy_bytes_per_s == pytest.approx(CEILINGS.copy_bytes_per_s)
    assert back.matmul_flops_per_s["tf32"] == pytest.approx(400e12)


def test_speedups():
    s = costs.speedups({"triton": 2.0, "eager": 3.0, "compile": 4.0, "compile-max": 2.5},
                       "triton")
    assert s == pytest.approx({"eager": 1.5, "compile": 2.0, "compile-max": 1.25,
                               "compile-best": 1.25})
    assert costs.speedups({"eager": 3.0}, "triton") == {}
    assert costs.speedups({"triton": 1.0, "eager": None}, "triton") == {}


def test_timing_summary_and_rotation():
    t = summarize([5.0, 1.0, 3.0, 2.0, 4.0], "x")
    assert (t.median_ms, t.reps, t.method) == (3.0, 5, "x")
    assert t.p20_ms == pytest.approx(1.8) and t.p80_ms == pytest.approx(4.2)
    assert summarize([2.0], "y").p80_ms == 2.0
    l2 = 50 * 2 ** 20
    assert harness.rotated_sets(2 ** 20, l2) == 64           # capped
    assert harness.rotated_sets(10 * 2 ** 20, l2) == 10      # 100 MiB per cycle
    assert harness.rotated_sets(10 ** 9, l2) == 2            # at least two sets
    assert harness.rotated_sets(0, l2) == 1


def test_resnet50_parameter_list():
    shapes = registry.resnet50_param_shapes()
    assert len(shapes) == 161
    assert sum(math.prod(s) for s in shapes) == 25_557_032


def test_classify():
    assert harness.classify(ImportError("no gpudnn.optim")) == "missing"
    assert harness.classify(RuntimeError("gpudnn backend 'cupy' cannot run x: CuPy is not "
                                         "installed; ...")) == "missing"
    assert harness.classify(RuntimeError("the cupy backend has no kernel for lstm yet")) == \
        "missing"
    assert harness.classify(ValueError("shape mismatch")) == "error"


# --- the registry on tiny CPU shapes --------------------------------------------------------

def _tiny_cases():
    seen, out = set(), []
    for case in registry.all_cases():
        tiny = case.shrunk()
        if (tiny.op, tiny.shape) not in seen:
            seen.add((tiny.op, tiny.shape))
            out.append(pytest.param(tiny, id=f"{case.op}-{len(out)}"))
    return out


@pytest.mark.parametrize("case", _tiny_cases())
def test_registry_case_calls_gpudnn_and_torch_alike(case):
    """Each case's gpudnn call (reference backend) and its torch twin: same outputs and the same
    gradients, in float64; the cost's forward bytes are the inputs' and outputs' bytes where
    the op has nothing else to move."""
    torch.manual_seed(0)
    inst = case.build("cpu", torch.float64)
    with gpudnn_reference():
        if case.modes == ("step",):
            results = {name: inst.impls[name]()() for name in ("gpudnn", "torch", "fused")}
            for name in ("torch", "fused"):
                for mine, theirs in zip(results["gpudnn"], results[name]):
                    assert_close(mine, theirs, "float64", name=f"{case.op} vs {name}")
            return
        gpudnn_fn, torch_fn = inst.impls["gpudnn"](), inst.impls["torch"]()
        args = inst.make_args()
        mine, theirs = gpudnn_fn(*args), torch_fn(*args)
        assert mine.shape == theirs.shape
        if inst.comparable:
            assert_close(mine, theirs, "float64", name=case.key)
        targets = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
        if "fwd+bwd" not in case.modes:  # inference-only cases (quantized layers)
            targets = []
        grad_out = torch.randn_like(theirs)
        g_mine = torch.autograd.grad(mine, targets, grad_out) if targets else ()
        g_theirs = torch.autograd.grad(theirs, targets, grad_out) if targets else ()
        if inst.comparable:
            for i, (a, b) in enumerate(zip(g_mine, g_theirs)):
                assert_close(a, b, "float64", name=f"{case.key} grad {i}")
    if case.family in ("dense", "conv", "softmax", "dropout", "activations", "pool"):
        es = torch.empty((), dtype=torch.float64).element_size()
        assert case.cost(es).fwd_bytes == _nbytes(args) + _nbytes([theirs])


class gpudnn_reference:
    def __enter__(self):
        import gpudnn
        self._ctx = gpudnn.use_backend("reference")
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_every_launcher_family_is_profiled():
    from gpudnn.ops import FAMILIES
    families = {family.__name__.rsplit(".", 1)[1] for family in FAMILIES}
    assert families <= {c.family for c in registry.all_cases()}
    sources = {c.source for c in registry.all_cases()}
    assert sources == {"cnn", "lstm", "gan", "large"}


def test_select_filters_and_quick():
    cases = registry.all_cases()
    dense = registry.select(cases, ["dense"])
    assert dense and all(c.family == "dense" for c in dense)
    relu = registry.select(cases, ["linear+relu"])
    assert relu and all(c.op == "linear+relu" for c in relu)
    assert {c.op for c in registry.select(cases, ["linear"])} >= {"linear", "linear+relu"}
    quick = registry.select(cases, None, quick=True)
    assert len({(c.op, c.source) for c in quick}) == len(quick) < len(cases)
    assert all(c.key for c in cases) and all("_shapes" not in c.shape for c in cases)
    first = registry.select(cases, None, quick=True, family_first=True)
    families = {c.family for c in cases}
    assert sorted(first, key=id) == sorted(quick, key=id)       # the same cases, reordered
    assert {c.family for c in first[:len(families)]} == families
    assert all(c.source == "large" for c in first[:len(families)]
               if any(d.family == c.family and d.source == "large" for d in cases))


# --- the harness loop with a fake timer ------------------------------------------------------

def test_profile_case_records_times_rates_and_failures():
    case = registry.dense_case("large", 16, 8, 32, "relu")
    records = harness.profile_case(case, ["fp32"], ["eager", "cupy"], FakeTimer(0.5), "cpu",
                                   CEILINGS, {"matmul": False, "cudnn": True}, log=lambda s: None)
    by = {(r["pass"], r["backend"]): r for r in records}
    assert set(by) == {(p, b) for p in ("fwd", "fwd+bwd") for b in ("eager", "cupy")}
    eager = by[("fwd+bwd", "eager")]
    assert eager["status"] == "ok" and eager["time_ms"] == 0.5 and eager["method"] == "fake-events"
    flops, nbytes = case.cost(4).of("fwd+bwd")
    assert (eager["flops"], eager["bytes"]) == (flops, nbytes)
    expected = costs.roofline(flops, nbytes, 0.5e-3, CEILINGS, "fp32")
    assert eager["ceiling_fraction"] == pytest.approx(expected["ceiling_fraction"])
    assert eager["speedup"]["eager"] == pytest.approx(1.0)
    cupy = by[("fwd", "cupy")]
    assert cupy["status"] in ("error", "missing") and "cupy" in cupy["error"].lower()


def test_profile_case_gpudnn_backend_and_graph_path(monkeypatch):
    """A model-shape case goes through the graph path with rotated input sets; gpudnn runs
    through use_backend (reference here) and its forward is compared with eager's."""
    case = registry.rows_case("cnn", "softmax", 3, 5)
    records = harness.profile_case(case, ["fp32"], ["eager", "reference"], FakeTimer(0.01),
                                   "cpu", CEILINGS, {}, log=lambda s: None)
    mine = [r for r in records if r["backend"] == "reference"]
    assert mine == []   # "reference" is no profile backend: nothing recorded
    monkeypatch.setattr(harness, "GPUDNN_BACKENDS", ("reference",))
    # eager is timed first in each pass: fwd (eager 0.01, gpudnn 0.02), then fwd+bwd
    records = harness.profile_case(case, ["fp32"], ["reference", "eager"],
                                   FakeTimer([0.01, 0.02, 0.03, 0.06]), "cpu", CEILINGS, {},
                                   log=lambda s: None)
    fwd = next(r for r in records if r["backend"] == "reference" and r["pass"] == "fwd")
    assert fwd["status"] == "ok" and fwd["method"] == "fake-graph" and fwd["rotated_sets"] >= 2
    assert fwd["rel_err_vs_eager"] < 1e-6
    assert fwd["speedup"]["eager"] == pytest.approx(0.5)
    fb = next(r for r in records if r["backend"] == "eager" and r["pass"] == "fwd+bwd")
    assert fb["time_ms"] == 0.03 and fb["speedup"] == {"eager": 1.0}
    assert "rel_err_vs_eager" not in fb


def test_variant_backend_runs_under_its_environment_where_the_case_lists_it(monkeypatch):
    """"triton-no-graphs" times the LSTM with GPUDNN_CUDA_GRAPHS=0 around forward and backward
    (the reference backend stands in for triton here); cases without the variant skip it."""
    monkeypatch.setattr(harness, "VARIANTS", {
        "triton-no-graphs": ("reference", {"GPUDNN_CUDA_GRAPHS": "0"})})
    monkeypatch.delenv("GPUDNN_CUDA_GRAPHS", raising=False)
    seen = []

    class EnvTimer(FakeTimer):
        def _time(self, call, n_sets, method):
            seen.append(os.environ.get("GPUDNN_CUDA_GRAPHS"))
            return super()._time(call, n_sets, method)

    case = registry.lstm_case("large", 3, 2, 4, 5)
    records = harness.profile_case(case, ["fp32"], ["eager", "triton-no-graphs"],
                                   EnvTimer(0.1), "cpu", CEILINGS, {}, log=lambda s: None)
    variant = [r for r in records if r["backend"] == "triton-no-graphs"]
    assert [r["status"] for r in variant] == ["ok", "ok"], variant
    assert seen == [None, "0", None, "0"]  # eager, variant per pass; restored after each
    assert "GPUDNN_CUDA_GRAPHS" not in os.environ
    dense = registry.dense_case("large", 4, 4, 4, None)
    records = harness.profile_case(dense, ["fp32"], ["triton-no-graphs"], FakeTimer(0.1), "cpu",
                                   CEILINGS, {}, log=lambda s: None)
    assert records == []


def test_missing_gpudnn_op_is_recorded_not_raised():
    case = registry.dense_case("large", 4, 4, 4, None)

    def broken_build(params, device, dtype):
        inst = registry._dense_build(params, device, dtype)
        inst.impls["gpudnn"] = lambda: (_ for _ in ()).throw(ImportError("no gpudnn.ops.dense"))
        return inst

    case.builder = broken_build
    records = harness.profile_case(case, ["fp32"], ["triton", "eager"], FakeTimer(1.0), "cpu",
                                   CEILINGS, {}, log=lambda s: None)
    triton = [r for r in records if r["backend"] == "triton"]
    assert len(triton) == 2 and all(r["status"] == "missing" for r in triton)
    assert "no gpudnn.ops.dense" in triton[0]["error"]
    assert all(r["status"] == "ok" for r in records if r["backend"] == "eager")


# --- report and README -------------------------------------------------------------------------

def _fake_results():
    ops = []
    for backend, ms in (("triton", 1.0), ("eager", 1.5), ("compile", 1.2)):
        r = {"op": "softmax", "family": "softmax", "source": "large", "shape": "rows=4 cols=8",
             "dtype": "bf16", "pass": "fwd", "backend": backend, "flops": 0, "bytes": 2e9,
             "status": "ok", "time_ms": ms, "peak_bytes": 3 * 2 ** 20}
        r.update(costs.roofline(0, 2e9, ms / 1e3, CEILINGS, None))
        ops.append(r)
    ops.append({"op": "softmax", "family": "softmax", "source": "large", "shape": "rows=4 cols=8",
                "dtype": "bf16", "pass": "fwd", "backend": "cupy", "status": "missing",
                "error": "RuntimeError: CuPy is not installed"})
    harness.add_speedups(ops)
    models = [{"model": "cnn", "dtype": "fp32", "backend": b, "precision": "fp32",
               "status": "ok", "time_ms": t, "peak_bytes": 2 ** 21, "optimizer": "x",
               "first_loss": 2.3} for b, t in (("triton", 2.0), ("eager", 3.0))]
    for m in models:
        m["speedup"] = costs.speedups({"triton": 2.0, "eager": 3.0}, m["backend"])
    return {"environment": {"gpu": "Fake GPU", "date": "2026-11-26T19:00:00+00:00",
                            "git_commit": "abc123def4567", "torch": "2.11", "triton": "3.6"},
            "ceilings": CEILINGS.as_dict(), "ops": ops, "models": models, "notes": ["n1"]}


def test_markdown_and_json(tmp_path):
    results = _fake_results()
    md = report.render_markdown(results)
    assert "Fake GPU" in md and "abc123def456" in md and "2000 GB/s" in md
    row = next(line for line in md.splitlines() if line.startswith("| softmax"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # backends triton, cupy, eager, compile; then triton's rate, % of ceiling, x eager, x compile
    assert cells[5:9] == ["1.00", "missing", "1.50", "1.20"]
    assert cells[9:13] == ["2000 GB/s", "100%", "1.50×", "1.20×"]
    assert "CuPy is not installed" in md and "Note: n1" in md
    assert "cupy rate" not in md   # no ok cupy measurement: no cupy speedup columns
    assert cells[-2:] == ["3.0 /  / 3.0", ""]
    assert "| cnn | fp32 | gpudnn-triton | 2.00 | 2.0 | 1.50× |" in md
    paths = report.write_all(results, str(tmp_path / "gpu"), plots=True)
    with open(paths["json"]) as f:
        assert json.load(f) == json.loads(json.dumps(results, default=str))
    assert open(paths["md"]).read() == md
    for p in paths["plots"]:        # matplotlib present: the files exist; absent: skipped
        assert os.path.getsize(p) > 0


def test_readme_section_rewrite(tmp_path):
    root = tmp_path / "results"
    for name, date in (("old-gpu", "2026-01-01T00:00:00+00:00"),
                       ("new-gpu", "2026-06-01T00:00:00+00:00")):
        (root / name).mkdir(parents=True)
        (root / name / "results.md").write_text(f"table of {name}\n")
        (root / name / "results.json").write_text(json.dumps({"environment": {"date": date}}))
    path = tmp_path / "README.md"
    path.write_text(f"intro\n{readme.START}\nstale\n{readme.END}\noutro\n")
    used = readme.update(str(path), str(root))
    assert used.endswith(os.path.join("new-gpu", "results.md"))
    text = path.read_text()
    assert text.startswith(f"intro\n{readme.START}\ntable of new-gpu\n")
    assert text.endswith(f"{readme.END}\noutro\n") and "stale" not in text
    assert readme.update(str(path), str(root)) and path.read_text() == text   # idempotent
    path.write_text("no markers\n")
    assert readme.main(["--readme", str(path), "--results", str(root)]) == 1
    assert path.read_text() == "no markers\n"
    with pytest.raises(FileNotFoundError):
        readme.update(str(path), str(tmp_path / "none"))


# --- kernel report -------------------------------------------------------------------------

FAKE_ROWS = [
    {"backend": "triton", "name": "dense_fwd_kernel", "label": "BM128 BN128", "dtype": "bf16",
     "num_warps": 8, "num_stages": 3, "registers": 168, "shared_bytes": 98304, "local_bytes": 0,
     "spill_stores": 0, "spill_loads": 0, "spills": 0, "mma": "HGMMA", "expect_mma": "HGMMA",
     "spill_reason": ""},
    {"backend": "triton", "name": "softmax_kernel", "label": "BLOCK 1024", "dtype": "fp32",
     "num_warps": 4, "num_stages": 1, "registers": 255, "shared_bytes": 0, "local_bytes": 64,
     "spill_stores": 2, "spill_loads": 3, "spills": 5, "mma": "", "expect_mma": "HGMMA",
     "spill_reason": ""},
    {"backend": "triton", "name": "conv_kernel", "label": "3x3", "dtype": "fp16",
     "error": "CompilationError: boom\nline 2"},
    {"backend": "cupy", "name": "softmax.cu", "dtype": "fp32", "registers": 40,
     "shared_bytes": 256, "spill_stores": 0, "spill_loads": 0},
]


def test_kernel_report_formatting():
    text = kernel_report.format_table(FAKE_ROWS)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["backend", "kernel", "config", "dtype"]
    assert len(lines) == 2 + len(FAKE_ROWS)
    assert "HGMMA" in lines[2] and "96.0" in lines[2] and "168" in lines[2]
    assert "UNEXPLAINED SPILLS" in lines[3] and "wants HGMMA" in lines[3]
    assert "COMPILE ERROR: CompilationError: boom line 2" in lines[4]
    assert "softmax.cu" in lines[5] and lines[5].split()[-2:] == ["0", "-"]
    assert kernel_report.summary(FAKE_ROWS).startswith(
        "4 configurations, 1 failed to compile, 1 with spills")


def test_kernel_report_main(monkeypatch, capsys):
    monkeypatch.setattr(kernel_report, "triton_rows", lambda timeout: (FAKE_ROWS[:2], None))
    monkeypatch.setattr(kernel_report, "cupy_rows", lambda: ([], "kernels/cupy/build.py ..."))
    assert kernel_report.main([]) == 0
    out = capsys.readouterr().out
    assert "dense_fwd_kernel" in out and "note: kernels/cupy/build.py" in out
    assert kernel_report.main(["--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["name"] == "dense_fwd_kernel"
    monkeypatch.setattr(kernel_report, "triton_rows", lambda timeout: (FAKE_ROWS, None))
    assert kernel_report.main([]) == 1      # a configuration failed to compile
    monkeypatch.setattr(kernel_report, "triton_rows", lambda timeout: ([], "it timed out"))
    assert kernel_report.main([]) == 1      # the Triton table could not be made
    assert "note: it timed out" in capsys.readouterr().out


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_without_gpu_says_so_and_exits_2():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "profiling", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "no CUDA GPU" in lines[0] and "make profile" in lines[0]


def test_whole_run_orchestration_on_cpu(tmp_path, monkeypatch, capsys):
    """``python -m profiling``'s run with the GPU parts faked: ceilings first, every case and
    backend recorded, a model whose package is missing recorded with the reason, files written."""
    from profiling import __main__ as cli
    from profiling import ceilings as ceil
    from profiling.models import TrainingTask

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)   # run() turns it on
    monkeypatch.setattr(ceil, "measure_ceilings", lambda timer: (CEILINGS, {"fake": True}))
    monkeypatch.setattr(ceil, "environment", lambda: {
        "gpu": "Fake GPU", "date": "2026-11-26T19:00:00+00:00",
        "tf32": {"matmul": False, "cudnn": True}})

    def no_models():
        raise ImportError("No module named 'gpudnn.models'")

    task = TrainingTask("cnn", no_models, lambda m: (m,), None, None, "cross_entropy")
    args = cli.parse_args(["--backend", "eager", "fused", "--dtype", "fp32", "--out",
                           str(tmp_path), "--no-plots"])
    cases = [registry.rows_case("large", "softmax", 4, 8),
             registry.optim_case("adam", [(3, 4), (5,)], "tiny")]
    assert cli.run(args, cases, device="cpu", timer=FakeTimer(0.5), tasks=[task]) == 0
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert results["ceilings"]["copy_GBps"] == pytest.approx(2000)
    got = {(r["op"], r["pass"], r["backend"]): r["status"] for r in results["ops"]}
    assert got == {("softmax", "fwd", "eager"): "ok", ("softmax", "fwd+bwd", "eager"): "ok",
                   ("adam_step", "step", "eager"): "ok", ("adam_step", "step", "fused"): "ok"}
    assert results["models"][0]["status"] == "missing"
    assert "gpudnn.models" in results["models"][0]["error"]
    assert (tmp_path / "results.md").read_text().startswith("### gpudnn profile on Fake GPU")
    assert "done: 4/5 measurements ok" in capsys.readouterr().out


def test_time_budget_and_given_ceilings(tmp_path, capsys):
    """--time-budget 0: no case or model starts, and the notes name them; --ceilings takes the
    ceilings from a file instead of measuring."""
    from profiling import __main__ as cli
    given = tmp_path / "ceilings.json"
    given.write_text(json.dumps({"ceilings": CEILINGS.as_dict(), "ceiling_details": {"x": 1}}))
    args = cli.parse_args(["--backend", "eager", "--dtype", "fp32", "--out", str(tmp_path),
                           "--no-plots", "--time-budget", "0", "--ceilings", str(given),
                           "--model", "cnn"])
    cases = [registry.rows_case("large", "softmax", 4, 8)]

    def no_measuring(timer):
        raise AssertionError("measured although --ceilings was given")

    assert cli.run(args, cases, device="cpu", timer=FakeTimer(0.5), measure=no_measuring,
                   environment={"gpu": "Fake GPU"}) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["ceilings"]["copy_GBps"] == pytest.approx(2000)
    assert results["ceiling_details"]["x"] == 1 and results["ops"] == results["models"] == []
    assert results["notes"][0].startswith("time budget of 0 s spent: 1 not measured: softmax")
    assert results["notes"][1].endswith("1 not measured: model cnn")
    assert results["environment"]["gpu"] == "Fake GPU"


def test_end_to_end_step_wiring_on_cpu(monkeypatch):
    """The CNN's training step through gpudnn.models for torch eager and for gpudnn (the
    reference backend standing in for triton): both run, start from the same weights, and
    report a step time and the optimizer used."""
    from profiling import models
    monkeypatch.setattr(harness, "GPUDNN_BACKENDS", ("reference",))
    records = harness.profile_model(models.TASKS["cnn"], ["fp32"], ["eager", "reference"],
                                    FakeTimer(2.0), "cpu", log=lambda s: None)
    by = {r["backend"]: r for r in records}
    assert by["eager"]["status"] == "ok", by["eager"].get("error")
    assert by["reference"]["status"] == "ok", by["reference"].get("error")
    assert by["reference"]["optimizer"] == "gpudnn.optim.Adam"
    assert by["reference"]["time_ms"] == 2.0 and by["reference"]["speedup"]["eager"] == 1.0
    # same initial weights and batch; only the dropout masks differ
    assert by["reference"]["first_loss"] == pytest.approx(by["eager"]["first_loss"], rel=0.05)
