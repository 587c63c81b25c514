"""Fault injection: a loopback proxy that resets, black-holes, delays and cuts; a lost
lock; PostgreSQL restarting under a run. Every test is bounded in time."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig._pgserver import PgServer
from asyncmig.events import Event, LockReclaimed, MigrationFinished, StatementStarted
from asyncmig.migrator import Migrator

from .cli_helpers import ASYNCMIG
from .conftest import TestPg
from .faultproxy import FaultProxy, Link
from .migtree import fetch, fetchval, table_exists, wait_until, write_tree

pytestmark = pytest.mark.anyio

DEDICATED = "asyncmig"  # application_name of the run's own connection
HEARTBEAT = "asyncmig heartbeat"
# Sleeps until the test creates skip_sleep (so a re-run or
# another runner of the same unchanged file does not).
LONG = "SELECT CASE WHEN to_regclass('public.skip_sleep') IS NULL THEN pg_sleep(30) END;\n"


@pytest.fixture
def proxy(dsn: str) -> Iterator[FaultProxy]:
    with FaultProxy.for_dsn(dsn, lifetime=120) as p:
        yield p


def m(dsn: str, root: Path, **kw: Any) -> Migrator:
    return Migrator(dsn, sql_dir=root / "sql", rollback_dir=root / "rollback", **kw)


def on_statement(index: int, version: int = 1) -> tuple[anyio.Event, Any]:
    """An event set when statement ``index`` of ``version`` starts, and its callback."""
    seen = anyio.Event()

    def callback(e: Event) -> None:
        if isinstance(e, StatementStarted) and e.index == index and e.version == version:
            seen.set()

    return seen, callback


async def in_thread(fn: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(fn, *args)


async def applies(dsn: str) -> list[tuple[int, int]]:
    rows = await fetch(
        dsn, "SELECT version, count(*) AS c FROM _migrations_log WHERE action = 'apply' "
        "GROUP BY version ORDER BY version"
    )  # fmt: skip
    return [(int(r["version"]), int(r["c"])) for r in rows]


# -- the proxy itself -------------------------------------------------------------------


async def test_proxy_forwards_and_records_application_name_and_queries(
    dsn: str, proxy: FaultProxy
) -> None:
    """Traffic flows through; a link knows its application_name and its query texts."""
    conn = await asyncpg.connect(proxy.dsn(dsn), server_settings={"application_name": "probe"})
    try:
        assert await conn.fetchval("SELECT 40 + $1::int", 2) == 42
        await conn.execute("SELECT 'simple'")
    finally:
        await conn.close()
    link = proxy.wait_for(lambda link: link.application_name == "probe", timeout=5)
    assert "SELECT 40 + $1::int" in link.queries and "SELECT 'simple'" in link.queries


async def test_proxy_reset_mid_statement_breaks_the_client_connection(
    dsn: str, proxy: FaultProxy
) -> None:
    """reset() while pg_sleep runs: the client gets a connection error within seconds."""
    conn = await asyncpg.connect(proxy.dsn(dsn))
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def cut() -> None:
                    link = await in_thread(proxy.wait_for_query, "pg_sleep(30)")
                    link.reset()

                tg.start_soon(cut)
                with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError)):
                    await conn.execute("SELECT pg_sleep(30)")
    finally:
        conn.terminate()


async def test_proxy_blackhole_answers_nothing_but_keeps_the_socket_open(
    dsn: str, proxy: FaultProxy
) -> None:
    """After blackhole(), a query times out while the client's connection stays open;
    after heal(), held-back traffic flows again."""
    conn = await asyncpg.connect(proxy.dsn(dsn))
    try:
        link = proxy.wait_for(lambda link: not link.cancel_request)
        link.blackhole()
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await conn.fetchval("SELECT 1", timeout=0.5)
        assert time.monotonic() - t0 < 3
        assert not conn.is_closed()
    finally:
        conn.terminate()


async def test_proxy_delay_holds_each_chunk(dsn: str, proxy: FaultProxy) -> None:
    """delay(0.3): a round trip takes at least 0.6 s (request and reply both held)."""
    conn = await asyncpg.connect(proxy.dsn(dsn))
    try:
        proxy.wait_for(lambda link: True).delay(0.3)
        t0 = time.monotonic()
        await conn.execute("SELECT 1")
        assert time.monotonic() - t0 >= 0.6
    finally:
        await conn.close()


async def test_proxy_cut_after_commit_commits_on_the_server_without_a_reply(
    dsn: str, proxy: FaultProxy
) -> None:
    """cut_after_commit(): the client's COMMIT fails with a connection error, yet the
    server committed the transaction."""
    conn = await asyncpg.connect(proxy.dsn(dsn))
    try:
        proxy.wait_for(lambda link: True).cut_after_commit()
        await conn.execute("BEGIN")
        await conn.execute("CREATE TABLE committed_in_doubt (id int)")
        with pytest.raises((asyncpg.ConnectionDoesNotExistError, ConnectionError)):
            await conn.execute("COMMIT")
    finally:
        conn.terminate()
    await wait_until(lambda: table_exists(dsn, "committed_in_doubt"), what="the commit")


# -- the engine under network faults ---------------------------------------------------


async def test_cut_mid_statement_on_the_lock_connection_fails_clearly_leaves_nothing(
    dsn: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The dedicated connection is reset during a statement: the run raises
    LockLostError naming the version, the migration's table and history row are absent,
    and the next run applies it once."""
    write_tree(tmp_path, {
        "001_cut.sql": f"CREATE TABLE cut (id int);\n{LONG}",
        "002_after.sql": "CREATE TABLE after_cut (id int);\n",
    })  # fmt: skip
    started, callback = on_statement(2)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:

            async def cutter() -> None:
                await started.wait()
                link = await in_thread(proxy.wait_for_query, "pg_sleep(30)")
                assert link.application_name == DEDICATED
                await fetch(dsn, "CREATE TABLE skip_sleep ()")
                link.reset()

            tg.start_soon(cutter)
            with pytest.raises(asyncmig.LockLostError) as info:
                await m(proxy.dsn(dsn), tmp_path, stale_after=5).migrate(on_event=callback)
    assert "version 1" in str(info.value)
    assert not await table_exists(dsn, "cut")
    assert not await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE status = 'completed'")
    report = await m(dsn, tmp_path).migrate()
    assert report.versions == (1, 2)
    assert await applies(dsn) == [(1, 1), (2, 1)]


