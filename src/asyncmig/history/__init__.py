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
from dataclasses import astuple, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..connection import Conn
from ..errors import LockHolder
from ..models import HistoryRow, InvalidIndex
from ..session import OWN_IDENTITY, quote_ident

__all__ = [
    "LAYOUT_VERSION",
    "MARK_SQLSTATE",
    "History",
    "HistoryRow",
    "InvalidIndex",
    "Staged",
    "quote_ident",
]

MARK_SQLSTATE = "AM001"  # the markers' NOTICEs, told apart from a file's own
LAYOUT_VERSION = 3  # 2: the staged rows and the two functions runs call in their messages;
# 3: the marker is cheaper (INFO, no SET clauses) and staged rows are found by index
HOSTNAME = socket.gethostname()


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


# An INVALID index that a build is creating right now is not "left invalid": its
# pg_stat_progress_create_index row names it (CREATE INDEX CONCURRENTLY), or its table
# (REINDEX CONCURRENTLY, whose _ccnew copy the row does not name). A row of another
# user's backend, without pg_read_all_stats, hides its relations: then that backend's
# lock on the table tells. Partitioned indexes (relkind 'I') are invalid until their
# partitions' indexes are attached, not after a failed build: left out.
_LEFT_INVALID = """
NOT i.indisvalid AND c.relkind = 'i'
AND NOT EXISTS (
    SELECT 1 FROM pg_stat_progress_create_index p
    WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND p.pid <> pg_backend_pid()
      AND (p.index_relid = i.indexrelid
           OR (p.relid = i.indrelid AND p.command = 'REINDEX CONCURRENTLY')
           OR (p.relid IS NULL AND EXISTS (
               SELECT 1 FROM pg_locks l
               WHERE l.pid = p.pid AND l.locktype = 'relation'
                 AND l.database = p.datid AND l.relation = i.indrelid))))
"""

_INVALID_COLUMNS = """
n.nspname AS schema, c.relname AS name,
tn.nspname || '.' || t.relname AS table_name, pg_get_indexdef(i.indexrelid) AS definition
"""


def _invalid(rec: asyncpg.Record) -> InvalidIndex:
    return InvalidIndex(rec["schema"], rec["name"], rec["table_name"], rec["definition"])


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
        self.t_staged = f"{s}._migrations_staged"
        self.f_mark = f"{s}._asyncmig_mark"
        self.f_record = f"{s}._asyncmig_record"
        self._regclass = f"{s}._migrations"

    # -- layout -----------------------------------------------------------------------

    @property
    def own_relations(self) -> list[str]:
        """asyncmig's own tables here (what a catalog comparison leaves out)."""
        return [self.t_migrations, self.t_log, self.t_locks, self.t_staged]

    @property
    def own_functions(self) -> list[str]:
        """asyncmig's own functions here, as ``to_regprocedure`` reads them."""
        guard = f"{quote_ident(self.schema)}._migrations_log_append_only()"
        return [
            guard,
            f"{self.f_mark}(numeric, integer, boolean)",
            f"{self.f_record}(numeric, integer)",
        ]

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
{self._staging_sql()}"""

    def _staging_sql(self) -> str:
        """The run's planned rows, and the two functions a batched message calls.

        ``_migrations_staged`` holds, for the run that holds the lock, what each planned
        file's history row will say; a message then records a file by calling
        ``_asyncmig_record(version)``, with no value spelled into its text.
        ``_asyncmig_mark(version, k, first)`` sends the INFO message (SQLSTATE
        ``AM001``) that tells the client statement *k* starts, and times the file from its
        first mark. It runs about six times per file, so it is kept cheap: INFO reaches
        the client whatever a file set ``client_min_messages`` to, so the function needs
        no ``SET`` clause (each costs a configuration save and restore per call), and
        every name in its body is schema-qualified, so a file's ``search_path`` cannot
        redirect it. The staged rows are found by an index (not unique: :meth:`stage`
        deletes and inserts in one statement).
        """
        m, log, staged = self.t_migrations, self.t_log, self.t_staged
        return f"""
CREATE UNLOGGED TABLE IF NOT EXISTS {staged} (
    version            numeric(20, 0) NOT NULL,
    direction          text NOT NULL,
    filename           text NOT NULL,
    checksum           text,
    rollback_sql       text,
    rollback_checksum  text,
    statements         integer NOT NULL,
    transactional      boolean NOT NULL,
    host               text,
    pid                integer,
    started_at         timestamptz
);
CREATE INDEX IF NOT EXISTS _migrations_staged_version ON {staged} (version);
CREATE OR REPLACE FUNCTION {self.f_mark}(v numeric, k integer, first boolean)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF first THEN
        UPDATE {staged} SET started_at = pg_catalog.clock_timestamp()
        WHERE version OPERATOR(pg_catalog.=) v;
    END IF;
    RAISE INFO USING ERRCODE = '{MARK_SQLSTATE}', MESSAGE = pg_catalog.concat_ws(' ', v, k,
        pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()));
END
$fn$;
CREATE OR REPLACE FUNCTION {self.f_record}(v numeric, given_ms integer DEFAULT NULL)
RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
DECLARE
    r record;
    ms integer;
