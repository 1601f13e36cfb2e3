"""The GPU check's summary: what ``make gpu-check`` found, in one JSON and one Markdown file.

``build(results_dir, order)`` reads what the check's phases left in ``results_dir``
(``check/run.json``, ``check/env.json``, ``check/ceilings.json``, ``check/phase-<name>.json``
and the merged profile ``results.json``) and returns the summary: the run (GPU, date, commit,
versions, ceilings), each phase's status with its passed / failed / skipped counts, and each
op's and model's time for gpudnn's backends with its speedup over torch eager and
torch.compile and its fraction of the measured ceiling. ``render_markdown`` writes it for
people (summary.md), ``readme_table`` the part the README shows (``python -m profiling.readme``).
Everything here is a function of the folder, so a summary can be rebuilt after phases were
rerun (``python -m profiling.gpu_check --summarize DIR``).
"""
from __future__ import annotations

import json
import os

from .report import BACKEND_TITLES, SUBJECTS, _table, fmt_ms, fmt_pct, fmt_x, group_ops

COUNTS = ("passed", "failed", "skipped")


def load(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _subject(record: dict | None) -> dict | None:
    """A gpudnn backend's cell of a row: its time, speedups, ceiling fraction, error."""
    if record is None:
        return None
    cell = {"status": record.get("status")}
    if record.get("status") == "ok":
        speed = record.get("speedup", {})
        cell.update(time_ms=record.get("time_ms"), x_eager=speed.get("eager"),
                    x_compile=speed.get("compile-best"),
                    ceiling_fraction=record.get("ceiling_fraction"),
                    rel_err_vs_eager=record.get("rel_err_vs_eager"))
    else:
        cell["error"] = record.get("error", "")[:300]
    return cell


def _time(record: dict | None) -> float | None:
    return record.get("time_ms") if record and record.get("status") == "ok" else None


def op_rows(ops: list[dict]) -> list[dict]:
    """One row per (op, source, shape, dtype, pass): eager's and compile's times and a cell
    per gpudnn backend."""
    rows = []
    for (op, source, shape, dtype, mode), by in group_ops(ops):
        rows.append({"op": op, "source": source, "shape": shape, "dtype": dtype, "pass": mode,
                     "eager_ms": _time(by.get("eager")), "compile_ms": _time(by.get("compile")),
                     **{b: _subject(by.get(b)) for b in SUBJECTS if b in by}})
    return rows


def model_rows(models: list[dict]) -> list[dict]:
    """One row per (model, precision), the same cells as ``op_rows`` (time per step)."""
    groups: dict = {}
    for r in models:
        if r.get("backend") != "*":
            groups.setdefault((r["model"], r.get("precision", r["dtype"])), {})[r["backend"]] = r
    return [{"model": model, "precision": precision, "eager_ms": _time(by.get("eager")),
             "compile_ms": _time(by.get("compile")),
             **{b: _subject(by.get(b)) for b in SUBJECTS if b in by}}
            for (model, precision), by in groups.items()]


def build(results_dir: str, order: list[str] | tuple = ()) -> dict:
    """The summary of the check whose files are in ``results_dir`` (phases in ``order`` first,
    then any other phase record found)."""
    check = os.path.join(results_dir, "check")
    run = load(os.path.join(check, "run.json")) or {}
    env = load(os.path.join(check, "env.json")) or {}
    ceilings = load(os.path.join(check, "ceilings.json")) or {}
    profile = load(os.path.join(results_dir, "results.json")) or {}
    found = sorted(f[len("phase-"):-len(".json")] for f in os.listdir(check)
                   if f.startswith("phase-") and f.endswith(".json")) if os.path.isdir(check) \
        else []
    names = [n for n in order if n in found] + [n for n in found if n not in order]
    phases = [load(os.path.join(check, f"phase-{n}.json")) or {"name": n, "status": "unreadable"}
              for n in names]
    return {
        "gpu": env.get("gpu") or run.get("gpu"),
        "date": run.get("started") or env.get("date"),
        "dry_run": bool(run.get("dry_run")),
        "commit": env.get("git_commit"), "dirty": env.get("git_dirty"),
        "source_digest": env.get("source_digest"),
        "versions": {k: env.get(k) for k in ("torch", "torch_cuda", "triton", "cupy", "driver",
                                              "cudnn", "host_python")},
        "tools": env.get("tools", {}),
        "budget_s": run.get("budget_s"), "wall_s": run.get("wall_s"),
        "ceilings": ceilings.get("ceilings") or profile.get("ceilings") or {},
        "phases": phases,
        "totals": {k: sum(p.get(k, 0) or 0 for p in phases) for k in COUNTS},
        "ops": op_rows(profile.get("ops", [])),
        "models": model_rows(profile.get("models", [])),
        "notes": profile.get("notes", []),
    }


# --- Markdown ---------------------------------------------------------------------------------

def _ceilings_line(c: dict) -> str:
    if "copy_GBps" not in c:
        return f"Ceilings not measured ({c.get('error', 'no result')})."
    rates = ", ".join(f"{k} {v:.3g}" for k, v in c.get("matmul_TFLOPs", {}).items())
    return f"Measured ceilings: device copy {c['copy_GBps']:.4g} GB/s; matmul TFLOP/s {rates}."


def phases_table(phases: list[dict]) -> str:
    rows = [[p.get("name", "?"), p.get("status", "?")] + [str(p.get(k, "")) for k in COUNTS]
            + [f"{p.get('wall_s', 0):.0f} / {p.get('timeout_s', p.get('budget_s', 0)):.0f}",
               (p.get("detail") or "")[:160]] for p in phases]
    return _table(["phase", "status", *COUNTS, "s used / allowed", "detail"], rows)


def _subjects(rows: list[dict]) -> list[str]:
    return [b for b in SUBJECTS if any(r.get(b) for r in rows)]


def _ms(v) -> str:
    return "" if v is None else fmt_ms(v)


def _cells(row: dict, subjects: list[str], ceiling: bool = True) -> list[str]:
    out = [_ms(row.get("eager_ms")), _ms(row.get("compile_ms"))]
    for b in subjects:
        c = row.get(b)
        if not c:
            out += [""] * (4 if ceiling else 3)
            continue
        if c.get("status") != "ok":
            out += [c.get("status", "error")] + [""] * (3 if ceiling else 2)
            continue
        out += [_ms(c.get("time_ms")), fmt_x(c.get("x_eager")), fmt_x(c.get("x_compile"))]
        if ceiling:
            out.append(fmt_pct(c.get("ceiling_fraction")))
    return out


def ops_table(rows: list[dict]) -> str:
    subjects = _subjects(rows)
    header = ["op", "from", "shape", "dtype", "pass", "eager ms", "compile ms"]
    for b in subjects:
        header += [f"{BACKEND_TITLES[b]} ms", "× eager", "× compile", "% of ceiling"]
    return _table(header, [[r["op"], r["source"], r["shape"], r["dtype"], r["pass"]]
                           + _cells(r, subjects) for r in rows])


def models_table(rows: list[dict]) -> str:
    subjects = _subjects(rows)
    header = ["model", "precision", "eager ms/step", "compile ms/step"]
    for b in subjects:
        header += [f"{BACKEND_TITLES[b]} ms/step", "× eager", "× compile"]
    return _table(header, [[r["model"], r["precision"]] + _cells(r, subjects, ceiling=False)
                           for r in rows])


def readme_table(summary: dict, link: str | None = None) -> str:
    """What the README shows: the run, the phases, every op and model (``link``: the folder of
    the full results, relative to the README)."""
    v = summary.get("versions", {})
    commit = (summary.get("commit") or "unknown")[:12] + (" (dirty)" if summary.get("dirty")
                                                          else "")
    facts = [f"{k} {v[k]}" for k in ("torch", "triton", "cupy") if v.get(k)]
    facts += [f"CUDA {v['torch_cuda']}"] if v.get("torch_cuda") else []
    facts += [f"driver {v['driver']}"] if v.get("driver") else []
    t = summary.get("totals", {})
    parts = [f"### GPU check on {summary.get('gpu') or 'unknown GPU'}"
             + (" (DRY RUN: fake times, no GPU)" if summary.get("dry_run") else ""), "",
             f"{summary.get('date') or ''} · commit {commit} · source digest "
             f"{summary.get('source_digest')} · " + " · ".join(facts), "",
             _ceilings_line(summary.get("ceilings", {})), "",
             f"Phases ({t.get('passed', 0)} passed, {t.get('failed', 0)} failed, "
             f"{t.get('skipped', 0)} skipped in all):", "",
             phases_table(summary.get("phases", [])), ""]
    if summary.get("ops"):
        parts += ["Ops (median ms per call; × eager / × compile: torch's time over gpudnn's, "
                  "> 1 is faster; % of ceiling: the roofline floor over the time):", "",
                  ops_table(summary["ops"]), ""]
    if summary.get("models"):
        parts += ["Training steps end to end:", "", models_table(summary["models"]), ""]
    if link:
        parts += [f"Full results: [{link}/results.md]({link}/results.md), "
                  f"[{link}/summary.md]({link}/summary.md) and the files beside them.", ""]
    return "\n".join(parts)


def render_markdown(summary: dict) -> str:
    """summary.md: the README's part, then what failed, phase by phase."""
    parts = [readme_table(summary)]
    for p in summary.get("phases", []):
        problems = p.get("problems") or []
        if problems:
            parts += [f"#### {p.get('name')}: {p.get('status')}", ""]
            parts += [f"- {line}" for line in problems] + [""]
    for note in summary.get("notes", []):
        parts += [f"Note: {note}", ""]
    return "\n".join(parts)