def cli_run(dsn: str, root: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASYNCMIG_", "PG"))}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [str(ASYNCMIG), "--json", "--database-url", dsn, "--sql-dir", str(root / "sql"),
         "--rollback-dir", str(root / "rollback"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def read_until(proc: subprocess.Popen[str], predicate: Any) -> dict[str, Any]:
    """Read a CLI run's JSON lines until one satisfies ``predicate``."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            obj = json.loads(line)
            if predicate(obj):
                return dict(obj)
    raise AssertionError(f"the run ended first: {proc.stderr.read() if proc.stderr else ''}")


async def test_black_holed_holder_fences_itself_before_a_waiter_reclaims(
    dsn: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A holder (CLI process, stale_after 5 s) partitioned from the server: it stops
    itself with exit 4 and a lock-lost error, within 15 s and before the waiter
    (stale_after 5 s) reclaims; the audit log shows every version applied once."""
    write_tree(tmp_path, {
        "001_a.sql": f"CREATE TABLE a (id int);\n{LONG}INSERT INTO a VALUES (1);\n",
        "002_b.sql": "CREATE TABLE b (id int);\n",
    })  # fmt: skip
    holder = cli_run(proxy.dsn(dsn), tmp_path, "--stale-after", "5s", "migrate")
    try:
        read_until(holder, lambda e: e["event"] == "statement_started" and e["index"] == 2)
        proxy.blackhole()
        await fetch(dsn, "CREATE TABLE skip_sleep ()")  # the waiter's run will not sleep
        t_partition = time.monotonic()
        exited = anyio.Event()
        holder_exit: list[float] = []

        async def watch_holder() -> None:
            await in_thread(holder.wait, 30)
            holder_exit.append(time.monotonic())
            exited.set()

        reclaimed_at: list[float] = []

        def on_event(e: Event) -> None:
            if isinstance(e, LockReclaimed):
                reclaimed_at.append(time.monotonic())

        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_holder)
                report = await m(dsn, tmp_path, stale_after=5, lock_timeout=30).migrate(
                    on_event=on_event
                )
                await exited.wait()
        out, err = holder.communicate(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate(timeout=10)
    assert holder.returncode == 4, (out, err)
    errors = [json.loads(ln) for ln in out.splitlines() if '"LockLostError"' in ln]
    assert errors, out
    assert holder_exit[0] - t_partition < 15
    assert reclaimed_at and holder_exit[0] < reclaimed_at[0]
    assert report.versions == (1, 2)
    assert await applies(dsn) == [(1, 1), (2, 1)]
    assert await fetchval(dsn, "SELECT count(*) FROM a") == 1


@pytest.mark.parametrize("fault", ["reset", "blackhole"])
async def test_heartbeat_connection_fault_does_not_get_a_live_holder_reclaimed(
    dsn: str, proxy: FaultProxy, tmp_path: Path, fault: str
) -> None:
    """Only the heartbeat's connection is reset or black-holed while the holder works
    for 8 s (longer than stale_after 4 s): the holder completes, a waiter (stale_after
    4 s) finds nothing to do, and no reclaim is logged."""
    write_tree(tmp_path, {"001_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(8);\n"})
    started, callback = on_statement(2)
    holder_report: list[asyncmig.MigrateReport] = []
    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:

            async def hold() -> None:
                holder = m(proxy.dsn(dsn), tmp_path, stale_after=4, heartbeat_interval=0.5)
                holder_report.append(await holder.migrate(on_event=callback))

            tg.start_soon(hold)
            await started.wait()
            link: Link = await in_thread(
                proxy.wait_for, lambda link: link.application_name == HEARTBEAT
            )
            link.reset() if fault == "reset" else link.blackhole()
            waiter = await m(dsn, tmp_path, stale_after=4, lock_timeout=30).migrate()
    assert holder_report[0].versions == (1,)
    assert waiter.versions == ()
    assert await fetchval(dsn, "SELECT count(*) FROM _migrations_log WHERE action = 'reclaim'") == 0
    assert await applies(dsn) == [(1, 1)]


async def test_lock_lost_watchdog_stops_the_run_and_ends_only_its_own_backend(
    dsn: str, tmp_path: Path
) -> None:
    """A migration statement releases the run's advisory lock while its connection
    lives: the watchdog raises LockLostError within seconds, the run's own backend is
    gone (its transaction rolled back: no table, no completed row), and another
    session holding an advisory lock in the same database is untouched."""
    write_tree(tmp_path, {
        "001_unlock.sql": "CREATE TABLE partial (id int);\n"
                          "SELECT pg_advisory_unlock_all();\nSELECT pg_sleep(30);\n",
    })  # fmt: skip
    bystander = await asyncpg.connect(dsn)
    try:
        await bystander.execute("SELECT pg_advisory_lock(4242)")
        backends: list[int] = []

        def on_event(e: Event) -> None:
            if e.name == "lock_acquired":
                backends.append(e.backend_pid)  # type: ignore[attr-defined]

        t0 = time.monotonic()
        with anyio.fail_after(20), pytest.raises(asyncmig.LockLostError) as info:
            await m(dsn, tmp_path, heartbeat_interval=0.5).migrate(on_event=on_event)
        assert time.monotonic() - t0 < 10
        assert "no longer holds the migration lock" in str(info.value)
        assert await bystander.fetchval("SELECT 1") == 1
        assert await fetchval(
            dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND objid = 4242 AND pid = $1", bystander.get_server_pid()
        ) == 1  # fmt: skip
        gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
        await wait_until(lambda: fetchval(dsn, gone, backends[0]), what="the run's backend")
    finally:
        await bystander.close()
    assert not await table_exists(dsn, "partial")
    assert not await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE status = 'completed'")


async def test_commit_cut_after_forwarding_is_resolved_and_never_applied_twice(
    dsn: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Migration 2's message, which ends with its COMMIT, reaches the server but no reply
    comes back: the run fails, and the next run does not apply 2 again (the audit log
    holds one apply of each)."""
    write_tree(tmp_path, {
        "001_first.sql": "CREATE TABLE first (id int);\n",
        "002_doubt.sql": "CREATE TABLE doubt (id int);\n",
    })  # fmt: skip

    def callback(e: Event) -> None:
        # Migration 1 committed: the run sends 2's message only after this returns, so
        # the cut is in place for it (a few milliseconds of blocking, in a test).
        if isinstance(e, MigrationFinished) and e.version == 1:
            # (PostgreSQL 13 refuses a setting at connect: its first link is a dead one)
            live = proxy.wait_for(
                lambda link: link.application_name == DEDICATED and not link.closed
            )
            live.cut_after_commit()

    with anyio.fail_after(20), pytest.raises(asyncmig.AsyncmigError):
        await m(proxy.dsn(dsn), tmp_path).migrate(on_event=callback)
    assert await table_exists(dsn, "doubt")
    report = await m(dsn, tmp_path).migrate()
    assert 2 not in report.versions
    assert await applies(dsn) == [(1, 1), (2, 1)]


# -- PostgreSQL restarting under a run -------------------------------------------------


@pytest.fixture(scope="module")
def private_server() -> Iterator[PgServer]:
    """A server of this module's own: restarting the shared one would disturb others.

    Commits are made durable (the throwaway default ``synchronous_commit = off`` loses
    the last commits in an immediate shutdown, which a production server would not).
    """
    try:
        server = PgServer().start()
    except (RuntimeError, OSError) as exc:
        pytest.skip(f"no private PostgreSQL server: {exc}")
    try:
        from .conftest import _run_sql

        _run_sql(server.dsn(), "ALTER SYSTEM SET synchronous_commit = on")
        _run_sql(server.dsn(), "SELECT pg_reload_conf()")
        yield server
    finally:
        server.stop()


@pytest.fixture
def restart_dsn(private_server: PgServer) -> Iterator[str]:
    handle = TestPg(admin_dsn=private_server.dsn(), bindir=private_server.bindir)
    name = f"r_{os.getpid()}_{time.monotonic_ns()}"
    url = handle.dsn_for(name)
    from .conftest import _run_sql

    _run_sql(private_server.dsn(), f'CREATE DATABASE "{name}"')
    try:
        yield url
    finally:
        _run_sql(private_server.dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def restart(server: PgServer, mode: str) -> None:
    proc = server._pg(
        "pg_ctl", "-D", str(server.datadir), "-l", str(server.logfile), "-m", mode, "-w",
        "-t", "60", "-o", f"-p {server.port} -k {server.directory}", "restart",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def _run_through_restart(
    private_server: PgServer, dsn: str, root: Path, mode: str, index: int
) -> asyncmig.AsyncmigError:
    started, callback = on_statement(index)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:

            async def restarter() -> None:
                await started.wait()
                await in_thread(restart, private_server, mode)

            tg.start_soon(restarter)
            with pytest.raises(asyncmig.AsyncmigError) as info:
                await m(dsn, root, stale_after=5).migrate(on_event=callback)
    return info.value


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_restart_during_a_transactional_migration_then_reapplied_from_scratch(
    private_server: PgServer, restart_dsn: str, tmp_path: Path, mode: str
) -> None:
    """pg_ctl restart -m MODE during statement 3 of a transactional migration: the run
    fails with a lock-lost error that says the transaction was rolled back; nothing of
    it remains; the next run applies it from its first statement."""
    dsn = restart_dsn
    write_tree(tmp_path, {
        "001_tx.sql": f"CREATE TABLE tx (id int);\nINSERT INTO tx VALUES (1);\n{LONG}",
    })  # fmt: skip
    error = await _run_through_restart(private_server, dsn, tmp_path, mode, 3)
    assert isinstance(error, asyncmig.LockLostError), error
    assert "version 1" in str(error) and "rolled back" in str(error)
    assert not await table_exists(dsn, "tx")
    assert not await fetchval(dsn, "SELECT count(*) FROM _migrations WHERE status = 'completed'")
    await fetch(dsn, "CREATE TABLE skip_sleep ()")
    indexes: list[int] = []
    report = await m(dsn, tmp_path).migrate(
        on_event=lambda e: indexes.append(e.index) if isinstance(e, StatementStarted) else None
    )
    assert report.versions == (1,) and indexes == [1, 2, 3]
    assert await fetchval(dsn, "SELECT count(*) FROM tx") == 1


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_restart_during_a_no_transaction_migration_then_resumed_at_the_statement(
    private_server: PgServer, restart_dsn: str, tmp_path: Path, mode: str
) -> None:
    """pg_ctl restart -m MODE during statement 3 of a no-transaction migration: the run
    fails with an error that does not claim a rollback; statements 1-2 stay, history
    records 2 done; a plain migrate asks for --resume; migrate --resume runs exactly
    statements 3 and 4."""
    dsn = restart_dsn
    body = (
        "-- asyncmig: no-transaction\nCREATE TABLE n1 (id int);\nCREATE TABLE n2 (id int);\n"
        f"{LONG}CREATE TABLE n3 (id int);\n"
    )
    write_tree(tmp_path, {"001_nt.sql": body})
    error = await _run_through_restart(private_server, dsn, tmp_path, mode, 3)
    assert "version 1" in str(error)
    # issue 12 item 17 (runner.py, the lead's): the message must be true for the mode
    assert "rolled back" not in str(error), str(error)
    assert await table_exists(dsn, "n1") and await table_exists(dsn, "n2")
    assert not await table_exists(dsn, "n3")
    assert await fetchval(dsn, "SELECT statements_done FROM _migrations WHERE version = 1") == 2
    with pytest.raises(asyncmig.ResumeRequiredError) as info:
        await m(dsn, tmp_path).migrate()
    assert "--resume" in str(info.value)
    await fetch(dsn, "CREATE TABLE skip_sleep ()")
    indexes: list[int] = []
    report = await m(dsn, tmp_path).migrate(
        resume=True,
        on_event=lambda e: indexes.append(e.index) if isinstance(e, StatementStarted) else None,
    )
    assert report.versions == (1,) and indexes == [3, 4]
    assert await table_exists(dsn, "n3")
