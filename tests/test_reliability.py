"""Reliability of the runner (issue 12): clean sessions between files, true resume
points, an unanswered COMMIT settled truthfully, notices of a failing statement, a
partial rollback reported as it happened, messages true for the file's mode."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig import Config
from asyncmig._pgserver import PgServer
from asyncmig.events import (
    Event,
    Message,
    MigrationStarted,
    RunFinished,
    ServerNotice,
    StatementFinished,
    StatementStarted,
)

from .migtree import fetch, fetchval, migrator, table_exists, wait_until, write_tree

pytestmark = pytest.mark.anyio


# -- item 2: every file starts from the session as the connection opened ---------------


async def test_search_path_set_by_one_migration_does_not_reach_the_next(
    dsn: str, tmp_path: Path
) -> None:
    """The issue's reproduction: 002's table lands in public (as psql would put it), and
    the rollback of 002 finds it."""
    write_tree(
        tmp_path,
        {
            "001_app.sql": "CREATE SCHEMA app; SET search_path = app; CREATE TABLE a (id int);",
            "002_b.sql": "CREATE TABLE b (id int);",
        },
        {"001_app_rollback.sql": "DROP SCHEMA app CASCADE;", "002_b_rollback.sql": "DROP TABLE b;"},
    )
    await migrator(dsn, tmp_path).migrate()
    assert await table_exists(dsn, "app.a")
    assert await table_exists(dsn, "public.b")
    assert not await table_exists(dsn, "app.b")
    report = await migrator(dsn, tmp_path).rollback()
    assert [r.version for r in report.rolled_back] == [2]
    assert not await table_exists(dsn, "public.b")


_PRISTINE_CHECK = """
DO $$
BEGIN
    IF current_user <> session_user THEN
        RAISE EXCEPTION 'role leaked: %', current_user;
    END IF;
    IF session_user::text <> '{user}' THEN
        RAISE EXCEPTION 'session authorization leaked: %', session_user;
    END IF;
    IF current_setting('app.flag', true) IS NOT NULL AND current_setting('app.flag', true) <> ''
    THEN
        RAISE EXCEPTION 'set_config leaked: %', current_setting('app.flag', true);
    END IF;
    IF current_setting('search_path') <> '"$user", public' THEN
        RAISE EXCEPTION 'search_path leaked: %', current_setting('search_path');
    END IF;
    IF current_setting('statement_timeout') <> '0' THEN
        RAISE EXCEPTION 'statement_timeout leaked: %', current_setting('statement_timeout');
    END IF;
    IF to_regclass('pg_temp.scratch') IS NOT NULL THEN
        RAISE EXCEPTION 'temporary table leaked';
    END IF;
END $$;
"""


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transactional", "no-tx"])
async def test_every_kind_of_session_state_is_reset_between_files(
    dsn: str, tmp_path: Path, no_transaction: bool
) -> None:
    """A file's session SET, set_config(…, false), SET ROLE, SET SESSION AUTHORIZATION and
    temporary table are gone when the next migration and the next rollback file start,
    whether the file ran in a transaction or not; history is still written as the
    connecting user."""
    role = f"r_{uuid.uuid4().hex[:8]}"
    user = await fetchval(dsn, "SELECT current_user")
    await fetchval(dsn, f'CREATE ROLE "{role}"')
    try:
        header = "-- asyncmig: no-transaction\n" if no_transaction else ""
        leaky = (
            header + "CREATE TEMP TABLE scratch (x int);\n"
            "SELECT set_config('app.flag', 'on', false);\n"
            "SET statement_timeout = '17s';\n"
            "SET search_path = pg_catalog;\n"
            f'SET SESSION AUTHORIZATION "{role}";\n'
            f'SET ROLE "{role}";\n'
        )
        check = _PRISTINE_CHECK.replace("{user}", user)
        write_tree(
            tmp_path,
            {"001_leaky.sql": leaky, "002_check.sql": check},
            {"001_leaky_rollback.sql": leaky, "002_check_rollback.sql": check},
        )
        await migrator(dsn, tmp_path).migrate()
        rows = await fetch(dsn, "SELECT version, executed_by FROM _migrations ORDER BY version")
        assert [(int(r[0]), r[1]) for r in rows] == [(1, user), (2, user)]
        # down: 002's rollback file checks after nothing; 001's leaks; then migrate again
        # runs 002's check after 001's leaky forward file once more.
        await migrator(dsn, tmp_path).rollback(all=True)
        await migrator(dsn, tmp_path).migrate()
        assert (
            await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE status = 'completed'") == 2
        )
    finally:
        await fetchval(dsn, f'DROP ROLE IF EXISTS "{role}"')


async def test_pool_connection_goes_back_without_the_migrations_session_state(
    dsn: str, tmp_path: Path
) -> None:
    """A connection taken from the caller's pool returns with search_path as it was."""
    write_tree(tmp_path, {"001_sp.sql": "CREATE SCHEMA s1; SET search_path = s1;"})
    async with asyncpg.create_pool(dsn, min_size=2, max_size=2) as pool:
        await asyncmig.Migrator(
            pool=pool, sql_dir=tmp_path / "sql", rollback_dir=tmp_path / "rollback"
        ).migrate()
        for _ in range(2):
            async with pool.acquire() as conn:
                assert await conn.fetchval("SHOW search_path") == '"$user", public'


