"""A DSN password never appears in any output: every command, success and failure, plain,
JSON and verbose, in-process and through the entry point."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from asyncmig.cli import run
from asyncmig.migrator import Migrator

from .cli_helpers import SIMPLE, SIMPLE_ROLLBACK, clean_environment, cli, tree
from .conftest import TestPg

MARKER = "Pw_MARKER_83731"


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for sql in statements:
            await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def marker_dsn(pg: TestPg) -> Iterator[str]:
    """A fresh database owned by role ``marker``; its URL carries the marker password."""
    asyncio.run(
        _admin(
            pg.admin_dsn,
            f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'marker') THEN
                CREATE ROLE marker LOGIN PASSWORD '{MARKER}';
            END IF;
        END $$
    """,
        )
    )
    url = pg.create_database()
    name = urlsplit(url).path.lstrip("/")
    asyncio.run(_admin(pg.admin_dsn, f'ALTER DATABASE "{name}" OWNER TO marker'))
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit(parts._replace(netloc=f"marker:{MARKER}@{host}"))
    finally:
        pg.drop_database(url)


def with_path(dsn: str, path: str = "", port: int | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if port is not None:
        netloc = netloc.rsplit(":", 1)[0] + f":{port}"
    return urlunsplit(parts._replace(netloc=netloc, path=path or parts.path))


def test_marker_never_printed(
    tmp_path: Path,
    marker_dsn: str,
    pg: TestPg,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    clean_environment(monkeypatch)
    tree(tmp_path, SIMPLE, SIMPLE_ROLLBACK)
    (tmp_path / "seeds").mkdir()
    (tmp_path / "seeds" / "001.sql").write_text("INSERT INTO users VALUES (9, 'seed');\n")
    (tmp_path / "small.sql").write_text("CREATE TABLE restored (id int);\n")
    monkeypatch.chdir(tmp_path)
    if pg.bindir is not None:
        monkeypatch.setenv("ASYNCMIG_PG_BINDIR", str(pg.bindir))
    url = marker_dsn
    bad_db = with_path(url, "/no_such_db_marker")
    bad_port = with_path(url, port=9)
    flag = ["--database-url", url]

    runs: list[tuple[list[str], int]] = []
    for mode in ([], ["--json"], ["-v"]):
        runs += [
            ([*mode, *flag, "migrate", "--dry-run"], 0),
            ([*mode, *flag, "migrate"], 0),
            ([*mode, *flag, "status"], 0),
            ([*mode, *flag, "validate"], 0),
            ([*mode, *flag, "unlock"], 0),
            ([*mode, *flag, "wait", "--timeout", "1s"], 0),
            ([*mode, *flag, "seed"], 0),
            ([*mode, *flag, "rollback"], 0),
            ([*mode, *flag, "reset", "--force"], 0),
            ([*mode, "--database-url", bad_db, "status"], 5),
            ([*mode, "--database-url", bad_db, "migrate"], 5),
            ([*mode, "--database-url", bad_port, "migrate"], 5),
            ([*mode, "--database-url", bad_port, "--wait-for-db", "300ms", "status"], 5),
            ([*mode, "--database-url", bad_port, "dump", "never.sql"], 5),
            ([*mode, "--database-url", bad_port, "restore", "small.sql"], 5),
            ([*mode, "--database-url", bad_port, "rollback"], 5),
            ([*mode, "--database-url", bad_port, "unlock", "--force"], 5),
            ([*mode, "--database-url", bad_port, "reset", "--force"], 5),
            ([*mode, "--database-url", bad_port, "seed"], 5),
            ([*mode, "--database-url", bad_port, "wait", "--timeout", "1s"], 5),
            ([*mode, "--database-url", url, "migrate", "--steps", "zero"], 2),
            ([*mode, "--database-url", url, "--lock-timeout", "soon", "status"], 2),
        ]
    for argv, code in runs:
        assert run(argv) == code, argv
    if pg.bindir is not None or _has("pg_dump"):
        assert run([*flag, "dump", "backup.sql"]) == 0
        assert run(["--json", *flag, "restore", "small.sql"]) == 0
        assert run(["-v", *flag, "restore", "small.sql"]) == 1  # table exists already

    # failures after connecting: migration error, checksum drift, lock timeout
    (tmp_path / "sql" / "003_bad.sql").write_text("SELECT * FROM nope;\n")
    for mode in ([], ["--json"], ["-v"]):
        assert run([*mode, *flag, "migrate"]) == 1
    (tmp_path / "sql" / "003_bad.sql").unlink()
    (tmp_path / "sql" / "001_users.sql").write_text("SELECT 1;\n")
    for mode in ([], ["--json"], ["-v"]):
        assert run([*mode, *flag, "validate"]) == 3
        assert run([*mode, *flag, "migrate"]) in (0, 3)

    key = Migrator(url).key.key

    async def locked() -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", key)
            (tmp_path / "sql" / "004_new.sql").write_text("SELECT 1;\n")
            codes = []
            for mode in ([], ["--json"], ["-v"]):
                argv = [*mode, *flag, "migrate", "--force", "--lock-timeout", "200ms"]
                codes.append(await asyncio.to_thread(run, argv))
            codes.append(await asyncio.to_thread(run, ["--json", *flag, "unlock"]))
            return codes
        finally:
            conn.terminate()

    assert asyncio.run(locked()) == [4, 4, 4, 0]

    # the same DSN through the environment and the config file
    monkeypatch.setenv("DATABASE_URL", bad_port)
    assert run(["status"]) == 5
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("MY_DB", bad_db)
    (tmp_path / "asyncmig.toml").write_text('database_url = "${MY_DB}"\n')
    assert run(["-v", "status"]) == 5

    out, err = capfd.readouterr()
    assert out and err
    assert MARKER not in out
    assert MARKER not in err


def test_marker_never_printed_by_the_entry_point(tmp_path: Path, marker_dsn: str) -> None:
    tree(tmp_path, SIMPLE, SIMPLE_ROLLBACK)
    bad_db = with_path(marker_dsn, "/no_such_db_marker")
    bad_port = with_path(marker_dsn, port=9)
    results = [
        cli("-v", "migrate", cwd=tmp_path, env={"DATABASE_URL": marker_dsn}),
        cli("--json", "status", cwd=tmp_path, env={"ASYNCMIG_DATABASE_URL": marker_dsn}),
        cli("-v", "--database-url", bad_db, "migrate", cwd=tmp_path),
        cli("--json", "--database-url", bad_port, "status", cwd=tmp_path),
        cli("-v", "--database-url", bad_port, "--wait-for-db", "500ms", "status", cwd=tmp_path),
    ]
    assert [r.returncode for r in results] == [0, 0, 5, 5, 5]
    for r in results:
        assert MARKER not in r.stdout
        assert MARKER not in r.stderr


def _has(tool: str) -> bool:
    import shutil

    return shutil.which(tool) is not None
