"""The pytest plugin (``asyncmig.testing``) used the way a user's project uses it.

A sample project in a temporary directory (``asyncmig.toml``, migrations, a seed, its
own ``conftest.py`` and 20 tests) runs in a ``pytest`` subprocess against the test
server (``--asyncmig-dsn``). Each of its tests writes what it saw into a file: its
database's name, the audit log of the migrations in it (version, time of the apply) and
the row counts. From those files and the server's catalog, these tests check the
template's life: built once per file set, reused without migrating, rebuilt when a file
changes (the stale one dropped), and no per-test database left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import pytest

from asyncmig.config import Config
from asyncmig.testing import DatabaseFactory, database
from asyncmig.testing.server import shared_server_dir
from asyncmig.testing.templates import TEMPLATE_PREFIX, per_test_prefix, project_key

from .conftest import TestPg
from .migtree import fetchval, table_exists

CONFTEST = '''
import asyncio
import json
import os

import asyncpg
import psutil
import pytest


@pytest.fixture
def in_db(asyncmig_dsn):
    """Run ``fn(conn)`` on a connection to the test's own database (sync tests, no
    async plugin needed)."""

    def run(fn):
        async def go():
            conn = await asyncpg.connect(asyncmig_dsn)
            try:
                return await fn(conn)
            finally:
                await conn.close()

        return asyncio.run(go())

    return run


@pytest.fixture
def record(request):
    def write(**data):
        out = os.path.join(os.environ["SEEN_DIR"], request.node.name + ".json")
        with open(out, "w") as fh:
            json.dump(data, fh)

    return write
'''

TESTS = """
import os

import pytest


@pytest.mark.parametrize("n", range(20))
def test_sees_only_its_own_rows(n, in_db, record):
    async def body(conn):
        await conn.executemany(
            "INSERT INTO items (owner, note) VALUES ($1, $2)",
            [(n, f"row {i}") for i in range(n + 1)],
        )
        owners = [r["owner"] for r in await conn.fetch("SELECT owner FROM items")]
        assert owners == [n] * (n + 1)
        seeded = await conn.fetch("SELECT value FROM settings WHERE key = 'site'")
        assert [r["value"] for r in seeded] == ["example"]
        log = await conn.fetch("SELECT version::int AS v, at::text AS at FROM _migrations_log "
                               "WHERE action = 'apply' ORDER BY id")
        record(database=await conn.fetchval("SELECT current_database()"),
               applies=[[r["v"], r["at"]] for r in log], rows=len(owners),
               server=await conn.fetchval("SELECT inet_server_port()::text || ' ' "
                                          "|| pg_postmaster_start_time()::text"),
               worker=os.environ.get("PYTEST_XDIST_WORKER", "main"),
               run=os.environ.get("PYTEST_XDIST_TESTRUNUID"))

    in_db(body)
"""

MIGRATIONS = {
    "db/sql/001_items.sql": "CREATE TABLE items (id serial PRIMARY KEY, owner int NOT NULL);\n",
    "db/sql/002_item_note.sql": "ALTER TABLE items ADD COLUMN note text;\n",
    "db/sql/003_settings.sql": "CREATE TABLE settings (key text PRIMARY KEY, value text);\n",
    "db/rollback/001_items_rollback.sql": "DROP TABLE items;\n",
    "db/rollback/002_item_note_rollback.sql": "ALTER TABLE items DROP COLUMN note;\n",
    "db/rollback/003_settings_rollback.sql": "DROP TABLE settings;\n",
    "db/seeds/001_settings.sql": "INSERT INTO settings VALUES ('site', 'example');\n",
}


def make_project(root: Path) -> Path:
    files = {
        "asyncmig.toml": 'sql_dir = "db/sql"\nrollback_dir = "db/rollback"\n'
        'seeds_dir = "db/seeds"\ndatabase_url = "${APP_DATABASE_URL}"\n',
        "pytest.ini": "[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n",
        "conftest.py": CONFTEST,
        "test_app.py": TESTS,
        **MIGRATIONS,
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
    return root


def run_pytest(
    root: Path, dsn: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the sample project's tests; returns the process and what each test recorded."""
    seen = root / "seen"
    if seen.exists():
        for f in seen.iterdir():
            f.unlink()
    seen.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCMIG_", "PYTEST_"))}
    env["SEEN_DIR"] = str(seen)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *(["--asyncmig-dsn", dsn] if dsn else []), *args],
        cwd=root, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    records = {f.stem: json.loads(f.read_text()) for f in seen.iterdir()}
    return proc, records


def databases_like(admin_dsn: str, prefix: str) -> dict[str, int]:
    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(admin_dsn)
        try:
            rows = await conn.fetch(
                "SELECT datname, oid::int FROM pg_database WHERE starts_with(datname, $1)", prefix
            )
            return {r[0]: r[1] for r in rows}
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable from async tests too
        return pool.submit(asyncio.run, go()).result()


