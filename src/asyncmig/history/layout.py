"""The history's layout: the DDL of its tables, of the staged table and of the two
functions a run's messages call; the layout version; creating or upgrading it in place.

What each table holds is told in :mod:`asyncmig.history`.
"""

from __future__ import annotations

from ..connection import Conn
from ..session import quote_ident
from .names import Names

MARK_SQLSTATE = "AM001"  # the markers' NOTICEs, told apart from a file's own
LAYOUT_VERSION = 3  # 2: the staged rows and the two functions runs call in their messages;
# 3: the marker is cheaper (INFO, no SET clauses) and staged rows are found by index


class Layout(Names):
    """The DDL of one schema's history, and :meth:`ensure` that runs it."""

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

    async def layout_version(self, conn: Conn) -> int:
        if not await self._relation_exists(conn, self.t_locks):
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