BEGIN
    SELECT * INTO STRICT r FROM {staged} WHERE version = v;
    ms := coalesce(given_ms,
        round(extract(epoch FROM clock_timestamp() - r.started_at) * 1000)::integer, 0);
    IF r.direction = 'up' THEN
        INSERT INTO {m} AS m (version, filename, checksum, executed_at, executed_by,
            execution_time_ms, status, rollback_sql, rollback_checksum, statements_total,
            statements_done, transactional, host, pid)
        VALUES (v, r.filename, r.checksum, now(), current_user, ms, 'completed',
            r.rollback_sql, r.rollback_checksum, r.statements, r.statements,
            r.transactional, r.host, r.pid)
        ON CONFLICT (version) DO UPDATE SET filename = EXCLUDED.filename,
            checksum = EXCLUDED.checksum, executed_at = now(), executed_by = current_user,
            execution_time_ms = EXCLUDED.execution_time_ms, status = 'completed',
            error_message = NULL, error_sqlstate = NULL, error_statement = NULL,
            error_line = NULL, error_column = NULL, rollback_sql = EXCLUDED.rollback_sql,
            rollback_checksum = EXCLUDED.rollback_checksum,
            statements_total = EXCLUDED.statements_total,
            statements_done = EXCLUDED.statements_done,
            transactional = EXCLUDED.transactional,
            host = EXCLUDED.host, pid = EXCLUDED.pid, rolled_back_at = NULL;
        INSERT INTO {log} (action, version, filename, checksum, duration_ms, host, pid)
        VALUES ('apply', v, r.filename, r.checksum, ms, r.host, r.pid);
    ELSE
        UPDATE {m} SET status = 'rolled_back', rolled_back_at = now() WHERE version = v;
        INSERT INTO {log} (action, version, filename, checksum, duration_ms, host, pid)
        VALUES ('rollback', v, r.filename, r.checksum, ms, r.host, r.pid);
    END IF;
END
$fn$;
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

    # -- indexes ----------------------------------------------------------------------

    async def invalid_indexes(
        self, conn: Conn, schemas: Sequence[str] | None = None
    ) -> list[InvalidIndex]:
        """INVALID indexes no build is creating now (see ``_LEFT_INVALID``), in
        ``schemas``, or (None) in every schema but the system ones, by name."""
        recs = await conn.fetch(
            f"""
SELECT {_INVALID_COLUMNS}
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE {_LEFT_INVALID}
  AND CASE WHEN $1::text[] IS NULL
      THEN n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
      ELSE n.nspname = ANY($1::text[]) END
ORDER BY n.nspname, c.relname
""",
            None if schemas is None else list(schemas),
        )
        return [_invalid(r) for r in recs]

    async def invalid_index_targets(
        self, conn: Conn, targets: Sequence[tuple[str, str, str | None]]
    ) -> list[tuple[int, InvalidIndex]]:
        """For each ``(kind, relation, name)`` (see :class:`asyncmig.indexes.IndexTarget`),
        the INVALID indexes it names, as ``(position in targets, index)``; relations are
        resolved with ``to_regclass`` (this session's search_path). ``create``: the index
        ``name`` in the table's schema (any index of the table when unnamed);
        ``reindex_index``: the index and its ``<name>_cc…`` copies; ``reindex_table``:
        the table's indexes."""
        if not targets:
            return []
        kinds, relations, names = (list(col) for col in zip(*targets, strict=True))
        recs = await conn.fetch(
            f"""
WITH given AS (
    SELECT g.pos, g.kind, g.name, to_regclass(g.rel) AS relid
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS g(kind, rel, name, pos)
), target AS (
    SELECT g.pos, g.kind,
        CASE WHEN g.kind = 'reindex_index' THEN ix.indrelid ELSE g.relid END AS tableid,
        CASE WHEN g.kind = 'reindex_index' THEN ixc.relname ELSE g.name END AS iname
    FROM given g
    LEFT JOIN pg_index ix ON g.kind = 'reindex_index' AND ix.indexrelid = g.relid
    LEFT JOIN pg_class ixc ON ixc.oid = ix.indexrelid
    WHERE g.relid IS NOT NULL
)
SELECT g.pos, {_INVALID_COLUMNS}
FROM target g
JOIN pg_index i ON i.indrelid = g.tableid
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
WHERE {_LEFT_INVALID}
  AND (g.iname IS NULL OR c.relname = g.iname
       OR (g.kind = 'reindex_index' AND left(c.relname, length(g.iname)) = g.iname
           AND substr(c.relname, length(g.iname) + 1) ~ '^_cc(new|old)[0-9]*$'))
ORDER BY g.pos, n.nspname, c.relname
""",
            kinds,
            relations,
            names,
        )
        return [(int(r["pos"]) - 1, _invalid(r)) for r in recs]

    async def drop_index_concurrently(self, conn: Conn, schema: str, name: str) -> None:
        """``DROP INDEX CONCURRENTLY IF EXISTS`` (outside any transaction block)."""
        await conn.execute(
            f"DROP INDEX CONCURRENTLY IF EXISTS {quote_ident(schema)}.{quote_ident(name)}"
        )
