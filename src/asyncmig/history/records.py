"""The history rows and the audit log: reading the rows, staging a run's plan, and
recording each version as applied, rolled back, running (with its resume point) or failed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..connection import Conn
from ..models import HistoryRow
from ..session import OWN_IDENTITY
from .names import HOSTNAME, Names

_ROW_COLUMNS = (
    "version, filename, checksum, status, executed_at, executed_by, execution_time_ms, "
    "statements_total, statements_done, transactional, error_message, error_sqlstate, "
    "rollback_sql, rollback_checksum"
)


@dataclass(frozen=True, slots=True)
class Staged:
    """What one planned file's history row will say (see :meth:`History.stage`)."""

    version: int
    direction: str  # "up" or "down"
    filename: str
    checksum: str | None
    rollback_sql: str | None
    rollback_checksum: str | None
    statements: int
    transactional: bool


def _row(rec: asyncpg.Record | Mapping[str, Any]) -> HistoryRow:
    return HistoryRow(
        version=int(rec["version"]),
        filename=rec["filename"],
        checksum=rec["checksum"],
        status=rec["status"],
        executed_at=rec["executed_at"],
        executed_by=rec["executed_by"],
        execution_time_ms=rec["execution_time_ms"],
        statements_total=rec["statements_total"],
        statements_done=rec["statements_done"],
        transactional=rec["transactional"],
        error_message=rec["error_message"],
        error_sqlstate=rec["error_sqlstate"],
        rollback_sql=rec["rollback_sql"],
        rollback_checksum=rec["rollback_checksum"],
    )