def sample_config(root: Path) -> Config:
    return Config(sql_dir=root / "db/sql", rollback_dir=root / "db/rollback",
                  seeds_dir=root / "db/seeds")  # fmt: skip


def check_session(
    records: dict[str, Any], proc: subprocess.CompletedProcess[str], tests: int = 20
) -> list[Any]:
    """All tests passed, each in a database of its own, each seeing only its rows; returns
    the audit log they all saw (identical in every test's database)."""
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{tests} passed" in proc.stdout
    assert len(records) == tests
    assert len({r["database"] for r in records.values()}) == tests
    assert sorted(r["rows"] for r in records.values()) == list(range(1, tests + 1))
    logs = {json.dumps(r["applies"]) for r in records.values()}
    assert len(logs) == 1, logs
    applies: list[Any] = json.loads(logs.pop())
    return applies


def test_template_built_once_reused_rebuilt_and_every_test_database_dropped(
    pg: TestPg, tmp_path: Path
) -> None:
    """Under `pytest -p xdist -n 2`, 20 tests each get their own database, seeded, seeing
    only their rows; the three migrations ran once (one apply each in the audit log, the
    same log in every test's database) into the one template of this file set. A second
    session without xdist sees the same template (same oid) and the same apply times:
    no migration ran. Changing one file builds a new template (applies at new times, once
    each; two of the tests run) and drops the stale one. After every session no per-test
    database is left."""
    root = make_project(tmp_path / "app")
    config = sample_config(root)
    templates = TEMPLATE_PREFIX + project_key(config) + "_"
    per_test = per_test_prefix(config)

    proc, records = run_pytest(root, pg.admin_dsn, "-p", "xdist", "-n", "2")
    applies = check_session(records, proc)
    assert [v for v, _ in applies] == [1, 2, 3]
    first = databases_like(pg.admin_dsn, templates)
    assert len(first) == 1
    assert databases_like(pg.admin_dsn, per_test) == {}
    assert all(r["database"].startswith(per_test) for r in records.values())

    proc, records = run_pytest(root, pg.admin_dsn)
    assert check_session(records, proc) == applies  # the same single build: nothing ran
    assert databases_like(pg.admin_dsn, templates) == first
    assert databases_like(pg.admin_dsn, per_test) == {}

    (root / "db/sql/002_item_note.sql").write_text(
        "ALTER TABLE items ADD COLUMN note varchar(200);\n"
    )
    first_two = [f"test_app.py::test_sees_only_its_own_rows[{n}]" for n in (0, 1)]
    proc, records = run_pytest(root, pg.admin_dsn, *first_two)
    rebuilt = check_session(records, proc, tests=2)
    assert [v for v, _ in rebuilt] == [1, 2, 3]
    assert rebuilt[0][1] > applies[-1][1]  # applied again, after the first build
    now = databases_like(pg.admin_dsn, templates)
    assert len(now) == 1 and set(now).isdisjoint(first)  # stale template dropped
    assert databases_like(pg.admin_dsn, per_test) == {}


def test_a_failing_test_still_has_its_database_dropped(pg: TestPg, tmp_path: Path) -> None:
    """A sample test that fails leaves no per-test database behind (nor does the one
    that passes beside it)."""
    root = make_project(tmp_path / "app")
    (root / "test_app.py").write_text(
        "def test_fails(asyncmig_dsn):\n    assert False, asyncmig_dsn\n\n"
        "def test_ok(asyncmig_dsn):\n    pass\n"
    )
    proc, _ = run_pytest(root, pg.admin_dsn)
    assert proc.returncode == 1 and "1 failed, 1 passed" in proc.stdout, proc.stdout[-2000:]
    assert databases_like(pg.admin_dsn, per_test_prefix(sample_config(root))) == {}


def test_the_one_line_rollback_test_passes_and_catches_a_forgotten_index(
    pg: TestPg, tmp_path: Path
) -> None:
    """The ready test, enabled by one import line, passes on the sample project's files and
    fails naming 002 when its rollback forgets an index the migration created."""
    root = make_project(tmp_path / "app")
    (root / "test_app.py").write_text(
        "from asyncmig.testing.plugin import test_every_rollback_restores_the_catalog  # noqa\n"
    )
    proc, _ = run_pytest(root, pg.admin_dsn)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-2000:]
    (root / "db/sql/002_item_note.sql").write_text(
        "ALTER TABLE items ADD COLUMN note text;\nCREATE INDEX items_note_idx ON items (note);\n"
    )
    (root / "db/rollback/002_item_note_rollback.sql").write_text("DROP INDEX items_note_idx;\n")
    proc, _ = run_pytest(root, pg.admin_dsn)
    assert proc.returncode == 1
    assert "rollback of 2 leaves column `note` of public.items" in proc.stdout


