"""On a busy database (issue 9): a migration waiting for a DDL lock gives up quickly,
rolls back and tries again, so the site's queries never queue behind it for long."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

import asyncmig
from asyncmig.events import Event, LockRetry

from .faultproxy import FaultProxy
from .migtree import fetch, fetchval, migrator, wait_until, write_tree

pytestmark = pytest.mark.anyio

FAST = {"ddl_lock_timeout": 0.5, "lock_retry_sleep": 0.2}


async def _table(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
    finally:
        await conn.close()


async def test_a_blocked_alter_retries_and_never_stalls_the_sites_queries(
    dsn: str, tmp_path: Path
) -> None:
    """A session holds ACCESS SHARE on t in an open transaction. ``ALTER TABLE t ADD
    COLUMN`` (500 ms lock timeout) rolls back and retries, names the blocker in its
    retry events, and applies once the blocker ends; meanwhile a third session's
    ``SELECT count(*) FROM t`` every 200 ms never waits as long as a second."""
    await _table(dsn)
    write_tree(tmp_path, {"001_col.sql": "ALTER TABLE t ADD COLUMN c int;"})
    retries: list[LockRetry] = []
    latencies: list[float] = []
    blocker = await asyncpg.connect(dsn, server_settings={"application_name": "billing"})
    reader = await asyncpg.connect(dsn)
    try:
        await blocker.execute("BEGIN; SELECT count(*) FROM t")
        blocker_pid = blocker.get_server_pid()
        done = anyio.Event()

        async def read_all_the_time() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await reader.fetchval("SELECT count(*) FROM t")
                latencies.append(time.perf_counter() - t0)
                await anyio.sleep(0.2)

        async def release_after_two_retries() -> None:
            await wait_until(lambda: _true(len(retries) >= 2), timeout=30, what="two retries")
            await blocker.execute("COMMIT")

        def on_event(event: Event) -> None:
            if isinstance(event, LockRetry):
                retries.append(event)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_all_the_time)
                tg.start_soon(release_after_two_retries)
                await migrator(dsn, tmp_path, **FAST).migrate(on_event=on_event)
                done.set()
    finally:
        await blocker.close()
        await reader.close()
    assert await fetchval(dsn, "SELECT count(*) FROM information_schema.columns "
                               "WHERE table_name = 't' AND column_name = 'c'") == 1  # fmt: skip
    assert len(retries) >= 2
    assert [r.attempt for r in retries] == list(range(1, len(retries) + 1))
    named = {b.pid for r in retries for b in r.blockers}
    assert blocker_pid in named, retries
    assert any(b.application_name == "billing" for r in retries for b in r.blockers)
    assert max(latencies) < 1.0, latencies
    log = [r[0] for r in await fetch(dsn, "SELECT action FROM _migrations_log ORDER BY id")]
    assert log == ["apply"]


async def _true(value: bool) -> bool:
    return value


async def test_retries_exhausted_fail_clearly_and_apply_nothing(dsn: str, tmp_path: Path) -> None:
    """The blocker never lets go: after 3 attempts a LockNotGrantedError (exit 7) naming
    the attempts; the table is unchanged and the failure recorded with 55P03."""
    await _table(dsn)
    write_tree(tmp_path, {"001_col.sql": "ALTER TABLE t ADD COLUMN c int;\n"})
    blocker = await asyncpg.connect(dsn)
    events: list[Event] = []
    try:
        await blocker.execute("BEGIN; SELECT count(*) FROM t")
        with anyio.fail_after(60), pytest.raises(asyncmig.LockNotGrantedError) as info:
            await migrator(dsn, tmp_path, lock_retries=3, **FAST).migrate(on_event=events.append)
    finally:
        await blocker.close()
    err = info.value
    assert err.exit_code == 7 and err.sqlstate == "55P03" and "after 3 attempt(s)" in err.message
    assert [e.attempt for e in events if isinstance(e, LockRetry)] == [1, 2]
    assert await fetchval(dsn, "SELECT count(*) FROM information_schema.columns "
                               "WHERE table_name = 't' AND column_name = 'c'") == 0  # fmt: skip
    rows = await fetch(dsn, "SELECT status, error_sqlstate FROM _migrations")
    assert [tuple(r) for r in rows] == [("failed", "55P03")]


async def test_a_no_transaction_statement_retries_alone_and_nothing_runs_twice(
    dsn: str, tmp_path: Path
) -> None:
    """In a no-transaction file, statement 2 waits for its lock and retries; statement 1,
    already committed, is not run again."""
    await _table(dsn)
    await fetchval(dsn, "CREATE TABLE marks (i int)")
    write_tree(
        tmp_path,
        {
            "001_notx.sql": "-- asyncmig: no-transaction\nINSERT INTO marks VALUES (1);\n"
            "ALTER TABLE t ADD COLUMN c int;\nINSERT INTO marks VALUES (3);\n"
        },
    )
    retries: list[LockRetry] = []
    blocker = await asyncpg.connect(dsn)
    try:
        await blocker.execute("BEGIN; SELECT count(*) FROM t")

        async def release_after_a_retry() -> None:
            await wait_until(lambda: _true(bool(retries)), timeout=30, what="a retry")
            await blocker.execute("COMMIT")

        def on_event(event: Event) -> None:
            if isinstance(event, LockRetry):
                retries.append(event)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(release_after_a_retry)
                await migrator(dsn, tmp_path, **FAST).migrate(on_event=on_event)
    finally:
        await blocker.close()
    assert retries and all(r.index == 2 for r in retries)
    assert sorted(r[0] for r in await fetch(dsn, "SELECT i FROM marks")) == [1, 3]


@pytest.fixture
def proxy(dsn: str) -> Iterator[FaultProxy]:
    with FaultProxy.for_dsn(dsn, lifetime=120) as p:
        yield p


async def test_without_a_blocker_no_retry_and_no_extra_round_trip(
    dsn: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The lock timeout rides in the migration's own message: the run's connection sends
    as many messages with it as without it, and no retry happens."""
    write_tree(tmp_path, {"001_a.sql": "CREATE TABLE a (id int);\nALTER TABLE a ADD c int;\n"})
    counts = []
    for name, ddl in (("with", 2.0), ("without", 0.0)):
        db = await fetchval(dsn, "SELECT current_database()")
        clone = f"{db}_{name}"
        await fetchval(dsn, f'CREATE DATABASE "{clone}"')
        target = proxy.dsn(dsn.rsplit("/", 1)[0] + "/" + clone)
        before = sum(
            len(link.queries) for link in proxy.links if link.application_name == "asyncmig"
        )
        events: list[Event] = []
        await migrator(target, tmp_path, ddl_lock_timeout=ddl).migrate(on_event=events.append)
        after = sum(
            len(link.queries) for link in proxy.links if link.application_name == "asyncmig"
        )
        counts.append(after - before)
        assert not [e for e in events if isinstance(e, LockRetry)]
        await fetchval(dsn, f'DROP DATABASE "{clone}" WITH (FORCE)')
    assert counts[0] == counts[1], counts
    carrying = [q for link in proxy.links for q in link.queries if "ALTER TABLE a" in q]
    assert any("lock_timeout = 2000" in q for q in carrying)
