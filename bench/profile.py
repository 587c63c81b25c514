"""Where the time goes: ``python -m bench profile``.

The engine rows compare whole processes. This section takes the apply-300 and roll
back-300 runs apart, on the same server and data, so a ratio that misses its target can
be explained by measurement rather than guesswork. Each pair (interleaved, like the
engine rows) measures:

* ``psql -X -q -1 -f`` as a whole process (the reference);
* the same statements sent by this process over one asyncpg connection, one
  simple-query message per migration (``BEGIN; …; COMMIT``), nothing of asyncmig's
  added — what any one-message-per-migration runner costs the server at best;
* the same with asyncmig's additions, one at a time: the session reset before each
  file, the markers before each statement, and the history rows (the last is exactly
  the text :func:`asyncmig.batch.build` makes, what the runner sends);
* the whole ``asyncmig`` process, and its start-up alone (``migrate`` with nothing
  pending: import, settings, loading and checksumming the 300 files, connect, read
  history).

Each timed step also reports the server backend's CPU (from ``/proc``, so only on a
local server), which is less sensitive to a busy machine than wall time. Connection
set-up is outside the in-process timings; their messages are built before timing starts.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

from asyncmig import session
from asyncmig._pgserver import PgServer
from asyncmig.batch import build
from asyncmig.history import History, Staged
from asyncmig.loader import Migration, load_migrations
from bench.engine import REPEAT, Row, Target, asyncmig, compile_bytecode, make_300

_TICK = os.sysconf("SC_CLK_TCK")


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _messages(
    migrations: Sequence[Migration], history: History, *, reset: bool, marks: bool
) -> list[str]:
    """One message per migration, with the chosen additions (history rows: use build)."""
    out = []
    for m in migrations:
        parts = [session.RESET if reset else "", session.BEGIN]
        statements = m.forward.statements
        for k, st in enumerate(statements, 1):
            if marks:
                parts.append(history.mark_sql(m.version, k, first=k == 1) + ";")
            parts.append(st.text if st.text.endswith(";") else st.text + ";")
        if marks:
            parts.append(history.mark_sql(m.version, len(statements) + 1, first=False) + ";")
        parts.append(session.COMMIT)
        out.append("".join(parts))
    return out


def _full(migrations: Sequence[Migration], history: History, *, down: bool) -> list[str]:
    """What the runner sends: per migration (apply), or one group (roll back)."""
    if down:
        files = [m.rollback for m in reversed(migrations) if m.rollback is not None]
        versions = [m.version for m in reversed(migrations)]
        return [s.text for s in build(versions, files, history, [None] * len(files))]
    return [s.text for m in migrations for s in build([m.version], [m.forward], history, [None])]


def _staged(migrations: Sequence[Migration], *, down: bool) -> list[Staged]:
    if down:
        return [
            Staged(m.version, "down", m.filename, None, None, None, 3, True)
            for m in reversed(migrations)
        ]
    return [
        Staged(m.version, "up", m.filename, m.checksum, None, None, len(m.statements), True)
        for m in migrations
    ]


async def _send(dsn: str, messages: Sequence[str], staged: Sequence[Staged] | None,
                before: str | None) -> tuple[float, float]:  # fmt: skip
    """Wall and backend CPU seconds to send ``messages``, after untimed set-up."""
    conn = await asyncpg.connect(dsn)
    try:
        conn.add_log_listener(lambda *_: None)
        if before:
            await conn.execute(before)
        if staged is not None:
            history = History()
            await history.ensure(conn)
            await history.stage(conn, staged)
        pid = conn.get_server_pid()
        cpu0, t0 = _backend_cpu(pid), time.perf_counter()
        for text in messages:
            await conn.execute(text)
        return time.perf_counter() - t0, _backend_cpu(pid) - cpu0
    finally:
        await conn.close()


def _row(label: str, walls: list[float], cpus: list[float], psql: list[float]) -> Row:
    ratios = [w / p for w, p in zip(walls, psql, strict=True)]
    cpu = f"; server CPU {statistics.median(cpus):.2f}s" if cpus else ""
    value = (f"{statistics.median(walls):.2f}s = {statistics.median(ratios):.2f}x psql "
             f"(min {min(ratios):.2f}, max {max(ratios):.2f}){cpu}")  # fmt: skip
    return (label, value, "-", None)


def _profile(t: Target, m300: Path, *, down: bool) -> list[Row]:
    migrations = list(load_migrations(m300 / "sql", m300 / "rollback"))
    history = History()
    what = "roll back 300" if down else "apply 300"
    up_sql = (m300 / "all_up.sql").read_text()
    if down:
        raw = ["BEGIN;" + (m300 / "all_down.sql").read_text() + "COMMIT"]
        steps: list[tuple[str, list[str], bool]] = [
            ("the same statements, one message, nothing added", raw, False),
            ("what asyncmig sends (reset, markers, history rows)",
             _full(migrations, history, down=True), True),
        ]  # fmt: skip
    else:
        steps = [
            ("the same statements, one message per migration, nothing added",
             _messages(migrations, history, reset=False, marks=False), False),
            ("  + a session reset before each file",
             _messages(migrations, history, reset=True, marks=False), False),
            ("  + markers before each statement",
             _messages(migrations, history, reset=True, marks=True), True),
            ("  + history rows = what asyncmig sends",
             _full(migrations, history, down=False), True),
        ]  # fmt: skip
    psql: list[float] = []
    walls: dict[str, list[float]] = {label: [] for label, _, _ in steps}
    cpus: dict[str, list[float]] = {label: [] for label, _, _ in steps}
    whole: list[float] = []
    startup: list[float] = []

    def run_psql() -> None:
        with t.database() as db:
            if down:
                asyncio.run(_send(t.server.dsn(db), [up_sql], None, None))
                psql.append(t.psql(t.server.dsn(db), m300 / "all_down.sql")["wall"])
            else:
                psql.append(t.psql(t.server.dsn(db), m300 / "all_up.sql")["wall"])

    def run_steps() -> None:
        for label, messages, needs_history in steps:
            with t.database() as db:
                staged = _staged(migrations, down=down) if needs_history else None
                before = up_sql if down else None
                wall, cpu = asyncio.run(_send(t.server.dsn(db), messages, staged, before))
                walls[label].append(wall)
                cpus[label].append(cpu)

    def run_asyncmig() -> None:
        with t.database() as db:
            dsn = t.server.dsn(db)
            if down:
                asyncmig(dsn, m300, "migrate")
                whole.append(asyncmig(dsn, m300, "rollback", "--all")["wall"])
            else:
                whole.append(asyncmig(dsn, m300, "migrate")["wall"])
                startup.append(asyncmig(dsn, m300, "migrate")["wall"])

    order: list[Callable[[], None]] = [run_psql, run_steps, run_asyncmig]
    for i in range(REPEAT):
        for step in order if i % 2 == 0 else order[::-1]:
            step()
    p = f"{t.label} {what}:"
    reference = f"{statistics.median(psql):.2f}s"
    rows: list[Row] = [(f"{p} psql -1, whole process", reference, "-", None)]
    rows += [_row(f"{p} {label}", walls[label], cpus[label], psql) for label, _, _ in steps]
    rows.append(_row(f"{p} asyncmig, whole process", whole, [], psql))
    if startup:
        rows.append(_row(f"{p} asyncmig start-up alone (migrate, nothing pending)",
                         startup, [], psql))  # fmt: skip
    return rows


def section() -> list[Row]:
    compile_bytecode()
    m300 = make_300()
    server = PgServer().start()
    try:
        major = server.version().rsplit(" ", 1)[-1].split(".")[0]
        t = Target(f"[pg{major} embedded]", server)
        return _profile(t, m300, down=False) + _profile(t, m300, down=True)
    finally:
        server.stop()


if __name__ == "__main__":
    for row in section():
        print(row)