def test_a_database_at_a_given_version_for_a_data_migration(pg: TestPg, tmp_path: Path) -> None:
    """DatabaseFactory.create(version=1) gives a database at 001 only (items without
    note, no settings); migrating it on to 002 keeps the rows inserted at 001. Its
    template is separate from the latest one, and close() drops every database."""
    root = make_project(tmp_path / "app")
    config = sample_config(root)
    with DatabaseFactory(pg.admin_dsn, config) as factory:
        dsn = factory.create(version=1)

        async def go() -> None:
            assert await table_exists(dsn, "items")
            assert not await table_exists(dsn, "settings")
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute("INSERT INTO items (owner) VALUES (7)")
            finally:
                await conn.close()
            from asyncmig.migrator import Migrator

            await Migrator(config.with_(dsn=dsn)).migrate(target=2)
            assert await fetchval(dsn, "SELECT count(*) FROM items WHERE note IS NULL") == 1
            assert not await table_exists(dsn, "settings")

        asyncio.run(go())
        latest = factory.create()
        assert factory.template(1).name != factory.template().name
        assert latest != dsn
    assert databases_like(pg.admin_dsn, per_test_prefix(config)) == {}


@pytest.mark.anyio
async def test_database_context_manager_without_pytest_fixtures(pg: TestPg, tmp_path: Path) -> None:
    """`async with asyncmig.testing.database(server, ...) as dsn` yields a seeded database
    at the latest migration and drops it on exit, also when the body raises."""
    root = make_project(tmp_path / "app")
    config = sample_config(root)
    with pytest.raises(RuntimeError):
        async with database(pg.admin_dsn, config) as dsn:
            assert await fetchval(dsn, "SELECT value FROM settings WHERE key = 'site'") == "example"
            raise RuntimeError("the body fails")
    assert databases_like(pg.admin_dsn, per_test_prefix(config)) == {}


def test_async_companions_and_a_database_at_a_version_in_a_users_suite(
    pg: TestPg, tmp_path: Path
) -> None:
    """In the sample project, under the anyio plugin: asyncmig_connection and asyncmig_pool
    reach the test's seeded database; asyncmig_database(version=1) gives a database at
    001 that asyncmig_migrator(dsn) migrates on to 002, keeping the row inserted at 001."""
    root = make_project(tmp_path / "app")
    (root / "test_app.py").write_text(
        textwrap.dedent(
            """
            import asyncpg
            import pytest

            pytestmark = pytest.mark.anyio


            @pytest.fixture
            def anyio_backend():
                return "asyncio"


            async def test_connection(asyncmig_connection):
                value = await asyncmig_connection.fetchval("SELECT value FROM settings")
                assert value == "example"


            async def test_pool(asyncmig_pool):
                assert await asyncmig_pool.fetchval("SELECT count(*) FROM items") == 0


            async def test_data_migration(asyncmig_database, asyncmig_migrator):
                dsn = asyncmig_database(version=1)
                conn = await asyncpg.connect(dsn)
                try:
                    await conn.execute("INSERT INTO items (owner) VALUES (7)")
                    await asyncmig_migrator(dsn).migrate(target=2)
                    assert await conn.fetchval("SELECT count(*) FROM items WHERE note IS NULL") == 1
                    assert await conn.fetchval("SELECT to_regclass('settings')") is None
                finally:
                    await conn.close()
            """
        )
    )
    proc, _ = run_pytest(root, pg.admin_dsn)
    assert proc.returncode == 0 and "3 passed" in proc.stdout, proc.stdout[-3000:]
    assert databases_like(pg.admin_dsn, per_test_prefix(sample_config(root))) == {}


def test_without_a_server_xdist_workers_share_one_embedded_server(tmp_path: Path) -> None:
    """With no --asyncmig-dsn and no ASYNCMIG_TESTING_DSN, `pytest -p xdist -n 2` starts one
    embedded server for the run: tests on both workers see the same port and start time.
    When the run ends, its directory is gone and its watcher process has exited."""
    root = make_project(tmp_path / "app")
    some = [f"test_app.py::test_sees_only_its_own_rows[{n}]" for n in range(6)]
    proc, records = run_pytest(root, None, "-p", "xdist", "-n", "2", *some)
    check_session(records, proc, tests=6)
    assert {r["worker"] for r in records.values()} == {"gw0", "gw1"}
    assert len({r["server"] for r in records.values()}) == 1
    (run_id,) = {r["run"] for r in records.values()}
    directory = shared_server_dir(run_id)
    assert not directory.exists()
    assert not directory.with_name(directory.name + ".dsn").exists()

    def watchers() -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["cmdline"]):
            if str(directory) in (p.info["cmdline"] or []):
                found.append(p)
        return found

    deadline = time.monotonic() + 30
    while watchers():  # it exits once the controller has gone and the server is stopped
        assert time.monotonic() < deadline, "the shared server's watcher did not exit"
        time.sleep(0.05)
