"""Child process for engine benchmarks: ``python -m bench.engine_child OP DSN ROOT``.

Prints one JSON line: seconds from after import to done, and peak RSS in MB.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import anyio

import asyncmig
from asyncmig.migrator import Migrator


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM).

    Not ``getrusage().ru_maxrss``: Linux carries that across fork + exec, so a child of a
    large parent (the bench, after splitting 50 MB) would report its parent's peak.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(op: str, dsn: str, root: Path) -> None:
    t0 = time.perf_counter()
    m = Migrator(dsn, sql_dir=root / "sql", rollback_dir=root / "rollback",
                 migration_timeout=0)  # fmt: skip
    if op == "migrate":
        await m.migrate()
    elif op == "rollback-all":
        await m.rollback(all=True)
    else:
        raise SystemExit(f"unknown op {op}")
    after_import = time.perf_counter() - t0
    rss = _peak_rss_mb()
    print(json.dumps({"after_import": after_import, "max_rss_mb": rss}))


if __name__ == "__main__":
    _ = asyncmig.__version__
    anyio.run(main, sys.argv[1], sys.argv[2], Path(sys.argv[3]))