class Records(Names):
    """Reads and writes ``_migrations``, ``_migrations_staged`` and ``_migrations_log``."""

    async def rows(self, conn: Conn) -> dict[int, HistoryRow] | None:
        """Every row by version, or None when the history table does not exist yet."""
        if not await self.exists(conn):
            return None
        recs = await conn.fetch(f"SELECT {_ROW_COLUMNS} FROM {self.t_migrations} ORDER BY version")
        return {int(r["version"]): _row(r) for r in recs}

    async def stage(self, conn: Conn, rows: Sequence[Staged]) -> datetime:
        """Put the run's planned rows in place (one statement, under the lock), replacing
        whatever an earlier run left. Returns when this session started, which tells it
        apart from any later session with the same pid."""
        cols = list(zip(*(astuple(r) for r in rows), strict=True)) if rows else [()] * 8
        started: datetime = await conn.fetchval(
            f"""
WITH gone AS (DELETE FROM {self.t_staged}),
staged AS (
    INSERT INTO {self.t_staged} (version, direction, filename, checksum, rollback_sql,
        rollback_checksum, statements, transactional, host, pid)
    SELECT v, d, f, c, rs, rc, n, t, $9, $10
    FROM unnest($1::numeric[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::integer[], $8::boolean[]) AS r(v, d, f, c, rs, rc, n, t)
)
SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
""",
            *(list(c) for c in cols),
            HOSTNAME,
            os.getpid(),
        )
        return started

    async def statuses(self, conn: Conn, versions: Sequence[int]) -> dict[int, str]:
        """The status of each of ``versions`` that has a row."""
        recs = await conn.fetch(
            f"SELECT version, status FROM {self.t_migrations} WHERE version = ANY($1::numeric[])",
            list(versions),
        )
        return {int(r["version"]): r["status"] for r in recs}

    def mark_sql(self, version: int, k: int, *, first: bool) -> str:
        """The marker before statement ``k`` (``total + 1``: the file is done). Integers
        and a boolean only (``int()`` enforced): no value from a file reaches this text."""
        return f"SELECT {self.f_mark}({int(version)}, {int(k)}, {bool(first)})"

    def record_sql(self, version: int) -> str:
        """Record a staged file as done (applied, or rolled back), inside its transaction."""
        return f"SELECT {self.f_record}({int(version)})"

    async def record(self, conn: Conn, version: int, duration_ms: float) -> None:
        """As :meth:`record_sql`, one statement of its own, with the client's timing."""
        await conn.execute(f"SELECT {self.f_record}($1, $2)", version, int(duration_ms))

    async def record_completed(
        self,
        conn: Conn,
        *,
        version: int,
        filename: str,
        checksum: str,
        duration_ms: int,
        rollback_sql: str | None,
        rollback_checksum: str | None,
        statements: int,
        transactional: bool,
    ) -> None:
        """Stage and record one applied version (tests and tools; runs stage their plan)."""
        row = Staged(version, "up", filename, checksum, rollback_sql, rollback_checksum,
                     statements, transactional)  # fmt: skip
        await self.stage(conn, [row])
        await self.record(conn, version, duration_ms)

    async def record_running(
        self,
        conn: Conn,
        *,
        version: int,
        filename: str,
        checksum: str,
        statements: int,
        statements_done: int,
        rollback_sql: str | None,
        rollback_checksum: str | None,
    ) -> None:
        """A no-transaction migration starts (or resumes): its row becomes visible."""
        await conn.execute(
            f"""
INSERT INTO {self.t_migrations} AS m (version, filename, checksum, status, statements_total,
    statements_done, transactional, rollback_sql, rollback_checksum, host, pid)
VALUES ($1, $2, $3, 'running', $4, $5, false, $6, $7, $8, $9)
ON CONFLICT (version) DO UPDATE SET filename = EXCLUDED.filename,
    checksum = EXCLUDED.checksum, status = 'running', executed_at = now(),
    executed_by = current_user, statements_total = EXCLUDED.statements_total,
    statements_done = EXCLUDED.statements_done, transactional = false,
    rollback_sql = EXCLUDED.rollback_sql, rollback_checksum = EXCLUDED.rollback_checksum,
    error_message = NULL, error_sqlstate = NULL, error_statement = NULL,
    error_line = NULL, error_column = NULL, host = EXCLUDED.host, pid = EXCLUDED.pid,
    rolled_back_at = NULL
""",
            version,
            filename,
            checksum,
            statements,
            statements_done,
            rollback_sql,
            rollback_checksum,
            HOSTNAME,
            os.getpid(),
        )

    def progress_commit_sql(self, version: int, statements_done: int) -> str:
        """Advance a no-transaction migration's resume point and COMMIT the statement
        that got it there, as the connecting user: one message, so the statement and its
        resume point commit together. Both values are integers (``int()`` enforced)."""
        return (
            f"{OWN_IDENTITY};UPDATE {self.t_migrations} SET statements_done = "
            f"{int(statements_done)} WHERE version = {int(version)};COMMIT"
        )

    async def record_failure(
        self,
        conn: Conn,
        *,
        version: int,
        filename: str,
        checksum: str,
        duration_ms: int,
        statements: int,
        statements_done: int,
        transactional: bool,
        message: str,
        sqlstate: str | None,
        statement_index: int | None,
        line: int | None,
        column: int | None,
        direction: str = "up",
    ) -> None:
        """Record a failure in its own transaction (call after the rollback).

        A failed rollback leaves the row ``completed`` (the schema is still applied) and
        only writes the error fields and the audit log.
        """
        detail = json.dumps(
            {
                "message": message,
                "sqlstate": sqlstate,
                "statement": statement_index,
                "line": line,
                "column": column,
            }
        )
        async with conn.transaction():
            if direction == "up":
                await conn.execute(
                    f"""
INSERT INTO {self.t_migrations} AS m (version, filename, checksum, status, execution_time_ms,
    statements_total, statements_done, transactional, error_message, error_sqlstate,
    error_statement, error_line, error_column, host, pid)
VALUES ($1, $2, $3, 'failed', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (version) DO UPDATE SET filename = EXCLUDED.filename,
    checksum = EXCLUDED.checksum, status = 'failed', executed_at = now(),
    executed_by = current_user, execution_time_ms = EXCLUDED.execution_time_ms,
    statements_total = EXCLUDED.statements_total,
    statements_done = CASE WHEN m.status = 'running' AND NOT EXCLUDED.transactional
        THEN m.statements_done ELSE EXCLUDED.statements_done END,
    transactional = EXCLUDED.transactional, error_message = EXCLUDED.error_message,
    error_sqlstate = EXCLUDED.error_sqlstate, error_statement = EXCLUDED.error_statement,
    error_line = EXCLUDED.error_line, error_column = EXCLUDED.error_column,
    host = EXCLUDED.host, pid = EXCLUDED.pid
WHERE m.status <> 'completed'
""",
                    version,
                    filename,
                    checksum,
                    duration_ms,
                    statements,
                    statements_done,
                    transactional,
                    message,
                    sqlstate,
                    statement_index,
                    line,
                    column,
                    HOSTNAME,
                    os.getpid(),
                )
            else:
                await conn.execute(
                    f"UPDATE {self.t_migrations} SET error_message = $2, error_sqlstate = $3, "
                    f"error_statement = $4, error_line = $5, error_column = $6 "
                    f"WHERE version = $1",
                    version,
                    message,
                    sqlstate,
                    statement_index,
                    line,
                    column,
                )
            await self.log(
                conn,
                "fail" if direction == "up" else "rollback_fail",
                version=version,
                filename=filename,
                checksum=checksum,
                duration_ms=duration_ms,
                detail=detail,
            )

    async def log(
        self,
        conn: Conn,
        action: str,
        *,
        version: int | None = None,
        filename: str | None = None,
        checksum: str | None = None,
        duration_ms: int | None = None,
        detail: str | None = None,
    ) -> None:
        await conn.execute(
            f"INSERT INTO {self.t_log} (action, version, filename, checksum, duration_ms, "
            f"host, pid, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)",
            action,
            version,
            filename,
            checksum,
            duration_ms,
            HOSTNAME,
            os.getpid(),
            detail,
        )
