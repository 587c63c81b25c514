"""Measure one command as a whole process: ``python -m bench.engine_child SPEC_JSON``.

SPEC is ``{"argv": [...], "cwd": "...", "env": {...}}``. This small, fresh process starts
the command with its stdout on a pipe (what CI captures: not a terminal), reads that pipe
to the end as a log collector would, waits, and prints one JSON line::

    {"wall": seconds from spawn to exit, "rc": exit code, "lines": stdout lines,
     "bytes": stdout bytes, "peak_rss_mb": the command's peak resident memory,
     "cpu": its user + system CPU seconds (less sensitive than wall time to a busy
     machine)}

The peak is ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` taken here, in a process that has
waited for nothing else. Linux carries ``ru_maxrss`` across fork + exec, so a child of
the big benchmark process would report the benchmark's peak; a child of this small
process can at most inherit this process's ~10 MB, far below what is being measured.
psql and asyncmig are both measured through this same wrapper, so both pay the same.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time


def main(spec: dict[str, object]) -> None:
    argv = [str(a) for a in spec["argv"]]  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=spec.get("cwd"), env=spec.get("env"),  # type: ignore[arg-type]
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak = usage.ru_maxrss / 1024
    result = {
        "wall": wall,
        "rc": proc.returncode,
        "lines": out.count(b"\n"),
        "bytes": len(out),
        "peak_rss_mb": peak,
        "cpu": usage.ru_utime + usage.ru_stime,
        "stderr": err.decode(errors="replace")[-2000:] if proc.returncode else "",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
