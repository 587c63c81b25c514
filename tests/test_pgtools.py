"""dump and restore find client tools that fit the server, against real servers of two
PostgreSQL versions: the suite's own and another one installed on this machine."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from asyncmig._pgserver import PgServer, binary_major
from asyncmig.cli import run
from asyncmig.cli.pgtools import (
    Tool,
    choose_tool,
    dump_file_version,
    installed_tools,
    known_bindirs,
    run_dump,
)
from asyncmig.errors import ConfigError, DatabaseUnreachableError

from .cli_helpers import clean_environment
from .conftest import TestPg

REPO = Path(__file__).resolve().parent.parent


def _sql(dsn: str, sql: str) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(go())


def _server_installs() -> list[tuple[int, Path]]:
    """(major, bin dir) of every PostgreSQL server install asyncmig's tests can see."""
    dirs = [*known_bindirs(), *sorted((REPO / ".pgversions").glob("*/bin"))]
    found: list[tuple[int, Path]] = []
    for bindir in dirs:
        if all((bindir / exe).exists() for exe in ("initdb", "pg_ctl", "postgres")):
            found.append((binary_major(bindir / "postgres"), bindir))
    return found


class Server:
    """A server and a way to make databases on it."""

    def __init__(self, admin_dsn: str, major: int) -> None:
        self.admin_dsn = admin_dsn
        self.major = major

    def database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        _sql(self.admin_dsn, f'CREATE DATABASE "{name}"')
        return self.admin_dsn.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def other(pg: TestPg) -> Iterator[Server]:
    """A second server, of a major version other than the suite's."""
    mine = pg.server_version // 10000
    for major, bindir in _server_installs():
        if major != mine:
            with PgServer(bindir=bindir) as server:
                yield Server(server.dsn(), major)
            return
    pytest.skip(f"no PostgreSQL install other than {mine} here (make test-matrix fetches some)")


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clean_environment(monkeypatch)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pair(pg: TestPg, other: Server) -> tuple[Server, Server]:
    """(older, newer) of the suite's server and the other one."""
    mine = Server(pg.admin_dsn, pg.server_version // 10000)
    return (mine, other) if mine.major < other.major else (other, mine)


def _bindir_of(name: str, major: int) -> Path | None:
    for tool in installed_tools(name):
        if tool.version[0] == major:
            return tool.path.parent
    return None


def _seed(dsn: str) -> None:
    _sql(dsn, "CREATE TABLE kept (id int PRIMARY KEY, note text)")
    _sql(dsn, "INSERT INTO kept VALUES (1, 'one'), (2, 'two')")


# -- restore: a file from a newer pg_dump is refused, naming both versions -----------------


def test_restore_refuses_a_dump_from_a_newer_pg_dump_and_changes_nothing(
    pg: TestPg, other: Server, here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file written by pg_dump N restored into PostgreSQL M < N: exit 2 before psql
    runs, the message names both versions, the target database is untouched."""
    older, newer = _pair(pg, other)
    source = newer.database()
    _seed(source)
    assert run(["--database-url", source, "dump", "newer.sql"]) == 0
    written = dump_file_version(here / "newer.sql")
    assert written is not None and written[0] >= newer.major  # its own major, or newer
    target = older.database()
    capsys.readouterr()
    assert run(["--database-url", target, "restore", "newer.sql"]) == 2
    err = capsys.readouterr().err
    assert f"pg_dump {written[0]}.{written[1]}" in err
    assert f"PostgreSQL {older.major}." in err
    assert "Nothing was changed" in err
    assert _sql(target, "SELECT to_regclass('public.kept') AS t")[0]["t"] is None


# -- dump: the server's own major first, a newer one if need be, never an older one ------


def test_dump_of_the_older_server_uses_its_own_major_even_when_a_newer_pg_dump_comes_first(
    pg: TestPg,
    other: Server,
    here: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With ASYNCMIG_PG_BINDIR holding a newer pg_dump, dump of the older server still
    takes a pg_dump of the server's major (found on PATH or in an install dir), and the
    file restores into a fresh database on that same server."""
    older, newer = _pair(pg, other)
    newer_bin = _bindir_of("pg_dump", newer.major)
    if _bindir_of("pg_dump", older.major) is None or newer_bin is None:
        pytest.skip(f"needs pg_dump {older.major} and {newer.major}")
    monkeypatch.setenv("ASYNCMIG_PG_BINDIR", str(newer_bin))
    source = older.database()
    _seed(source)
    assert run(["--database-url", source, "dump", "older.sql"]) == 0
    written = dump_file_version(here / "older.sql")
    assert written is not None and written[0] == older.major
    target = older.database()
    assert run(["--database-url", target, "restore", "older.sql"]) == 0
    assert [r["note"] for r in _sql(target, "SELECT note FROM kept ORDER BY id")] == [
        "one",
        "two",
    ]


def test_dump_looks_past_a_bindir_without_pg_dump(
    pg: TestPg, here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ASYNCMIG_PG_BINDIR naming a directory with the server only (no pg_dump) is not a
    dead end: dump goes on to PATH and the install directories, and succeeds."""
    server_only = here / "server-only-bin"
    server_only.mkdir()
    monkeypatch.setenv("ASYNCMIG_PG_BINDIR", str(server_only))
    major = pg.server_version // 10000
    if not any(t.version[0] >= major for t in installed_tools("pg_dump")):
        pytest.skip(f"no pg_dump >= {major} here")
    db = pg.create_database()
    try:
        assert run(["--database-url", db, "dump", "out.sql"]) == 0
        assert (here / "out.sql").exists()
    finally:
        pg.drop_database(db)


def test_dump_stops_before_running_when_every_pg_dump_is_older_than_the_server(
    pg: TestPg,
    other: Server,
    here: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Only an older pg_dump reachable: exit 2, the message names the server's version and
    the pg_dump found, and no file (not even a partial one) is written."""
    older, newer = _pair(pg, other)
    older_bin = _bindir_of("pg_dump", older.major)
    if older_bin is None:
        pytest.skip(f"needs a pg_dump {older.major}")
    monkeypatch.setenv("ASYNCMIG_PG_BINDIR", str(older_bin))
    monkeypatch.setenv("PATH", str(here))
    monkeypatch.setattr("asyncmig.cli.pgtools.known_bindirs", lambda: [])
    source = newer.database()
    capsys.readouterr()
    assert run(["--database-url", source, "dump", "never.sql"]) == 2
    err = capsys.readouterr().err
    assert f"PostgreSQL {newer.major}" in err
    assert f"pg_dump {older.major}." in err
    assert not list(here.glob("never.sql*"))


def test_server_version_failure_never_shows_the_password(here: Path) -> None:
    """A server that does not answer: DatabaseUnreachableError (exit 5) whose message has
    no trace of the DSN's password."""
    with pytest.raises(DatabaseUnreachableError) as info:
        asyncio.run(run_dump("postgresql://u:Pw_MARKER_9@127.0.0.1:9/x", here / "x.sql"))
    assert "Pw_MARKER_9" not in str(info.value)
    assert "127.0.0.1:9" in str(info.value)


# -- the choice itself, over stand-in binaries that only report a version ------------------


def _fake(directory: Path, name: str, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(f'#!/bin/sh\necho "{name} (PostgreSQL) {version}"\n')
    path.chmod(0o755)
    return path


def test_choose_tool_prefers_the_servers_major_then_the_closest_newer(tmp_path: Path) -> None:
    """Search order is ASYNCMIG_PG_BINDIR, PATH, install dirs; the server's own major wins
    wherever it is, else the closest newer one; all older is a ConfigError naming each."""
    first = _fake(tmp_path / "env", "pg_dump", "17.2")
    on_path = _fake(tmp_path / "path", "pg_dump", "15.8")
    known = _fake(tmp_path / "known", "pg_dump", "16.4")
    env = {"ASYNCMIG_PG_BINDIR": str(first.parent), "PATH": str(on_path.parent)}

    def pick(at_least: int, prefer: int) -> Tool:
        return choose_tool(
            "pg_dump", at_least=at_least, prefer=prefer, environ=env, known=[known.parent]
        )

    assert pick(16, 16) == Tool(known, (16, 4))
    assert pick(15, 15) == Tool(on_path, (15, 8))
    assert pick(14, 14) == Tool(on_path, (15, 8))
    assert pick(17, 17) == Tool(first, (17, 2))
    with pytest.raises(ConfigError) as info:
        pick(18, 18)
    for shown in ("PostgreSQL 18", "pg_dump 17.2", "pg_dump 15.8", "pg_dump 16.4"):
        assert shown in str(info.value)


def test_dump_file_version_reads_the_header(tmp_path: Path) -> None:
    """The "-- Dumped by pg_dump version" header gives (major, minor); a file without it
    (hand-written SQL) gives None."""
    dumped = tmp_path / "d.sql"
    dumped.write_text(
        "--\n-- PostgreSQL database dump\n--\n\n"
        "-- Dumped from database version 15.8\n-- Dumped by pg_dump version 18.1\n"
    )
    assert dump_file_version(dumped) == (18, 1)
    plain = tmp_path / "p.sql"
    plain.write_text("CREATE TABLE t (id int);\n")
    assert dump_file_version(plain) is None
