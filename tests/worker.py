"""A separate OS process that runs ``asyncmig.migrate`` (for multi-process lock tests).

    python -m tests.worker DSN ROOT [--gate] [key=value ...]

``key=value`` are Config fields in seconds (lock_timeout, stale_after,
heartbeat_interval, migration_timeout). Prints one JSON event per line, then
``{"event": "exit", ...}``; exit status is the error's exit code (0 on success).
With ``--gate`` the worker imports everything, prints ``{"event": "ready"}`` and waits
for a line on stdin before it starts, so that a test can start several at one moment.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio

import asyncmig
from asyncmig.events import Event


def _print(event: Event) -> None:
    print(event.to_json(), flush=True)


async def main(argv: list[str]) -> int:
    gate = "--gate" in argv
    argv = [a for a in argv if a != "--gate"]
    dsn, root = argv[0], Path(argv[1])
    options = {k: float(v) for k, v in (a.split("=", 1) for a in argv[2:])}
    if gate:
        print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
    try:
        report = await asyncmig.migrate(
            dsn, sql_dir=root / "sql", rollback_dir=root / "rollback", on_event=_print,
            **options,
        )  # fmt: skip
    except asyncmig.AsyncmigError as exc:
        print(json.dumps({"event": "exit", "error": exc.to_dict()}, default=str), flush=True)
        return exc.exit_code
    print(json.dumps({"event": "exit", "applied": list(report.versions)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
