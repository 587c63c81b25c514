"""The engine against a real server: apply, fail, record, resume, rollback, refuse."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest

import asyncmig
from asyncmig.events import (
    Event,
    LockAcquired,
    LockReleased,
    MigrationFailed,
    MigrationFinished,
    MigrationStarted,
    RunFinished,
    RunStarted,
    ServerNotice,
    StatementFinished,
    StatementPlanned,
    StatementStarted,
)

from .migtree import (
    REPO,
    advisory_locks_here,
    catalog_snapshot,
    fetch,
    fetchval,
    migrator,
    running_here,
    table_exists,
    wait_until,
    write_tree,
)

pytestmark = pytest.mark.anyio

TWO = {
    "001_people.sql": """
        -- Migration: people
        CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL);
        INSERT INTO people VALUES (1, 'ada'), (2, 'grace');
    """,
    "002_pets.sql": """
        CREATE TABLE pets (id int PRIMARY KEY, owner int REFERENCES people);
        CREATE INDEX pets_owner_idx ON pets (owner);
    """,
}
TWO_RB = {
    "001_people_rollback.sql": "DROP TABLE people;\n",
    "002_pets_rollback.sql": "DROP TABLE pets;\n",
}


async def test_apply_records_history_and_events(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, TWO_RB)
    events: list[Event] = []
    report = await migrator(dsn, tmp_path).migrate(on_event=events.append)
    assert report.versions == (1, 2)
    assert await fetchval(dsn, "SELECT count(*) FROM people") == 2
    rows = await fetch(dsn, "SELECT * FROM _migrations ORDER BY version")
    assert [int(r["version"]) for r in rows] == [1, 2]
    assert {r["status"] for r in rows} == {"completed"}
    assert all(len(r["checksum"]) == 64 for r in rows)
    assert rows[0]["statements_total"] == 2 and rows[0]["rollback_sql"] == "DROP TABLE people;\n"
    log = await fetch(dsn, "SELECT action, version FROM _migrations_log ORDER BY id")
    assert [(r["action"], int(r["version"])) for r in log] == [("apply", 1), ("apply", 2)]
    kinds = [type(e) for e in events]
    assert kinds[0] is LockAcquired and RunStarted in kinds and kinds[-1] is RunFinished
    assert kinds.count(MigrationStarted) == 2 and kinds.count(MigrationFinished) == 2
    assert kinds.count(StatementStarted) == 4 and kinds.count(StatementFinished) == 4
    assert LockReleased in kinds
    finished = [e for e in events if isinstance(e, StatementFinished)]
    # one message per migration: a statement's tag is its command, without row counts
    assert finished[0].status == "CREATE TABLE" and finished[1].status == "INSERT"
    started = [e for e in events if isinstance(e, StatementStarted)]
    assert (started[1].line, started[1].column) == (3, 1)
    # every event serialises to JSON with its name and an ISO timestamp
    for e in events:
        d = e.to_dict()
        assert d["event"] and "T" in d["ts"]


async def test_nothing_pending_returns_without_lock(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, TWO_RB)
    await migrator(dsn, tmp_path).migrate()
    events: list[Event] = []
    report = await migrator(dsn, tmp_path).migrate(on_event=events.append)
    assert report.nothing_to_do and not report.took_lock
    assert not any(isinstance(e, LockAcquired) for e in events)


async def test_failing_second_statement_leaves_nothing_and_is_recorded(
    dsn: str, tmp_path: Path
) -> None:
    """The failing statement's SQLSTATE, line and statement are in the error, in the
    ``_migrations`` row and in the ``fail`` row of ``_migrations_log``; nothing of the
    migration stays; the fixed file applies on the next run."""
    write_tree(tmp_path, {
        "001_bad.sql": """
            CREATE TABLE first_one (id int);
            INSERT INTO first_one VALUES (1);
            INSERT INTO no_such_table VALUES (1);
        """,
    })  # fmt: skip
    events: list[Event] = []
    with pytest.raises(asyncmig.MigrationError) as info:
        await migrator(dsn, tmp_path).migrate(on_event=events.append)
    err = info.value
    assert err.sqlstate == "42P01"
    assert err.version == 1 and err.statement_index == 3
    assert (err.line, err.column) == (3, 13)  # the server's position, mapped to the file
    assert "001_bad.sql:3:13" in str(err)
    assert not await table_exists(dsn, "first_one")
    row = (await fetch(dsn, "SELECT * FROM _migrations"))[0]
    assert row["status"] == "failed" and row["error_sqlstate"] == "42P01"
    assert row["error_line"] == 3 and row["error_statement"] == 3
    assert "no_such_table" in row["error_message"]
    log = await fetch(
        dsn, "SELECT action, version, detail->>'sqlstate' AS sqlstate, "
        "(detail->>'statement')::int AS statement, (detail->>'line')::int AS line "
        "FROM _migrations_log"
    )  # fmt: skip
    assert [tuple(r) for r in log] == [("fail", 1, "42P01", 3, 3)]
    failed = [e for e in events if isinstance(e, MigrationFailed)]
    assert failed and failed[0].error["sqlstate"] == "42P01" and failed[0].error["line"] == 3
    # fix the file: the next run applies it, no dirty state to repair
    (tmp_path / "sql" / "001_bad.sql").write_text(
        "CREATE TABLE first_one (id int);\nINSERT INTO first_one VALUES (1);\n"
    )
    report = await migrator(dsn, tmp_path).migrate()
    assert report.versions == (1,)
    assert await fetchval(dsn, "SELECT status FROM _migrations WHERE version = 1") == "completed"


async def test_seed_samples_apply_rollback_and_reapply(dsn: str, tmp_path: Path) -> None:
    shutil.copytree(REPO / "sql", tmp_path / "sql")
    if (REPO / "rollback").exists():
        shutil.copytree(REPO / "rollback", tmp_path / "rollback")
    else:
        (tmp_path / "rollback").mkdir()
    if not any((tmp_path / "rollback").glob("*.sql")):
        pytest.skip("sample rollbacks not written yet")
    before = await catalog_snapshot(dsn)
    m = migrator(dsn, tmp_path)
    report = await m.migrate()
    assert 0 in report.versions and 1 in report.versions
    status = await m.status()
    for v in status.versions:
        assert v.state == "applied" and v.checksum and v.duration_ms is not None
    assert await table_exists(dsn, "users") and await table_exists(dsn, "users_audit")
    down = await m.rollback(all=True)
    assert down.versions == tuple(sorted(report.versions, reverse=True))
    assert await catalog_snapshot(dsn) == before
    states = {v.state for v in (await m.status()).versions}
    assert states == {"rolled_back"}
    again = await m.migrate()
    assert again.versions == report.versions


async def test_no_transaction_failure_resume(dsn: str, tmp_path: Path) -> None:
    body = """
        -- asyncmig: no-transaction
        CREATE TABLE nt (id int);
        INSERT INTO nt VALUES (1);
        CREATE INDEX CONCURRENTLY nt_id_idx ON nt (id);
        INSERT INTO nt_missing VALUES (2);
        INSERT INTO nt VALUES (3);
    """
    write_tree(tmp_path, {"001_nt.sql": body})
    with pytest.raises(asyncmig.MigrationError):
        await migrator(dsn, tmp_path).migrate()
    row = (await fetch(dsn, "SELECT * FROM _migrations"))[0]
    assert row["status"] == "failed" and row["statements_done"] == 3
    assert row["transactional"] is False
    assert await fetchval(dsn, "SELECT count(*) FROM nt") == 1  # autocommit: k statements stay
    with pytest.raises(asyncmig.ResumeRequiredError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert "--resume" in str(info.value) and "statement 4" in str(info.value)
    assert info.value.statements_done == 3
    # a changed file refuses to resume
    path = tmp_path / "sql" / "001_nt.sql"
    original = path.read_text()
    path.write_text(original.replace("nt_missing", "nt"))
    with pytest.raises(asyncmig.ChecksumMismatchError):
        await migrator(dsn, tmp_path).migrate(resume=True)
    # fix the cause outside (create the missing table), restore the file, resume
    path.write_text(original)
    await fetch(dsn, "CREATE TABLE nt_missing (id int)")
    report = await migrator(dsn, tmp_path).migrate(resume=True)
    assert report.versions == (1,)
    assert await fetchval(dsn, "SELECT count(*) FROM nt") == 2  # 1 and 3; not re-run
    assert await fetchval(dsn, "SELECT statements_done FROM _migrations") == 5
    actions = [r["action"] for r in await fetch(dsn, "SELECT action FROM _migrations_log")]
    assert actions == ["fail", "resume", "apply"]


async def test_checksum_drift_refused_unless_forced(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, TWO_RB)
    await migrator(dsn, tmp_path).migrate(steps=1)
    p = tmp_path / "sql" / "001_people.sql"
    p.write_text(p.read_text() + "-- edited\n")
    with pytest.raises(asyncmig.ChecksumMismatchError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert "001_people.sql" in str(info.value) and info.value.version == 1
    assert not await table_exists(dsn, "pets")
    report = await migrator(dsn, tmp_path).migrate(force=True)
    assert report.versions == (2,)


async def test_crlf_checkout_is_not_drift(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, TWO_RB)
    await migrator(dsn, tmp_path).migrate()
    p = tmp_path / "sql" / "001_people.sql"
    p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes().replace(b"\n", b"\r\n"))
    report = await migrator(dsn, tmp_path).migrate()
    assert report.nothing_to_do


async def test_out_of_order_refused_unless_allowed(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"002_pets.sql": "CREATE TABLE pets (id int);\n"})
    await migrator(dsn, tmp_path).migrate()
    write_tree(tmp_path, {"001_people.sql": "CREATE TABLE people (id int);\n"})
    with pytest.raises(asyncmig.OutOfOrderError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert info.value.version == 1
    report = await migrator(dsn, tmp_path).migrate(allow_out_of_order=True)
    assert report.versions == (1,)


async def test_missing_file_refused(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, TWO_RB)
    await migrator(dsn, tmp_path).migrate()
    (tmp_path / "sql" / "001_people.sql").unlink()
    write_tree(tmp_path, {"003_more.sql": "CREATE TABLE more (id int);\n"})
    with pytest.raises(asyncmig.MissingFileError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert info.value.version == 1 and "001_people.sql" in str(info.value)


async def test_duplicate_versions_refused_before_connecting(tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_a.sql": "SELECT 1;\n", "1_b.sql": "SELECT 2;\n"})
    m = migrator("postgresql://nobody@127.0.0.1:1/none", tmp_path)
    with pytest.raises(asyncmig.DuplicateVersionError):
        await m.migrate()


async def test_dry_run_changes_nothing_and_lists_statements(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, TWO_RB)
    events: list[Event] = []
    report = await migrator(dsn, tmp_path).migrate(dry_run=True, on_event=events.append)
    assert report.dry_run and report.planned == (1, 2) and not report.applied
    planned = [e for e in events if isinstance(e, StatementPlanned)]
    assert [(e.version, e.index) for e in planned] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert not await table_exists(dsn, "_migrations")
    assert not await table_exists(dsn, "people")


async def test_steps_and_target(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {**TWO, "003_toys.sql": "CREATE TABLE toys (id int);\n"}, TWO_RB)
    assert (await migrator(dsn, tmp_path).migrate(steps=1)).versions == (1,)
    assert (await migrator(dsn, tmp_path).migrate(target=2)).versions == (2,)
    assert (await migrator(dsn, tmp_path).migrate()).versions == (3,)


async def test_atomic_is_all_or_nothing(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "001_ok.sql": "CREATE TABLE ok1 (id int);\n",
        "002_bad.sql": "CREATE TABLE ok2 (id int);\nSELECT 1/0;\n",
    })  # fmt: skip
    with pytest.raises(asyncmig.MigrationError) as info:
        await migrator(dsn, tmp_path).migrate(atomic=True)
    assert info.value.version == 2 and info.value.sqlstate == "22012"
    assert not await table_exists(dsn, "ok1")
    assert await fetchval(dsn, "SELECT status FROM _migrations WHERE version = 2") == "failed"
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE version = 1") == 0


async def test_migration_deadline_cancels_statement(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_slow.sql": "CREATE TABLE s (id int);\nSELECT pg_sleep(30);\n"})
    t0 = anyio.current_time()
    with pytest.raises(asyncmig.MigrationTimeoutError) as info:
        await migrator(dsn, tmp_path, migration_timeout=1.0).migrate()
    assert anyio.current_time() - t0 < 10
    assert info.value.statement_index == 2
    assert not await table_exists(dsn, "s")
    assert await fetchval(dsn, "SELECT status FROM _migrations") == "failed"
    # the server is not still running the statement (this database's backends only)
    assert await running_here(dsn, "SELECT pg_sleep(30)") == 0


async def test_timeout_directives_apply_locally(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "001_t.sql": """
            -- asyncmig: lock-timeout=2s
            -- asyncmig: statement-timeout=1min
            CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lt,
                                        current_setting('statement_timeout') AS st;
        """,
    })  # fmt: skip
    await migrator(dsn, tmp_path).migrate()
    row = (await fetch(dsn, "SELECT * FROM seen"))[0]
    assert (row["lt"], row["st"]) == ("2s", "1min")


async def test_server_notices_are_forwarded(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "001_n.sql": "DO $$ BEGIN RAISE NOTICE 'hello from %', 'plpgsql'; END $$;\n",
    })  # fmt: skip
    events: list[Event] = []
    await migrator(dsn, tmp_path).migrate(on_event=events.append)
    notices = [e for e in events if isinstance(e, ServerNotice)]
    assert notices and notices[0].message == "hello from plpgsql" and notices[0].version == 1


async def test_rollback_steps_to_and_stored_sql(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {**TWO, "003_toys.sql": "CREATE TABLE toys (id int);\n"},
               {**TWO_RB, "003_toys_rollback.sql": "DROP TABLE toys;\n"})  # fmt: skip
    m = migrator(dsn, tmp_path)
    await m.migrate()
    assert (await m.rollback()).versions == (3,)
    assert not await table_exists(dsn, "toys")
    # without the file, the SQL stored at apply time is used
    (tmp_path / "rollback" / "002_pets_rollback.sql").unlink()
    events: list[Event] = []
    assert (await m.rollback(to=0, on_event=events.append)).versions == (2, 1)
    assert not await table_exists(dsn, "people")
    statuses = await fetch(dsn, "SELECT version, status FROM _migrations ORDER BY version")
    assert [r["status"] for r in statuses] == ["rolled_back"] * 3
    # rolled back versions are pending again
    assert (await m.migrate()).versions == (1, 2, 3)


async def test_rollback_failure_undoes_the_whole_selection(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, {**TWO_RB, "001_people_rollback.sql": "DROP TABLE nope;\n"})
    m = migrator(dsn, tmp_path)
    await m.migrate()
    with pytest.raises(asyncmig.RollbackFailedError) as info:
        await m.rollback(all=True)
    assert info.value.version == 1
    assert await table_exists(dsn, "pets") and await table_exists(dsn, "people")
    assert {r["status"] for r in await fetch(dsn, "SELECT status FROM _migrations")} == {
        "completed"
    }
    assert "rollback_fail" in [
        r["action"] for r in await fetch(dsn, "SELECT action FROM _migrations_log")
    ]


async def test_cancellation_rolls_back_records_and_releases(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {"001_slow.sql": "CREATE TABLE c (id int);\nSELECT pg_sleep(60);\n"})
    started = anyio.Event()

    def on_event(e: Event) -> None:
        if isinstance(e, StatementStarted) and e.index == 2:
            started.set()

    cancelled = False
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            nonlocal cancelled
            try:
                await migrator(dsn, tmp_path).migrate(on_event=on_event)
            except anyio.get_cancelled_exc_class():
                cancelled = True
                raise

        tg.start_soon(run)
        await started.wait()
        await wait_until(  # the statement is running on the server, not just sent
            lambda: running_here(dsn, "SELECT pg_sleep(60)"), what="pg_sleep(60) to run"
        )
        t0 = anyio.current_time()
        tg.cancel_scope.cancel()
    assert cancelled
    assert anyio.current_time() - t0 < 5
    assert not await table_exists(dsn, "c")
    assert await fetchval(dsn, "SELECT status FROM _migrations") == "failed"
    assert await advisory_locks_here(dsn) == 0
    # and the next run applies it (after fixing the sleep)
    (tmp_path / "sql" / "001_slow.sql").write_text("CREATE TABLE c (id int);\n")
    assert (await migrator(dsn, tmp_path).migrate()).versions == (1,)


async def test_module_level_migrate_and_validate(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, TWO, {"001_people_rollback.sql": "DROP TABLE people;\n"})
    report = await asyncmig.migrate(dsn, sql_dir=tmp_path / "sql",
                                    rollback_dir=tmp_path / "rollback")  # fmt: skip
    assert report.versions == (1, 2)
    result = await migrator(dsn, tmp_path).validate()
    assert result.ok
    assert [i.code for i in result.warnings] and all(i.level == "warning" for i in result.issues)
    p = tmp_path / "sql" / "002_pets.sql"
    p.write_text(p.read_text() + "-- tampered\n")
    result = await migrator(dsn, tmp_path).validate()
    assert not result.ok and [i.code for i in result.errors] == ["checksum_mismatch"]


async def test_error_position_in_the_first_statement_maps_to_the_file(
    dsn: str, tmp_path: Path
) -> None:
    write_tree(
        tmp_path, {"001_first.sql": "-- header\n\n  SELECT 1,\n         nosuchcol FROM pg_class;\n"}
    )
    with pytest.raises(asyncmig.MigrationError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert (info.value.line, info.value.column, info.value.sqlstate) == (4, 10, "42703")


async def test_resume_message_names_invalid_indexes(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "001_uniq.sql": """
            -- asyncmig: no-transaction
            CREATE TABLE dup (v int);
            INSERT INTO dup VALUES (1), (1);
            CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v);
        """,
    })  # fmt: skip
    with pytest.raises(asyncmig.MigrationError) as failed:
        await migrator(dsn, tmp_path).migrate()
    assert failed.value.sqlstate == "23505"
    with pytest.raises(asyncmig.ResumeRequiredError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert info.value.statements_done == 2
    assert info.value.invalid_indexes == ["public.dup_v_key"]
    assert "public.dup_v_key" in str(info.value) and "--resume" in str(info.value)


async def test_timeout_directives_do_not_leak_into_the_next_migration_of_one_transaction(
    dsn: str, tmp_path: Path
) -> None:
    write_tree(tmp_path, {
        "001_t.sql": "-- asyncmig: lock-timeout=7s\nCREATE TABLE one AS "
                     "SELECT current_setting('lock_timeout') AS lt;\n",
        "002_u.sql": "CREATE TABLE two AS SELECT current_setting('lock_timeout') AS lt;\n",
    })  # fmt: skip
    await migrator(dsn, tmp_path).migrate(atomic=True)
    assert await fetchval(dsn, "SELECT lt FROM one") == "7s"
    assert await fetchval(dsn, "SELECT lt FROM two") == "2s"  # the DDL lock timeout default


async def test_a_rollback_group_is_logged_in_order(dsn: str, tmp_path: Path) -> None:
    write_tree(tmp_path, {**TWO, "003_toys.sql": "CREATE TABLE toys (id int);\n"},
               {**TWO_RB, "003_toys_rollback.sql": "DROP TABLE toys;\n"})  # fmt: skip
    m = migrator(dsn, tmp_path)
    await m.migrate()
    await m.rollback(all=True)
    log = await fetch(dsn, "SELECT version, duration_ms FROM _migrations_log "
                           "WHERE action = 'rollback' ORDER BY id")  # fmt: skip
    assert [int(r["version"]) for r in log] == [3, 2, 1]
    assert all(r["duration_ms"] is not None and r["duration_ms"] >= 0 for r in log)


async def test_a_broken_pending_file_stops_the_run_before_anything_happens(
    dsn: str, tmp_path: Path
) -> None:
    write_tree(tmp_path, {
        "001_ok.sql": "CREATE TABLE fine (id int);\n",
        "002_broken.sql": "CREATE TABLE t (note text DEFAULT 'unterminated);\n",
    })  # fmt: skip
    with pytest.raises(asyncmig.SplitError) as info:
        await migrator(dsn, tmp_path).migrate()
    assert info.value.path is not None and info.value.path.name == "002_broken.sql"
    broken = "CREATE TABLE t (note text DEFAULT 'unterminated);"
    assert (info.value.line, info.value.column) == (1, broken.index("'") + 1)
    assert not await table_exists(dsn, "fine")
    assert not await table_exists(dsn, "_migrations")  # not even the history was created


async def test_rollback_does_not_need_the_forward_files_to_parse(dsn: str, tmp_path: Path) -> None:
    """Rollback loads lazily: it checks the rollback files it will run, nothing else."""
    write_tree(tmp_path, TWO, TWO_RB)
    await migrator(dsn, tmp_path).migrate()
    (tmp_path / "sql" / "001_people.sql").write_text("CREATE TABLE oops (x text DEFAULT 'open;\n")
    assert (await migrator(dsn, tmp_path).rollback()).versions == (2,)
    (tmp_path / "rollback" / "001_people_rollback.sql").write_text("DROP TABLE $$people;\n")
    with pytest.raises(asyncmig.SplitError):
        await migrator(dsn, tmp_path).rollback()
    assert await table_exists(dsn, "people")
    assert await fetchval(dsn, "SELECT status FROM _migrations WHERE version = 1") == "completed"


async def test_status_reads_everything_but_splits_only_pending_files(
    dsn: str, tmp_path: Path
) -> None:
    write_tree(tmp_path, TWO, TWO_RB)
    m = migrator(dsn, tmp_path)
    await m.migrate()
    write_tree(tmp_path, {"003_bad.sql": "SELECT 'open;\n", "004_ok.sql": "SELECT 1;\nSELECT 2;\n"})
    p = tmp_path / "sql" / "001_people.sql"
    p.write_text(p.read_text() + "-- edited\n")
    report = await m.status()
    by_version = {v.version: v for v in report.versions}
    assert by_version[1].state == "applied" and by_version[1].modified
    assert by_version[3].state == "pending" and by_version[3].statements_total is None
    assert by_version[4].state == "pending" and by_version[4].statements_total == 2
