"""Writing a run's results: results.json, results.md (Markdown tables) and PNG plots.

Everything here works on the plain ``results`` dict that results.json holds:
``{"environment": {...}, "ceilings": {...}, "ceiling_details": {...}, "ops": [record, ...],
"models": [record, ...], "notes": [...]}`` with the records of ``profiling.harness``.
"""
from __future__ import annotations

import json
import os
import tempfile

BACKEND_ORDER = ("triton", "triton-no-graphs", "gpudnn+compile", "cupy", "eager", "compile",
                 "compile-max", "fused")
BACKEND_TITLES = {"triton": "gpudnn-triton", "triton-no-graphs": "gpudnn-triton, no CUDA graphs",
                  "gpudnn+compile": "gpudnn-triton under torch.compile",
                  "cupy": "gpudnn-cupy", "eager": "torch eager",
                  "compile": "torch.compile", "compile-max": "compile max-autotune",
                  "fused": "torch fused"}
# the backends the speedup and ceiling columns describe
SUBJECTS = ("triton", "gpudnn+compile", "cupy")
MiB = 2 ** 20


def write_json(path: str, data: dict) -> None:
    """Atomically (temp file + rename), so an interrupted run never leaves half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --- cell formatting --------------------------------------------------------------------------

def fmt_ms(ms: float) -> str:
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 1:
        return f"{ms:.2f}"
    if ms >= 0.01:
        return f"{ms:.3f}"
    return f"{ms:.4f}"


def fmt_rate(record: dict) -> str:
    """Achieved rate in the unit of the op's bound."""
    if record.get("bound") == "compute":
        return f"{record['TFLOPs']:.0f} TFLOP/s" if record["TFLOPs"] >= 10 else \
            f"{record['TFLOPs']:.1f} TFLOP/s"
    return f"{record['GBps']:.0f} GB/s"


def fmt_x(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}×"


def fmt_pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.0f}%"


def fmt_mib(b: int | None) -> str:
    return "" if b is None else f"{b / MiB:.1f}"


def _cell(record: dict | None) -> str:
    if record is None:
        return ""
    if record.get("status") != "ok":
        return record.get("status", "error")
    return fmt_ms(record["time_ms"])


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


# --- tables -----------------------------------------------------------------------------------

def group_ops(records: list[dict]) -> list[tuple[tuple, dict]]:
    """[(op, source, shape, dtype, pass), {backend: record}] in first-seen order."""
    groups: dict = {}
    for r in records:
        if r.get("backend") == "*":
            continue
        key = (r["op"], r["source"], r["shape"], r["dtype"], r["pass"])
        groups.setdefault(key, {})[r["backend"]] = r
    return list(groups.items())


def _present(records: list[dict], key: str = "backend") -> list[str]:
    seen = {r.get(key) for r in records}
    return [b for b in BACKEND_ORDER if b in seen]


def ops_table(records: list[dict]) -> str:
    backends = _present(records)
    # speedup / ceiling columns only for gpudnn backends with at least one measurement
    subjects = [b for b in SUBJECTS if any(r.get("backend") == b and r.get("status") == "ok"
                                           for r in records)]
    mem_backends = [b for b in ("triton", "cupy", "eager") if b in backends]
    header = ["op", "from", "shape", "dtype", "pass"]
    header += [f"{BACKEND_TITLES[b]} ms" for b in backends]
    for s in subjects:
        header += [f"{s} rate", f"{s} % of ceiling", f"{s} × eager", f"{s} × compile"]
    header += [f"{what} MiB " + " / ".join(mem_backends)
               for what in ("peak", "kept for bwd")]
    rows = []
    for (op, source, shape, dtype, mode), by in group_ops(records):
        row = [op, source, shape, dtype, mode] + [_cell(by.get(b)) for b in backends]
        for s in subjects:
            r = by.get(s)
            ok = r is not None and r.get("status") == "ok"
            row += [fmt_rate(r) if ok and "GBps" in r else "",
                    fmt_pct(r.get("ceiling_fraction")) if ok else "",
                    fmt_x(r.get("speedup", {}).get("eager")) if ok else "",
                    fmt_x(r.get("speedup", {}).get("compile-best")) if ok else ""]
        for key in ("peak_bytes", "held_after_forward_bytes"):
            mems = [fmt_mib(by[b].get(key)) if b in by else "" for b in mem_backends]
            row.append(" / ".join(mems) if any(mems) else "")
        rows.append(row)
    return _table(header, rows)


