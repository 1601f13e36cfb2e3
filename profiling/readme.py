"""``python -m profiling.readme``: put the newest results.md into README.md.

Replaces what lies between ``<!-- gpudnn:profile-table:start -->`` and
``<!-- gpudnn:profile-table:end -->`` in README.md with the newest
``profiling/results/<gpu>/results.md`` (newest by the run date in its results.json, else by
file time) and a link to it. Nothing else in the README changes; without both markers it
changes nothing and exits with code 1.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

START = "<!-- gpudnn:profile-table:start -->"
END = "<!-- gpudnn:profile-table:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_date(md_path: str) -> str:
    try:
        with open(os.path.join(os.path.dirname(md_path), "results.json")) as f:
            return json.load(f).get("environment", {}).get("date") or ""
    except (OSError, ValueError):
        return ""


def newest_results(results_root: str) -> str | None:
    """Path of the newest results.md under ``results_root/*/``."""
    found = glob.glob(os.path.join(results_root, "*", "results.md"))
    if not found:
        return None
    return max(found, key=lambda p: (_run_date(p), os.path.getmtime(p)))


def replace_section(readme: str, body: str) -> str:
    """README text with the marked section's body replaced (ValueError without the markers)."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} section")
    return readme[:start + len(START)] + "\n" + body.strip("\n") + "\n" + readme[end:]


def update(readme_path: str, results_root: str) -> str:
    """Rewrite the README section from the newest results; returns the results.md used."""
    newest = newest_results(results_root)
    if newest is None:
        raise FileNotFoundError(f"no results.md under {results_root}/*/ (run `make profile` on "
                                "a GPU first)")
    with open(newest) as f:
        table = f.read()
    with open(readme_path) as f:
        readme = f.read()
    rel = os.path.relpath(newest, os.path.dirname(os.path.abspath(readme_path)))
    body = f"{table.strip()}\n\nFull results: [{rel}]({rel}) (and results.json, plots beside it)."
    updated = replace_section(readme, body)
    if updated != readme:
        with open(readme_path, "w") as f:
            f.write(updated)
    return newest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m profiling.readme", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    parser.add_argument("--results", default=os.path.join(ROOT, "profiling", "results"))
    args = parser.parse_args(argv)
    try:
        used = update(args.readme, args.results)
    except (OSError, ValueError) as exc:
        print(f"profiling.readme: {exc}", file=sys.stderr)
        return 1
    print(f"profiling.readme: {args.readme} now shows {used}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
