"""The history asyncmig keeps in PostgreSQL, and every SQL statement that touches it.

Three tables in the configured schema (default ``public``):

``_migrations``
    One row per version (the seed's columns plus what recovery and audit need).
    ``status`` is ``completed`` / ``failed`` / ``rolled_back`` / ``running``;
    ``running`` only ever becomes visible for no-transaction migrations, whose progress
    (``statements_done``) is committed statement by statement.
``_migrations_log``
    Append-only audit: apply, fail, rollback, reclaim, resume, unlock. A trigger refuses
    UPDATE and DELETE.
``_migration_locks``
    The seed's single-row table: who holds the advisory lock, its backend pid, since
    when, the last heartbeat and what it is running now; plus ``layout_version``, the
    version of this layout, so later releases can upgrade it in place.

Identifiers are quoted with :func:`quote_ident`; every value travels as a parameter.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from .connection import Conn
from .errors import LockHolder
from .models import HistoryRow
from .session import OWN_IDENTITY

__all__ = [
    "LAYOUT_VERSION",
    "History",
    "HistoryRow",
    "quote_ident",
]

LAYOUT_VERSION = 1
HOSTNAME = socket.gethostname()


def quote_ident(name: str) -> str:
    """Quote an SQL identifier the way PostgreSQL's ``quote_ident`` does (always quoting)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


_ROW_COLUMNS = (
    "version, filename, checksum, status, executed_at, executed_by, execution_time_ms, "
    "statements_total, statements_done, transactional, error_message, error_sqlstate, "
    "rollback_sql, rollback_checksum"
)


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