def models_table(records: list[dict]) -> str:
    header = ["model", "precision", "backend", "ms / step", "peak MiB", "× eager", "× compile",
              "optimizer", "first loss"]
    rows = []
    for r in records:
        ok = r.get("status") == "ok"
        rows.append([r["model"], r.get("precision", r["dtype"]), BACKEND_TITLES.get(
            r["backend"], r["backend"]),
            fmt_ms(r["time_ms"]) if ok else r.get("status", "error"),
            fmt_mib(r.get("peak_bytes")) if ok else "",
            fmt_x(r.get("speedup", {}).get("eager")) if ok and r["backend"] != "eager" else "",
            fmt_x(r.get("speedup", {}).get("compile-best")) if ok and r["backend"] in SUBJECTS
            else "",
            r.get("optimizer", ""), f"{r['first_loss']:.4f}" if "first_loss" in r else ""])
    return _table(header, rows)


def ceilings_table(ceilings: dict) -> str:
    if not ceilings or "copy_GBps" not in ceilings:
        return f"Ceilings were not measured: {ceilings.get('error', 'unknown reason')}" \
            if ceilings else "Ceilings were not measured."
    keys = [k for k in ("bf16", "fp16", "tf32", "fp32") if k in ceilings["matmul_TFLOPs"]]
    header = ["device copy (read + write)"] + [f"{k} matmul" for k in keys]
    row = [f"{ceilings['copy_GBps']:.0f} GB/s"] + [
        f"{ceilings['matmul_TFLOPs'][k]:.0f} TFLOP/s" for k in keys]
    return _table(header, [row])


def failures(records: list[dict], limit: int = 60) -> str:
    """One line per distinct failure message (the JSON has every one)."""
    seen: dict = {}
    for r in records:
        if r.get("status") in ("missing", "error"):
            what = r.get("op", r.get("model"))
            key = (r.get("backend"), r.get("status"), r.get("error", "")[:200])
            seen.setdefault(key, []).append(what)
    lines = []
    for (backend, status, error), whats in list(seen.items())[:limit]:
        ops = sorted(set(whats))
        lines.append(f"- {backend} {status} ({len(whats)}×: {', '.join(ops[:6])}"
                     f"{', ...' if len(ops) > 6 else ''}): `{error.replace('`', chr(39))}`")
    if len(seen) > limit:
        lines.append(f"- ... {len(seen) - limit} more distinct failures in results.json")
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    env = results.get("environment", {})
    facts = [f"{k} {env[k]}" for k in ("torch", "triton", "cupy") if env.get(k)]
    if env.get("torch_cuda"):
        facts.append(f"CUDA {env['torch_cuda']}")
    if env.get("driver"):
        facts.append(f"driver {env['driver']}")
    commit = (env.get("git_commit") or "unknown")[:12] + (" (dirty)" if env.get("git_dirty")
                                                           else "")
    parts = [f"### gpudnn profile on {env.get('gpu', 'unknown GPU')}", "",
             f"{env.get('date', '')} · commit {commit} · " + " · ".join(facts), "",
             "Ceilings measured at the start of the run:", "",
             ceilings_table(results.get("ceilings", {})), ""]
    ops = results.get("ops", [])
    if ops:
        parts += ["Ops: median ms per call (CUDA events; L2 flushed for large shapes, inputs "
                  "rotated under CUDA-graph replay for model shapes). Rate and % of ceiling: "
                  "achieved GB/s or TFLOP/s and the roofline floor (minimum bytes over copy "
                  "bandwidth, or FLOPs over the matmul rate) over the time. × eager / × compile: "
                  "torch's time over gpudnn's (> 1 is faster; compile = the faster of its two "
                  "modes). Peak MiB: forward + backward; kept for bwd: what the forward leaves "
                  "allocated (output and saved tensors).", "", ops_table(ops), ""]
    models = results.get("models", [])
    if models:
        parts += ["Training steps end to end (Adam; bf16 = torch.autocast):", "",
                  models_table(models), ""]
    fails = failures(ops + models)
    if fails:
        parts += ["Failed or missing measurements (details in results.json):", "", fails, ""]
    for note in results.get("notes", []):
        parts += [f"Note: {note}", ""]
    return "\n".join(parts)


