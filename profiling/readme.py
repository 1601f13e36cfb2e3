"""``python -m profiling.readme``: put the newest GPU results into README.md.

Replaces what lies between ``<!-- gpudnn:profile-table:start -->`` and
``<!-- gpudnn:profile-table:end -->`` in README.md with the newest results folder
``profiling/results/<gpu>/`` (newest by the run date in its summary.json or results.json, else
by file time): the GPU check's summary (``summary.json``, written by ``make gpu-check``: phases,
every op's speedup over eager and torch.compile and its fraction of the ceiling) where there is
one, else the profile's ``results.md``; and links to the full results. Nothing else in the
README changes; without both markers it changes nothing and exits with code 1.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

from . import summary as summaries

START = "<!-- gpudnn:profile-table:start -->"
END = "<!-- gpudnn:profile-table:end -->"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("summary.json", "results.md")    # what a results folder can give the README


def _run_date(folder: str) -> str:
    for name, key in (("summary.json", None), ("results.json", "environment")):
        try:
            with open(os.path.join(folder, name)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue
        date = (data.get(key, {}) if key else data).get("date")
        if date:
            return date
    return ""


def newest_results(results_root: str) -> str | None:
    """The newest folder's summary.json, else its results.md, under ``results_root/*/``."""
    found = []
    for folder in glob.glob(os.path.join(results_root, "*")):
        there = [os.path.join(folder, n) for n in SOURCES if os.path.exists(os.path.join(folder,
                                                                                         n))]
        found += there[:1]
    if not found:
        return None
    return max(found, key=lambda p: (_run_date(os.path.dirname(p)), os.path.getmtime(p)))


def replace_section(readme: str, body: str) -> str:
    """README text with the marked section's body replaced (ValueError without the markers)."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README has no {START} ... {END} section")
    return readme[:start + len(START)] + "\n" + body.strip("\n") + "\n" + readme[end:]


def update(readme_path: str, results_root: str) -> str:
    """Rewrite the README section from the newest results; returns the file used."""
    newest = newest_results(results_root)
    if newest is None:
        raise FileNotFoundError(f"no summary.json or results.md under {results_root}/*/ (run "
                                "`make gpu-check` or `make profile` on a GPU first)")
    with open(readme_path) as f:
        readme = f.read()
    base = os.path.dirname(os.path.abspath(readme_path))
    if newest.endswith("summary.json"):
        folder = os.path.relpath(os.path.dirname(newest), base)
        body = summaries.readme_table(summaries.load(newest) or {}, link=folder)
    else:
        with open(newest) as f:
            table = f.read()
        rel = os.path.relpath(newest, base)
        body = f"{table.strip()}\n\nFull results: [{rel}]({rel}) (and results.json, plots " \
               "beside it)."
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
