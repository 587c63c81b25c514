"""INVALID indexes left by a failed concurrent build (issue 9, DESIGN §8a): found before a
resumed or retried no-transaction migration runs (stop, or rebuild with
``rebuild_invalid``), after every no-transaction migration, and by ``status`` and
``validate``; an index another session is building right now is never reported."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig.history import History
from asyncmig.indexes import IndexTarget, invalid_in, targets
from asyncmig.loader import parse_sql_text
from asyncmig.splitter import split_statements

from .cli_helpers import cli
from .migtree import fetch, fetchval, migrator, wait_until, write_tree

pytestmark = pytest.mark.anyio

# -- which index a statement builds (pure) ------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE INDEX CONCURRENTLY big_idx ON big (v)",
         IndexTarget(1, "create", "big", "big_idx", True)),
        ("create unique index concurrently if not exists Dup_V_Key on Public.Dup (v)",
         IndexTarget(1, "create", "public.dup", "dup_v_key", True)),
        ('CREATE INDEX "Mixed ""Q""" ON "My Schema"."T" USING gin (x)',
         IndexTarget(1, "create", '"My Schema"."T"', 'Mixed "Q"', False)),
        ("CREATE INDEX /* c /* nested */ */ CONCURRENTLY -- line\n ON t (v)",
         IndexTarget(1, "create", "t", None, True)),
        ("REINDEX INDEX CONCURRENTLY app.big_idx", IndexTarget(1, "reindex_index", "app.big_idx",
                                                              None, True)),
        ("REINDEX (VERBOSE, CONCURRENTLY) TABLE big",
         IndexTarget(1, "reindex_table", "big", None, True)),
        ("REINDEX (CONCURRENTLY false) TABLE big", None),
        ("REINDEX TABLE big", None),
        ("REINDEX SCHEMA CONCURRENTLY app", None),
        ("CREATE INDEX parent_idx ON ONLY parent (v)", None),
        ("CREATE TABLE idx (v int)", None),
        ("CREATE INDEX i ON otherdb.public.t (v)", None),
        ('CREATE INDEX i ON "" (v)', None),
    ],
)  # fmt: skip
def test_targets_name_the_index_each_statement_builds(
    sql: str, expected: IndexTarget | None
) -> None:
    """The index a CREATE INDEX or REINDEX … CONCURRENTLY builds, read from its text: the
    name as the server stores it (unquoted folded to lower case), the relation as
    written (for to_regclass); other statements, and builds that leave nothing invalid
    behind (plain REINDEX, ON ONLY), build none."""
    found = targets(split_statements(sql + ";"))
    assert found == ([expected] if expected else [])


# -- helpers ------------------------------------------------------------------------------

# An index expression that takes 10 ms a row: a build over 400 rows scans for ~4 s,
# sleeping, not burning CPU.
SLOW_TABLE = """
CREATE FUNCTION slow(x int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.01); RETURN x; END $$;
CREATE TABLE big (id int);
INSERT INTO big SELECT generate_series(1, 400);
"""


async def building_pid(dsn: str, index: str) -> int | None:
    """The backend building ``index`` concurrently, once it scans the table."""
    rows = await fetch(
        dsn,
        "SELECT p.pid FROM pg_stat_progress_create_index p "
        "JOIN pg_class c ON c.oid = p.index_relid "
        "WHERE c.relname = $1 AND p.phase LIKE 'building index%'",
        index,
    )
    return int(rows[0]["pid"]) if rows else None


async def index_state(dsn: str, name: str) -> bool | None:
    """``indisvalid`` of public.``name``; None when there is no such index."""
    value = await fetchval(
        dsn,
        "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)",
        f"public.{name}",
    )
    return None if value is None else bool(value)


async def row(dsn: str, version: int) -> asyncpg.Record:
    rows = await fetch(
        dsn, "SELECT status, statements_done, statements_total FROM _migrations "
        "WHERE version = $1", version,
    )  # fmt: skip
    return rows[0]


async def log_actions(dsn: str) -> list[str]:
    rows = await fetch(dsn, "SELECT action FROM _migrations_log ORDER BY id")
    return [r["action"] for r in rows]