# -- item 5: resume points are exact at every step boundary -----------------------------

_STEPS = 4
_NOTX = "-- asyncmig: no-transaction\n" + "".join(
    f"INSERT INTO marks VALUES ({i}); SELECT pg_sleep(0.05);\n" for i in range(1, _STEPS + 1)
)


def _boundaries() -> Iterator[tuple[str, int]]:
    """Every event of a no-transaction run at which it can be stopped."""
    yield ("MigrationStarted", 0)
    for i in range(1, 2 * _STEPS + 1):
        yield ("StatementStarted", i)
        yield ("StatementFinished", i)


@pytest.mark.parametrize(("kind", "nth"), list(_boundaries()))
async def test_no_transaction_run_stopped_at_any_step_resumes_exactly(
    dsn: str, tmp_path: Path, kind: str, nth: int
) -> None:
    """Cancelled at the event (or mid-statement, right after StatementStarted), the
    recorded resume point equals the statements whose effects exist, and finishing the
    run (with --resume where asked) leaves every statement's effect exactly once."""
    await fetchval(dsn, "CREATE TABLE marks (i int)")
    write_tree(tmp_path, {"001_marks.sql": _NOTX})
    seen = {"MigrationStarted": 0, "StatementStarted": 0, "StatementFinished": 0}

    with anyio.CancelScope() as scope:

        async def on_event(event: Event) -> None:
            name = type(event).__name__
            if name in seen:
                seen[name] += 1
                if name == kind and seen[name] == max(nth, 1):
                    scope.cancel()

        await migrator(dsn, tmp_path).migrate(on_event=on_event)
    assert scope.cancelled_caught

    inserted = {r[0] for r in await fetch(dsn, "SELECT i FROM marks")}
    row = await fetch(dsn, "SELECT status, statements_done FROM _migrations")
    done = row[0]["statements_done"] if row else 0
    # statements 1, 3, 5, 7 insert i = 1..4; 2, 4, 6, 8 sleep
    assert inserted == set(range(1, (done + 1) // 2 + 1)), (kind, nth, done, inserted)
    if row:
        assert row[0]["status"] != "completed"

    resume = done > 0
    await migrator(dsn, tmp_path).migrate(resume=resume)
    values = sorted(r[0] for r in await fetch(dsn, "SELECT i FROM marks"))
    assert values == list(range(1, _STEPS + 1))
    assert await fetchval(dsn, "SELECT status FROM _migrations") == "completed"


# -- item 12: the failing statement's notices are not dropped ---------------------------


async def test_notices_raised_by_the_failing_statement_are_emitted(
    dsn: str, tmp_path: Path
) -> None:
    write_tree(
        tmp_path,
        {
            "001_fail.sql": """
                CREATE TABLE t (id int);
                DO $$ BEGIN
                    RAISE NOTICE 'checked 41 rows before giving up';
                    RAISE EXCEPTION 'row 42 is bad';
                END $$;
            """
        },
    )
    events: list[Event] = []
    with pytest.raises(asyncmig.MigrationError, match="row 42 is bad"):
        await migrator(dsn, tmp_path).migrate(on_event=events.append)
    notices = [e.message for e in events if isinstance(e, ServerNotice)]
    assert notices == ["checked 41 rows before giving up"]


# -- item 13: a rollback that fails after earlier groups committed ---------------------


async def test_failed_rollback_all_reports_the_groups_that_committed(
    dsn: str, tmp_path: Path
) -> None:
    """3 (transactional) and 2 (no-transaction) are rolled back; 1's rollback fails: the
    error's ``applied``, the RunFinished event and history all say 3 and 2."""
    write_tree(
        tmp_path,
        {
            "001_a.sql": "CREATE TABLE a (id int);",
            "002_b.sql": "CREATE TABLE b (id int);",
            "003_c.sql": "CREATE TABLE c (id int);",
        },
        {
            "001_a_rollback.sql": "DROP TABLE a; SELECT 1/0;",
            "002_b_rollback.sql": "-- asyncmig: no-transaction\nDROP TABLE b;",
            "003_c_rollback.sql": "DROP TABLE c;",
        },
    )
    await migrator(dsn, tmp_path).migrate()
    events: list[Event] = []
    with pytest.raises(asyncmig.RollbackFailedError) as info:
        await migrator(dsn, tmp_path).rollback(all=True, on_event=events.append)
    assert info.value.applied == [3, 2]
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert [(e.ok, e.rolled_back) for e in finished] == [(False, (3, 2))]
    rows = await fetch(dsn, "SELECT version, status FROM _migrations ORDER BY version")
    assert [(int(r[0]), r[1]) for r in rows] == [
        (1, "completed"), (2, "rolled_back"), (3, "rolled_back"),
    ]  # fmt: skip
    assert await table_exists(dsn, "a")


# -- item 8: step counts below 1 ---------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -1])
async def test_steps_below_one_are_a_usage_error_and_change_nothing(
    dsn: str, tmp_path: Path, steps: int
) -> None:
    write_tree(
        tmp_path, {"001_a.sql": "CREATE TABLE a (id int);"}, {"001_a_rb.sql": "DROP TABLE a;"}
    )
    with pytest.raises(asyncmig.ConfigError, match="--steps must be 1 or more") as info:
        await migrator(dsn, tmp_path).migrate(steps=steps)
    assert info.value.exit_code == 2
    assert not await table_exists(dsn, "a")
    await migrator(dsn, tmp_path).migrate()
    with pytest.raises(asyncmig.ConfigError, match="--steps must be 1 or more"):
        await migrator(dsn, tmp_path).rollback(steps=steps)
    assert await table_exists(dsn, "a")


# -- item 16: no deadline unless asked ---------------------------------------------------


def test_default_migration_timeout_is_no_deadline() -> None:
    assert Config().migration_timeout == 0


# -- item 17: a lost connection's message is true for the migration's mode -------------


@pytest.mark.parametrize("no_transaction", [False, True], ids=["transactional", "no-tx"])
async def test_connection_lost_mid_migration_says_what_happened_in_its_mode(
    dsn: str, tmp_path: Path, no_transaction: bool
) -> None:
    """The run's backend is terminated during statement 2: a transactional migration
    says it was rolled back; a no-transaction one says statement 1 stays and names
    --resume, and never claims a rollback."""
    header = "-- asyncmig: no-transaction\n" if no_transaction else ""
    write_tree(
        tmp_path,
        {"001_slow.sql": header + "CREATE TABLE t1 (id int);\nSELECT pg_sleep(30);\n"},
    )
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:

            async def kill_when_sleeping() -> None:
                await wait_until(
                    lambda: fetchval(
                        dsn,
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND query LIKE '%pg_sleep(30)%' "
                        "AND pid <> pg_backend_pid()",
                    ),
                    what="statement 2 running",
                )
                await fetchval(
                    dsn,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND query LIKE '%pg_sleep(30)%' "
                    "AND pid <> pg_backend_pid()",
                )

            tg.start_soon(kill_when_sleeping)
            with pytest.raises(asyncmig.LockLostError) as info:
                await migrator(dsn, tmp_path).migrate()
    message = info.value.message
    if no_transaction:
        assert "rolled back" not in message
        assert "--resume" in message
        assert await table_exists(dsn, "t1")
        row = await fetch(dsn, "SELECT status, statements_done FROM _migrations")
        assert (row[0]["status"], row[0]["statements_done"]) == ("running", 1)
        with pytest.raises(asyncmig.ResumeRequiredError):
            await migrator(dsn, tmp_path).migrate()
    else:
        assert "rolled back by the server; run migrate again" in message
        assert not await table_exists(dsn, "t1")


# -- item 4: an in-doubt COMMIT ----------------------------------------------------------


@pytest.fixture(scope="module")
def sync_server() -> Iterator[PgServer]:
    """A private server whose synchronous standby never comes: a COMMIT that asks for
    synchronous replication waits until cancelled (it cannot share the suite's server,
    every commit there would wait too)."""
    server = PgServer().start()
    try:
        yield server
    finally:
        server.stop()


async def _sync_database(server: PgServer) -> str:
    admin = await asyncpg.connect(server.dsn())
    name = f"sr_{uuid.uuid4().hex[:8]}"
    try:
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'never_there'")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = local')
    finally:
        await admin.close()
    base = server.dsn().rsplit("/", 1)[0]
    return f"{base}/{name}"


async def test_commit_cancelled_by_the_deadline_after_the_server_committed_is_applied(
    sync_server: PgServer, tmp_path: Path
) -> None:
    """The issue's reproduction: the COMMIT waits for a standby until the 3 s deadline
    cancels it; the server has committed locally. asyncmig reports the migration
    applied (with a warning), history says completed, and the next run applies
    nothing."""
    dsn = await _sync_database(sync_server)
    write_tree(
        tmp_path,
        {"001_sync.sql": "SET LOCAL synchronous_commit = on;\nCREATE TABLE synced (id int);\n"},
    )
    events: list[Event] = []
    with anyio.fail_after(60):
        report = await migrator(dsn, tmp_path, migration_timeout=3.0).migrate(
            on_event=events.append
        )
    assert [a.version for a in report.applied] == [1]
    warnings = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("already committed" in w for w in warnings), warnings
    assert await table_exists(dsn, "synced")
    rows = await fetch(dsn, "SELECT status, error_message FROM _migrations")
    assert [(r["status"], r["error_message"]) for r in rows] == [("completed", None)]
    log = [r[0] for r in await fetch(dsn, "SELECT action FROM _migrations_log ORDER BY id")]
    assert log == ["apply"]
    again = await migrator(dsn, tmp_path).migrate()
    assert again.applied == () and again.planned == ()


async def test_failure_record_never_overwrites_a_completed_row(dsn: str, tmp_path: Path) -> None:
    """History's own guard: a failure written for a version whose row is completed
    leaves the row completed (so a committed migration is never applied again)."""
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);"})
    await migrator(dsn, tmp_path).migrate()
    history = asyncmig.Migrator(dsn).history
    conn = await asyncpg.connect(dsn)
    try:
        await history.record_failure(
            conn, version=1, filename="001_a.sql", checksum="x", duration_ms=1,
            statements=1, statements_done=0, transactional=True, message="late failure",
            sqlstate="57014", statement_index=1, line=1, column=1,
        )  # fmt: skip
    finally:
        await conn.close()
    rows = await fetch(dsn, "SELECT status, error_message FROM _migrations")
    assert [(r["status"], r["error_message"]) for r in rows] == [("completed", None)]


@pytest.mark.parametrize("batch", [True, False], ids=["one-message", "per-statement"])
async def test_statement_events_still_stream_for_a_transactional_migration(
    dsn: str, tmp_path: Path, batch: bool
) -> None:
    """Statement events arrive for each statement whether the migration is one message
    or a round trip per statement; per statement, the tag carries the row count."""
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);"})
    events: list[Event] = []
    await migrator(dsn, tmp_path, batch=batch).migrate(on_event=events.append)
    started = [e.index for e in events if isinstance(e, StatementStarted)]
    tags = [e.status for e in events if isinstance(e, StatementFinished)]
    assert started == [1, 2]
    assert tags == ["CREATE TABLE", "INSERT 0 1" if not batch else "INSERT"]
    assert [e.version for e in events if isinstance(e, MigrationStarted)] == [1]
