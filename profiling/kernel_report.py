"""``python -m profiling.kernel_report [--json]``: the ahead-of-time compile table, no GPU needed.

Every Triton launch configuration the launchers' heuristics can pick
(``kernels/triton/aot.py``, compiled for sm_90 in a fresh interpreter with TRITON_INTERPRET
unset) and every CuPy CUDA C source (``kernels/cupy/build.py`` ``compile_all()``, when that
module exists and nvcc is on PATH): kernel, configuration, dtype, registers, shared memory,
spills and the MMA instruction kind in the SASS. Exit code 1 when a configuration failed to
compile or the Triton compilation could not run, 0 otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

COLUMNS = ("backend", "kernel", "config", "dtype", "warps", "stages", "regs", "smem KiB",
           "spills", "local B", "MMA", "note")


def triton_rows(timeout: float = 3600) -> tuple[list[dict], str | None]:
    """(rows, why none) for every Triton configuration."""
    try:
        from gpudnn.kernels.triton import aot
    except Exception as exc:
        return [], f"kernels/triton/aot.py not importable: {type(exc).__name__}: {exc}"
    try:
        rows = aot.run_report_subprocess(timeout=timeout)
    except Exception as exc:
        return [], f"Triton AOT compilation did not run: {type(exc).__name__}: {exc}"
    return [dict(r, backend="triton") for r in rows], None


def cupy_rows() -> tuple[list[dict], str | None]:
    """(rows, why none) for every CuPy source."""
    try:
        build = importlib.import_module("gpudnn.kernels.cupy.build")
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("gpudnn.kernels.cupy.build"):
            return [], "kernels/cupy/build.py does not exist yet"
        return [], f"kernels/cupy/build.py not importable: {exc}"
    except Exception as exc:
        return [], f"kernels/cupy/build.py not importable: {type(exc).__name__}: {exc}"
    try:
        rows = build.compile_all()
    except Exception as exc:
        return [], f"CuPy sources did not compile: {type(exc).__name__}: {exc}"
    return [dict(r, backend="cupy") for r in rows], None


def row_cells(r: dict) -> list[str]:
    """One table row from an aot / build row dict (missing fields stay blank)."""
    def get(*keys, default=""):
        for k in keys:
            if r.get(k) not in (None, ""):
                return r[k]
        return default

    kernel = str(get("name", "kernel", default="?"))
    base = [str(get("backend")), kernel, str(get("label", "config")), str(get("dtype"))]
    if "error" in r:
        return base + [""] * 7 + ["COMPILE ERROR: " + " ".join(str(r["error"]).split())[:160]]
    spills = r.get("spills")
    if spills is None and ("spill_stores" in r or "spill_loads" in r):
        spills = int(r.get("spill_stores", 0)) + int(r.get("spill_loads", 0))
    shared = r.get("shared_bytes")
    notes = []
    if r.get("expect_mma") and r.get("mma") != r["expect_mma"]:
        notes.append(f"wants {r['expect_mma']}")
    if spills and r.get("spill_reason"):
        notes.append(f"spills: {r['spill_reason']}")
    elif spills:
        notes.append("UNEXPLAINED SPILLS")
    return base + [str(get("num_warps", "warps") or ""), str(get("num_stages", "stages") or ""),
                   str(get("registers", "regs")),
                   f"{shared / 1024:.1f}" if isinstance(shared, (int, float)) else "",
                   "" if spills is None else str(spills), str(get("local_bytes")),
                   str(get("mma")) or "-", "; ".join(notes)]


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of the rows, one line per configuration."""
    cells = [list(COLUMNS)] + [row_cells(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip()
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    errors = sum("error" in r for r in rows)
    spilled = sum(1 for r in rows if "error" not in r and (r.get("spills") or 0) > 0)
    mma = {}
    for r in rows:
        if "error" not in r:
            mma[r.get("mma") or "none"] = mma.get(r.get("mma") or "none", 0) + 1
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(mma.items()))
    return (f"{len(rows)} configurations, {errors} failed to compile, {spilled} with spills; "
            f"MMA kinds: {kinds or '-'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiling.kernel_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds allowed for compiling every Triton configuration")
    args = parser.parse_args(argv)
    rows, triton_failed = triton_rows(args.timeout)
    notes = [triton_failed] if triton_failed else []
    found, why = cupy_rows()
    rows += found
    if why:
        notes.append(why)
    if args.json:
        json.dump({"rows": rows, "notes": notes}, sys.stdout, indent=1, default=str)
        print()
    else:
        print(format_table(rows))
        print(summary(rows))
        for note in notes:
            print(f"note: {note}")
    return 1 if triton_failed or any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
