"""Every command against the real server, in-process through ``run(argv)``; exit codes one
by one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from asyncmig.cli import run
from asyncmig.migrator import Migrator

from .cli_helpers import SIMPLE, SIMPLE_ROLLBACK, clean_environment, json_lines, tree
from .conftest import TestPg
from .migtree import fetchval, wait_until


@pytest.fixture
def project(tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A migration tree in the current directory and DATABASE_URL pointing at a fresh db."""
    clean_environment(monkeypatch)
    tree(tmp_path, SIMPLE, SIMPLE_ROLLBACK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", dsn)
    yield tmp_path


def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def applied(dsn: str) -> list[int]:
    try:
        rows = query(dsn, "SELECT version FROM _migrations WHERE status = 'completed' ORDER BY 1")
    except asyncpg.UndefinedTableError:
        return []
    return [int(r["version"]) for r in rows]


def events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return json_lines(capsys.readouterr().out)


async def backend_gone(dsn: str, pid: int) -> bool:
    return not await fetchval(dsn, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


# -- migrate ------------------------------------------------------------------------------


def test_migrate_emits_every_run_event_as_json(
    project: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--json", "migrate"]) == 0
    lines = events(capsys)
    names = [line["event"] for line in lines]
    for name in (
        "run_started",
        "lock_acquired",
        "migration_started",
        "statement_started",
        "statement_finished",
        "server_notice",
        "migration_finished",
        "lock_released",
        "run_finished",
    ):
        assert name in names, name
    assert (
        names.index("run_started") < names.index("migration_started") < names.index("run_finished")
    )
    notice = next(line for line in lines if line["event"] == "server_notice")
    assert notice["message"] == "hello from 002"
    finished = [line for line in lines if line["event"] == "statement_finished"]
    assert finished[0]["status"] == "CREATE TABLE"
    assert finished[1]["status"] == "INSERT"  # one message per migration: the command
    assert lines[-1]["event"] == "run_finished"
    assert lines[-1]["applied"] == [1, 2]
    assert applied(dsn) == [1, 2]

    assert run(["--json", "migrate"]) == 0  # nothing to do: still exit 0
    again = events(capsys)
    assert again[-1]["event"] == "run_finished" and again[-1]["applied"] == []


def test_migrate_plain_output(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "migrate: applying 2 migrations: 001_users.sql, 002_notice.sql" in out
    assert "1 users: applied in " in out  # one line per migration; statements with -v
    assert "NOTICE: hello from 002" in out
    assert "migrate: applied 2 migrations, 1–2 in " in out
    assert run(["migrate"]) == 0
    assert "migrate: nothing to do" in capsys.readouterr().out


def test_migrate_dry_run_steps_target(
    project: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--json", "migrate", "--dry-run"]) == 0
    planned = [e for e in events(capsys) if e["event"] == "statement_planned"]
    assert [(e["version"], e["index"]) for e in planned] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert applied(dsn) == []
    assert run(["migrate", "--steps", "1"]) == 0
    assert applied(dsn) == [1]
    assert run(["migrate", "--target", "2"]) == 0
    assert applied(dsn) == [1, 2]


def test_migrate_atomic(project: Path, dsn: str) -> None:
    (project / "sql" / "003_bad.sql").write_text("SELECT * FROM nowhere;\n")
    assert run(["migrate", "--atomic"]) == 1
    assert applied(dsn) == []  # all or nothing


# -- exit codes one by one ----------------------------------------------------------------


def test_exit_1_migration_failed_json_carries_sqlstate_file_line(
    project: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "sql" / "003_bad.sql").write_text("SELECT 1;\n\nSELECT * FROM nowhere;\n")
    assert run(["--json", "migrate"]) == 1
    lines = events(capsys)
    failed = next(line for line in lines if line["event"] == "migration_failed")
    assert failed["version"] == 3
    error = lines[-1]
    assert error["event"] == "error"
    assert error["exit_code"] == 1
    assert error["sqlstate"] == "42P01"
    assert error["path"].endswith("003_bad.sql")
    assert error["line"] == 3
    assert error["applied"] == [1, 2]
    assert applied(dsn) == [1, 2]


def test_exit_1_plain_error_on_stderr(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "sql" / "003_bad.sql").write_text("SELECT * FROM nowhere;\n")
    assert run(["migrate"]) == 1
    err = capsys.readouterr().err
    assert "003_bad.sql:1" in err
    assert "SQLSTATE 42P01" in err


def test_exit_2_configuration(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "asyncmig.toml").write_text("lock_timeout = 'whenever'\n")
    assert run(["migrate"]) == 2
    assert "lock_timeout" in capsys.readouterr().err


def test_exit_3_checksum_drift_and_bad_files(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["migrate"]) == 0
    (project / "sql" / "001_users.sql").write_text("CREATE TABLE users (id int);\n")
    (project / "sql" / "003_more.sql").write_text("SELECT 1;\n")
    capsys.readouterr()
    assert run(["migrate"]) == 3
    assert "001_users.sql" in capsys.readouterr().err
    assert run(["migrate", "--force"]) == 0  # --force runs despite drift
    tree(project, {"001_users.sql": SIMPLE["001_users.sql"]})  # undo the edit

    (project / "sql" / "004_open.sql").write_text("SELECT $$never closed;\n")
    capsys.readouterr()
    assert run(["--json", "migrate"]) == 3
    error = events(capsys)[-1]
    assert error["event"] == "error" and error["exit_code"] == 3
    assert error["path"].endswith("004_open.sql")
    assert error["line"] == 1


def test_exit_4_lock_not_acquired(
    project: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Migrator(dsn).key.key

    async def hold_and_run() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            return await asyncio.to_thread(run, ["--json", "migrate", "--lock-timeout", "500ms"])
        finally:
            await conn.close()

    assert asyncio.run(hold_and_run()) == 4
    error = events(capsys)[-1]
    assert error["event"] == "error" and error["exit_code"] == 4
    assert error["type"] == "LockTimeoutError"


def test_exit_5_unreachable(project: Path, pg: TestPg, capsys: pytest.CaptureFixture[str]) -> None:
    bad_db = pg.dsn_for("no_such_database_xyz")
    assert run(["--database-url", bad_db, "status"]) == 5
    assert run(["--database-url", "postgresql://postgres@127.0.0.1:9/x", "migrate"]) == 5
    assert run(["--json", "--database-url", "postgresql://postgres@127.0.0.1:9/x", "status"]) == 5
    error = events(capsys)[-1]
    assert (error["event"], error["exit_code"], error["type"]) == (
        "error",
        5,
        "DatabaseUnreachableError",
    )


def test_wait_for_db_gives_up_clearly(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://postgres@127.0.0.1:9/x"
    assert run(["--database-url", url, "--wait-for-db", "1s", "migrate"]) == 5
    assert "127.0.0.1" in capsys.readouterr().err


def test_exit_6_status_exit_code(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["status", "--exit-code"]) == 6
    assert run(["status"]) == 0
    assert run(["migrate"]) == 0
    assert run(["status", "--exit-code"]) == 0


# -- the other commands -------------------------------------------------------------------


def test_status_plain_and_json(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["migrate", "--steps", "1"]) == 0
    capsys.readouterr()
    assert run(["status"]) == 0
    out = capsys.readouterr().out
    header, first, second, footer = out.splitlines()
    assert "VERSION" in header and "APPLIED AT" in header
    assert "applied" in first and "users" in first
    assert "pending" in second
    assert "current version 1 · 1 pending" in footer
    assert run(["--json", "status"]) == 0
    (line,) = events(capsys)
    assert line["event"] == "status"
    assert [v["state"] for v in line["versions"]] == ["applied", "pending"]
    assert line["versions"][0]["applied_by"]
    assert line["pending"] == [2]


def test_rollback_steps_to_all_dry_run(
    project: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "sql" / "003_third.sql").write_text("CREATE TABLE third (id int);\n")
    (project / "rollback" / "003_third_rollback.sql").write_text("DROP TABLE third;\n")
    assert run(["migrate"]) == 0
    assert run(["rollback", "--dry-run"]) == 0
    assert applied(dsn) == [1, 2, 3]
    assert run(["rollback"]) == 0  # default: one step
    assert applied(dsn) == [1, 2]
    assert run(["migrate"]) == 0
    assert run(["rollback", "--steps", "2"]) == 0
    assert applied(dsn) == [1]
    assert run(["migrate"]) == 0
    assert run(["rollback", "--to", "1"]) == 0
    assert applied(dsn) == [1]
    capsys.readouterr()
    assert run(["--json", "rollback", "--all"]) == 0
    lines = events(capsys)
    assert lines[-1]["event"] == "run_finished"
    assert lines[-1]["rolled_back"] == [1]
    assert [e["direction"] for e in lines if e["event"] == "migration_started"] == ["down"]
    assert applied(dsn) == []


def test_validate_online_offline(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["validate"]) == 0
    assert "validation passed: files and history" in capsys.readouterr().out
    assert run(["migrate"]) == 0
    (project / "sql" / "002_notice.sql").write_text("SELECT 'edited';\n")
    capsys.readouterr()
    assert run(["--json", "validate"]) == 3
    (report,) = events(capsys)
    assert report["event"] == "validation" and not report["ok"]
    assert [i["code"] for i in report["issues"]] == ["checksum_mismatch"]
    assert run(["validate", "--offline"]) == 0  # the files themselves are fine
    (project / "sql" / "003_bad.sql").write_text("BEGIN;\nSELECT 1;\nCOMMIT;\nCOMMIT;\n")
    monkeypatch.delenv("DATABASE_URL")
    capsys.readouterr()
    assert run(["validate"]) == 3  # no database: offline checks still run
    out = capsys.readouterr().out
    assert "003_bad.sql" in out
    assert "files only (offline)" in out


def test_reset_seed(project: Path, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "seeds" / "dev").mkdir(parents=True)
    (project / "seeds" / "001_people.sql").write_text("INSERT INTO users VALUES (10, 'seed');\n")
    (project / "seeds" / "dev" / "001_dev.sql").write_text(
        "INSERT INTO users VALUES (11, 'dev only');\n"
    )
    assert run(["migrate"]) == 0
    assert run(["seed"]) == 0
    assert [r["id"] for r in query(dsn, "SELECT id FROM users ORDER BY id")] == [1, 2, 10]
    assert run(["--env", "dev", "--json", "reset", "--force"]) == 0
    capsys.readouterr()
    assert applied(dsn) == [1, 2]
    assert [r["id"] for r in query(dsn, "SELECT id FROM users ORDER BY id")] == [1, 2]
    assert run(["--env", "dev", "--json", "seed"]) == 0
    lines = events(capsys)
    assert lines[-1]["event"] == "seeded"
    assert len(lines[-1]["files"]) == 2
    assert [r["id"] for r in query(dsn, "SELECT id FROM users ORDER BY id")] == [1, 2, 10, 11]


def _client_tools_of_major(major: int) -> None:
    """Skip unless a pg_dump and a psql of PostgreSQL ``major`` are installed somewhere
    asyncmig looks (a newer pg_dump's file is refused by restore into this server)."""
    from asyncmig.cli.pgtools import installed_tools

    for name in ("pg_dump", "psql"):
        if not any(t.version[0] == major for t in installed_tools(name)):
            pytest.skip(f"no {name} {major} here (test_pgtools covers the version mismatch)")


def test_dump_and_restore(
    project: Path,
    dsn: str,
    pg: TestPg,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without ASYNCMIG_PG_BINDIR, dump finds a pg_dump of the server's own major version
    (the header says so) and writes the schema and data; restore puts them into another
    database in one transaction, and a second restore fails (exit 1) changing nothing."""
    major = pg.server_version // 10000
    monkeypatch.delenv("ASYNCMIG_PG_BINDIR", raising=False)
    _client_tools_of_major(major)
    assert run(["migrate"]) == 0
    capsys.readouterr()
    assert run(["--json", "dump"]) == 0
    (line,) = events(capsys)
    backup = project / line["file"]
    assert backup.name.startswith("backup_") and backup.suffix == ".sql"
    assert "CREATE TABLE public.users" in backup.read_text()
    assert f"-- Dumped by pg_dump version {major}." in backup.read_text()
    assert not list(project.glob("*.partial"))

    target = pg.create_database()
    try:
        assert run(["--database-url", target, "restore", str(backup)]) == 0
        assert [r["id"] for r in query(target, "SELECT id FROM users ORDER BY id")] == [1, 2]
        assert run(["--database-url", target, "status", "--exit-code"]) == 0
        capsys.readouterr()
        assert run(["--database-url", target, "restore", str(backup)]) == 1  # already there
        assert "psql failed" in capsys.readouterr().err
    finally:
        pg.drop_database(target)
    assert run(["dump", "schema.sql", "--schema-only"]) == 0
    assert "INSERT INTO public.users" not in (project / "schema.sql").read_text()
    assert "COPY public.users" not in (project / "schema.sql").read_text()


def test_dump_unreachable_is_exit_5(project: Path) -> None:
    """A server that does not answer is exit 5 for dump, and no file (not even a partial
    one) is left."""
    from asyncmig.cli.pgtools import find_tool
    from asyncmig.errors import ConfigError

    try:
        find_tool("pg_dump")
    except ConfigError:
        pytest.skip("no pg_dump here")
    assert run(["--database-url", "postgresql://u@127.0.0.1:9/x", "dump", "x.sql"]) == 5
    assert not (project / "x.sql").exists()
    assert not list(project.glob("*.partial"))


def test_unlock_shows_and_forces(
    project: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``unlock`` shows the holder and leaves it; ``unlock --force`` ends the holder's
    backend (gone from pg_stat_activity), and the lock is free afterwards."""
    assert run(["unlock"]) == 0
    assert "lock is free" in capsys.readouterr().out
    key = Migrator(dsn).key.key

    async def scenario() -> tuple[int, int, int, bool, bool]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            pid = conn.get_server_pid()
            shown = await asyncio.to_thread(run, ["--json", "unlock"])
            alive_after_show = not await backend_gone(dsn, pid)
            forced = await asyncio.to_thread(run, ["--json", "unlock", "--force"])
            await wait_until(lambda: backend_gone(dsn, pid), what="the forced backend to end")
            return shown, forced, pid, alive_after_show, not await backend_gone(dsn, pid)
        finally:
            conn.terminate()

    shown, forced, pid, alive_after_show, alive = asyncio.run(scenario())
    assert (shown, forced) == (0, 0)
    assert alive_after_show and not alive
    first, second = events(capsys)
    assert first["event"] == "lock" and first["holder"]["backend_pid"] == pid
    assert not first["forced"]
    assert second["forced"] and second["holder"]["backend_pid"] == pid
    assert run(["unlock"]) == 0
    assert "lock is free" in capsys.readouterr().out


def test_wait(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--json", "wait", "--timeout", "300ms", "--interval", "100ms"]) == 6
    error = events(capsys)[-1]
    assert error["event"] == "error" and error["exit_code"] == 6
    assert run(["migrate"]) == 0
    capsys.readouterr()
    assert run(["wait", "--timeout", "5s"]) == 0
    assert "nothing pending; database at version 2" in capsys.readouterr().out


def test_schema_option_separates_histories(
    project: Path, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    query(dsn, "CREATE SCHEMA other")
    assert run(["--schema", "other", "migrate", "--steps", "1"]) == 0
    assert [int(r["version"]) for r in query(dsn, "SELECT version FROM other._migrations")] == [1]
    assert applied(dsn) == []


def test_verbose_shows_lock_events_and_causes(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["-v", "migrate"]) == 0
    assert "lock acquired" in capsys.readouterr().out
    assert run(["--database-url", "postgresql://postgres@127.0.0.1:9/x", "status", "-v"]) == 5
    assert "cannot connect" in capsys.readouterr().err
