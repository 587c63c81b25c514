"""Before a run changes anything: how its plan is shown, and whether its files hold.

* :func:`plan_items` and :func:`rollback_items`: a plan's steps as the
  :class:`~asyncmig.PlanItem` values of ``RunStarted``;
* :func:`emit_planned`: a dry run's ``StatementPlanned`` events, one per statement that
  would run;
* :class:`FileChecker`: split and check a plan's files in a worker thread (lazy loading
  defers both to here), emitting each file's notices once;
* :func:`explain_resume`: plan under the lock; a stop for ``--resume`` also names the
  INVALID indexes the stopped migration builds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from . import indexes
from .connection import Conn
from .errors import ResumeRequiredError
from .events import Direction, Emitter, Message, PlanItem, StatementPlanned, preview
from .history import History
from .loader import Migration, MigrationSet, SqlFile, parse_sql_text
from .models import HistoryRow, MigrateStep, RollbackStep
from .splitter import Statement

__all__ = [
    "FileChecker",
    "emit_planned",
    "explain_resume",
    "parse_stored",
    "plan_items",
    "rollback_items",
]


def plan_items(steps: Sequence[MigrateStep]) -> tuple[PlanItem, ...]:
    """What ``migrate`` will apply, for ``RunStarted``."""
    return tuple(_item(s.migration, s.migration.forward, "up", s.resume_from) for s in steps)


def rollback_items(steps: Sequence[RollbackStep]) -> tuple[PlanItem, ...]:
    """What ``rollback`` will undo, for ``RunStarted``."""
    return tuple(_item(s, s.sql, "down") for s in steps)


def _item(of: Migration | RollbackStep, sql: SqlFile, way: Direction, done: int = 0) -> PlanItem:
    count, transactional = len(sql.statements), sql.directives.transactional
    return PlanItem(of.version, of.name, of.filename, count, transactional, way, done)


async def emit_planned(
    emit: Emitter, version: int, statements: Sequence[Statement], start: int = 0
) -> None:
    """A dry run: one ``StatementPlanned`` per statement from ``start`` (0-based) on."""
    for i, st in enumerate(statements[start:], start + 1):
        planned = StatementPlanned(
            version=version,
            index=i,
            total=len(statements),
            line=st.line,
            column=st.column,
            keyword=st.keyword,
            preview=preview(st.text),
        )
        await emit(planned)


class FileChecker:
    """Split and check a plan's files in a worker thread, before anything runs, and
    emit each file's notices once (lazy loading defers both to here)."""

    def __init__(self, emit: Emitter) -> None:
        self._emit = emit
        self._seen: set[Path] = set()

    async def __call__(self, files: Sequence[SqlFile]) -> None:
        await anyio.to_thread.run_sync(_check_all, files)
        for f in files:
            if f.path in self._seen:
                continue
            self._seen.add(f.path)
            for text in f.notices:
                await self._emit(Message(level="notice", text=text))


def _check_all(files: Sequence[SqlFile]) -> None:
    for f in files:
        f.check()


def parse_stored(text: str, label: str) -> SqlFile:
    """Rollback SQL stored in history, as a file named ``label``."""
    return parse_sql_text(text, Path(label))


async def explain_resume(
    conn: Conn,
    history: History,
    migrations: MigrationSet,
    plan: Callable[[dict[int, HistoryRow]], tuple[MigrateStep, ...]],
    rows: dict[int, HistoryRow],
) -> tuple[MigrateStep, ...]:
    """Plan under the lock; a stop for ``--resume`` also names the INVALID indexes that
    the stopped migration builds (a failed concurrent build; its runner is dead: this
    run holds the lock) and the flag that rebuilds them."""
    try:
        return plan(rows)
    except ResumeRequiredError as exc:
        mig = migrations.get(exc.version) if exc.version is not None else None
        found = await indexes.invalid_in(conn, history, mig.forward) if mig else []
        if not found:
            raise
        names = list(dict.fromkeys(idx.qualified for _, idx in found))
        raise ResumeRequiredError(
            exc.message
            + f" Index {', '.join(names)} that it builds is INVALID (a failed concurrent "
            + "build): `asyncmig migrate --resume --rebuild-invalid` drops it concurrently "
            + "and builds it again.",
            version=exc.version or 0,
            statements_done=exc.statements_done,
            invalid_indexes=names,
        ) from None