class History:
    """SQL for one schema's history tables. Holds names only, no connection."""

    def __init__(self, schema: str = "public") -> None:
        self.schema = schema
        s = quote_ident(schema)
        self.qualified_name = f"{schema}._migrations"
        self.t_migrations = f"{s}._migrations"
        self.t_log = f"{s}._migrations_log"
        self.t_locks = f"{s}._migration_locks"
        self._regclass = f"{s}._migrations"

    # -- layout -----------------------------------------------------------------------

    def _create_sql(self) -> str:
        s = quote_ident(self.schema)
        m, log, locks = self.t_migrations, self.t_log, self.t_locks
        guard = f"{s}._migrations_log_append_only"
        return f"""
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {m} (
    id                  bigserial PRIMARY KEY,
    version             numeric(20, 0) NOT NULL UNIQUE,
    filename            text NOT NULL,
    checksum            text NOT NULL,
    checksum_algorithm  text NOT NULL DEFAULT 'sha256',
    executed_at         timestamptz NOT NULL DEFAULT now(),
    executed_by         text NOT NULL DEFAULT current_user,
    execution_time_ms   integer NOT NULL DEFAULT 0,
    status              text NOT NULL DEFAULT 'pending',
    error_message       text,
    error_sqlstate      text,
    error_statement     integer,
    error_line          integer,
    error_column        integer,
    rollback_sql        text,
    rollback_checksum   text,
    statements_total    integer NOT NULL DEFAULT 0,
    statements_done     integer NOT NULL DEFAULT 0,
    transactional       boolean NOT NULL DEFAULT true,
    host                text,
    pid                 integer,
    rolled_back_at      timestamptz,
    CONSTRAINT _migrations_valid_status CHECK
        (status IN ('pending', 'running', 'completed', 'failed', 'rolled_back'))
);
CREATE INDEX IF NOT EXISTS _migrations_status_idx ON {m} (status);
CREATE INDEX IF NOT EXISTS _migrations_executed_at_idx ON {m} (executed_at DESC);
CREATE TABLE IF NOT EXISTS {log} (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    action       text NOT NULL,
    version      numeric(20, 0),
    filename     text,
    checksum     text,
    duration_ms  integer,
    db_user      text NOT NULL DEFAULT current_user,
    host         text,
    pid          integer,
    backend_pid  integer NOT NULL DEFAULT pg_backend_pid(),
    detail       jsonb
);
CREATE INDEX IF NOT EXISTS _migrations_log_version_idx ON {log} (version);
CREATE OR REPLACE FUNCTION {guard}() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'the asyncmig audit log is append-only';
END;
$fn$;
DROP TRIGGER IF EXISTS _migrations_log_append_only ON {log};
CREATE TRIGGER _migrations_log_append_only BEFORE UPDATE OR DELETE ON {log}
    FOR EACH STATEMENT EXECUTE FUNCTION {guard}();
CREATE TABLE IF NOT EXISTS {locks} (
    id              integer PRIMARY KEY DEFAULT 1,
    locked_by       text,
    locked_at       timestamptz,
    lock_key        uuid,
    backend_pid     integer,
    host            text,
    pid             integer,
    heartbeat_at    timestamptz,
    version         numeric(20, 0),
    statement       text,
    layout_version  integer NOT NULL DEFAULT 0,
    CONSTRAINT single_row CHECK (id = 1)
);
INSERT INTO {locks} (id) VALUES (1) ON CONFLICT DO NOTHING;
"""

    async def exists(self, conn: Conn) -> bool:
        return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", self._regclass))

    async def layout_version(self, conn: Conn) -> int:
        locks_exists = await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(self.schema)}._migration_locks"
        )
        if not locks_exists:
            return 0
        val = await conn.fetchval(f"SELECT layout_version FROM {self.t_locks} WHERE id = 1")
        return int(val or 0)

    async def ensure(self, conn: Conn) -> bool:
        """Create or upgrade the tables (call under the lock). True if anything changed."""
        if await self.layout_version(conn) >= LAYOUT_VERSION:
            return False
        async with conn.transaction():
            await conn.execute(self._create_sql())
            await conn.execute(
                f"UPDATE {self.t_locks} SET layout_version = $1 WHERE id = 1", LAYOUT_VERSION
            )
        return True

    # -- reading ----------------------------------------------------------------------

    async def rows(self, conn: Conn) -> dict[int, HistoryRow] | None:
        """Every row by version, or None when the history table does not exist yet."""
        if not await self.exists(conn):
            return None
        recs = await conn.fetch(f"SELECT {_ROW_COLUMNS} FROM {self.t_migrations} ORDER BY version")
        return {int(r["version"]): _row(r) for r in recs}

    async def holder(self, conn: Conn) -> LockHolder | None:
        if not await conn.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"{quote_ident(self.schema)}._migration_locks"
        ):
            return None
        rec = await conn.fetchrow(
            f"SELECT backend_pid, host, pid, locked_by, locked_at, heartbeat_at, version, "
            f"statement FROM {self.t_locks} WHERE id = 1"
        )
        if rec is None or rec["backend_pid"] is None:
            return None
        return LockHolder(
            backend_pid=rec["backend_pid"],
            host=rec["host"],
            pid=rec["pid"],
            user=rec["locked_by"],
            since=rec["locked_at"].isoformat() if rec["locked_at"] else None,
            heartbeat_at=rec["heartbeat_at"].isoformat() if rec["heartbeat_at"] else None,
            version=int(rec["version"]) if rec["version"] is not None else None,
            statement=rec["statement"],
        )

    # -- lock row ---------------------------------------------------------------------

    async def publish_holder(self, conn: Conn) -> None:
        await conn.execute(
            f"UPDATE {self.t_locks} SET locked_by = current_user, locked_at = now(), "
            f"lock_key = gen_random_uuid(), backend_pid = pg_backend_pid(), host = $1, "
            f"pid = $2, heartbeat_at = now(), version = NULL, statement = NULL WHERE id = 1",
            HOSTNAME,
            os.getpid(),
        )

    async def heartbeat(
        self, conn: Conn, backend_pid: int, version: int | None, statement: str | None
    ) -> None:
        await conn.execute(
            f"UPDATE {self.t_locks} SET heartbeat_at = now(), version = $2, statement = $3 "
            f"WHERE id = 1 AND backend_pid = $1",
            backend_pid,
            version,
            statement,
        )

    async def clear_holder(self, conn: Conn, backend_pid: int) -> None:
        await conn.execute(
            f"UPDATE {self.t_locks} SET locked_by = NULL, locked_at = NULL, lock_key = NULL, "
            f"backend_pid = NULL, host = NULL, pid = NULL, heartbeat_at = NULL, version = NULL, "
            f"statement = NULL WHERE id = 1 AND backend_pid = $1",
            backend_pid,
        )

    # -- writing ----------------------------------------------------------------------

    def completed_sql(self) -> str:
        """Upsert a completed row and append to the log in one statement.

        Params: $1 version, $2 filename, $3 checksum, $4 duration ms, $5 rollback sql,
        $6 rollback checksum, $7 statements, $8 transactional, $9 host, $10 pid.
        """
        return f"""
WITH up AS (
    INSERT INTO {self.t_migrations} AS m (version, filename, checksum, executed_at,
        executed_by, execution_time_ms, status, rollback_sql, rollback_checksum,
        statements_total, statements_done, transactional, host, pid)
    VALUES ($1, $2, $3, now(), current_user, $4, 'completed', $5, $6, $7, $7, $8, $9, $10)
    ON CONFLICT (version) DO UPDATE SET filename = EXCLUDED.filename,
        checksum = EXCLUDED.checksum, executed_at = now(), executed_by = current_user,
        execution_time_ms = EXCLUDED.execution_time_ms, status = 'completed',
        error_message = NULL, error_sqlstate = NULL, error_statement = NULL,
        error_line = NULL, error_column = NULL, rollback_sql = EXCLUDED.rollback_sql,
        rollback_checksum = EXCLUDED.rollback_checksum,
        statements_total = EXCLUDED.statements_total,
        statements_done = EXCLUDED.statements_done, transactional = EXCLUDED.transactional,
        host = EXCLUDED.host, pid = EXCLUDED.pid, rolled_back_at = NULL
    RETURNING version
)
INSERT INTO {self.t_log} (action, version, filename, checksum, duration_ms, host, pid)
SELECT 'apply', version, $2, $3, $4, $9, $10 FROM up
RETURNING pg_current_xact_id()::text
"""

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
    ) -> str | None:
        """Returns the writing transaction's id, to settle an unanswered COMMIT."""
        xid = await conn.fetchval(
            self.completed_sql(),
            version,
            filename,
            checksum,
            duration_ms,
            rollback_sql,
            rollback_checksum,
            statements,
            transactional,
            HOSTNAME,
            os.getpid(),
        )
        return str(xid) if xid is not None else None

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

    async def record_rolled_back_many(
        self, conn: Conn, items: Sequence[tuple[int, str, str | None, int]]
    ) -> str | None:
        """Mark versions ``rolled_back`` and log each, in one statement (one round trip).

        ``items``: (version, filename, checksum, duration ms), in the order undone. Runs
        inside the rollback group's transaction, so it commits or vanishes with it.
        """
        if not items:
            return None
        versions, filenames, checksums, durations = (list(col) for col in zip(*items, strict=True))
        xid = await conn.fetchval(
            f"""
WITH r AS (
    SELECT * FROM unnest($1::numeric[], $2::text[], $3::text[], $4::integer[])
        WITH ORDINALITY AS r(version, filename, checksum, duration_ms, ord)
), up AS (
    UPDATE {self.t_migrations} m SET status = 'rolled_back', rolled_back_at = now()
    FROM r WHERE m.version = r.version
    RETURNING m.version
)
INSERT INTO {self.t_log} (action, version, filename, checksum, duration_ms, host, pid)
SELECT 'rollback', r.version, r.filename, r.checksum, r.duration_ms, $5, $6
FROM r JOIN up ON up.version = r.version
ORDER BY r.ord
RETURNING pg_current_xact_id()::text
""",
            versions,
            filenames,
            checksums,
            durations,
            HOSTNAME,
            os.getpid(),
        )
        return str(xid) if xid is not None else None

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