# --- plots ------------------------------------------------------------------------------------

def write_plots(results: dict, out_dir: str) -> list[str]:
    """speedup_<dtype>_<pass>.png and roofline_<dtype>_<pass>.png; [] and a printed note when
    matplotlib is not importable."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        print(f"profiling: plots skipped (matplotlib not importable: {exc}); "
              "`pip install matplotlib` to get them")
        return []
    written = []
    groups = group_ops(results.get("ops", []))
    for dtype, mode in sorted({(k[3], k[4]) for k, _ in groups}):
        rows = [(k, by) for k, by in groups if k[3] == dtype and k[4] == mode]
        labels = [f"{k[0]} [{k[2][:40]}]" for k, _ in rows]
        height = max(3.0, 0.28 * len(rows) + 1.5)
        for kind in ("speedup", "roofline"):
            fig, ax = plt.subplots(figsize=(10, height))
            series = _plot_series(rows, kind)
            if not any(v is not None for _, values in series for v in values):
                plt.close(fig)
                continue
            bar = 0.8 / max(1, len(series))
            for j, (name, values) in enumerate(series):
                ys = [i + j * bar for i in range(len(rows))]
                ax.barh(ys, [v if v is not None else float("nan") for v in values], height=bar,
                        label=name)
            ax.set_yticks([i + 0.4 - bar / 2 for i in range(len(rows))])
            ax.set_yticklabels(labels, fontsize=7)
            ax.invert_yaxis()
            if kind == "speedup":
                ax.set_xscale("log")
                ax.axvline(1.0, color="k", lw=0.8)
                ax.set_xlabel("speedup (torch time / gpudnn time), log scale")
            else:
                ax.axvline(1.0, color="k", lw=0.8)
                ax.set_xlabel("fraction of the measured ceiling (roofline floor / time)")
            gpu = results.get("environment", {}).get("gpu", "")
            ax.set_title(f"{kind}: {dtype} {mode} — {gpu}")
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            fig.tight_layout()
            path = os.path.join(out_dir, f"{kind}_{dtype}_{mode.replace('+', '_')}.png")
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(path)
    return written


def _plot_series(rows, kind: str) -> list[tuple[str, list]]:
    series = []
    if kind == "speedup":
        for s in SUBJECTS:
            for base in ("eager", "compile-best"):
                values = [by.get(s, {}).get("speedup", {}).get(base) for _, by in rows]
                if any(v is not None for v in values):
                    series.append((f"{s} vs {base}", values))
    else:
        for b in BACKEND_ORDER:
            values = [by.get(b, {}).get("ceiling_fraction") for _, by in rows]
            if any(v is not None for v in values):
                series.append((BACKEND_TITLES[b], values))
    return series


def write_all(results: dict, out_dir: str, plots: bool = True) -> dict:
    """results.json, results.md and (optionally) the plots; returns their paths."""
    paths = {"json": os.path.join(out_dir, "results.json"),
             "md": os.path.join(out_dir, "results.md")}
    write_json(paths["json"], results)
    write_text(paths["md"], render_markdown(results))
    if plots:
        paths["plots"] = write_plots(results, out_dir)
    return paths
