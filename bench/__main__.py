"""Run the benchmark sections and print one table: ``python -m bench [SECTION ...]``.

A section is a callable returning rows of ``(name, value, target, ok)``; adding one is a
one-line change to :data:`SECTIONS`. With arguments, only the named sections run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from bench import cli, engine, profile, splitter, testing

Row = tuple[str, str, str, bool | None]  # ok None: a figure without a target

SECTIONS: list[tuple[str, Callable[[], list[Row]]]] = [
    ("splitter", splitter.section),
    ("engine", engine.section),
    ("profile", profile.section),
    ("cli", cli.section),
    ("testing", testing.section),
]


def main(argv: list[str]) -> int:
    wanted = set(argv)
    unknown = wanted - {name for name, _ in SECTIONS}
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    rows: list[tuple[str, Row]] = []
    for name, section in SECTIONS:
        if wanted and name not in wanted:
            continue
        started = time.perf_counter()
        print(f"running {name} …", file=sys.stderr, flush=True)
        rows.extend((name, row) for row in section())
        print(f"  {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    headers = ("section", "figure", "value", "target", "ok")
    mark = {None: "-", True: "yes", False: "NO"}
    table = [(s, r[0], r[1], r[2], mark[r[3]]) for s, r in rows]
    widths = [
        max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(headers)
    ]
    for line in (headers, tuple("-" * w for w in widths), *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    missed = [f"{s}: {r[0]}" for s, r in rows if r[3] is False]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