async def invalid_unique_index(dsn: str) -> None:
    """Leave public.dup_v_key INVALID, as a failed concurrent build does: a unique
    index over duplicate values."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE dup (v int); INSERT INTO dup VALUES (1), (1)")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v)")
    finally:
        await conn.close()
    assert await index_state(dsn, "dup_v_key") is False


# -- a killed build, then --resume ---------------------------------------------------------


KILLED = {
    "001_big.sql": SLOW_TABLE,
    "002_index.sql": """
        -- asyncmig: no-transaction
        SELECT 1;
        CREATE INDEX CONCURRENTLY big_slow_idx ON big (slow(id));
    """,
}


async def kill_build_midway(dsn: str, tmp_path: Path) -> None:
    """Run the migrations; terminate the backend building big_slow_idx while it scans."""
    write_tree(tmp_path, KILLED)
    killed: list[bool] = []

    async def kill_when_building() -> None:
        await wait_until(lambda: building_pid(dsn, "big_slow_idx"), timeout=30,
                         what="the concurrent build to scan the table")  # fmt: skip
        pid = await building_pid(dsn, "big_slow_idx")
        killed.append(bool(await fetchval(dsn, "SELECT pg_terminate_backend($1)", pid)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_when_building)
        with pytest.raises(asyncmig.LockLostError):
            await migrator(dsn, tmp_path).migrate()
    assert killed == [True]
    assert await index_state(dsn, "big_slow_idx") is False
    await wait_until(lambda: _unlocked(dsn), what="the killed runner's lock to go")


async def _unlocked(dsn: str) -> bool:
    return not await fetchval(
        dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
    )  # fmt: skip


async def test_resume_after_a_killed_concurrent_build_stops_naming_the_invalid_index(
    dsn: str, tmp_path: Path
) -> None:
    """A concurrent build terminated mid-scan leaves big_slow_idx INVALID. `migrate
    --resume` raises ResumeRequiredError naming public.big_slow_idx and the repair
    flag, and runs nothing: the history row, the audit log and the index are as the
    killed run left them."""
    await kill_build_midway(dsn, tmp_path)
    before = await row(dsn, 2)
    assert (before["status"], before["statements_done"]) == ("running", 1)
    actions = await log_actions(dsn)

    with pytest.raises(asyncmig.ResumeRequiredError) as info:
        await migrator(dsn, tmp_path).migrate(resume=True)

    assert info.value.invalid_indexes == ["public.big_slow_idx"]
    assert "public.big_slow_idx" in str(info.value)
    assert "--resume --rebuild-invalid" in str(info.value)
    assert "Nothing was run" in str(info.value)
    assert await row(dsn, 2) == before
    assert await log_actions(dsn) == actions
    assert await index_state(dsn, "big_slow_idx") is False


async def test_resume_with_rebuild_invalid_leaves_a_valid_index_and_the_migration_applied(
    dsn: str, tmp_path: Path
) -> None:
    """After the killed build, `migrate --resume --rebuild-invalid` (library keyword
    rebuild_invalid=True) drops the INVALID index, builds it again (valid), and records
    migration 2 completed, with a warning naming the dropped index."""
    await kill_build_midway(dsn, tmp_path)
    messages: list[str] = []

    def on_event(event: asyncmig.Event) -> None:
        if isinstance(event, asyncmig.Message):
            messages.append(event.text)

    report = await asyncmig.migrate(
        dsn, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rollback", resume=True,
        rebuild_invalid=True, on_event=on_event,
    )  # fmt: skip

    assert report.versions == (2,)
    assert await index_state(dsn, "big_slow_idx") is True
    assert (await row(dsn, 2))["status"] == "completed"
    assert any("public.big_slow_idx" in m and "DROP INDEX CONCURRENTLY" in m for m in messages)


async def test_cli_resume_stops_then_rebuild_invalid_repairs(dsn: str, tmp_path: Path) -> None:
    """The same through the command line: `asyncmig migrate --resume` exits non-zero
    naming public.big_slow_idx; `asyncmig migrate --resume --rebuild-invalid` exits 0
    and the index is valid."""
    await kill_build_midway(dsn, tmp_path)
    env = {"DATABASE_URL": dsn}
    stopped = cli("migrate", "--resume", cwd=tmp_path, env=env)
    assert stopped.returncode != 0
    assert "public.big_slow_idx" in stopped.stderr and "--rebuild-invalid" in stopped.stderr
    assert await index_state(dsn, "big_slow_idx") is False

    repaired = cli("migrate", "--resume", "--rebuild-invalid", cwd=tmp_path, env=env)
    assert repaired.returncode == 0, repaired.stderr
    assert await index_state(dsn, "big_slow_idx") is True


# -- after a no-transaction migration --------------------------------------------------------


async def test_a_failed_unique_concurrent_build_fails_naming_the_invalid_index_it_left(
    dsn: str, tmp_path: Path
) -> None:
    """A unique concurrent build over duplicates fails (23505) and leaves dup_v_key
    INVALID: the migration's error names public.dup_v_key and `--rebuild-invalid`; the
    retry after fixing the data stops naming it until `--rebuild-invalid`, which
    leaves it valid."""
    write_tree(tmp_path, {
        "001_dup.sql": """
            -- asyncmig: no-transaction
            CREATE TABLE dup (v int);
            INSERT INTO dup VALUES (1), (1);
            CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v);
        """,
    })  # fmt: skip
    with pytest.raises(asyncmig.MigrationError) as failed:
        await migrator(dsn, tmp_path).migrate()
    assert failed.value.sqlstate == "23505"
    assert "public.dup_v_key" in str(failed.value)
    assert "--resume --rebuild-invalid" in str(failed.value)
    assert await index_state(dsn, "dup_v_key") is False

    await fetchval(dsn, "DELETE FROM dup WHERE ctid = (SELECT max(ctid) FROM dup)")
    with pytest.raises(asyncmig.ResumeRequiredError) as stopped:
        await migrator(dsn, tmp_path).migrate(resume=True)
    assert stopped.value.invalid_indexes == ["public.dup_v_key"]
    report = await migrator(dsn, tmp_path).migrate(resume=True, rebuild_invalid=True)
    assert report.versions == (1,)
    assert await index_state(dsn, "dup_v_key") is True


async def test_if_not_exists_over_an_invalid_index_fails_the_migration_then_rebuild_repairs(
    dsn: str, tmp_path: Path
) -> None:
    """`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS` skips an existing INVALID
    index and succeeds: the migration fails anyway with InvalidIndexError naming
    public.dup_v_key, recorded failed with its resume point after its last statement.
    Once the data is fixed, `--resume --rebuild-invalid` rebuilds it (valid) and
    completes the migration."""
    await invalid_unique_index(dsn)
    write_tree(tmp_path, {
        "001_key.sql": """
            -- asyncmig: no-transaction
            SELECT 1;
            CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS dup_v_key ON dup (v);
        """,
    })  # fmt: skip
    with pytest.raises(asyncmig.InvalidIndexError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert info.value.invalid_indexes == ["public.dup_v_key"]
    assert "public.dup_v_key" in str(info.value) and "--rebuild-invalid" in str(info.value)
    failed = await row(dsn, 1)
    assert (failed["status"], failed["statements_done"]) == ("failed", 2)

    await fetchval(dsn, "DELETE FROM dup WHERE ctid = (SELECT max(ctid) FROM dup)")
    report = await migrator(dsn, tmp_path).migrate(resume=True, rebuild_invalid=True)
    assert report.versions == (1,)
    assert await index_state(dsn, "dup_v_key") is True
    assert (await row(dsn, 1))["status"] == "completed"


# -- status and validate ------------------------------------------------------------------


async def test_status_and_validate_list_invalid_indexes(dsn: str, tmp_path: Path) -> None:
    """With an INVALID index in the database, `status` lists it (report, JSON, and the
    text footer) and `validate` reports an `invalid_index` error naming it."""
    await invalid_unique_index(dsn)
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    await migrator(dsn, tmp_path).migrate()

    status = await migrator(dsn, tmp_path).status()
    assert [i.qualified for i in status.invalid_indexes] == ["public.dup_v_key"]
    assert status.to_dict()["invalid_indexes"][0]["index"] == "public.dup_v_key"
    result = await migrator(dsn, tmp_path).validate()
    assert not result.ok
    assert [(i.code, "public.dup_v_key" in i.message) for i in result.errors] == [
        ("invalid_index", True)
    ]
    out = cli("status", cwd=tmp_path, env={"DATABASE_URL": dsn})
    assert out.returncode == 0, out.stderr
    assert "INVALID" in out.stdout and "public.dup_v_key" in out.stdout


@pytest.mark.parametrize("roles", ["superuser", "unprivileged"])
async def test_an_index_being_built_by_another_session_is_not_reported_invalid(
    dsn: str, tmp_path: Path, roles: str
) -> None:
    """While another session builds big_slow_idx concurrently (INVALID until it ends),
    `status` and `validate` do not list it, and the check a resumed or finished
    no-transaction migration makes on the index it builds finds nothing. Also when
    builder and checker are two ordinary roles (the checker cannot read the builder's
    progress row: the builder's lock on the table tells)."""
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(SLOW_TABLE)
    finally:
        await setup.close()
    builder_dsn = checker_dsn = dsn
    created: list[str] = []
    if roles == "unprivileged":
        suffix = uuid.uuid4().hex[:8]
        builder_role, checker_role = f"ix_build_{suffix}", f"ix_check_{suffix}"
        builder_dsn = await login_role(dsn, builder_role, created)
        checker_dsn = await login_role(dsn, checker_role, created)
        await admin(dsn, "GRANT USAGE, CREATE ON SCHEMA public TO %I", builder_role)
        await admin(dsn, "ALTER TABLE big OWNER TO %I", builder_role)
        await admin(dsn, "GRANT USAGE, CREATE ON SCHEMA public TO %I", checker_role)
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\n"})
    try:
        builder = await asyncpg.connect(builder_dsn)
        try:
            async with anyio.create_task_group() as tg:

                async def build() -> None:
                    with contextlib.suppress(asyncpg.QueryCanceledError):
                        await builder.execute(
                            "CREATE INDEX CONCURRENTLY big_slow_idx ON big (slow(id))"
                        )

                tg.start_soon(build)
                await wait_until(lambda: building_pid(dsn, "big_slow_idx"), timeout=30,
                                 what="the other session's build to scan the table")  # fmt: skip
                assert await index_state(dsn, "big_slow_idx") is False  # invalid while building

                status = await migrator(checker_dsn, tmp_path).status()
                assert status.invalid_indexes == ()
                result = await migrator(checker_dsn, tmp_path).validate()
                assert "invalid_index" not in [i.code for i in result.issues]
                same = parse_sql_text(
                    "-- asyncmig: no-transaction\n"
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS big_slow_idx ON big (slow(id));\n",
                    tmp_path / "sql" / "002_same.sql",
                )
                checker = await asyncpg.connect(checker_dsn)
                try:
                    assert await invalid_in(checker, History(), same) == []
                finally:
                    await checker.close()
                assert await building_pid(dsn, "big_slow_idx") is not None  # still building

                await fetchval(dsn, "SELECT pg_cancel_backend($1)", builder.get_server_pid())
        finally:
            await builder.close()
    finally:
        for role in created:
            await admin(dsn, "DROP OWNED BY %I", role)
            await admin(dsn, "DROP ROLE %I", role)


async def login_role(dsn: str, role: str, created: list[str]) -> str:
    """A new LOGIN role (no special rights); its DSN for this test's database."""
    password = secrets.token_hex(16)
    await admin(dsn, "CREATE ROLE %I LOGIN PASSWORD %L", role, password)
    created.append(role)
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


async def admin(dsn: str, template: str, *values: str) -> None:
    """Run ``format(template, values…)``: the server quotes identifiers and literals."""
    sql = await fetchval(dsn, "SELECT format($1, VARIADIC $2::text[])", template, list(values))
    await fetch(dsn, sql)
